"""Fisher–KPP on a 2-D mesh with heterogeneous diffusion, P1 finite elements (dolfinx).

    u_t = ∇·(D·P(x)∇u) + ρ·u(1 − u)   in Ω,     D·P ∇u·n = 0 on ∂Ω (no flux),   u(·, 0) = u0.

Space: P1 Lagrange elements, consistent mass matrix. Time: Crank–Nicolson (θ = 1/2, second
order) with n_steps uniform steps; every step solves the nonlinear system by Newton's method
(stopping at ‖δu‖∞ <= 1e-12‖u‖∞). As in the 1-D FDM solver (``solvers.fdm``), the first CN step
is replaced by four implicit-Euler quarter steps (Rannacher start-up), which damps the
high-frequency content of rough initial data that CN would carry along undamped, at an O(dt²)
cost. ``scheme="be"`` gives backward Euler throughout (first order).

Unlike the 1-D benchmark, no 0.01 factor is applied: pass D = 0.01·D_1d to match it.
"""

from __future__ import annotations

import time
from fractions import Fraction
from math import lcm

import numpy as np

from solvers.common import InputError
from solvers.fdm.reaction_diffusion import check_output_times
from solvers.fem import FemSolution
from solvers.fem.darcy import mesh_arrays, sample_field

RANNACHER_SUBSTEPS = 4
DEFAULT_MIN_STEPS = 100
SCHEMES = ("cn", "be")


def gaussian_initial_condition(points, centre, width: float,
                               amplitude: float = 1.0) -> np.ndarray:
    """amplitude·exp(−|x − centre|²/(2·width²)) at points (..., 2) (extra columns ignored).

    The Gaussian seed of the 2-D Fisher–KPP problems, the one numpy implementation: the GBM
    app's initial tumour (``apps.gbm.scales``; ``apps.gbm.problem`` writes the same function in
    jet arithmetic, tested against this one) and the default u0 of the FEM adjoint's demos.
    """
    width = float(width)
    if not (np.isfinite(width) and width > 0):
        raise InputError(f"Gaussian initial condition: width must be > 0, got {width}")
    cx, cy = (float(c) for c in np.asarray(centre, dtype=np.float64).ravel()[:2])
    points = np.asarray(points, dtype=np.float64)
    r2 = (points[..., 0] - cx) ** 2 + (points[..., 1] - cy) ** 2
    return amplitude * np.exp(-r2 / (2.0 * width**2))


def default_step_count(times: np.ndarray, minimum: int = DEFAULT_MIN_STEPS) -> int:
    """The smallest step count >= `minimum` whose uniform steps hit every output time."""
    final = times[-1]
    common = lcm(*[Fraction(t / final).limit_denominator(10_000).denominator for t in times[1:]])
    return common * -(-minimum // common)


def output_steps(times: np.ndarray, n_steps: int) -> np.ndarray:
    """Step index of every output time; InputError if one is not a multiple of dt."""
    exact = times / times[-1] * n_steps
    steps = np.rint(exact).astype(np.int64)
    off = np.abs(exact - steps) > 1e-9 * n_steps
    if off.any():
        raise InputError(f"t_out entry {times[np.argmax(off)]:g} is not a multiple of dt = "
                         f"{times[-1]:g}/{n_steps}; choose n_steps so that every output time "
                         "is a step")
    return steps


def time_steps(dt: float, n_steps: int, scheme: str) -> list[list[tuple[float, float]]]:
    """The (step size, θ) sub-steps of each of the n_steps time steps: with "cn", four
    implicit-Euler quarter steps (Rannacher start-up) and then one Crank–Nicolson step each;
    with "be", one implicit-Euler step each."""
    if scheme == "be":
        return [[(dt, 1.0)] for _ in range(n_steps)]
    start_up = [(dt / RANNACHER_SUBSTEPS, 1.0)] * RANNACHER_SUBSTEPS
    return [start_up] + [[(dt, 0.5)] for _ in range(n_steps - 1)]


def coefficient_location(P, n_vertices: int, n_cells: int, P_at: str) -> str:
    if P_at in ("vertex", "cell"):
        return P_at
    if P_at != "auto":
        raise InputError(f"P_at must be 'auto', 'vertex' or 'cell', got {P_at!r}")
    if callable(P) or np.ndim(P) == 0:
        return "vertex"
    size = np.size(P)
    if size == n_vertices == n_cells:
        raise InputError("P: as many vertices as cells; say P_at='vertex' or 'cell'")
    if size == n_cells:
        return "cell"
    return "vertex"


def solve_fkpp2d(mesh, P, D: float, rho: float, u0, t_out, n_steps: int | None = None,
                 comm=None, *, scheme: str = "cn", solver: str = "lu",
                 P_at: str = "auto") -> FemSolution | None:
    """Solve u_t = ∇·(D·P(x)∇u) + ρu(1−u) with no-flux boundary on `mesh` (see module doc).

    Args:
        mesh: ``solvers.exchange.Mesh`` or ``meshes.MeshData`` (triangles; coordinates in the
            mesh's units, e.g. mm).
        P: diffusion map: a scalar, a callable of points (k, 2) (sampled at the vertices), one
            value per vertex (P1) or one per cell (piecewise constant). Must be >= 0.
        D, rho: diffusion scale (>= 0) and growth rate.
        u0: initial condition: a callable of points (k, 2) or one value per vertex.
        t_out: output times, starting at 0, strictly increasing.
        n_steps: uniform time steps over [0, t_out[-1]]; every output time must be a step.
            Default: the smallest such count >= 100.
        comm: MPI communicator (default COMM_WORLD); inputs are read on rank 0.
        scheme: "cn" (Crank–Nicolson with Rannacher start-up, default) or "be".
        solver: linear solver of the Newton steps: "lu" (MUMPS) or "cg" (CG + BoomerAMG).
        P_at: "auto", "vertex" or "cell": where an array P lives (auto: by its length).

    Returns:
        On rank 0 a :class:`FemSolution` with u of shape (len(t_out), n_vertices) at the
        vertices in input order, ``times``, and the inputs P and u0; ``None`` elsewhere.
    """
    from solvers.fem import dolfinx_adapter as dx

    started = time.perf_counter()
    if scheme not in SCHEMES:
        raise InputError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    try:
        times = check_output_times(t_out)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    D, rho = float(D), float(rho)
    if not (np.isfinite(D) and D >= 0.0 and np.isfinite(rho)):
        raise InputError(f"D must be finite and >= 0 and rho finite, got D={D}, rho={rho}")
    if n_steps is None:
        n_steps = default_step_count(times)
    elif int(n_steps) != n_steps or n_steps < 1:
        raise InputError(f"n_steps must be an integer >= 1, got {n_steps}")
    n_steps = int(n_steps)
    steps = output_steps(times, n_steps)

    vertices, cells, units = mesh_arrays(mesh)
    where = coefficient_location(P, len(vertices), len(cells), P_at)
    p_values = sample_field(P, vertices, cells, "P", where)
    if np.any(p_values < 0.0):
        raise InputError(f"P must be >= 0, minimum {p_values.min():g}")
    u_initial = sample_field(u0, vertices, cells, "u0", "vertex")

    dm = dx.DistributedMesh(vertices, cells, comm)
    p_function = (dm.cell_function(p_values, "P") if where == "cell"
                  else dm.vertex_function(p_values, "P"))
    stepper = dx.ReactionDiffusionStepper(dm, p_function, D, rho, u_initial, solver=solver)
    snapshots = [u_initial] if dm.rank == 0 else None
    next_output = 1
    for step, substeps in enumerate(time_steps(times[-1] / n_steps, n_steps, scheme), start=1):
        for size, theta in substeps:
            stepper.step(size, theta)
        if step == steps[next_output]:
            values = stepper.values()
            if dm.rank == 0:
                snapshots.append(values)
            next_output += 1
    iterations = stepper.newton_iterations
    stepper.destroy()
    cells_per_rank = dm.cells_per_rank()
    if dm.rank != 0:
        return None
    inputs = {"P": p_values}
    return FemSolution(
        vertices=vertices, cells=cells, u=np.array(snapshots), times=times,
        vertex_inputs={"u0": u_initial, **(inputs if where == "vertex" else {})},
        cell_inputs=inputs if where == "cell" else {}, units=units,
        info={"solver": "dolfinx P1 (solvers.fem.reaction_diffusion)",
              "scheme": ("P1, Crank-Nicolson + Rannacher start-up, Newton" if scheme == "cn"
                         else "P1, backward Euler, Newton") + f", {solver}",
              "resolution": f"{len(vertices)} vertices, {len(cells)} cells, {n_steps} steps",
              "n_steps": n_steps, "newton_iterations": iterations, "mpi_ranks": dm.comm.size,
              "cells_per_rank": ",".join(map(str, cells_per_rank)),
              "wall_s": time.perf_counter() - started})
