"""BiLO network: an MLP ``u(coords, θ)`` with a batched forward-mode Taylor-jet evaluation.

:meth:`MLP.jet` propagates all requested mixed partial derivatives (w.r.t. coordinates and PDE
parameters θ) through the network in one pass.  Derivative channels are stacked into a tensor
of shape ``(C, N, width)`` so every layer costs one matmul for all channels; the elementwise
activation is pushed through with Faà di Bruno's formula.  At the first layer the derivative of
the pre-activation w.r.t. coordinate ``k`` is the constant column ``W_x[:, k]`` (w.r.t. θ_j:
``R[:, j]``) and all higher pre-activation derivatives vanish, so the first activation jet is
``f^(|α|)(z) * prod_{v in α} column_v`` with no matmul at all.

Two implementations share the same math:

* ``fused=True`` (default): the whole hidden stack is one ``torch.autograd.Function`` with a
  hand-written backward.  It runs over blocks of points (cache-sized on CPU, all points at once
  on other devices), stores only the stacked pre-activations of the hidden layers after the
  first and recomputes the activation jets in the backward pass.  Memory is therefore
  proportional to the number of channels.  It supports first-order reverse mode (gradients of
  losses built from jet channels w.r.t. weights, coordinates and θ: what training needs), not
  double backward.
* ``fused=False``: plain differentiable torch operations (any order of reverse mode; slower and
  more memory hungry), also used as a cross-check.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .jet import ACTIVATIONS, Jet, Key, activation_derivatives, closure, faa_di_bruno_terms

__all__ = ["MLP"]

_TORCH_ACT = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "sin": torch.sin,
    "cos": torch.cos,
    "softplus": nn.functional.softplus,
    "exp": torch.exp,
}

# target bytes of one (C, block, width) stack when blocking over points on the CPU
_CPU_BLOCK_BYTES = 3 * 2**20


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
# fused kernels (no autograd; in-place where possible)
# ---------------------------------------------------------------------------------------------
def _first_fwd(ds, coef, plan: _Plan):
    """First activation jet: h[c] = f^(|c|)(z0) * coef[c-1]  -> (C, B, W)."""
    z0 = ds[0]
    h = z0.new_empty((len(plan.chans),) + tuple(z0.shape))
    h[0] = ds[0]
    for m in range(1, plan.max_order + 1):
        a, b = plan.order_slices[m]
        if b > a:
            torch.mul(ds[m].unsqueeze(0), coef[a - 1 : b - 1].unsqueeze(1), out=h[a:b])
    return h


def _first_bwd(g, ds, coef, plan: _Plan, gcoef):
    """Backward of :func:`_first_fwd`: returns dL/dz0 and accumulates dL/dcoef into gcoef."""
    gz0 = ds[1] * g[0]
    for m in range(1, plan.max_order + 1):
        a, b = plan.order_slices[m]
        if b == a:
            continue
        acc = g[a] * coef[a - 1]
        for c in range(a + 1, b):
            acc.addcmul_(g[c], coef[c - 1])
        gz0.addcmul_(acc, ds[m + 1])
        if gcoef is not None:
            gcoef[a - 1 : b - 1] += (g[a:b] * ds[m]).sum(1)
    return gz0


def _hidden_fwd(z, ds, plan: _Plan, keep_sums: bool):
    """Activation jet of a stacked pre-activation z (C, B, W) (bias already in z[0])."""
    h = torch.empty_like(z)
    h[0] = ds[0]
    torch.mul(z[1:], ds[1], out=h[1:])
    sums = [] if keep_sums else None
    for o, k, terms in plan.groups:
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
        h[o].addcmul_(s, ds[k])
        if keep_sums:
            sums.append(s)
    return h, sums


def _hidden_bwd(g, z, ds, sums, plan: _Plan):
    """Backward of :func:`_hidden_fwd`: dL/dz (C, B, W) from dL/dh."""
    gz = torch.empty_like(z)
    torch.mul(g[1:], ds[1], out=gz[1:])
    gz0 = ds[1] * g[0]
    # h[c] = f'(z0) z[c] + ...: the dependence of f'(z0) on z0
    if z.shape[0] > 1:
        q = g[1] * z[1]
        for c in range(2, z.shape[0]):
            q.addcmul_(g[c], z[c])
        gz0.addcmul_(q, ds[2])
    # h[o] += f^(k)(z0) s[o, k]: the dependence of f^(k)(z0) on z0, accumulated per k
    qk: dict[int, torch.Tensor] = {}
    for (o, k, _), s in zip(plan.groups, sums, strict=True):
        if k in qk:
            qk[k].addcmul_(g[o], s)
        else:
            qk[k] = g[o] * s
    for k, q in qk.items():
        gz0.addcmul_(q, ds[k + 1])
    # the products of channels in s[o, k]
    for o, k, gts in plan.grad_terms:
        w = g[o] * ds[k]
        for coefficient, b, others in gts:
            if len(others) == 1:
                gz[b].addcmul_(w, z[others[0]], value=coefficient)
            else:
                p = w * z[others[0]]
                for bi in others[1:-1]:
                    p.mul_(z[bi])
                gz[b].addcmul_(p, z[others[-1]], value=coefficient)
    gz[0] = gz0
    return gz


def _blocks(n: int, device: torch.device, n_chans: int, width: int, block: int | None):
    if block is None:
        if device.type != "cpu":
            block = n
        else:
            block = max(64, _CPU_BLOCK_BYTES // (4 * n_chans * width))
    block = max(1, min(int(block), n))
    return [(s, min(n, s + block)) for s in range(0, n, block)]


class _FusedJetMLP(torch.autograd.Function):
    """u-channels (C, N) (without output bias) from z0 (N, W), coef (C-1, W) and the weights."""

    @staticmethod
    def forward(ctx, z0, coef, w_out, plan, act, block, *hidden):
        n, width = z0.shape
        c = len(plan.chans)
        m = plan.max_order
        n_hidden = len(hidden) // 2
        blocks = _blocks(n, z0.device, c, width, block)
        u = z0.new_empty((c, n))
        zs = []
        for s, e in blocks:
            nb = e - s
            h = _first_fwd(activation_derivatives(act, z0[s:e], m), coef, plan)
            for li in range(n_hidden):
                weight, bias = hidden[2 * li], hidden[2 * li + 1]
                z = torch.mm(h.view(c * nb, width), weight.t()).view(c, nb, width)
                z[0] += bias
                zs.append(z)
                h, _ = _hidden_fwd(z, activation_derivatives(act, z[0], m), plan, False)
            u[:, s:e] = torch.mv(h.view(c * nb, width), w_out[0]).view(c, nb)
        ctx.plan, ctx.act, ctx.blocks, ctx.n_hidden = plan, act, blocks, n_hidden
        ctx.save_for_backward(z0, coef, w_out, *hidden, *zs)
        return u

    @staticmethod
    @once_differentiable
    def backward(ctx, gu):
        plan, act, blocks, n_hidden = ctx.plan, ctx.act, ctx.blocks, ctx.n_hidden
        saved = ctx.saved_tensors
        z0, coef, w_out = saved[:3]
        hidden = saved[3 : 3 + 2 * n_hidden]
        zs = saved[3 + 2 * n_hidden :]
        n, width = z0.shape
        c = len(plan.chans)
        m = plan.max_order
        need = ctx.needs_input_grad
        gz0 = torch.empty_like(z0) if need[0] else None
        gcoef = torch.zeros_like(coef) if need[1] else None
        gw_out = torch.zeros_like(w_out) if need[2] else None
        ghidden = [torch.zeros_like(p) if need[6 + i] else None for i, p in enumerate(hidden)]
        for bi, (s, e) in enumerate(blocks):
            nb = e - s
            # recompute the activation jets of this block
            ds_first = activation_derivatives(act, z0[s:e], m + 1)
            hs = [_first_fwd(ds_first, coef, plan)]
            dss, sumss = [], []
            for li in range(n_hidden):
                z = zs[bi * n_hidden + li]
                ds = activation_derivatives(act, z[0], m + 1)
                h, sums = _hidden_fwd(z, ds, plan, True)
                hs.append(h)
                dss.append(ds)
                sumss.append(sums)
            gub = gu[:, s:e]
            if gw_out is not None:
                gw_out[0].addmv_(hs[-1].view(c * nb, width).t(), gub.reshape(-1))
            g = gub.unsqueeze(-1) * w_out[0]
            for li in reversed(range(n_hidden)):
                z = zs[bi * n_hidden + li]
                gz = _hidden_bwd(g, z, dss[li], sumss[li], plan)
                gw, gb = ghidden[2 * li], ghidden[2 * li + 1]
                if gb is not None:
                    gb += gz[0].sum(0)
                if gw is not None:
                    gw.addmm_(gz.view(c * nb, width).t(), hs[li].view(c * nb, width))
                g = torch.mm(gz.view(c * nb, width), hidden[2 * li]).view(c, nb, width)
            gzb = _first_bwd(g, ds_first, coef, plan, gcoef)
            if gz0 is not None:
                gz0[s:e] = gzb
        return (gz0, gcoef, gw_out, None, None, None, *ghidden)


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
        block_size: int | None = None,
    ) -> Jet:
        """The jet of ``u`` over the variables ``coord_names + param_names``.

        ``keys``: multi-indices wanted (e.g. ``[("t",), ("x", "x"), ("D", "t")]``); the result
        tracks and stores every channel of ``closure(keys)``, each of shape (N,).  Gradients
        flow by ordinary (first-order) reverse mode to the weights, to ``coords`` and to
        ``params`` (when they require grad) through every channel.  ``fused=False`` selects the
        pure-autograd implementation (supports double backward; slower).  ``block_size``: points
        per block of the fused implementation (default: cache-sized on CPU, all points on
        accelerators).
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
            u = _FusedJetMLP.apply(
                z0, coef, self.out.weight, plan, self.activation, block_size, *hidden
            )
        else:
            u = _reference_jet_mlp(z0, coef, self.out.weight, plan, self.activation, hidden)
        channels = {(): u[0] + self.out.bias[0]}
        for i in range(1, len(chans)):
            channels[chans[i]] = u[i]
        return Jet._make(channels, frozenset(chans))
