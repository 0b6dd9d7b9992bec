"""What every adjoint problem shares, and L-BFGS-B optimisation.

An :class:`AdjointProblem` maps a parameter vector m to the objective J(m) (data misfit plus
regularisation) and its gradient, computed by the discrete adjoint of the reference solver: a
gradient costs one forward solve (shared with J at the same m) and one backward solve. The data
term comes from a misfit object (a problem's likelihood: `value(predicted, observed)` and its
gradient), so J is the same objective the networks minimise. A problem declaration
(`bilo/problems/`) builds its adjoint from a data file; the `adjoint` method fits it.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse
from scipy.optimize import minimize as scipy_minimize

# Points may lie this far (relative to the grid's length) outside the grid and are clamped.
_GRID_TOLERANCE = 1e-12


def interpolation_matrix(points, grids: tuple[np.ndarray, ...]) -> scipy.sparse.csr_matrix:
    """Sparse matrix Q with (Q @ u.ravel())[i] = u at points[i] by multilinear interpolation.

    `u` has one axis per grid (shape tuple(len(g) for g in grids)); `points` has one column per
    grid in the same order. Exact at grid nodes; raises ValueError for points off the grid.
    """
    points = np.atleast_2d(np.asarray(points, dtype=np.float64))
    if points.shape[1] != len(grids):
        raise ValueError(f"points have {points.shape[1]} columns, expected {len(grids)}")
    shape = tuple(len(g) for g in grids)
    n = points.shape[0]
    corner_index = [np.zeros(n, dtype=np.int64)]
    corner_weight = [np.ones(n)]
    for axis, grid in enumerate(grids):
        grid = np.asarray(grid, dtype=np.float64)
        coords = points[:, axis]
        tolerance = _GRID_TOLERANCE * (grid[-1] - grid[0])
        if np.any(coords < grid[0] - tolerance) or np.any(coords > grid[-1] + tolerance):
            raise ValueError(f"observation coordinate {axis} outside [{grid[0]}, {grid[-1]}]")
        low = np.clip(np.searchsorted(grid, coords, side="right") - 1, 0, grid.size - 2)
        weight_high = np.clip((coords - grid[low]) / (grid[low + 1] - grid[low]), 0.0, 1.0)
        stride = int(np.prod(shape[axis + 1:]))
        corner_index = [i + (low + s) * stride for i in corner_index for s in (0, 1)]
        corner_weight = [w * ww for w in corner_weight for ww in (1.0 - weight_high, weight_high)]
    rows = np.tile(np.arange(n), len(corner_index))
    return scipy.sparse.csr_matrix(
        (np.concatenate(corner_weight), (rows, np.concatenate(corner_index))),
        shape=(n, int(np.prod(shape))))


def points_and_values(points, values, name: str) -> tuple[np.ndarray, np.ndarray]:
    """1-D observation coordinates as (n,) (from (n,) or (n, 1)) and the observed values,
    checked to match; `name` is the coordinates' argument name in the messages."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim == 2 and points.shape[1] == 1:
        points = points[:, 0]
    if points.ndim != 1:
        raise ValueError(f"{name} must have shape (n,) or (n, 1), got {points.shape}")
    values = np.asarray(values, dtype=np.float64)
    if values.shape != points.shape:
        raise ValueError(f"{points.size} observation points but values of shape "
                         f"{values.shape}")
    return points, values


def gradient_energy(values: np.ndarray, h) -> tuple[float, np.ndarray]:
    """∫|v'|^2 dx of the piecewise-linear function with nodal `values` and node spacing `h` (a
    number, or one per interval), and its gradient."""
    slopes = np.diff(values) / h
    gradient = np.zeros_like(values)
    gradient[:-1] -= 2.0 * slopes
    gradient[1:] += 2.0 * slopes
    return float(np.sum(h * slopes**2)), gradient


class AdjointProblem(ABC):
    """J(m) and its discrete-adjoint gradient; counts forward and adjoint solves.

    Subclasses set `names` (the scalar parameters, in the order of m) or `function` (the name of
    the nodal function m holds, with its nodes in `x`), and implement `_solve(m)` (the forward
    solve, returning whatever the backward sweep needs), `_objective(m, state)` and
    `_gradient(m, state)`. The last forward state is cached, so J and its gradient at the same m
    cost one forward solve.
    """

    names: tuple[str, ...] = ()
    function: str | None = None

    def __init__(self) -> None:
        self.n_forward_solves = 0
        self.n_adjoint_solves = 0
        self._cached_m: np.ndarray | None = None
        self._cached_state = None
        self._cached_objective: float | None = None
        self._cached_gradient: np.ndarray | None = None

    @abstractmethod
    def _solve(self, m: np.ndarray):
        """Forward solve at m; returns the state the objective and the adjoint need."""

    @abstractmethod
    def _objective(self, m: np.ndarray, state) -> float:
        """J at m from its forward state."""

    @abstractmethod
    def _gradient(self, m: np.ndarray, state) -> np.ndarray:
        """dJ/dm by one backward (adjoint) solve from the forward state."""

    @abstractmethod
    def initial_guess(self) -> np.ndarray:
        """The default starting point."""

    def bounds(self) -> list[tuple[float | None, float | None]] | None:
        """L-BFGS-B bounds per entry of m (None: unbounded)."""
        return None

    def describe(self, m: np.ndarray) -> dict[str, float]:
        """Scalars to print and record per iteration: the parameters of a scalar problem."""
        return {name: float(v) for name, v in zip(self.names, m, strict=True)} if self.names else {}

    def _state(self, m) -> tuple[np.ndarray, object]:
        m = np.array(m, dtype=np.float64).ravel()
        if self._cached_m is None or not np.array_equal(m, self._cached_m):
            state = self._solve(m)
            self.n_forward_solves += 1
            self._cached_m, self._cached_state = m.copy(), state
            self._cached_objective = self._cached_gradient = None
        return m, self._cached_state

    def objective(self, m) -> float:
        """J(m): one forward solve (none if m was the last point solved)."""
        m, state = self._state(m)
        if self._cached_objective is None:
            self._cached_objective = float(self._objective(m, state))
        return self._cached_objective

    def gradient(self, m) -> np.ndarray:
        """dJ/dm by the discrete adjoint: one forward and one backward solve (unless cached)."""
        m, state = self._state(m)
        if self._cached_gradient is None:
            self._cached_gradient = np.asarray(self._gradient(m, state), dtype=np.float64)
            self.n_adjoint_solves += 1
        return self._cached_gradient.copy()

    def objective_and_gradient(self, m) -> tuple[float, np.ndarray]:
        return self.objective(m), self.gradient(m)


class GridAdjointProblem(AdjointProblem):
    """An adjoint problem whose forward solution lives on a tensor grid (the 1-D FDM models):
    `predict` interpolates it at any points, as the observations are."""

    @abstractmethod
    def solution(self, m) -> tuple[np.ndarray, ...]:
        """(x, u) for a steady problem, (x, t, u) with u[time, node] for a time-dependent one."""

    def predict(self, m, points) -> np.ndarray:
        """u at points (n, d), columns x[, t], interpolated as the observations are."""
        *axes, u = self.solution(m)
        points = np.asarray(points, dtype=np.float64).reshape(-1, len(axes))
        # u is stored time-major, so the grids go (t, x)
        return interpolation_matrix(points[:, ::-1], tuple(reversed(axes))) @ u.ravel()


@dataclass
class AdjointResult:
    """Outcome of :func:`minimize`."""

    m: np.ndarray
    objective: float
    gradient_norm: float
    iterations: int
    n_forward_solves: int
    n_adjoint_solves: int
    wall_s: float
    converged: bool
    message: str
    trajectory: list[dict] = field(default_factory=list)


def minimize(
    problem: AdjointProblem,
    m0=None,
    *,
    maxiter: int = 5000,
    ftol: float = 1e-15,
    gtol: float = 1e-10,
    log: Callable[[str], None] | None = print,
    record: Callable[[np.ndarray], dict] | None = None,
) -> AdjointResult:
    """Minimise problem.objective with scipy's L-BFGS-B and the adjoint gradient.

    A progress line per iteration (iteration, J, |g|, the parameters of a scalar problem) goes
    to `log` (None: silent). The tolerances are scipy's: `ftol` on the relative decrease of J
    (absolute where |J| < 1, hence the small default; data misfits are small numbers) and
    `gtol` on the largest projected gradient entry.

    Args:
        problem: the objective and its gradient.
        m0: starting point; default problem.initial_guess().
        maxiter: at most this many L-BFGS-B iterations.
        record: optional m -> dict of extra numbers stored in each trajectory entry.

    Returns:
        AdjointResult; its trajectory starts with iteration 0 (the starting point).
    """
    m0 = problem.initial_guess() if m0 is None else np.array(m0, dtype=np.float64).ravel()
    forward_before, adjoint_before = problem.n_forward_solves, problem.n_adjoint_solves
    start = time.perf_counter()
    trajectory: list[dict] = []
    last = {}

    def evaluate(m):
        value, gradient = problem.objective_and_gradient(m)
        last.update(m=np.array(m, dtype=np.float64), J=value, g=gradient)
        return value, gradient

    def note(m):
        if "m" not in last or not np.array_equal(last["m"], m):
            evaluate(m)
        entry = {"iteration": len(trajectory), "wall_s": round(time.perf_counter() - start, 4),
                 "J": last["J"], "grad_norm": float(np.linalg.norm(last["g"])),
                 **problem.describe(m)}
        if record is not None:
            entry.update(record(m))
        trajectory.append(entry)
        if log is not None:
            shown = "".join(f"  {k}={v:.6g}" for k, v in problem.describe(m).items())
            log(f"iter {entry['iteration']:4d}  J={entry['J']:.6e}  "
                f"|g|={entry['grad_norm']:.3e}{shown}")

    note(m0)
    result = scipy_minimize(evaluate, m0, jac=True, method="L-BFGS-B", bounds=problem.bounds(),
                            callback=note,
                            options={"maxiter": maxiter, "ftol": ftol, "gtol": gtol})
    m = np.array(result.x, dtype=np.float64)
    value, gradient = problem.objective_and_gradient(m)
    wall = time.perf_counter() - start
    message = result.message if isinstance(result.message, str) else result.message.decode()
    return AdjointResult(m=m, objective=value, gradient_norm=float(np.linalg.norm(gradient)),
                         iterations=int(result.nit),
                         n_forward_solves=problem.n_forward_solves - forward_before,
                         n_adjoint_solves=problem.n_adjoint_solves - adjoint_before,
                         wall_s=wall, converged=bool(result.success), message=message,
                         trajectory=trajectory)
