"""The reference problems that `bilo solve` knows, each tied to its solver in `solvers.fdm`.

A problem declares its parameters (with defaults), the input functions it takes (as numpy
expressions in x, e.g. ``--function f="sin(pi*x)"``), its default resolution and observation
layout, and how to run its reference solver. Everything here is numpy/scipy only.
"""

from __future__ import annotations

import importlib.metadata
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.interpolate import RegularGridInterpolator

from solvers import fdm
from solvers.exchange import InputError, Observations, SolutionFile
from solvers.grf import grf

_EXPRESSION_NAMES = {name: getattr(np, name) for name in (
    "sin", "cos", "tan", "exp", "log", "sqrt", "abs", "tanh", "sinh", "cosh", "arctan",
    "where", "minimum", "maximum", "clip", "heaviside")}
_EXPRESSION_NAMES.update(pi=np.pi, e=np.e, grf=grf)


def parse_function(name: str, expression: str) -> Callable[[np.ndarray], np.ndarray]:
    """Turn a numpy expression in `x` (e.g. ``where(x < 0.5, 2*x, 2 - 2*x)``) into a function.
    ``grf(x, seed=1, length_scale=0.2, variance=0.05)`` is a seeded Gaussian random field."""
    try:
        code = compile(expression, f"<function {name}>", "eval")
    except SyntaxError as exc:
        raise InputError(f"--function {name}={expression!r}: not a valid expression "
                         f"({exc.msg})") from None
    unknown = set(code.co_names) - set(_EXPRESSION_NAMES) - {"x"}
    if unknown:
        raise InputError(f"--function {name}={expression!r}: unknown name(s) "
                         f"{', '.join(sorted(unknown))}; use x and numpy functions like sin, exp")

    def evaluate(x: np.ndarray) -> np.ndarray:
        values = eval(code, {"__builtins__": {}}, {**_EXPRESSION_NAMES, "x": x})  # noqa: S307
        values = np.broadcast_to(np.asarray(values, dtype=np.float64), np.shape(x)).copy()
        if not np.all(np.isfinite(values)):
            raise InputError(f"--function {name}={expression!r}: not finite on [0, 1]")
        return values

    return evaluate


@dataclass(frozen=True)
class Reference:
    """What a reference solve returns: u over `axes`, node coordinates, and sampled inputs."""

    axes: tuple[str, ...]
    grid: dict[str, np.ndarray]
    u: np.ndarray
    inputs: dict[str, np.ndarray]
    scheme: str
    resolution: str


@dataclass(frozen=True)
class ReferenceProblem:
    name: str
    summary: str
    params: dict[str, float]
    functions: dict[str, str] = field(default_factory=dict)
    time_dependent: bool = False
    nx: int = 1001
    nt: int = 101
    default_layout: str = "points"
    default_n_obs: int = 51
    solve: Callable[..., Reference] = None  # (params, functions, nx, nt) -> Reference

    def layouts(self) -> tuple[str, ...]:
        return ("grid", "final") if self.time_dependent else ("points",)


def _time_axis(nt: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, nt)


def _solve_fkpp(params, functions, nx, nt) -> Reference:
    x, t, u = fdm.solve_fisher_kpp(params["D"], params["rho"], nx=nx, t_out=_time_axis(nt))
    return Reference(("t", "x"), {"t": t, "x": x}, u, {},
                     "Crank-Nicolson + Newton, 2nd-order central differences",
                     f"nx={nx}, output times={nt}")


def _solve_heat(params, functions, nx, nt) -> Reference:
    x0 = np.linspace(0.0, 1.0, nx)
    f = functions["f"](x0)
    x, t, u = fdm.solve_heat(f, params["D"], nx=nx, t_out=_time_axis(nt))
    return Reference(("t", "x"), {"t": t, "x": x}, u, {"f": f},
                     "Crank-Nicolson with Rannacher start-up, 2nd-order central differences",
                     f"nx={nx}, output times={nt}")


def _solve_poisson(params, functions, nx, nt) -> Reference:
    x, u = fdm.solve_variable_diffusion(functions["D"], functions["f"], nx=nx)
    return Reference(("x",), {"x": x}, u, {"D": functions["D"](x), "f": functions["f"](x)},
                     "conservative 2nd-order finite differences, D at cell midpoints",
                     f"nx={nx}")


def _solve_burgers(params, functions, nx, nt) -> Reference:
    n_cells = nx - 1
    centres = (np.arange(n_cells) + 0.5) / n_cells
    xc, t, uc = fdm.solve_burgers(functions["f"](centres), a=params["a"], n_cells=n_cells,
                                  t_out=_time_axis(nt))
    # Report on [0, 1] including the boundary traces, so observations anywhere in the domain
    # interpolate instead of extrapolating.
    x = np.concatenate([[0.0], xc, [1.0]])
    u = fdm.boundary_traces(uc)
    return Reference(("t", "x"), {"t": t, "x": x}, u, {"f": functions["f"](x)},
                     "Godunov finite volumes, exact Riemann flux, CFL 0.5 (first order)",
                     f"cells={n_cells}, output times={nt}")


def _solve_singular(params, functions, nx, nt) -> Reference:
    x, u = fdm.solve_singular_forcing(params["lam"], params["mu"], z=params["z"], nx=nx)
    return Reference(("x",), {"x": x}, u, {},
                     "2nd-order finite differences, delta spread to neighbouring nodes",
                     f"nx={nx}")


def _solve_two_point(params, functions, nx, nt) -> Reference:
    x, y = fdm.solve_two_point(params["theta0"], params["theta1"], nx=nx)
    return Reference(("x",), {"x": x}, y, {}, "2nd-order finite differences", f"nx={nx}")


PROBLEMS: dict[str, ReferenceProblem] = {p.name: p for p in (
    ReferenceProblem("fkpp", "Fisher-KPP u_t = 0.01 D u_xx + rho u(1-u), u(x,0) = sin^2(pi x)/2",
                     {"D": 1.0, "rho": 1.0}, time_dependent=True, nx=401, nt=101,
                     default_layout="grid", default_n_obs=51, solve=_solve_fkpp),
    ReferenceProblem("heat", "heat u_t = D u_xx, u(x,0) = f(x), u(0)=u(1)=0",
                     {"D": 0.01}, {"f": "where(x < 0.5, 2*x, 2 - 2*x)"}, time_dependent=True,
                     nx=401, nt=101, default_layout="final", default_n_obs=11, solve=_solve_heat),
    ReferenceProblem("poisson", "variable-diffusion Poisson -(D(x) u')' = f(x), u(0)=u(1)=0",
                     {}, {"D": "where(x < 0.5, 1 + 0.5*x, 1.5 - 0.5*x)", "f": "pi**2*sin(pi*x)"},
                     nx=1001, default_n_obs=51, solve=_solve_poisson),
    ReferenceProblem("burgers", "inviscid Burgers u_t + a u u_x = 0, u(x,0) = f(x), u(0)=u(1)=0",
                     {"a": 0.2}, {"f": "grf(x, seed=1, length_scale=0.15, variance=0.5)"},
                     time_dependent=True, nx=1001, nt=101,
                     default_layout="final", default_n_obs=51, solve=_solve_burgers),
    ReferenceProblem("singular", "singular forcing u'' - mu u + lam delta(x - z) = 0, u(0)=u(1)=0",
                     {"lam": 500.0, "mu": 2.5, "z": 0.5}, nx=1001, default_n_obs=51,
                     solve=_solve_singular),
    ReferenceProblem("two_point", "two-point problem y'' = 2, y(0) = theta0, y(1) = theta1",
                     {"theta0": 0.0, "theta1": 1.0}, nx=1001, default_n_obs=65,
                     solve=_solve_two_point),
)}


def toolkit_version() -> str:
    try:
        return importlib.metadata.version("bilo-toolkit")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def get_problem(name: str) -> ReferenceProblem:
    if name not in PROBLEMS:
        raise InputError(f"unknown problem '{name}'; known: {', '.join(PROBLEMS)}")
    return PROBLEMS[name]


def observation_points(problem: ReferenceProblem, layout: str, n_obs: int,
                       grid: dict[str, np.ndarray]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Evenly spaced observation coordinates for a layout; columns are (x,) or (x, t)."""
    if layout not in problem.layouts():
        raise InputError(f"problem '{problem.name}' has observation layouts "
                         f"{', '.join(problem.layouts())}, not '{layout}'")
    if n_obs < 2:
        raise InputError(f"--n-obs must be at least 2, got {n_obs}")
    x = np.linspace(grid["x"][0], grid["x"][-1], n_obs)
    if layout == "points":
        return x[:, None], ("x",)
    t_end = grid["t"][-1]
    if layout == "final":
        return np.column_stack([x, np.full(n_obs, t_end)]), ("x", "t")
    t = np.linspace(grid["t"][0], t_end, n_obs)
    xx, tt = np.meshgrid(x, t, indexing="xy")
    return np.column_stack([xx.ravel(), tt.ravel()]), ("x", "t")


def sample(reference: Reference, points: np.ndarray, columns: tuple[str, ...]) -> np.ndarray:
    """u at `points` by multilinear interpolation on the reference grid (exact at its nodes)."""
    axes_values = tuple(reference.grid[a] for a in reference.axes)
    order = [columns.index(a) for a in reference.axes]
    interpolate = RegularGridInterpolator(axes_values, reference.u, method="linear")
    return interpolate(points[:, order])


def run_reference(name: str, params: dict[str, float] | None = None,
                  functions: dict[str, str | Callable] | None = None, *, nx: int | None = None,
                  nt: int | None = None, layout: str | None = None, n_obs: int | None = None,
                  noise: float = 0.0, seed: int | None = None) -> SolutionFile:
    """Solve a reference problem and draw synthetic observations (Gaussian noise, seeded).
    `functions` gives input functions as numpy expressions in x or as callables of x."""
    problem = get_problem(name)
    params = dict(params or {})
    unknown = set(params) - set(problem.params)
    if unknown:
        raise InputError(f"problem '{name}' has no parameter {', '.join(sorted(unknown))}; "
                         f"its parameters: {', '.join(problem.params) or '(none)'}")
    full_params = {**problem.params, **params}
    given = {**problem.functions, **(functions or {})}
    unknown = set(given) - set(problem.functions)
    if unknown:
        raise InputError(f"problem '{name}' takes no function {', '.join(sorted(unknown))}; "
                         f"its functions: {', '.join(problem.functions) or '(none)'}")
    callables = {k: parse_function(k, v) if isinstance(v, str) else v for k, v in given.items()}
    expressions = {k: v if isinstance(v, str) else getattr(v, "description", "(given values)")
                   for k, v in given.items()}
    if not np.isfinite(noise) or noise < 0:
        raise InputError(f"--noise must be a finite number >= 0, got {noise}")

    start = time.perf_counter()
    try:
        reference = problem.solve(full_params, callables, nx or problem.nx, nt or problem.nt)
    except ValueError as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"problem '{name}': {exc}") from None
    wall = time.perf_counter() - start

    layout = layout or problem.default_layout
    points, columns = observation_points(problem, layout, n_obs or problem.default_n_obs,
                                         reference.grid)
    clean = sample(reference, points, columns)
    rng = np.random.default_rng(seed)
    values = clean + noise * rng.standard_normal(clean.shape) if noise > 0 else clean.copy()
    observations = Observations(points=points, values=values, columns=columns, sigma=noise,
                                seed=seed, clean=clean, layout=layout)
    provenance = {"solver": f"solvers.fdm ({problem.name})", "scheme": reference.scheme,
                  "resolution": reference.resolution, "wall_s": round(wall, 4),
                  "toolkit_version": toolkit_version(), "numpy": np.__version__,
                  "host": platform.node(), "functions": "; ".join(
                      f"{k} = {v}" for k, v in expressions.items())}
    return SolutionFile(problem=name, params=full_params, axes=reference.axes,
                        grid=reference.grid, u=reference.u, inputs=reference.inputs,
                        observations=observations, provenance=provenance)
