"""Prior distributions of scalar parameters, as objects.

Each prior gives the normalised log-density `log_prob(x)` (numpy arrays and floats, or torch
tensors, so a sampler can differentiate it), its support `(lo, hi)`, and seeded draws
`sample(rng, size)`. Outside the support `log_prob` is −inf.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_INF = float("inf")


def array_namespace(x):
    """The array namespace of x: torch for tensors, numpy otherwise (torch is never imported
    here, so the priors work without it)."""
    if type(x).__module__.startswith("torch"):
        import torch

        return torch
    return np


def _inside(x, lo: float, hi: float, log_density):
    """log_density(x) on [lo, hi], −inf outside (evaluated at a safe point there, so that no
    log of a negative number leaks NaN into gradients)."""
    xp = array_namespace(x)
    if xp is np:
        x = np.asarray(x, dtype=np.float64)
    inside = (x >= lo) & (x <= hi)
    values = xp.where(inside, log_density(xp.where(inside, x, _safe_point(lo, hi))), -_INF)
    return float(values) if xp is np and values.ndim == 0 else values


def _safe_point(lo: float, hi: float) -> float:
    if math.isfinite(lo) and math.isfinite(hi):
        return (lo + hi) / 2
    if math.isfinite(lo):
        return lo + 1.0
    return hi - 1.0 if math.isfinite(hi) else 0.0


class Prior:
    support: tuple[float, float] = (-_INF, _INF)

    def log_prob(self, x):
        raise NotImplementedError

    def sample(self, rng: np.random.Generator, size=None):
        raise NotImplementedError

    def describe(self) -> str:
        fields = ", ".join(f"{k}={v:g}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


@dataclass(frozen=True)
class Uniform(Prior):
    lo: float
    hi: float

    def __post_init__(self):
        if not self.lo < self.hi:
            raise ValueError(f"Uniform: need lo < hi, got {self.lo}, {self.hi}")

    @property
    def support(self):
        return (self.lo, self.hi)

    def log_prob(self, x):
        width = math.log(self.hi - self.lo)
        return _inside(x, self.lo, self.hi, lambda v: 0.0 * v - width)

    def sample(self, rng, size=None):
        return rng.uniform(self.lo, self.hi, size)


@dataclass(frozen=True)
class Normal(Prior):
    mean: float
    sd: float

    def log_prob(self, x):
        return -0.5 * ((x - self.mean) / self.sd) ** 2 - math.log(self.sd * math.sqrt(2 * math.pi))

    def sample(self, rng, size=None):
        return rng.normal(self.mean, self.sd, size)


@dataclass(frozen=True)
class LogNormal(Prior):
    """log x ~ Normal(mu, sigma)."""

    mu: float
    sigma: float

    @property
    def support(self):
        return (0.0, _INF)

    def log_prob(self, x):
        xp = array_namespace(x)
        norm = math.log(self.sigma * math.sqrt(2 * math.pi))
        return _inside(x, 0.0, _INF, lambda v: -0.5 * ((xp.log(v) - self.mu) / self.sigma) ** 2
                       - xp.log(v) - norm)

    def sample(self, rng, size=None):
        return rng.lognormal(self.mu, self.sigma, size)


@dataclass(frozen=True)
class Gamma(Prior):
    """Density rate^shape x^(shape−1) e^(−rate x) / Γ(shape)."""

    shape: float
    rate: float

    @property
    def support(self):
        return (0.0, _INF)

    def log_prob(self, x):
        xp = array_namespace(x)
        norm = self.shape * math.log(self.rate) - math.lgamma(self.shape)
        return _inside(x, 0.0, _INF,
                       lambda v: norm + (self.shape - 1) * xp.log(v) - self.rate * v)

    def sample(self, rng, size=None):
        return rng.gamma(self.shape, 1.0 / self.rate, size)


def _normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


@dataclass(frozen=True)
class TruncatedNormal(Prior):
    """Normal(mean, sd) restricted to [lo, hi] and renormalised."""

    mean: float
    sd: float
    lo: float
    hi: float

    def __post_init__(self):
        if not self.lo < self.hi:
            raise ValueError(f"TruncatedNormal: need lo < hi, got {self.lo}, {self.hi}")

    @property
    def support(self):
        return (self.lo, self.hi)

    def _mass(self) -> float:
        return (_normal_cdf((self.hi - self.mean) / self.sd)
                - _normal_cdf((self.lo - self.mean) / self.sd))

    def log_prob(self, x):
        norm = math.log(self.sd * math.sqrt(2 * math.pi) * self._mass())
        return _inside(x, self.lo, self.hi,
                       lambda v: -0.5 * ((v - self.mean) / self.sd) ** 2 - norm)

    def sample(self, rng, size=None):
        """Inverse-CDF draws (exact; no rejection loop)."""
        from scipy.special import ndtr, ndtri

        a, b = ndtr((self.lo - self.mean) / self.sd), ndtr((self.hi - self.mean) / self.sd)
        return self.mean + self.sd * ndtri(a + (b - a) * rng.random(size))
