"""Observation models p(d | u, θ), as objects.

A likelihood turns u at the observation points into the data term of the objective. It gives

* `value(u, observed, theta)`: the misfit that every optimiser minimises, −log L(d | u, θ)
  divided by `scale(n)` (plus a constant): for Gaussian noise mean((u − d)²), whatever σ is,
  so that weights and learning rates do not depend on the noise level;
* `negative_log(u, observed, theta)`: −log L up to a constant independent of u and θ, what a
  sampler needs (it equals scale(n)·value + const);
* `gradient(u, observed, theta)`: ∂value/∂u (numpy), the adjoint's source term.

u and observed are numpy arrays (the solvers, the adjoint) or torch tensors (the networks): the
same code serves both. `points(obs_points)` says where u is needed; a point-process likelihood
also needs u on quadrature points, not only at the events.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bilo.priors import array_namespace


class Likelihood:
    # parameters of the observation model that the upper level infers (e.g. thresholds)
    parameters: tuple[str, ...] = ()
    # the data file's field it reads: "observations" (values of u at points) or "events"
    data: str = "observations"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.value is Likelihood.value and cls.negative_log is Likelihood.negative_log:
            raise TypeError(f"{cls.__name__}: a likelihood defines value or negative_log")

    def points(self, obs_points):
        """Where u is needed to evaluate the likelihood: the observation points by default."""
        return obs_points

    # a likelihood defines `scale` and one of `value` (the misfit) and `negative_log`; each
    # of the two is the other's through −log L = scale·value
    def value(self, u, observed, theta=None):
        return self.negative_log(u, observed, theta) / self.scale(len(observed))

    def negative_log(self, u, observed, theta=None):
        return self.scale(len(observed)) * self.value(u, observed, theta)

    def scale(self, n: int) -> float:
        raise NotImplementedError

    def gradient(self, u, observed, theta=None) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} has no gradient for the adjoint")

    def describe(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class Gaussian(Likelihood):
    """d_i = u(x_i) + ε_i, ε_i ~ N(0, σ²) independent. σ = None: unknown, profiled out
    (−log L = n/2·log mean((u − d)²), its minimum over σ)."""

    sigma: float | None = None

    def value(self, u, observed, theta=None):
        if array_namespace(u) is np:
            return float(np.mean((np.asarray(u) - np.asarray(observed)) ** 2))
        return (u - observed).square().mean()

    def scale(self, n: int) -> float:
        if not self.sigma:
            raise ValueError("Gaussian likelihood: σ is unknown (or 0, noise-free data); give "
                             "it to evaluate −log L")
        return n / (2.0 * self.sigma**2)

    def negative_log(self, u, observed, theta=None):
        if self.sigma:
            return self.scale(len(observed)) * self.value(u, observed)
        xp = array_namespace(u)
        return 0.5 * len(observed) * xp.log(xp.asarray(self.value(u, observed)))

    def gradient(self, u, observed, theta=None) -> np.ndarray:
        residual = np.asarray(u, dtype=np.float64) - np.asarray(observed, dtype=np.float64)
        return 2.0 * residual / residual.size

    def describe(self) -> str:
        return f"Gaussian(sigma={'estimated' if not self.sigma else f'{self.sigma:g}'})"


def _sigmoid(z):
    xp = array_namespace(z)
    return xp.sigmoid(z) if xp is not np else 0.5 * (1.0 + np.tanh(0.5 * z))


def _softplus(z):
    xp = array_namespace(z)
    if xp is np:
        return np.logaddexp(0.0, z)
    import torch

    return torch.nn.functional.softplus(z)


def _indicator(mask, u):
    """A boolean mask as 0/1 in the array type and dtype of u."""
    return mask.to(u.dtype) if array_namespace(u) is not np else mask.astype(np.float64)


@dataclass(frozen=True)
class SegmentationMasks(Likelihood):
    """Nested masks coded in one value per pixel (0: outside all, k: inside regions 1..k), each
    region s observed through the link p_s = sigmoid(slope·(u − u_c^s)) with its threshold
    u_c^s an inferred parameter (`thresholds` maps each region's code to its parameter name).

    noise = "bernoulli": mask_s ~ Bernoulli(p_s), −log L = Σ_s Σ_pixels BCE; the misfit is its
    mean over pixels. noise = "relative": Gaussian on p_s with a variance proportional to the
    region's size, −log L = Σ_s ‖p_s − mask_s‖² / ‖mask_s‖² (the BiLO GBM paper's eq. 36: the
    small core weighs as much as the whole tumour); the misfit is that sum.
    """

    thresholds: dict[int, str] = field(default_factory=dict)
    slope: float = 20.0
    noise: str = "relative"

    def __post_init__(self):
        if self.noise not in ("relative", "bernoulli"):
            raise ValueError(f"SegmentationMasks: noise is 'relative' or 'bernoulli', not "
                             f"'{self.noise}'")

    @property
    def parameters(self) -> tuple[str, ...]:
        return tuple(self.thresholds.values())

    def _terms(self, u, observed, theta):
        for label, name in self.thresholds.items():
            z = self.slope * (u - theta[name])
            mask = observed >= label
            yield z, _indicator(mask, u)

    def negative_log(self, u, observed, theta=None):
        total = 0.0
        for z, mask in self._terms(u, observed, theta):
            if self.noise == "bernoulli":
                total = total + (_softplus(z) - mask * z).sum()
            else:
                size = mask.sum()
                size = max(float(size), 1.0) if array_namespace(u) is np else size.clamp(min=1.0)
                total = total + ((_sigmoid(z) - mask) ** 2).sum() / size
        return total

    def scale(self, n: int) -> float:
        return float(n) if self.noise == "bernoulli" else 1.0

    def describe(self) -> str:
        return f"SegmentationMasks(noise={self.noise}, slope={self.slope:g})"


def grid_neighbours(ij) -> np.ndarray:
    """(n, 4) rows of each pixel's neighbours along −i, +i, −j, +j among the pixels `ij` (n, 2
    integer indices on a grid); −1 where that neighbour is not among them."""
    ij = np.asarray(ij, dtype=np.int64)
    row = {(int(i), int(j)): k for k, (i, j) in enumerate(ij)}
    steps = ((-1, 0), (1, 0), (0, -1), (0, 1))
    return np.array([[row.get((int(i) + di, int(j) + dj), -1) for di, dj in steps]
                     for i, j in ij], dtype=np.int64).reshape(len(ij), 4)


@dataclass(frozen=True)
class MaskContours(Likelihood):
    """Nested masks (coded as in :class:`SegmentationMasks`) as level sets of u whose contours
    are drawn with a position error: a pixel x is labelled inside region s with probability
    F(d_s(x)/σ), where d_s = (u − u_c^s)/|∇u| is x's signed distance from the contour
    {u = u_c^s} to first order and F the logistic distribution function of unit sd.

    Unlike a link in u (sigmoid(slope·(u − u_c))), this one does not depend on how steep u is
    at the contour, so hard, noise-free masks do not favour steep profiles (docs/gbm.md).
    The pixels are a grid: `neighbours` (rows × 4, :func:`grid_neighbours`, −1 where missing)
    gives |∇u| by central differences (one-sided at the edge), `spacing` the grid steps along
    its two axes and `sd` the contour's position error σ, both in the coordinates' units.
    |∇u| is floored at `floor` per spacing (smoothly), so that where u is flat (far outside,
    deep inside) d is large and the label certain. −log L sums the binary cross-entropies of
    every pixel and mask; the misfit is its mean over pixels.
    """

    thresholds: dict[int, str] = field(default_factory=dict)
    neighbours: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64),
                                   compare=False, repr=False)
    spacing: tuple[float, float] = (1.0, 1.0)
    sd: float = 1.0
    floor: float = 0.01

    def __post_init__(self):
        neighbours = np.asarray(self.neighbours, dtype=np.int64)
        if neighbours.ndim != 2 or neighbours.shape[1] != 4:
            raise ValueError(f"MaskContours: neighbours must be (rows, 4), got "
                             f"{neighbours.shape}")
        if not (self.sd > 0 and min(self.spacing) > 0):
            raise ValueError("MaskContours: sd and spacing must be > 0")
        own = np.arange(len(neighbours))
        axes = []
        for axis, h in enumerate(self.spacing):  # (plus, minus, 1/(their distance)) per axis
            minus, plus = neighbours[:, 2 * axis], neighbours[:, 2 * axis + 1]
            span = h * ((minus >= 0).astype(np.float64) + (plus >= 0))
            axes.append((np.where(plus >= 0, plus, own), np.where(minus >= 0, minus, own),
                         np.divide(1.0, span, out=np.zeros_like(span), where=span > 0)))
        object.__setattr__(self, "_axes", axes)

    @property
    def parameters(self) -> tuple[str, ...]:
        return tuple(self.thresholds.values())

    def _gradient_norm(self, u):
        xp = array_namespace(u)
        total = (self.floor / min(self.spacing)) ** 2
        for plus, minus, inverse_span in self._axes:
            if xp is not np:
                plus, minus = (xp.as_tensor(i, device=u.device) for i in (plus, minus))
            total = total + ((u[plus] - u[minus]) * _like(inverse_span, u)) ** 2
        return total ** 0.5

    def negative_log(self, u, observed, theta=None):
        if len(u) != len(self.neighbours):
            raise ValueError(f"MaskContours: {len(u)} rows of u, the grid has "
                             f"{len(self.neighbours)}")
        grad = self._gradient_norm(u)
        total = 0.0
        for label, name in self.thresholds.items():
            # logistic of scale σ·√3/π has sd σ
            z = (u - theta[name]) / grad * (np.pi / (np.sqrt(3.0) * self.sd))
            mask = _indicator(observed >= label, u)
            total = total + (_softplus(z) - mask * z).sum()
        return total

    def scale(self, n: int) -> float:
        return float(n)

    def describe(self) -> str:
        return f"MaskContours(sd={self.sd:g}, floor={self.floor:g})"


@dataclass(frozen=True)
class ScaledDensity(Likelihood):
    """A map proportional to u with an unknown scale c (parameter `scale_param`) and noise
    relative to it: d_i = c·(u_i + σ·ε_i), ε_i ~ N(0, 1) — a PET-like uptake map of the tumour
    cells. −log L = Σ_i [(d_i/c − u_i)²/(2σ²) + log c] (the log c: the density of d, not of
    d/c); the misfit is its mean over the rows."""

    scale_param: str = "pet_scale"
    sigma: float = 0.05

    @property
    def parameters(self) -> tuple[str, ...]:
        return (self.scale_param,)

    def negative_log(self, u, observed, theta=None):
        c = theta[self.scale_param]
        xp = array_namespace(u)
        log_c = float(np.log(c)) if xp is np else xp.log(c)
        return (((observed / c - u) ** 2).sum() / (2.0 * self.sigma**2)
                + len(observed) * log_c)

    def scale(self, n: int) -> float:
        return float(n)

    def describe(self) -> str:
        return f"ScaledDensity({self.scale_param}, sigma={self.sigma:g})"


@dataclass(frozen=True)
class Stacked(Likelihood):
    """Observations of several kinds, stacked row-wise: `parts` is ((likelihood, rows), ...) in
    the order of the rows. Independent given u, so −log L is the sum of the parts' and the
    misfit is that sum (scale 1): the parts weigh as their likelihoods say."""

    parts: tuple = ()

    @property
    def parameters(self) -> tuple[str, ...]:
        names = []
        for likelihood, _ in self.parts:
            names += [n for n in likelihood.parameters if n not in names]
        return tuple(names)

    def negative_log(self, u, observed, theta=None):
        total, start = 0.0, 0
        for likelihood, rows in self.parts:
            total = total + likelihood.negative_log(u[start:start + rows],
                                                    observed[start:start + rows], theta)
            start += rows
        if start != len(observed):
            raise ValueError(f"Stacked likelihood: parts cover {start} rows, the data have "
                             f"{len(observed)}")
        return total

    def scale(self, n: int) -> float:
        return 1.0

    def describe(self) -> str:
        return "Stacked(" + ", ".join(f"{lk.describe()} × {rows}" for lk, rows in self.parts) + ")"


def _like(values: np.ndarray, u):
    """`values` (numpy) in the array type, dtype and device of u."""
    if array_namespace(u) is np:
        return values
    import torch

    return torch.as_tensor(values, dtype=u.dtype, device=u.device)


def gauss_legendre_pieces(breaks, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of n-point Gauss–Legendre on each interval between consecutive
    `breaks` (exact for polynomials of degree 2n − 1 on each piece)."""
    reference, weights = np.polynomial.legendre.leggauss(n)
    nodes, all_weights = [], []
    for a, b in zip(breaks[:-1], breaks[1:], strict=True):
        nodes.append(0.5 * (b - a) * reference + 0.5 * (a + b))
        all_weights.append(0.5 * (b - a) * weights)
    return np.concatenate(nodes), np.concatenate(all_weights)


def _trapezoid_weights(x: np.ndarray) -> np.ndarray:
    h = np.diff(x)
    w = np.zeros_like(x)
    w[:-1] += 0.5 * h
    w[1:] += 0.5 * h
    return w


def simpson_weights(x: np.ndarray) -> np.ndarray:
    """Weights w with Σ w_i f(x_i) ≈ ∫ f over [x_0, x_n] on evenly spaced nodes: composite
    Simpson (4th order for smooth f), the last three intervals by Simpson's 3/8 rule when the
    number of intervals is odd; 1 interval: the trapezoid rule. Uneven nodes: the trapezoid
    rule (2nd order)."""
    x = np.asarray(x, dtype=np.float64)
    intervals = x.size - 1
    h = np.diff(x)
    if intervals < 2 or np.ptp(h) > 1e-9 * np.mean(h):
        return _trapezoid_weights(x)
    h = float(np.mean(h))
    w = np.zeros_like(x)
    simpson = intervals if intervals % 2 == 0 else intervals - 3
    if simpson:
        pattern = np.full(simpson + 1, 2.0)
        pattern[1::2], pattern[[0, -1]] = 4.0, 1.0
        w[:simpson + 1] += h / 3.0 * pattern
    if simpson < intervals:
        w[simpson:] += 3.0 * h / 8.0 * np.array([1.0, 3.0, 3.0, 1.0])
    return w


@dataclass(frozen=True)
class PoissonProcess(Likelihood):
    """Event positions q_i pooled over M snapshots, each snapshot a spatial Poisson process on
    [0, 1] with intensity u (e.g. mRNA particles, paper Part I §3.2):

        −log L(u) = M ∫₀¹ u dx − Σ_i log u(q_i)   (+ Σ_j log N_j!, independent of u).

    `observed` is the data file's `solvers.exchange.Events` (positions, snapshot indices, M).
    The misfit `value` is −log L / M (per snapshot). u has a kink at `cusp` (the point source
    z; None: smooth), so both quadratures of ∫u split the interval there:

    * for u at any points (a network): `points(positions)` lists the Gauss–Legendre nodes
      (`n_gauss` on [0, z] and on [z, 1], spectrally accurate on each smooth piece) and then
      the events; `value(u, events)` takes u at those points (numpy or torch, e.g. the
      network's output, differentiable), `gradient` its derivative w.r.t. them;
    * for nodal values on a grid (the FDM solver, the adjoint): `grid_value(x, u, events)`
      gives the misfit and its gradient w.r.t. the nodal values: composite Simpson on each side
      of z (4th order; z must be a node, else the trapezoid rule, 2nd order), u(q_i) by linear
      interpolation between nodes.

    u must be positive at every event (log u); a non-positive value gives +inf.
    """

    cusp: float | None = 0.5
    n_gauss: int = 32
    data = "events"  # a class attribute, not a field

    def quadrature(self) -> tuple[np.ndarray, np.ndarray]:
        """Nodes and weights for ∫₀¹ on [0, z] and [z, 1] (Gauss–Legendre, `n_gauss` each)."""
        breaks = [0.0, 1.0] if self.cusp is None else [0.0, float(self.cusp), 1.0]
        return gauss_legendre_pieces(breaks, self.n_gauss)

    def points(self, obs_points):
        nodes, _ = self.quadrature()
        positions = np.asarray(obs_points, dtype=np.float64).reshape(-1, 1)
        return np.concatenate([nodes[:, None], positions])

    def scale(self, n: int) -> float:
        """−log L = scale·value with n the number of snapshots M."""
        return float(n)

    def negative_log(self, u, observed, theta=None):
        _, weights = self.quadrature()
        n_quad = weights.size
        at_events = u[n_quad:]
        if len(at_events) != len(observed.positions):
            raise ValueError(f"PoissonProcess: u at {len(u)} points, expected {n_quad} "
                             f"quadrature nodes and {len(observed.positions)} events "
                             "(see points())")
        xp = array_namespace(u)
        integral = (_like(weights, u) * u[:n_quad]).sum()
        if xp is np:
            at_events = np.asarray(at_events, dtype=np.float64)
            if at_events.min(initial=np.inf) <= 0:
                return np.inf
            return float(observed.n_snapshots * integral - np.log(at_events).sum())
        return observed.n_snapshots * integral - xp.log(at_events).sum()

    def value(self, u, observed, theta=None):
        return self.negative_log(u, observed, theta) / observed.n_snapshots

    def gradient(self, u, observed, theta=None) -> np.ndarray:
        _, weights = self.quadrature()
        u = np.asarray(u, dtype=np.float64)
        return np.concatenate([weights, -1.0 / (observed.n_snapshots * u[weights.size:])])

    def grid_weights(self, x: np.ndarray) -> np.ndarray:
        """Quadrature weights for nodal values on the grid x (see the class docstring)."""
        x = np.asarray(x, dtype=np.float64)
        if self.cusp is not None:
            j = int(np.argmin(np.abs(x - self.cusp)))
            if 0 < j < x.size - 1 and abs(x[j] - self.cusp) <= 1e-12 * (x[-1] - x[0]):
                w = np.zeros_like(x)
                w[:j + 1] += simpson_weights(x[:j + 1])
                w[j:] += simpson_weights(x[j:])
                return w
            return _trapezoid_weights(x)
        return simpson_weights(x)

    def grid_value(self, x: np.ndarray, u: np.ndarray, observed) -> tuple[float, np.ndarray]:
        """(−log L / M, its gradient w.r.t. the nodal values u) for u on the grid x."""
        x, u = np.asarray(x, dtype=np.float64), np.asarray(u, dtype=np.float64)
        weights = self.grid_weights(x)
        q = np.asarray(observed.positions, dtype=np.float64).reshape(-1)
        low = np.clip(np.searchsorted(x, q, side="right") - 1, 0, x.size - 2)
        s = np.clip((q - x[low]) / (x[low + 1] - x[low]), 0.0, 1.0)
        at_events = (1.0 - s) * u[low] + s * u[low + 1]
        m = observed.n_snapshots
        gradient = weights.copy()
        if at_events.min(initial=np.inf) <= 0:
            return np.inf, gradient
        value = float(weights @ u - np.log(at_events).sum() / m)
        source = -1.0 / (m * at_events)
        np.add.at(gradient, low, (1.0 - s) * source)
        np.add.at(gradient, low + 1, s * source)
        return value, gradient

    def describe(self) -> str:
        return f"PoissonProcess(cusp={self.cusp}, n_gauss={self.n_gauss})"
