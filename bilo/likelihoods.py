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

    def points(self, obs_points):
        """Where u is needed to evaluate the likelihood: the observation points by default."""
        return obs_points

    def value(self, u, observed, theta=None):
        raise NotImplementedError

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
            yield z, (mask.to(u.dtype) if array_namespace(u) is not np else mask.astype(np.float64))

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

    def value(self, u, observed, theta=None):
        return self.negative_log(u, observed, theta) / self.scale(len(observed))

    def describe(self) -> str:
        return f"SegmentationMasks(noise={self.noise}, slope={self.slope:g})"
