"""Truncated multivariate Taylor jets (forward-mode higher-order derivatives).

A :class:`Jet` represents a function ``f`` of named variables by the set of its mixed partial
derivatives over a fixed, finite set of multi-indices.  A multi-index is a *sorted* tuple of
variable names with repetition, e.g. ``()`` (the value), ``("t",)``, ``("x", "x")`` or
``("rho", "x", "x")``; ``jet[alpha]`` is ``∂^alpha f``.  (Names are sorted with Python's ``sorted``,
so ``("D", "t")`` and not ``("t", "D")``; every public entry point accepts unsorted tuples or a
single string and sorts them.)

Conventions
-----------
* The *tracked* key set of a jet is always closed under sub-multisets (see :func:`closure`).
* A tracked channel may be *absent*: it is then structurally zero.  Indexing ``jet[key]`` with a
  tracked-but-absent key returns a zero tensor of ``jet.shape``; indexing with an untracked key
  raises ``KeyError`` (its value is unknown, not zero).
* Channels are tensors whose shapes broadcast against each other (e.g. the channel ``("D",)`` of
  ``Jet.variable("D", D)`` is a 0-d ``1``); dtype and device follow the inputs.
* When two jets are combined, the result tracks the union of both key sets; channels a jet does
  not track count as zero.  Jets for independent variables should therefore be created with the
  same ``keys`` (``Jet.variable(name, value, keys)``).

Everything is built from ordinary differentiable torch operations, so quantities computed from
jet channels can be backpropagated (to any order) with ``torch.autograd``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from functools import cache, lru_cache
from itertools import product

import torch

Key = tuple[str, ...]

__all__ = [
    "Jet",
    "Key",
    "activation_derivatives",
    "as_key",
    "closure",
    "faa_di_bruno_terms",
    "leibniz_splits",
]


# ---------------------------------------------------------------------------------------------
# multi-index combinatorics
# ---------------------------------------------------------------------------------------------
def as_key(key: str | Iterable[str]) -> Key:
    """Normalise a multi-index: a single name or an iterable of names -> sorted tuple."""
    if isinstance(key, str):
        return (key,)
    return tuple(sorted(key))


def _key_order(key: Key) -> tuple[int, Key]:
    return (len(key), key)


@lru_cache(maxsize=4096)
def leibniz_splits(key: Key) -> tuple[tuple[Key, Key, int], ...]:
    """All ``(beta, alpha - beta, binom(alpha, beta))`` for the distinct sub-multisets ``beta``.

    ``∂^alpha (f g) = sum binom(alpha, beta) ∂^beta f ∂^(alpha-beta) g`` with the multi-index
    binomial ``prod_v C(alpha_v, beta_v)``.
    """
    counts = sorted(Counter(key).items())
    out = []
    for ks in product(*(range(c + 1) for _, c in counts)):
        beta = tuple(n for (n, _), k in zip(counts, ks, strict=True) for _ in range(k))
        rest = tuple(n for (n, c), k in zip(counts, ks, strict=True) for _ in range(c - k))
        coef = math.prod(math.comb(c, k) for (_, c), k in zip(counts, ks, strict=True))
        out.append((beta, rest, coef))
    return tuple(out)


def closure(keys: Iterable[str | Iterable[str]]) -> list[Key]:
    """The key set closed under sub-multisets (always containing ``()``), sorted by order.

    ``closure([("rho", "x", "x")])`` -> ``[(), ("rho",), ("x",), ("rho", "x"), ("x", "x"),
    ("rho", "x", "x")]``.
    """
    return list(_closure_frozen(frozenset(as_key(k) for k in keys)))


@lru_cache(maxsize=1024)
def _closure_frozen(keys: frozenset) -> tuple[Key, ...]:
    out: set[Key] = {()}
    for k in keys:
        out.update(beta for beta, _, _ in leibniz_splits(k))
    return tuple(sorted(out, key=_key_order))


@lru_cache(maxsize=4096)
def _in_order(keys: frozenset) -> tuple[Key, ...]:
    """A key set in a fixed order. Channels are created in this order, and autograd accumulates
    gradients in the order their operations were created: iterating the frozenset itself (whose
    order follows string hashing, random per process) made two runs with the same seed differ
    in the last bits."""
    return tuple(sorted(keys, key=_key_order))


def _set_partitions(items: list[int]):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in _set_partitions(rest):
        yield [[first], *part]
        for i in range(len(part)):
            yield [*part[:i], [first, *part[i]], *part[i + 1 :]]


@lru_cache(maxsize=4096)
def faa_di_bruno_terms(key: Key) -> tuple[tuple[int, tuple[Key, ...]], ...]:
    """Faà di Bruno terms of ``∂^key f(g)`` as ``(multiplicity, blocks)``.

    ``∂^key f(g) = sum_terms multiplicity * f^(len(blocks))(g) * prod_B ∂^B g``.  The terms are
    the set partitions of the positions of ``key``; partitions giving the same multiset of blocks
    (possible when a variable is repeated) are merged.  ``key = ()`` gives ``((1, ()),)``.
    """
    counter: Counter = Counter()
    for part in _set_partitions(list(range(len(key)))):
        blocks = tuple(sorted((tuple(key[i] for i in sorted(b)) for b in part), key=_key_order))
        counter[blocks] += 1
    return tuple(
        (c, blocks) for blocks, c in sorted(counter.items(), key=lambda kv: (len(kv[0]), kv[0]))
    )


def _sub_key(key: Key, sub: Key) -> Key | None:
    """Multiset difference ``key - sub`` or ``None`` when ``sub`` is not contained in ``key``."""
    rest = Counter(key)
    rest.subtract(Counter(sub))
    if any(v < 0 for v in rest.values()):
        return None
    return tuple(sorted(rest.elements()))


# ---------------------------------------------------------------------------------------------
# derivatives of elementwise functions
# ---------------------------------------------------------------------------------------------
@cache
def _chain_polys(q: tuple[int, ...], n: int) -> tuple[tuple[int, ...], ...]:
    """Polynomials P_k with ``d^k/dz^k y = P_k(y)`` for a function with ``y' = q(y)``.

    Polynomials are coefficient tuples in increasing powers.  ``P_0 = y``, ``P_{k+1} = P_k' q``.
    """
    polys = [(0, 1)]
    for _ in range(n):
        p = polys[-1]
        dp = [i * p[i] for i in range(1, len(p))] or [0]
        prod_ = [0] * (len(dp) + len(q) - 1)
        for i, a in enumerate(dp):
            if a:
                for j, b in enumerate(q):
                    prod_[i + j] += a * b
        while len(prod_) > 1 and prod_[-1] == 0:
            prod_.pop()
        polys.append(tuple(prod_))
    return tuple(polys)


def _eval_polys(y: torch.Tensor, polys: Sequence[tuple[int, ...]]) -> list[torch.Tensor]:
    deg = max(len(p) for p in polys) - 1
    powers = [None, y]
    for _ in range(2, deg + 1):
        powers.append(powers[-1] * y)
    out = []
    for p in polys:
        acc = None
        for i, c in enumerate(p):
            if c == 0:
                continue
            if i == 0:
                term = torch.full_like(y, float(c))
            else:
                term = powers[i] if c == 1 else powers[i] * c
            acc = term if acc is None else acc + term
        out.append(acc if acc is not None else torch.zeros_like(y))
    return out


_TANH_Q = (1, 0, -1)  # tanh' = 1 - tanh^2
_SIGMOID_Q = (0, 1, -1)  # sigmoid' = s - s^2

ACTIVATIONS = ("tanh", "sigmoid", "sin", "cos", "softplus", "exp")


def activation_derivatives(name: str, z: torch.Tensor, n: int) -> list[torch.Tensor]:
    """``[f(z), f'(z), ..., f^(n)(z)]`` for the elementwise function ``name`` (any order ``n``).

    Supported: ``tanh``, ``sigmoid``, ``sin``, ``cos``, ``softplus``, ``exp``.
    """
    if name == "tanh":
        t = torch.tanh(z)
        if n > 4:
            return _eval_polys(t, _chain_polys(_TANH_Q, n))
        # explicit low-order formulas (the hot path of the network jet): with s = 1 - t^2,
        # f' = s, f'' = -2 t s, f''' = (6 t^2 - 2) s, f'''' = (12 t^2 - 8) f''
        out = [t]
        if n >= 1:
            t2 = t * t
            s = 1 - t2
            out.append(s)
        if n >= 2:
            out.append(t * s * -2)
        if n >= 3:
            out.append((t2 * 6 - 2) * s)
        if n >= 4:
            out.append((t2 * 12 - 8) * out[2])
        return out
    if name == "sigmoid":
        return _eval_polys(torch.sigmoid(z), _chain_polys(_SIGMOID_Q, n))
    if name == "softplus":
        if n == 0:
            return [torch.nn.functional.softplus(z)]
        sig = _eval_polys(torch.sigmoid(z), _chain_polys(_SIGMOID_Q, n - 1))
        return [torch.nn.functional.softplus(z), *sig]
    if name == "exp":
        e = torch.exp(z)
        return [e] * (n + 1)
    if name in ("sin", "cos"):
        s, c = torch.sin(z), torch.cos(z)
        cycle = [s, c, -s, -c] if name == "sin" else [c, -s, -c, s]
        return [cycle[k % 4] for k in range(n + 1)]
    raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")


# ---------------------------------------------------------------------------------------------
# the jet
# ---------------------------------------------------------------------------------------------
def _is_jet(x) -> bool:
    return isinstance(x, Jet)


class Jet:
    """Truncated multivariate Taylor jet: ``jet[alpha] = ∂^alpha f`` for tracked multi-indices.

    Construct with :meth:`variable`, :meth:`constant` or ``Jet(channels, keys)`` where
    ``channels`` maps multi-indices to tensors (must contain the value ``()``) and ``keys`` lists
    additional tracked (structurally zero) multi-indices.  See the module docstring for the
    conventions about absent channels.
    """

    __slots__ = ("_channels", "_keys")

    def __init__(
        self,
        channels: Mapping[str | Iterable[str], torch.Tensor],
        keys: Iterable[str | Iterable[str]] | None = None,
    ):
        ch = {as_key(k): v for k, v in channels.items()}
        if () not in ch:
            raise ValueError("a Jet needs the value channel ()")
        ch = {k: v if torch.is_tensor(v) else torch.as_tensor(v) for k, v in ch.items()}
        tracked = set(ch) | {as_key(k) for k in (keys or ())}
        self._channels = ch
        self._keys = frozenset(_closure_frozen(frozenset(tracked)))

    @classmethod
    def _make(cls, channels: dict[Key, torch.Tensor], keys: frozenset) -> Jet:
        """Internal constructor: ``keys`` must already be closed and contain ``channels``."""
        obj = cls.__new__(cls)
        obj._channels = channels
        obj._keys = keys
        return obj

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def variable(
        cls,
        name: str,
        value: torch.Tensor | float,
        keys: Iterable[str | Iterable[str]] | None = None,
    ) -> Jet:
        """The jet of the independent variable ``name`` taking ``value``.

        Tracks ``closure(keys)`` (default ``{(), (name,)}``): value channel ``value``, channel
        ``(name,)`` a 0-d one (when tracked), every other channel zero.
        """
        value = value if torch.is_tensor(value) else torch.as_tensor(value)
        tracked = frozenset(_closure_frozen(frozenset(as_key(k) for k in (keys or [(name,)]))))
        ch = {(): value}
        if (name,) in tracked:
            ch[(name,)] = torch.ones((), dtype=value.dtype, device=value.device)
        return cls._make(ch, tracked)

    @classmethod
    def constant(cls, value: torch.Tensor | float) -> Jet:
        """A constant: only the value channel."""
        value = value if torch.is_tensor(value) else torch.as_tensor(value)
        return cls._make({(): value}, frozenset({()}))

    # -- access ---------------------------------------------------------------------------------
    @property
    def value(self) -> torch.Tensor:
        return self._channels[()]

    @property
    def keys(self) -> list[Key]:
        """Tracked multi-indices, sorted by order."""
        return list(_in_order(self._keys))

    @property
    def channels(self) -> dict[Key, torch.Tensor]:
        """The stored (possibly nonzero) channels; tracked keys absent here are zero."""
        return dict(self._channels)

    @property
    def shape(self) -> torch.Size:
        return torch.broadcast_shapes(*(v.shape for v in self._channels.values()))

    @property
    def order(self) -> int:
        return max(len(k) for k in self._keys)

    def __contains__(self, key) -> bool:
        return as_key(key) in self._keys

    def __getitem__(self, key: str | Iterable[str]) -> torch.Tensor:
        """The channel ``∂^key f``.

        A stored channel is returned as stored (it may be a broadcastable lower-dimensional
        tensor, e.g. the 0-d one of a variable); a tracked but absent channel gives zeros of
        ``self.shape``; an untracked key raises ``KeyError``.
        """
        k = as_key(key)
        if k in self._channels:
            return self._channels[k]
        if k in self._keys:
            v = self.value
            return torch.zeros(self.shape, dtype=v.dtype, device=v.device)
        raise KeyError(f"multi-index {k} is not tracked by this jet (tracked: {self.keys})")

    def __repr__(self) -> str:
        stored = [k for k in self.keys if k in self._channels]
        return f"Jet(shape={tuple(self.shape)}, keys={self.keys}, stored={stored})"

    def truncate(self, keys: Iterable[str | Iterable[str]]) -> Jet:
        """The same jet tracking only ``closure(keys)`` (exact: no other channel feeds these)."""
        kept = frozenset(_closure_frozen(frozenset(as_key(k) for k in keys))) & self._keys
        ch = {k: v for k, v in self._channels.items() if k in kept}
        return Jet._make(ch, kept | {()})

    def detach(self) -> Jet:
        return Jet._make({k: v.detach() for k, v in self._channels.items()}, self._keys)

    # -- arithmetic -----------------------------------------------------------------------------
    def __add__(self, other) -> Jet:
        if _is_jet(other):
            ch = dict(self._channels)
            for k, v in other._channels.items():
                ch[k] = ch[k] + v if k in ch else v
            return Jet._make(ch, self._keys | other._keys)
        ch = dict(self._channels)
        ch[()] = ch[()] + other
        return Jet._make(ch, self._keys)

    __radd__ = __add__

    def __neg__(self) -> Jet:
        return Jet._make({k: -v for k, v in self._channels.items()}, self._keys)

    def __sub__(self, other) -> Jet:
        return self + (-other)

    def __rsub__(self, other) -> Jet:
        return (-self) + other

    def __mul__(self, other) -> Jet:
        if not _is_jet(other):
            return Jet._make({k: v * other for k, v in self._channels.items()}, self._keys)
        keys = self._keys | other._keys
        a, b = self._channels, other._channels
        ch: dict[Key, torch.Tensor] = {}
        for alpha in _in_order(keys):
            acc = None
            for beta, rest, coef in leibniz_splits(alpha):
                x, y = a.get(beta), b.get(rest)
                if x is None or y is None:
                    continue
                term = x * y if coef == 1 else (x * y) * coef
                acc = term if acc is None else acc + term
            if acc is not None:
                ch[alpha] = acc
        return Jet._make(ch, keys)

    __rmul__ = __mul__

    def __truediv__(self, other) -> Jet:
        if _is_jet(other):
            return self * other.reciprocal()
        return Jet._make({k: v / other for k, v in self._channels.items()}, self._keys)

    def __rtruediv__(self, other) -> Jet:
        return self.reciprocal() * other

    def __pow__(self, p) -> Jet:
        if isinstance(p, int) and p >= 0:
            out = Jet.constant(torch.ones((), dtype=self.value.dtype, device=self.value.device))
            base = self
            while p:  # square-and-multiply
                if p & 1:
                    out = out * base
                p >>= 1
                if p:
                    base = base * base
            return out
        n = self.order
        v = self.value
        derivs = [v**p]
        coef = 1.0
        for k in range(1, n + 1):
            coef *= p - (k - 1)
            derivs.append(coef * v ** (p - k))
        return self.compose(derivs)

    def square(self) -> Jet:
        return self * self

    # -- differentiation ------------------------------------------------------------------------
    def d(self, *names: str) -> Jet:
        """The jet of ``∂^names f``: channels ``{beta: self[names + beta]}``.

        E.g. ``u.d("t")`` is ``u_t`` carrying whatever derivatives of ``u_t`` ``u`` tracks
        (``u.d("t")["D"] == u[("D", "t")]``).  Raises ``KeyError`` if ``names`` is untracked.
        """
        a = as_key(names)
        if a not in self._keys:
            raise KeyError(f"cannot differentiate by {a}: not tracked (tracked: {self.keys})")
        keys = set()
        ch = {}
        for k in _in_order(self._keys):
            rest = _sub_key(k, a)
            if rest is None:
                continue
            keys.add(rest)
            if k in self._channels:
                ch[rest] = self._channels[k]
        if () not in ch:
            v = self.value
            ch[()] = torch.zeros(self.shape, dtype=v.dtype, device=v.device)
        return Jet._make(ch, frozenset(keys))

    # -- composition with elementwise functions (Faà di Bruno) ---------------------------------
    def compose(self, derivs: Sequence[torch.Tensor]) -> Jet:
        """``f(self)`` given ``derivs = [f(v), f'(v), f''(v), ...]`` at ``v = self.value``.

        ``∂^alpha f(g) = sum over set partitions P of alpha of f^(|P|)(g) prod_{B in P} ∂^B g``.
        ``derivs`` must reach the highest order that a nonzero term needs.
        """
        ch: dict[Key, torch.Tensor] = {}
        src = self._channels
        for alpha in _in_order(self._keys):
            acc = None
            for mult, blocks in faa_di_bruno_terms(alpha):
                factors = [src.get(b) for b in blocks]
                if any(f is None for f in factors):
                    continue
                if len(blocks) >= len(derivs):
                    raise ValueError(
                        f"channel {alpha} needs f^({len(blocks)}); only {len(derivs) - 1} given"
                    )
                term = derivs[len(blocks)]
                for f in factors:
                    term = term * f
                if mult != 1:
                    term = term * mult
                acc = term if acc is None else acc + term
            if acc is not None:
                ch[alpha] = acc
        return Jet._make(ch, self._keys)

    def _apply(self, name: str) -> Jet:
        return self.compose(activation_derivatives(name, self.value, self.order))

    def tanh(self) -> Jet:
        return self._apply("tanh")

    def sigmoid(self) -> Jet:
        return self._apply("sigmoid")

    def exp(self) -> Jet:
        return self._apply("exp")

    def sin(self) -> Jet:
        return self._apply("sin")

    def cos(self) -> Jet:
        return self._apply("cos")

    def softplus(self) -> Jet:
        return self._apply("softplus")

    def log(self) -> Jet:
        v = self.value
        derivs = [torch.log(v)]
        inv = 1.0 / v
        p = inv
        for k in range(1, self.order + 1):
            derivs.append(p * ((-1) ** (k - 1) * math.factorial(k - 1)))
            p = p * inv
        return self.compose(derivs)

    def reciprocal(self) -> Jet:
        v = self.value
        inv = 1.0 / v
        derivs = [inv]
        p = inv
        for k in range(1, self.order + 1):
            p = p * inv
            derivs.append(p * ((-1) ** k * math.factorial(k)))
        return self.compose(derivs)
