"""BiLO network: an MLP ``u(coords, θ)`` with a batched forward-mode Taylor-jet evaluation.

:meth:`MLP.jet` propagates all requested mixed partial derivatives (w.r.t. coordinates and PDE
parameters θ) through the network in one pass.  Derivative channels are stacked into a tensor
of shape ``(C, N, width)``; a hidden-to-hidden layer costs one matmul for all channels (bias on
the value channel only) and the elementwise activation is pushed through with Faà di Bruno's
formula, with the activation derivatives computed once per layer.  At the first layer the
derivative of the pre-activation w.r.t. coordinate ``k`` is the constant column ``W_x[:, k]``
(w.r.t. θ_j: ``R[:, j]``) and all higher pre-activation derivatives vanish, so the first
activation jet is ``f^(|α|)(z) * prod_{v in α} column_v``: no matmul and no Faà di Bruno sum.

Two implementations share the same math:

* ``fused=True`` (default, networks with at least one hidden-to-hidden layer, i.e. depth >= 2):
  the whole jet MLP is one ``torch.autograd.Function`` with a hand-written backward
  (:class:`_FusedJetMLP`).  The first activation jet is never materialised: the next
  pre-activation of channel ``c`` is ``f^(|c|)(z) @ (diag(column product) W^T)``.  It saves the
  stacked pre-activations, the activation derivatives and the Faà di Bruno channel products,
  so memory is proportional to the number of channels.  On the CPU its large buffers come from a
  small pool that is reused across calls (see :func:`clear_buffer_pool`).  It supports
  first-order reverse mode (gradients of losses built from jet channels w.r.t. weights,
  coordinates and θ: what training needs), not double backward.
* ``fused=False``: plain differentiable torch operations (any order of reverse mode; slower and
  more memory hungry), also used as a cross-check and for depth 1.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .jet import ACTIVATIONS, Jet, Key, activation_derivatives, closure, faa_di_bruno_terms

__all__ = ["MLP", "clear_buffer_pool"]

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
    orders: tuple[int, ...]  # order of each channel
    order_slices: tuple[tuple[int, int], ...]  # [start, stop) of the channels of order m
    # Faà di Bruno terms with k >= 2 blocks, grouped by (out channel, k):
    # (out, k, ((multiplicity, block channels), ...))
    groups: tuple[tuple[int, int, tuple[tuple[int, tuple[int, ...]], ...]], ...]
    # for the backward pass, per group: ((coefficient, block b, other blocks), ...) where the
    # derivative of the group's sum of mult * prod(z[blocks]) w.r.t. z[b] collects
    # coefficient * prod(z[others]) (coefficient = mult * how often b occurs in the term)
    grad_terms: tuple[tuple[int, int, tuple[tuple[int, int, tuple[int, ...]], ...]], ...]
    # (k, start, stop): the groups with k blocks are groups[start:stop]
    k_ranges: tuple[tuple[int, int, int], ...]


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
    # groups sorted by k, so that the groups of one k are a contiguous range
    order = sorted(range(len(groups)), key=lambda i: (groups[i][1], groups[i][0]))
    groups = [groups[i] for i in order]
    grad_terms = [grad_terms[i] for i in order]
    k_ranges = []
    for k in sorted({g[1] for g in groups}):
        idx = [i for i, g in enumerate(groups) if g[1] == k]
        k_ranges.append((k, idx[0], idx[-1] + 1))
    orders = tuple(len(k) for k in chans)
    return _Plan(
        tuple(chans),
        max_order,
        orders,
        tuple(slices),
        tuple(groups),
        tuple(grad_terms),
        tuple(k_ranges),
    )


# ---------------------------------------------------------------------------------------------
# buffer pool
#
# A training step needs several (C, N, W) stacks; allocated afresh each call, glibc maps them
# from (and returns them to) the OS, and on the CPU the page faults of mapping tens of MB per step
# cost more than the arithmetic.  Large buffers therefore come from a small per-thread pool: a
# request returns a new view of a pooled block, and the block becomes free again once that view
# (and so every autograd graph that saved it) is gone, which a weak reference to the view
# tells.  Other devices have caching allocators and skip this.
# ---------------------------------------------------------------------------------------------
_POOL_MAX_BLOCKS = 48
_POOL_MAX_BYTES = 1 << 30  # blocks kept per thread, in total


class _Pool(threading.local):
    def __init__(self):
        self.blocks: list[list] = []  # [flat tensor, weakref to the view handed out]


_POOL = _Pool()


def _is_free(entry) -> bool:
    return entry[1]() is None


def _buffer(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """An uninitialised tensor of ``shape`` with the dtype and device of ``like``.

    The caller must keep the returned tensor itself alive for as long as it uses the memory
    (views derived from it do not hold the block).
    """
    if like.device.type != "cpu":
        return like.new_empty(shape)
    numel = math.prod(shape)
    blocks = _POOL.blocks
    for entry in blocks:
        flat = entry[0]
        if flat.numel() == numel and flat.dtype == like.dtype and _is_free(entry):
            view = flat.view(shape)
            entry[1] = weakref.ref(view)
            return view
    nbytes = numel * like.element_size()
    # make room by dropping free blocks (oldest first); if that is not enough, do not pool
    total = sum(e[0].numel() * e[0].element_size() for e in blocks)
    while blocks and (len(blocks) >= _POOL_MAX_BLOCKS or total + nbytes > _POOL_MAX_BYTES):
        free = next((i for i, e in enumerate(blocks) if _is_free(e)), None)
        if free is None:
            break
        total -= blocks[free][0].numel() * blocks[free][0].element_size()
        del blocks[free]
    flat = like.new_empty(numel)
    view = flat.view(shape)
    if len(blocks) < _POOL_MAX_BLOCKS and total + nbytes <= _POOL_MAX_BYTES:
        blocks.append([flat, weakref.ref(view)])
    return view


def clear_buffer_pool() -> None:
    """Release the free pooled CPU buffers of the fused jet (of the calling thread)."""
    _POOL.blocks[:] = [e for e in _POOL.blocks if not _is_free(e)]


# ---------------------------------------------------------------------------------------------
# fused kernels (no autograd; in-place where possible)
#
# In the backward kernels the incoming gradient of a stacked tensor is ``g[c] = gfac[c] * gscale``
# with either gfac (C, N, W) and gscale None, or -- right below the linear output layer, where
# dL/dh[c] = dL/du[c] w_out^T is rank one -- gfac (C, N, 1) and gscale (W,).
# ---------------------------------------------------------------------------------------------
def _derivs_into(act: str, z, out):
    """out[k] = f^(k)(z) for k < len(out)."""
    n = out.shape[0] - 1
    if act != "tanh" or n > 4:
        for k, d in enumerate(activation_derivatives(act, z, n)):
            out[k] = d
        return out
    t = torch.tanh(z, out=out[0])
    if n >= 1:
        t2 = t * t
        torch.neg(t2, out=out[1]).add_(1)  # s = 1 - t^2
    if n >= 2:
        torch.mul(t, out[1], out=out[2]).mul_(-2)  # -2 t s
    if n >= 3:
        torch.mul(t2, 6, out=out[3]).sub_(2).mul_(out[1])  # (6 t^2 - 2) s
    if n >= 4:
        torch.mul(t2, 12, out=out[4]).sub_(8).mul_(out[2])  # (12 t^2 - 8) f''
    return out


def _group_sums(z, plan: _Plan, out):
    """out[g] = sum over the k-block Faà di Bruno terms of group g = (channel o, k) of
    prod_B z[B]."""
    for s, (_, _, terms) in zip(out, plan.groups, strict=True):
        first = True
        for mult, blocks in terms:
            if first:
                torch.mul(z[blocks[0]], z[blocks[1]], out=s)
                for bi in blocks[2:]:
                    s.mul_(z[bi])
                if mult != 1:
                    s.mul_(mult)
                first = False
            elif len(blocks) == 2:
                s.addcmul_(z[blocks[0]], z[blocks[1]], value=mult)
            else:
                p = z[blocks[0]] * z[blocks[1]]
                for bi in blocks[2:-1]:
                    p.mul_(z[bi])
                s.addcmul_(p, z[blocks[-1]], value=mult)
    return out


def _hidden_fwd(z, ds, sums, plan: _Plan, out):
    """Activation jet h = f(z) of a stacked pre-activation z (C, N, W) (bias included in z[0]),
    given the activation derivatives ds at z[0] and the channel products of _group_sums."""
    out[0] = ds[0]
    torch.mul(z[1:], ds[1], out=out[1:])
    for (o, k, _), s in zip(plan.groups, sums, strict=True):
        out[o].addcmul_(s, ds[k])
    return out


def _hidden_bwd(gfac, gscale, z, ds, sums, plan: _Plan, out, want_scale_grad: bool):
    """Backward of :func:`_hidden_fwd`: dL/dz (C, N, W) into ``out``.

    With a rank-one gradient also returns dL/dgscale (the output weights) when asked.
    """
    c_n = z.shape[0]
    dsg = ds if gscale is None else [ds[0]] + [d * gscale for d in ds[1 : plan.max_order + 1]]
    torch.mul(gfac[1:], dsg[1], out=out[1:])
    # dL/dz0 before the factor gscale: h[0] = f(z0), h[c] = f'(z0) z[c] + sum_k f^(k)(z0) s[c, k]
    gz0 = out[0]
    torch.mul(gfac[0], ds[1], out=gz0)
    sg = gfac[0] * ds[0] if want_scale_grad else None  # the same with f^(j) -> f^(j-1)
    if c_n > 1:
        q = z[1] * gfac[1]
        for c in range(2, c_n):
            q.addcmul_(z[c], gfac[c])
        gz0.addcmul_(q, ds[2])
        if sg is not None:
            sg.addcmul_(q, ds[1])
    qk: dict[int, torch.Tensor] = {}
    for (o, k, _), s in zip(plan.groups, sums, strict=True):
        if k in qk:
            qk[k].addcmul_(s, gfac[o])
        else:
            qk[k] = s * gfac[o]
    for k, q in qk.items():
        gz0.addcmul_(q, ds[k + 1])
        if sg is not None:
            sg.addcmul_(q, ds[k])
    if gscale is not None:
        gz0.mul_(gscale)
    # the products of channels inside s[o, k]
    for o, k, gts in plan.grad_terms:
        w = dsg[k] * gfac[o]
        for coefficient, b, others in gts:
            if len(others) == 1:
                out[b].addcmul_(w, z[others[0]], value=coefficient)
            else:
                p = w * z[others[0]]
                for bi in others[1:-1]:
                    p.mul_(z[bi])
                out[b].addcmul_(p, z[others[-1]], value=coefficient)
    return out, (sg.sum(0) if sg is not None else None)


class _FusedJetMLP(torch.autograd.Function):
    """u-channels (C, N) (without output bias) from z0 (N, W), coef (C-1, W) and the weights
    of at least one hidden layer.

    First layer: its activation jet ``h1[c] = f^(|c|)(z0) * coef[c-1]`` is never materialised;
    the next pre-activation is ``z[c] = f^(|c|)(z0) @ (diag(coef[c-1]) W^T)`` (one matmul per
    channel with a channel-scaled weight: the flops of the stacked product without writing and
    re-reading the stack), and in the backward pass the weight, coefficient and z0 gradients
    follow from ``P_c = dL/dz[c]^T f^(|c|)(z0)`` and ``dL/dz[c] @ (W diag(coef[c-1]))``.
    Later hidden layers: one stacked matmul per layer.  Output layer: contracted with the last
    activation jet term by term, which is never materialised either; its weight gradient is
    assembled from partial sums of the last activation backward.

    Saves the inputs and, per hidden layer, the stacked pre-activations, the activation
    derivatives at the value channel and the Faà di Bruno channel products; the activation jets
    of hidden layers after the first are recomputed in the backward pass.
    """

    @staticmethod
    def forward(ctx, z0, coef, w_out, plan, act, *hidden):
        n, width = z0.shape
        c = len(plan.chans)
        m = plan.max_order
        shape = (c, n, width)
        n_groups = len(plan.groups)
        ds0 = _derivs_into(act, z0, _buffer((m + 2, n, width), z0))
        w1, b1 = hidden[0], hidden[1]
        z = _buffer(shape, z0)
        torch.addmm(b1, ds0[0], w1.t(), out=z[0])
        if c > 1:
            mats = coef.unsqueeze(2) * w1.t().unsqueeze(0)  # (C-1, W_in, W_out)
            for ci in range(1, c):
                torch.mm(ds0[plan.orders[ci]], mats[ci - 1], out=z[ci])
        zs, dss, sumss = [], [], []
        for li in range(len(hidden) // 2):
            ds = _derivs_into(act, z[0], _buffer((m + 2, n, width), z0))
            sums = _group_sums(z, plan, _buffer((n_groups, n, width), z0))
            zs.append(z)
            dss.append(ds)
            sumss.append(sums)
            if li + 1 < len(hidden) // 2:
                h = _hidden_fwd(z, ds, sums, plan, _buffer(shape, z0))
                weight, bias = hidden[2 * li + 2], hidden[2 * li + 3]
                z = _buffer(shape, z0)
                torch.mm(h.view(c * n, width), weight.t(), out=z.view(c * n, width))
                z[0] += bias
        # output layer u[c] = h[c] w_out without materialising the last activation jet h:
        # h[0] = f(z0), h[c] = f'(z0) z[c] + sum_k f^(k)(z0) s[c, k]
        dsw = ds[: m + 1] * w_out[0]
        u = z0.new_empty((c, n))
        torch.mv(ds[0], w_out[0], out=u[0])
        if c > 1:
            u[1:] = torch.einsum("cnw,nw->cn", z[1:], dsw[1])
        for k, a, b in plan.k_ranges:
            vals = torch.einsum("gnw,nw->gn", sums[a:b], dsw[k])
            for i, (o, _, _) in enumerate(plan.groups[a:b]):
                u[o] += vals[i]
        ctx.plan, ctx.act, ctx.n_hidden = plan, act, len(hidden) // 2
        ctx.save_for_backward(z0, coef, w_out, ds0, *hidden, *zs, *dss, *sumss)
        return u

    @staticmethod
    @once_differentiable
    def backward(ctx, gu):
        plan, n_hidden = ctx.plan, ctx.n_hidden
        saved = ctx.saved_tensors
        z0, coef, w_out, ds0 = saved[:4]
        hidden = saved[4 : 4 + 2 * n_hidden]
        zs = saved[4 + 2 * n_hidden : 4 + 3 * n_hidden]
        dss = saved[4 + 3 * n_hidden : 4 + 4 * n_hidden]
        sumss = saved[4 + 4 * n_hidden :]
        n, width = z0.shape
        c = len(plan.chans)
        m = plan.max_order
        shape = (c, n, width)
        need = ctx.needs_input_grad
        gu = gu.contiguous()
        gfac, gscale = gu.unsqueeze(-1), w_out[0]
        ghidden: list[torch.Tensor | None] = [None] * (2 * n_hidden)
        gw_out = None
        gz = _buffer(shape, z0)
        for li in reversed(range(n_hidden)):
            last = li == n_hidden - 1
            _, g_scale = _hidden_bwd(
                gfac, gscale, zs[li], dss[li], sumss[li], plan, gz, last and need[2]
            )
            if g_scale is not None:
                gw_out = g_scale.unsqueeze(0)
            if need[6 + 2 * li]:
                ghidden[2 * li + 1] = gz[0].sum(0)
            if li == 0:
                break
            # recompute the input of this layer
            h = _hidden_fwd(zs[li - 1], dss[li - 1], sumss[li - 1], plan, _buffer(shape, z0))
            if need[5 + 2 * li]:
                ghidden[2 * li] = torch.mm(gz.view(c * n, width).t(), h.view(c * n, width))
            del h
            g = _buffer(shape, z0)
            torch.mm(gz.view(c * n, width), hidden[2 * li], out=g.view(c * n, width))
            gfac, gscale = g, None
            gz = _buffer(shape, z0)  # (requested while the previous gz is still referenced)

        # first hidden layer: z[c] = f^(|c|)(z0) @ (diag(coef[c-1]) W1^T)
        w1 = hidden[0]
        pmat = z0.new_empty((c, width, width))  # P_c = gz[c]^T f^(|c|)(z0)
        for ci in range(c):
            torch.mm(gz[ci].t(), ds0[plan.orders[ci]], out=pmat[ci])
        if need[5]:
            gw1 = pmat[0].clone()
            if c > 1:
                gw1 += (pmat[1:] * coef.unsqueeze(1)).sum(0)
            ghidden[0] = gw1
        gcoef = (pmat[1:] * w1.unsqueeze(0)).sum(1) if need[1] else None
        gz0 = None
        if need[0]:
            gz0 = torch.mm(gz[0], w1).mul_(ds0[1])
            if c > 1:
                wmats = w1.unsqueeze(0) * coef.unsqueeze(1)  # (C-1, W_out, W_in)
                for o in range(1, m + 1):
                    a, b = plan.order_slices[o]
                    if b == a:
                        continue
                    acc = torch.mm(gz[a], wmats[a - 1])
                    for ci in range(a + 1, b):
                        acc.addmm_(gz[ci], wmats[ci - 1])
                    gz0.addcmul_(acc, ds0[o + 1])
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
    ``coord_init_scale`` (one factor per coordinate) widens the initial range of ``W_x``'s
    columns: a solution with features much finer than the coordinate range (a tumour front
    a tenth of the domain's radius) then starts from sharper first-layer features.
    """

    def __init__(
        self,
        n_coords: int,
        n_params: int,
        width: int = 128,
        depth: int = 2,
        activation: str = "tanh",
        coord_init_scale: Sequence[float] | None = None,
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
        if coord_init_scale is not None:
            with torch.no_grad():
                self.W_x *= torch.as_tensor(coord_init_scale, dtype=self.W_x.dtype)
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
        if len(chans) == 1:  # the value alone: both jet kernels assume derivative channels
            return Jet._make({(): self(coords, params)}, frozenset(chans))
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
        if fused and hidden:
            u = _FusedJetMLP.apply(z0, coef, self.out.weight, plan, self.activation, *hidden)
        else:
            u = _reference_jet_mlp(z0, coef, self.out.weight, plan, self.activation, hidden)
        channels = {(): u[0] + self.out.bias[0]}
        for i in range(1, len(chans)):
            channels[chans[i]] = u[i]
        return Jet._make(channels, frozenset(chans))
