"""Synthetic data from a problem's declared reference solver: `bilo solve`.

`run_reference(problem, params, functions, ...)` solves the problem at the given parameters
(defaults: the declaration's) and draws observations at an even layout with seeded Gaussian
noise, or (`snapshots`) event positions of the Poisson process whose intensity is u, drawn by
thinning (`solvers.reference.sample_events`). numpy/scipy only.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable

import numpy as np

from bilo.model import Problem
from bilo.problems import get_problem
from solvers.common import InputError
from solvers.exchange import Events, Observations, SolutionFile
from solvers.expressions import parse_function
from solvers.reference import observation_points, sample, sample_events, toolkit_version


def run_reference(problem: str | Problem, params: dict[str, float] | None = None,
                  functions: dict[str, str | Callable] | None = None, *, nx: int | None = None,
                  nt: int | None = None, layout: str | None = None, n_obs: int | None = None,
                  noise: float = 0.0, seed: int | None = None,
                  snapshots: int | None = None) -> SolutionFile:
    """Solve a problem's reference at `params` (inferred parameters and constants; the rest
    from the declaration) and draw synthetic observations (Gaussian noise, seeded).
    `functions` gives the unknown functions as expressions in x or as callables of x.
    `snapshots` M: instead of observations, M snapshots of events of the spatial Poisson
    process with intensity u (steady 1-D problems; seeded thinning)."""
    problem = get_problem(problem) if isinstance(problem, str) else problem
    spec = problem.reference
    if spec is None:
        raise InputError(f"problem '{problem.name}' declares no reference solver")
    known = {**spec.defaults, **problem.constants}
    params = dict(params or {})
    unknown = set(params) - set(known)
    if unknown:
        raise InputError(f"problem '{problem.name}' has no parameter "
                         f"{', '.join(sorted(unknown))}; its parameters: "
                         f"{', '.join(known) or '(none)'}")
    full_params = {**known, **params}
    given = {**{k: f.truth for k, f in problem.functions.items()},
             **spec.inputs, **(functions or {})}
    allowed = set(problem.functions) | set(spec.inputs)
    unknown = set(given) - allowed
    if unknown:
        raise InputError(f"problem '{problem.name}' takes no function "
                         f"{', '.join(sorted(unknown))}; its functions: "
                         f"{', '.join(sorted(allowed)) or '(none)'}")
    callables = {k: parse_function(k, v) if isinstance(v, str) else v for k, v in given.items()}
    expressions = {k: v if isinstance(v, str) else getattr(v, "description", "(given values)")
                   for k, v in given.items()}
    if not np.isfinite(noise) or noise < 0:
        raise InputError(f"--noise must be a finite number >= 0, got {noise}")
    if snapshots is not None:
        if noise or layout is not None or n_obs is not None:
            raise InputError("--snapshots draws events instead of observations: --noise, --obs "
                             "and --n-obs do not apply")
        if snapshots < 1:
            raise InputError(f"--snapshots {snapshots}: must be at least 1")
        if spec.time_dependent:
            raise InputError(f"--snapshots: events need a steady 1-D problem, and "
                             f"'{problem.name}' is time-dependent")
    for flag, value, least in (("--nx", nx, 3), ("--nt", nt, 2)):
        if value is not None and value < least:
            raise InputError(f"{flag} {value}: must be at least {least}")

    start = time.perf_counter()
    try:
        reference = spec.solve(full_params, callables, spec.nx if nx is None else nx,
                               spec.nt if nt is None else nt)
    except ValueError as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"problem '{problem.name}': {exc}") from None
    wall = time.perf_counter() - start

    rng = np.random.default_rng(seed)
    observations = events = None
    if snapshots is not None:
        (axis,) = reference.axes
        positions, index = sample_events(reference.grid[axis], reference.u, snapshots, rng)
        events = Events(positions=positions[:, None], snapshot=index, n_snapshots=snapshots,
                        columns=(axis,), seed=seed)
    else:
        layout = spec.layout if layout is None else layout
        points, columns = observation_points(layout, spec.n_obs if n_obs is None else n_obs,
                                             reference.grid, spec.layouts())
        clean = sample(reference, points, columns)
        values = clean + noise * rng.standard_normal(clean.shape) if noise > 0 else clean.copy()
        observations = Observations(points=points, values=values, columns=columns, sigma=noise,
                                    seed=seed, clean=clean, layout=layout)
    provenance = {"solver": f"solvers.fdm ({problem.name})", "scheme": reference.scheme,
                  "resolution": reference.resolution, "wall_s": round(wall, 4),
                  "toolkit_version": toolkit_version(), "numpy": np.__version__,
                  "host": platform.node(), "functions": "; ".join(
                      f"{k} = {v}" for k, v in expressions.items())}
    return SolutionFile(problem=problem.name, params=full_params, axes=reference.axes,
                        grid=reference.grid, u=reference.u, inputs=reference.inputs,
                        observations=observations, provenance=provenance, events=events)
