"""Gaussian random fields on [0, 1]: the one sampler used for synthetic unknown functions.

Covariance: the Gaussian (squared-exponential) kernel k(x, y) = variance·exp(−(x−y)²/(2ℓ²)).
A field can be conditioned on its values at x = 0 and x = 1 (exactly, by Gaussian conditioning),
as needed for initial conditions and coefficients with fixed boundary values.

Samples are drawn on a fixed canonical grid of 1001 points and linearly interpolated, so the
same seed gives the same function whatever grid it is evaluated on.
"""

from __future__ import annotations

import numpy as np

CANONICAL_GRID = np.linspace(0.0, 1.0, 1001)
# the Burgers initial conditions (guess seed 0, default truth seed 1): fields that steepen into
# shocks before t = 1 at a = 0.2
BURGERS_GRF = {"length_scale": 0.15, "variance": 0.5}


def grf_samples(n_samples: int = 1, *, length_scale: float = 0.2, variance: float = 0.05,
                mean: float = 0.0, boundary: tuple[float, float] | None = None,
                seed: int | None = None, x: np.ndarray = CANONICAL_GRID) -> np.ndarray:
    """Samples (n_samples, len(x)) of a GRF with the Gaussian kernel; `boundary=(a, b)` conditions
    on f(0) = a, f(1) = b (the end points of `x` must then be 0 and 1)."""
    if length_scale <= 0 or variance <= 0:
        raise ValueError(f"GRF length scale and variance must be > 0, got {length_scale}, "
                         f"{variance}")
    x = np.asarray(x, dtype=np.float64)
    cov = variance * np.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / length_scale**2)
    mu = np.full(len(x), float(mean))
    if boundary is not None:
        if not (np.isclose(x[0], 0.0) and np.isclose(x[-1], 1.0)):
            raise ValueError("conditioning on boundary values needs a grid from 0 to 1")
        ends = [0, len(x) - 1]
        k_ends = cov[:, ends]
        gain = np.linalg.solve(cov[np.ix_(ends, ends)], k_ends.T).T  # (n, 2)
        mu = mu + gain @ (np.asarray(boundary, dtype=np.float64) - mu[ends])
        cov = cov - gain @ k_ends.T
    # eigh instead of Cholesky: the smooth kernel's covariance is numerically singular.
    eigenvalues, eigenvectors = np.linalg.eigh(0.5 * (cov + cov.T))
    factor = eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))
    rng = np.random.default_rng(seed)
    samples = mu + rng.standard_normal((n_samples, len(x))) @ factor.T
    if boundary is not None:
        samples[:, 0], samples[:, -1] = boundary
    return samples


def grf(x: np.ndarray, seed: int = 0, length_scale: float = 0.2, variance: float = 0.05,
        mean: float = 0.0, left: float | None = 0.0, right: float | None = 0.0) -> np.ndarray:
    """One GRF sample evaluated at x (seeded, grid-independent). By default it vanishes at
    x = 0 and x = 1; pass left=None, right=None for an unconditioned field."""
    boundary = None if left is None or right is None else (left, right)
    sample = grf_samples(1, length_scale=length_scale, variance=variance, mean=mean,
                         boundary=boundary, seed=seed)[0]
    return np.interp(np.asarray(x, dtype=np.float64), CANONICAL_GRID, sample)
