"""BiLO network: an MLP ``u(coords, θ)`` with a batched forward-mode Taylor-jet evaluation.

:meth:`MLP.jet` propagates all requested mixed partial derivatives (w.r.t. coordinates and PDE
parameters θ) through the network in one pass.  Derivative channels are stacked into a tensor
of shape ``(C, N, width)`` so every layer costs one matmul for all channels; the elementwise
activation is pushed through with Faà di Bruno's formula.  At the first layer the derivative of
the pre-activation w.r.t. coordinate ``k`` is the constant column ``W_x[:, k]`` (w.r.t. θ_j:
``R[:, j]``) and all higher pre-activation derivatives vanish, so the first activation jet is
``f^(|α|)(z) * prod_{v in α} column_v`` with no matmul at all.

Two implementations share the same math:

* ``fused=True`` (default): the whole jet MLP is one ``torch.autograd.Function`` with a
  hand-written backward.  It saves the stacked activations and pre-activations of the hidden
  layers and recomputes the (cheap) activation derivatives and channel products in the backward
  pass, so memory is proportional to the number of channels.  It supports first-order reverse
  mode (gradients of losses built from jet channels w.r.t. weights, coordinates and θ: what
  training needs), not double backward.
* ``fused=False``: plain differentiable torch operations (any order of reverse mode; slower and
  more memory hungry), also used as a cross-check.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .jet import ACTIVATIONS, Jet, Key, activation_derivatives, closure, faa_di_bruno_terms

__all__ = ["MLP", "clear_scratch"]

_TORCH_ACT = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "sin": torch.sin,
    "cos": torch.cos,
    "softplus": nn.functional.softplus,
    "exp": torch.exp,
}


# ---------------------------------------------------------------------------------------------
# channel plan: which products of channels feed which channel (computed once per key set)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Plan:
    chans: tuple[Key, ...]  # sorted by order; chans[0] == ()
    max_order: int
    order_slices: tuple[tuple[int, int], ...]  # [start, stop) of the channels of order m
    # Faà di Bruno terms with k >= 2 blocks, grouped by (out channel, k):
    # (out, k, ((multiplicity, block channels), ...))
    groups: tuple[tuple[int, int, tuple[tuple[int, tuple[int, ...]], ...]], ...]
    # for the backward pass, per group: ((coefficient, block b, other blocks), ...) where
    # d(prod of blocks)/d z[b] = coefficient/multiplicity-weighted prod of the other blocks
    grad_terms: tuple[tuple[int, int, tuple[tuple[int, int, tuple[int, ...]], ...]], ...]


@lru_cache(maxsize=256)
def _plan(chans: tuple[Key, ...]) -> _Plan:
    index = {k: i for i, k in enumerate(chans)}
    max_order = max(len(k) for k in chans)
    slices = []
    for m in range(max_order + 1):
        idx = [i for i, k in enumerate(chans) if len(k) == m]
        slices.append((idx[0], idx[-1] + 1) if idx else (0, 0))
    groups, grad_terms = [], []
    for o, key in enumerate(chans):
        by_k: dict[int, list] = {}
        for mult, blocks in faa_di_bruno_terms(key):
            if len(blocks) >= 2:
                by_k.setdefault(len(blocks), []).append((mult, tuple(index[b] for b in blocks)))
        for k, terms in sorted(by_k.items()):
            groups.append((o, k, tuple(terms)))
            gts = []
            for mult, blocks in terms:
                for b, nb in sorted(Counter(blocks).items()):
                    others = list(blocks)
                    others.remove(b)
                    gts.append((mult * nb, b, tuple(others)))
            grad_terms.append((o, k, tuple(gts)))
    return _Plan(tuple(chans), max_order, tuple(slices), tuple(groups), tuple(grad_terms))


# ---------------------------------------------------------------------------------------------
# scratch buffers
#
# A training step would otherwise map tens of MB of fresh (C, N, W) stacks per call; on the CPU,
# glibc hands such blocks back to the OS when they are freed, and the page faults of mapping
# them again cost more than the arithmetic.  Stacks that do not outlive a call (the activation
# jets, recomputed in the backward pass, and the backward's gradient stacks) are therefore kept
# in per-thread scratch buffers, one per role, and reused.  Only the saved pre-activations are
# allocated per call.  Other devices have caching allocators and skip this.
# ---------------------------------------------------------------------------------------------
class _Scratch(threading.local):
    def __init__(self):
        self.buffers: dict[str, torch.Tensor] = {}


_SCRATCH = _Scratch()


def _scratch(role: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    if like.device.type != "cpu":
        return like.new_empty(shape)
    buf = _SCRATCH.buffers.get(role)
    if buf is None or buf.shape != shape or buf.dtype != like.dtype:
        buf = like.new_empty(shape)
        _SCRATCH.buffers[role] = buf
    return buf


def clear_scratch() -> None:
    """Release the CPU scratch buffers of the fused jet (of the calling thread)."""
    _SCRATCH.buffers.clear()


# ---------------------------------------------------------------------------------------------
# fused kernels (no autograd; in-place where possible)
#
# In the backward kernels the incoming gradient of a stacked tensor is ``g[c] = gfac[c] * gscale``
# with either gfac (C, N, W) and gscale None, or -- right below the linear output layer, where
# dL/dh[c] = dL/du[c] w_out^T is rank one -- gfac (C, N, 1) and gscale (W,).  The gradient
# only ever appears multiplied by an activation derivative, so gscale is folded into those.
# ---------------------------------------------------------------------------------------------
def _scaled(ds, gscale):
    return ds if gscale is None else [d * gscale for d in ds]


def _first_fwd(ds, coef, plan: _Plan, out):
    """First activation jet: h[c] = f^(|c|)(z0) * coef[c-1], written into out (C, N, W)."""
    out[0] = ds[0]
    for m in range(1, plan.max_order + 1):
        a, b = plan.order_slices[m]
        if b > a:
            torch.mul(ds[m].unsqueeze(0), coef[a - 1 : b - 1].unsqueeze(1), out=out[a:b])
    return out


def _first_bwd(gfac, gscale, ds, coef, plan: _Plan, need_coef: bool):
    """Backward of :func:`_first_fwd`: (dL/dz0, dL/dcoef)."""
    ds = _scaled(ds, gscale)
    gz0 = ds[1] * gfac[0]
    gcoef = torch.empty_like(coef) if need_coef else None
    tmp = torch.empty_like(gz0) if need_coef else None
    for m in range(1, plan.max_order + 1):
        a, b = plan.order_slices[m]
        if b == a:
            continue
        acc = gfac[a] * coef[a - 1]
        for c in range(a + 1, b):
            acc.addcmul_(gfac[c], coef[c - 1])
        gz0.addcmul_(acc, ds[m + 1])
        if need_coef:
            for c in range(a, b):
                torch.sum(torch.mul(gfac[c], ds[m], out=tmp), 0, out=gcoef[c - 1])
    return gz0, gcoef


def _group_sums(z, plan: _Plan):
    """s[o, k] = sum over the k-block Faà di Bruno terms of channel o of prod_B z[B]."""
    sums = []
    for _, _, terms in plan.groups:
        s = None
        for mult, blocks in terms:
            if s is None:
                s = z[blocks[0]] * z[blocks[1]]
                for bi in blocks[2:]:
                    s.mul_(z[bi])
                if mult != 1:
                    s.mul_(mult)
            elif len(blocks) == 2:
                s.addcmul_(z[blocks[0]], z[blocks[1]], value=mult)
            else:
                p = z[blocks[0]] * z[blocks[1]]
                for bi in blocks[2:-1]:
                    p.mul_(z[bi])
                s.addcmul_(p, z[blocks[-1]], value=mult)
        sums.append(s)
    return sums


def _hidden_fwd(z, ds, sums, plan: _Plan, out):
    """Activation jet h = f(z) of a stacked pre-activation z (C, N, W) (bias included in z[0]),
    given the activation derivatives ds at z[0] and the channel products of _group_sums."""
    out[0] = ds[0]
    torch.mul(z[1:], ds[1], out=out[1:])
    for (o, k, _), s in zip(plan.groups, sums, strict=True):
        out[o].addcmul_(s, ds[k])
    return out


def _hidden_bwd(gfac, gscale, z, ds, sums, plan: _Plan, out):
    """Backward of :func:`_hidden_fwd`: dL/dz (C, N, W) into out; consumes ``sums``."""
    ds = _scaled(ds, gscale)
    c_n = z.shape[0]
    gz0 = out[0]
    torch.mul(gfac[1:], ds[1], out=out[1:])
    torch.mul(ds[1], gfac[0], out=gz0)
    # h[c] = f'(z0) z[c] + ...: dependence of f'(z0) on z0
    if c_n > 1:
        q = z[1] * gfac[1]
        for c in range(2, c_n):
            q.addcmul_(z[c], gfac[c])
        gz0.addcmul_(q, ds[2])
    # h[o] += f^(k)(z0) s[o, k]: dependence of f^(k)(z0) on z0, accumulated per k
    qk: dict[int, torch.Tensor] = {}
    for (o, k, _), s in zip(plan.groups, sums, strict=True):
        if k in qk:
            qk[k].addcmul_(s, gfac[o])
        else:
            qk[k] = s.mul_(gfac[o])
    for k, q in qk.items():
        gz0.addcmul_(q, ds[k + 1])
    # the products of channels inside s[o, k]
    for o, k, gts in plan.grad_terms:
        w = ds[k] * gfac[o]
        for coefficient, b, others in gts:
            if len(others) == 1:
                out[b].addcmul_(w, z[others[0]], value=coefficient)
            else:
                p = w * z[others[0]]
                for bi in others[1:-1]:
                    p.mul_(z[bi])
                out[b].addcmul_(p, z[others[-1]], value=coefficient)
    return out


class _FusedJetMLP(torch.autograd.Function):
    """u-channels (C, N) (without output bias) from z0 (N, W), coef (C-1, W) and the weights.

    Saves only the stacked pre-activations z_l of the hidden layers after the first (plus the
    inputs); activation jets, activation derivatives and channel products are recomputed in the
    backward pass.
    """

    @staticmethod
    def forward(ctx, z0, coef, w_out, plan, act, *hidden):
        n, width = z0.shape
        c = len(plan.chans)
        m = plan.max_order
        shape = (c, n, width)
        h = _first_fwd(activation_derivatives(act, z0, m), coef, plan, _scratch("f0", shape, z0))
        zs = []
        for li in range(len(hidden) // 2):
            weight, bias = hidden[2 * li], hidden[2 * li + 1]
            z = torch.mm(h.view(c * n, width), weight.t()).view(shape)
            z[0] += bias
            ds = activation_derivatives(act, z[0], m)
            h = _hidden_fwd(z, ds, _group_sums(z, plan), plan, _scratch(f"f{li % 2 + 1}", shape, z))
            zs.append(z)
        u = torch.mv(h.view(c * n, width), w_out[0]).view(c, n)
        ctx.plan, ctx.act, ctx.n_hidden = plan, act, len(hidden) // 2
        ctx.save_for_backward(z0, coef, w_out, *hidden, *zs)
        return u

    @staticmethod
    @once_differentiable
    def backward(ctx, gu):
        plan, act, n_hidden = ctx.plan, ctx.act, ctx.n_hidden
        saved = ctx.saved_tensors
        z0, coef, w_out = saved[:3]
        hidden = saved[3 : 3 + 2 * n_hidden]
        zs = saved[3 + 2 * n_hidden :]
        n, width = z0.shape
        c = len(plan.chans)
        m = plan.max_order
        shape = (c, n, width)
        need = ctx.needs_input_grad
        ds_first = activation_derivatives(act, z0, m + 1)

        def recompute(li):
            """(activation jet h_li, ds, sums); li = 0 is the first layer."""
            buf = _scratch(f"b{li % 2}", shape, z0)
            if li == 0:
                return _first_fwd(ds_first, coef, plan, buf), None, None
            z = zs[li - 1]
            ds = activation_derivatives(act, z[0], m + 1)
            sums = _group_sums(z, plan)
            return _hidden_fwd(z, ds, sums, plan, buf), ds, sums

        h, ds, sums = recompute(n_hidden)
        gu = gu.contiguous()
        gw_out = None
        if need[2]:
            gw_out = torch.mv(h.view(c * n, width).t(), gu.view(-1)).unsqueeze(0)
        gfac, gscale = gu.unsqueeze(-1), w_out[0]
        ghidden: list[torch.Tensor | None] = [None] * (2 * n_hidden)
        for li in reversed(range(n_hidden)):
            gz = _hidden_bwd(gfac, gscale, zs[li], ds, sums, plan, _scratch("gz", shape, z0))
            if need[5 + 2 * li + 1]:
                ghidden[2 * li + 1] = gz[0].sum(0)
            h, ds, sums = recompute(li)  # the input of this layer
            gz2 = gz.view(c * n, width)
            if need[5 + 2 * li]:
                ghidden[2 * li] = torch.mm(gz2.t(), h.view(c * n, width))
            g = _scratch("g", shape, z0)
            torch.mm(gz2, hidden[2 * li], out=g.view(c * n, width))
            gfac, gscale = g, None
        gz0, gcoef = _first_bwd(gfac, gscale, ds_first, coef, plan, need[1])
        return (gz0, gcoef, gw_out, None, None, *ghidden)


# ---------------------------------------------------------------------------------------------
# reference implementation (plain autograd)
# ---------------------------------------------------------------------------------------------
def _reference_jet_mlp(z0, coef, w_out, plan: _Plan, act: str, hidden):
    m = plan.max_order
    ds = activation_derivatives(act, z0, m)
    parts = [ds[0].unsqueeze(0)]
    for o in range(1, m + 1):
        a, b = plan.order_slices[o]
        if b > a:
            parts.append(ds[o].unsqueeze(0) * coef[a - 1 : b - 1].unsqueeze(1))
    h = torch.cat(parts, 0)
    c, n, width = h.shape
    for li in range(len(hidden) // 2):
        weight, bias = hidden[2 * li], hidden[2 * li + 1]
        z = torch.mm(h.reshape(c * n, width), weight.t()).view(c, n, width)
        z0l = z[0] + bias
        ds = activation_derivatives(act, z0l, m)
        chans = [ds[0]] + list((z[1:] * ds[1]).unbind(0))
        for o, k, terms in plan.groups:
            for mult, blocks in terms:
                term = ds[k] * mult
                for bi in blocks:
                    term = term * z[bi]
                chans[o] = chans[o] + term
        h = torch.stack(chans, 0)
    return torch.mv(h.reshape(c * n, width), w_out[0]).view(c, n)


# ---------------------------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------------------------
class MLP(nn.Module):
    """``u(coords, θ) = L_out ∘ f ∘ L_depth ∘ ... ∘ f ∘ L_1 (coords, θ)``.

    The first layer is ``W_x coords + R θ + b``: ``W_x`` (width × n_coords) and ``b`` are
    trainable, ``R`` (width × n_params) is a fixed (non-trainable) buffer; all three are
    initialised uniformly in ``[-1/√d, 1/√d]`` with ``d = n_coords + n_params``.  Hidden layers
    are ``nn.Linear(width, width)`` (torch's default init, i.e. the same rule with ``d`` the
    fan-in), the output layer is ``nn.Linear(width, 1)``.  ``depth`` is the number of hidden
    layers (activations).  ``n_params = 0`` gives a plain PINN network of the coordinates.
    """

    def __init__(
        self,
        n_coords: int,
        n_params: int,
        width: int = 128,
        depth: int = 2,
        activation: str = "tanh",
    ):
        super().__init__()
        if depth < 1:
            raise ValueError("depth (number of hidden layers) must be >= 1")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
        self.n_coords, self.n_params = int(n_coords), int(n_params)
        self.width, self.depth, self.activation = int(width), int(depth), activation
        bound = 1.0 / math.sqrt(self.n_coords + self.n_params)
        self.W_x = nn.Parameter(torch.empty(width, n_coords).uniform_(-bound, bound))
        self.b = nn.Parameter(torch.empty(width).uniform_(-bound, bound))
        self.register_buffer("R", torch.empty(width, n_params).uniform_(-bound, bound))
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(depth - 1))
        self.out = nn.Linear(width, 1)

    # -- plain evaluation ---------------------------------------------------------------------
    def _first_preactivation(self, coords: torch.Tensor, params: torch.Tensor | None):
        if coords.dim() != 2 or coords.shape[1] != self.n_coords:
            raise ValueError(f"coords must have shape (N, {self.n_coords}), got {coords.shape}")
        z = torch.addmm(self.b, coords, self.W_x.t())
        if self.n_params:
            if params is None:
                raise ValueError("this network takes PDE parameters: pass params")
            z = z + params.to(z.dtype) @ self.R.t().to(z.dtype)
        elif params is not None and params.numel():
            raise ValueError("this network has n_params = 0 but params were given")
        return z

    def forward(self, coords: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        """``coords`` (N, n_coords); ``params`` (n_params,) shared or (N, n_params) -> (N,)."""
        f = _TORCH_ACT[self.activation]
        h = f(self._first_preactivation(coords, params))
        for lin in self.hidden:
            h = f(lin(h))
        return self.out(h).squeeze(-1)

    # -- jet evaluation ---------------------------------------------------------------------
    def jet(
        self,
        coords: torch.Tensor,
        params: torch.Tensor | None,
        keys: Iterable[str | Iterable[str]],
        coord_names: Sequence[str],
        param_names: Sequence[str] = (),
        fused: bool = True,
    ) -> Jet:
        """The jet of ``u`` over the variables ``coord_names + param_names``.

        ``keys``: multi-indices wanted (e.g. ``[("t",), ("x", "x"), ("D", "t")]``); the result
        tracks and stores every channel of ``closure(keys)``, each of shape (N,).  Gradients
        flow by ordinary (first-order) reverse mode to the weights, to ``coords`` and to
        ``params`` (when they require grad) through every channel.  ``fused=False`` selects the
        pure-autograd implementation (supports double backward; slower).
        """
        coord_names, param_names = tuple(coord_names), tuple(param_names)
        if len(coord_names) != self.n_coords or len(param_names) != self.n_params:
            raise ValueError(
                f"need {self.n_coords} coordinate and {self.n_params} parameter names, got "
                f"{coord_names} and {param_names}"
            )
        names = coord_names + param_names
        if len(set(names)) != len(names):
            raise ValueError(f"variable names must be distinct: {names}")
        chans = tuple(closure(keys))
        unknown = {v for k in chans for v in k} - set(names)
        if unknown:
            raise ValueError(f"keys use unknown variables {sorted(unknown)}; known: {names}")
        plan = _plan(chans)
        z0 = self._first_preactivation(coords, params)  # (N, W)

        # first-layer direction vectors: dz/dcoord_k = W_x[:, k], dz/dθ_j = R[:, j]
        cols = {nm: self.W_x[:, i] for i, nm in enumerate(coord_names)}
        cols.update({nm: self.R[:, j].to(z0.dtype) for j, nm in enumerate(param_names)})
        if len(chans) > 1:
            rows = []
            for key in chans[1:]:
                row = cols[key[0]]
                for v in key[1:]:
                    row = row * cols[v]
                rows.append(row)
            coef = torch.stack(rows, 0)  # (C-1, W)
        else:
            coef = z0.new_zeros((0, self.width))

        hidden = [p for lin in self.hidden for p in (lin.weight, lin.bias)]
        if fused:
            u = _FusedJetMLP.apply(z0, coef, self.out.weight, plan, self.activation, *hidden)
        else:
            u = _reference_jet_mlp(z0, coef, self.out.weight, plan, self.activation, hidden)
        channels = {(): u[0] + self.out.bias[0]}
        for i in range(1, len(chans)):
            channels[chans[i]] = u[i]
        return Jet._make(channels, frozenset(chans))
