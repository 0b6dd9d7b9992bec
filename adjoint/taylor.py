"""Taylor test: check a gradient against the objective it claims to differentiate.

For a smooth J with gradient g, along a direction dm

    r1(eps) = |J(m + eps*dm) - J(m)|                   = O(eps)    (rate 1)
    r2(eps) = |J(m + eps*dm) - J(m) - eps*<g, dm>|     = O(eps^2)  (rate 2, only if g is right)

Halving eps halves r1 and quarters r2; a wrong gradient leaves r2 at rate 1. Once r2 reaches the
round-off in J (about 1e-12 relative, see `roundoff`), its rate means nothing and is left out of
`min_rate`.

    result = taylor_test(problem.objective, problem.gradient, m0)
    print(result)            # table of eps, remainders and rates
    assert result.passed()   # min_rate >= 1.9
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Remainders below ROUNDOFF * max|J| are round-off, not truncation error.
ROUNDOFF = 1e-12


@dataclass(frozen=True)
class TaylorResult:
    """Remainders and observed rates of a Taylor test (see the module docstring)."""

    eps: np.ndarray
    objective: float
    directional_derivative: float
    first: np.ndarray
    second: np.ndarray
    floor: float

    @staticmethod
    def _rates(remainders: np.ndarray, eps: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(remainders[:-1] / remainders[1:]) / np.log(eps[:-1] / eps[1:])

    @property
    def rates_first(self) -> np.ndarray:
        """Observed rates of |J(m+eps dm) - J(m)| between consecutive eps (expected 1)."""
        return self._rates(self.first, self.eps)

    @property
    def rates_second(self) -> np.ndarray:
        """Observed rates of the gradient-corrected remainder (expected 2)."""
        return self._rates(self.second, self.eps)

    @property
    def resolved(self) -> np.ndarray:
        """Which rates_second compare two remainders both above the round-off floor."""
        above = self.second > self.floor
        return above[:-1] & above[1:]

    @property
    def min_rate(self) -> float:
        """Smallest rate of the gradient-corrected remainder above round-off (nan if none)."""
        rates = self.rates_second[self.resolved]
        return float(np.min(rates)) if rates.size else float("nan")

    def passed(self, tol: float = 1.9) -> bool:
        """True when the gradient-corrected remainder converges at rate >= tol."""
        return bool(np.isfinite(self.min_rate) and self.min_rate >= tol)

    def __str__(self) -> str:
        lines = [f"Taylor test: J(m) = {self.objective:.6e}, <g, dm> = "
                 f"{self.directional_derivative:.6e}",
                 f"{'eps':>10}  {'|J(m+eps dm)-J(m)|':>20} {'rate':>6}  "
                 f"{'|... - eps <g,dm>|':>20} {'rate':>6}"]
        rates1, rates2 = self.rates_first, self.rates_second
        for k, eps in enumerate(self.eps):
            rate1 = f"{rates1[k - 1]:6.3f}" if k else " " * 6
            rate2 = " " * 6
            if k:
                rate2 = f"{rates2[k - 1]:6.3f}" if self.resolved[k - 1] else "  (ro)"
            lines.append(f"{eps:10.3e}  {self.first[k]:20.6e} {rate1}  "
                         f"{self.second[k]:20.6e} {rate2}")
        verdict = "PASSED" if self.passed() else "FAILED"
        lines.append(f"min rate (gradient-corrected) = {self.min_rate:.3f}: {verdict}"
                     + ("   [(ro): at round-off, not counted]" if not self.resolved.all()
                        else ""))
        return "\n".join(lines)


def taylor_test(
    J: Callable[[np.ndarray], float],
    grad: Callable[[np.ndarray], np.ndarray],
    m0,
    dm=None,
    eps0: float = 1e-2,
    n: int = 5,
    seed: int = 0,
) -> TaylorResult:
    """Taylor test of `grad` against `J` at `m0` along `dm`.

    Args:
        J: the objective, a function of a 1-D parameter array.
        grad: its claimed gradient (same shape as m0).
        m0: the point at which to test.
        dm: the direction; default a random normal direction (seeded by `seed`) scaled to
            max|dm| = max(1, max|m0|).
        eps0: the largest step; the steps are eps0 * 2^-k, k = 0..n-1.
        n: number of steps (>= 2).
        seed: seed of the random direction.

    Returns:
        TaylorResult with the remainders, `rates_first`, `rates_second`, `min_rate`, `passed()`.
    """
    m0 = np.array(m0, dtype=np.float64)
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    if not eps0 > 0:
        raise ValueError(f"eps0 must be positive, got {eps0}")
    if dm is None:
        direction = np.random.default_rng(seed).standard_normal(m0.shape)
        scale = max(1.0, float(np.max(np.abs(m0)))) if m0.size else 1.0
        dm = direction / np.max(np.abs(direction)) * scale
    dm = np.array(dm, dtype=np.float64)
    if dm.shape != m0.shape:
        raise ValueError(f"dm has shape {dm.shape}, m0 has {m0.shape}")

    J0 = float(J(m0))
    directional = float(np.dot(np.ravel(grad(m0)), np.ravel(dm)))
    eps = eps0 * 0.5 ** np.arange(n)
    values = np.array([float(J(m0 + e * dm)) for e in eps])
    first = np.abs(values - J0)
    second = np.abs(values - J0 - eps * directional)
    floor = ROUNDOFF * max(abs(J0), float(np.max(np.abs(values))))
    return TaylorResult(eps=eps, objective=J0, directional_derivative=directional,
                        first=first, second=second, floor=floor)
