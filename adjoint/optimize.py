"""What every adjoint problem shares, L-BFGS-B optimisation, and `run_adjoint` on a data file.

An :class:`AdjointProblem` maps a parameter vector m to the objective J(m) (data misfit plus
regularisation) and its gradient, computed by the discrete adjoint of the reference solver: a
gradient costs one forward solve (shared with J at the same m) and one backward solve.

`run_adjoint(problem_name, data_file, out_dir)` reads an exchange file made by `bilo solve`,
infers the parameters (fkpp: D, rho) or the function (poisson: D(x), heat and burgers: f(x)) with
L-BFGS-B, and writes `summary.json` in the form of the trainer's.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse
from scipy.optimize import minimize as scipy_minimize

from solvers.exchange import InputError, SolutionFile, read_solution, write_json_atomic

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


def gradient_energy(values: np.ndarray, h) -> tuple[float, np.ndarray]:
    """∫|v'|^2 dx of the piecewise-linear function with nodal `values` and node spacing `h` (a
    number, or one per interval), and its gradient."""
    slopes = np.diff(values) / h
    gradient = np.zeros_like(values)
    gradient[:-1] -= 2.0 * slopes
    gradient[1:] += 2.0 * slopes
    return float(np.sum(h * slopes**2)), gradient


def function_objective(predicted: np.ndarray, observed: np.ndarray,
                       functions: dict[str, tuple[np.ndarray, np.ndarray]],
                       w_reg: dict[str, float]) -> float:
    """J = mean((u − d)²) over the observations + Σ_f w_reg·∫₀¹ f′² dx, the objective that every
    method for an unknown function minimises, evaluated the same way for all of them: u from
    the trusted solver at the inferred f, and ∫f′² of f's piecewise-linear interpolant on 1001
    points. `functions` maps each name to its samples (x, f(x))."""
    grid = np.linspace(0.0, 1.0, 1001)
    energy = sum(w_reg[name] * gradient_energy(np.interp(grid, x, values), np.diff(grid))[0]
                 for name, (x, values) in functions.items())
    return float(np.mean((np.asarray(predicted) - np.asarray(observed)) ** 2) + energy)


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


# --------------------------------------------------------------------------- data files

SUPPORTED = ("fkpp", "poisson", "heat", "burgers")
DEFAULT_W_REG = {"poisson": 1e-3, "heat": 1e-4, "burgers": 1e-3}


def _observation_columns(data: SolutionFile, wanted: tuple[str, ...]) -> np.ndarray:
    obs = data.observations
    if obs is None:
        raise InputError(f"the data file for '{data.problem}' holds no observations")
    missing = [c for c in wanted if c not in obs.columns]
    if missing:
        raise InputError(f"observations have columns {obs.columns}, need {wanted}")
    return np.column_stack([obs.points[:, obs.columns.index(c)] for c in wanted])


def problem_from_data(data: SolutionFile, *, nx: int | None = None, w_reg: float | None = None,
                      n_steps: int | None = None) -> AdjointProblem:
    """The adjoint problem for a solution file's observations.

    The model resolution defaults to the data's reference grid (nx = len(grid x), and for
    time-dependent problems the reference's default time step for its output times), so that
    noise-free data are fitted exactly.
    """
    from adjoint.burgers import BurgersProblem
    from adjoint.fisher_kpp import FisherKPPProblem
    from adjoint.heat import HeatProblem
    from adjoint.poisson import PoissonProblem

    if data.problem not in SUPPORTED:
        raise InputError(f"no adjoint for problem '{data.problem}'; supported: "
                         f"{', '.join(SUPPORTED)}")
    x_data = data.grid["x"]
    nx = len(x_data) if nx is None else int(nx)
    values = data.observations.values if data.observations is not None else None
    if data.problem == "fkpp":
        points = _observation_columns(data, ("x", "t"))
        return FisherKPPProblem(points, values, nx=nx, t_out=data.grid["t"], n_steps=n_steps)
    w_reg = DEFAULT_W_REG[data.problem] if w_reg is None else float(w_reg)
    if data.problem == "burgers":
        points = _observation_columns(data, ("x", "t"))
        return BurgersProblem(points, values, a=data.params["a"], n_cells=nx - 2,
                              t_final=float(data.grid["t"][-1]), w_reg=w_reg)
    if data.problem == "heat":
        points = _observation_columns(data, ("x", "t"))
        return HeatProblem(points, values, D=data.params["D"], nx=nx, t_out=data.grid["t"],
                           n_steps=n_steps, w_reg=w_reg)
    points = _observation_columns(data, ("x",))
    x = np.linspace(0.0, 1.0, nx)
    source = np.interp(x, x_data, data.inputs["f"])
    return PoissonProblem(points[:, 0], values, source, nx=nx, w_reg=w_reg)


def _relative_l2(values: np.ndarray, truth: np.ndarray) -> float:
    norm = float(np.linalg.norm(truth))
    return float(np.linalg.norm(values - truth)) / (norm if norm > 0 else 1.0)


def run_adjoint(
    problem_name: str,
    data_file: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    nx: int | None = None,
    n_steps: int | None = None,
    w_reg: float | None = None,
    initial=None,
    maxiter: int = 5000,
    log: Callable[[str], None] | None = print,
) -> dict:
    """Infer a data file's parameters (or function) by the adjoint method; write summary.json.

    Initial guesses: fkpp (D, rho) = (1, 1); poisson D ≡ 1; heat f = sin(pi x); burgers the
    field BiLO starts from, grf(seed 0) (override with `initial`: a dict of parameters for fkpp,
    or values on the model grid). `w_reg` (function problems) defaults to 1e-3 for poisson and
    burgers and 1e-4 for heat (the best of 1e-5..1e-3 for the default hat f with noise 0.01, 11
    points at t = 1).

    Returns:
        the summary dictionary written to out_dir/summary.json.
    """
    data = read_solution(data_file)
    if data.problem != problem_name:
        raise InputError(f"{data_file}: holds problem '{data.problem}', not '{problem_name}'")
    problem = problem_from_data(data, nx=nx, w_reg=w_reg, n_steps=n_steps)
    x_data = data.grid["x"]

    if problem.function is None:
        truth = {k: float(data.params[k]) for k in problem.names if k in data.params}
        if isinstance(initial, dict):
            m0 = np.array([float(initial.get(k, 1.0)) for k in problem.names])
        else:
            m0 = problem.initial_guess() if initial is None else np.asarray(initial, float)

        def params_of(m):
            return {k: float(v) for k, v in zip(problem.names, m, strict=True)}

        record = None
    else:
        name = problem.function
        truth_function = np.asarray(data.inputs[name], dtype=np.float64)
        m0 = problem.initial_guess() if initial is None else np.asarray(initial, float)

        def on_data_grid(m):
            return np.interp(x_data, problem.x, problem.full_function(m))

        def params_of(m):
            return {name: on_data_grid(m).tolist()}

        def record(m):
            return {f"{name}_rel_err": _relative_l2(on_data_grid(m), truth_function)}

    result = minimize(problem, m0, maxiter=maxiter, log=log, record=record)

    if problem.function is None:
        params = params_of(result.m)
        rel_err = {k: abs(params[k] - truth[k]) / (abs(truth[k]) if truth[k] != 0 else 1.0)
                   for k in truth}
        params_true, params_initial = truth, params_of(m0)
    else:
        params = params_of(result.m)
        rel_err = {name: _relative_l2(on_data_grid(result.m), truth_function)}
        params_true, params_initial = {name: truth_function.tolist()}, params_of(m0)

    # u at the inferred parameters on the data's reference grid, against the data's clean
    # solution at the true parameters.
    axes_points = np.meshgrid(*[data.grid[a] for a in data.axes], indexing="ij")
    columns = tuple(data.axes)
    grid_points = np.column_stack([p.ravel() for p in axes_points])
    model_columns = ("x", "t") if "t" in columns else ("x",)
    ordered = grid_points[:, [columns.index(c) for c in model_columns]]
    u_model = problem.predict(result.m, ordered).reshape(data.u.shape)
    obs = data.observations
    at_obs = problem.predict(result.m, obs.points[:, [obs.columns.index(c)
                                                       for c in model_columns]])

    summary = {
        "method": "adjoint",
        "problem": problem_name,
        "params": params,
        "params_true": params_true,
        "params_initial": params_initial,
        "rel_err": rel_err,
        # The adjoint's u IS the reference (FDM) solution at the inferred parameters, so its
        # distance to "the reference re-solved at the inferred parameters" is zero by
        # construction; the informative number is u_rel_l2_vs_truth below.
        "u_rel_l2_vs_reference": 0.0,
        "u_rel_l2_vs_truth": _relative_l2(u_model, data.u),
        "reference_rel_l2_vs_data": _relative_l2(at_obs, obs.values),
        "steps": result.iterations,
        "n_forward_solves": result.n_forward_solves,
        "n_adjoint_solves": result.n_adjoint_solves,
        "wall_s": round(result.wall_s, 4),
        "device": "cpu",
        "objective": result.objective,
        "gradient_norm": result.gradient_norm,
        "converged": result.converged,
        "message": result.message,
        "trajectory": result.trajectory,
        "data": str(data_file),
        "noise_sigma": data.observations.sigma,
        "n_observations": len(data.observations.values),
        "config": {"nx": problem.nx, "w_reg": getattr(problem, "w_reg", None),
                   "n_steps": getattr(problem, "n_steps", None), "maxiter": maxiter,
                   "optimizer": "scipy L-BFGS-B"},
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if problem.function is not None:
        summary["w_reg"] = {problem.function: problem.w_reg}
        summary["reference_objective"] = function_objective(
            at_obs, obs.values, {problem.function: (problem.x, problem.full_function(result.m))},
            summary["w_reg"])
        summary["x"] = x_data.tolist()
        summary["params_fixed"] = dict(data.params)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "summary.json", summary)
    return summary
