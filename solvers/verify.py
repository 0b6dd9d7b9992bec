"""Grid-convergence checks: observed orders of accuracy from errors on a sequence of grids.

Norms of an error vector e on a grid of spacing h (all are scaled so that they approximate the
continuous norms on a unit interval and are comparable across grids):
    "l2":  sqrt(h * sum(e^2))
    "l1":  h * sum(|e|)
    "max": max(|e|)
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

NORMS = ("l2", "l1", "max")


def observed_orders(hs, errors) -> np.ndarray:
    """Observed orders p_i = log(e_i / e_{i+1}) / log(h_i / h_{i+1}) between successive grids."""
    hs = np.asarray(hs, dtype=np.float64)
    errors = np.asarray(errors, dtype=np.float64)
    if hs.ndim != 1 or hs.shape != errors.shape or hs.size < 2:
        raise ValueError("hs and errors must be 1-D arrays of the same length >= 2")
    if not (np.all(np.isfinite(hs)) and np.all(np.isfinite(errors))):
        raise ValueError("hs and errors must be finite")
    if np.any(hs <= 0.0) or np.any(errors <= 0.0):
        raise ValueError("hs and errors must be positive (an exact zero error has no order)")
    if np.any(hs[:-1] == hs[1:]):
        raise ValueError("successive grid spacings must differ")
    return np.log(errors[:-1] / errors[1:]) / np.log(hs[:-1] / hs[1:])


def grid_norm(error, h: float, norm: str = "l2") -> float:
    """Norm of a grid function `error` on a grid of spacing h (see the module docstring)."""
    error = np.abs(np.asarray(error, dtype=np.float64))
    if norm == "l2":
        return float(np.sqrt(h * np.sum(error**2)))
    if norm == "l1":
        return float(h * np.sum(error))
    if norm == "max":
        return float(np.max(error))
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


@dataclass(frozen=True, eq=False)  # numpy fields: compare by identity
class ConvergenceStudy:
    """Errors of a solver on successively refined grids and the observed orders between them."""

    resolutions: tuple
    hs: np.ndarray
    errors: np.ndarray
    orders: np.ndarray

    @property
    def min_order(self) -> float:
        """The smallest observed order: the figure a test should assert on."""
        return float(np.min(self.orders))

    def __str__(self) -> str:
        def fmt(values, spec):
            return ",".join(format(v, spec) for v in values)

        return (
            f"h={fmt(self.hs, '.3g')} err={fmt(self.errors, '.3e')} order={fmt(self.orders, '.2f')}"
        )


def convergence_study(
    solve: Callable[[int], tuple[np.ndarray, np.ndarray]],
    exact: Callable[[np.ndarray], np.ndarray],
    resolutions: Sequence[int],
    norm: str = "l2",
) -> ConvergenceStudy:
    """Run `solve(n)` for every resolution n and measure its error against `exact`.

    `solve(n)` returns (grid, values) on a uniform 1-D grid (nodes or cell centres);
    h is taken as the grid spacing grid[1] - grid[0]. `exact(grid)` returns the exact values.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if len(resolutions) < 2:
        raise ValueError("a convergence study needs at least two resolutions")
    hs, errors = [], []
    for n in resolutions:
        grid, values = solve(n)
        grid = np.asarray(grid, dtype=np.float64)
        h = grid[1] - grid[0]
        hs.append(h)
        errors.append(grid_norm(np.asarray(values) - exact(grid), h, norm))
    hs, errors = np.array(hs), np.array(errors)
    return ConvergenceStudy(tuple(resolutions), hs, errors, observed_orders(hs, errors))
