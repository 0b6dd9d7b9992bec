"""Crank–Nicolson solver for 1-D reaction–diffusion with homogeneous Dirichlet conditions.

The module also holds the small input helpers shared by the other FDM solvers
(sampling callables on a grid, checking output times).
"""

from collections.abc import Callable
from fractions import Fraction
from math import lcm

import numpy as np
from scipy.linalg import solve_banded

ArrayFunction = Callable[[np.ndarray], np.ndarray]

NEWTON_RTOL = 1e-12
NEWTON_MAX_ITERATIONS = 50
RANNACHER_SUBSTEPS = 4
# An output time t is a step time when |t - k*dt| <= _TIME_GRID_RTOL * t_out[-1] for some k.
_TIME_GRID_RTOL = 1e-10
_MAX_DENOMINATOR = 10_000
_MAX_DEFAULT_STEPS = 1_000_000


def sample_on_grid(values, grid: np.ndarray, name: str) -> np.ndarray:
    """Return `values` at the points of `grid`.

    `values` may be a callable of x, a scalar (a constant), or an array with one value per
    grid point; callables may also return a scalar.
    """
    sampled = np.array(values(grid) if callable(values) else values, dtype=np.float64)
    if sampled.shape not in ((), grid.shape):
        raise ValueError(
            f"{name} must be a scalar, a callable or {grid.size} values, got shape {sampled.shape}"
        )
    if not np.all(np.isfinite(sampled)):
        raise ValueError(f"{name} must be finite at every grid point")
    return np.broadcast_to(sampled, grid.shape).copy()


def check_output_times(t_out) -> np.ndarray:
    """Validate output times: finite, strictly increasing, starting at 0, at least two entries."""
    times = np.array(t_out, dtype=np.float64)
    if times.ndim != 1 or times.size < 2:
        raise ValueError("t_out must be a 1-D sequence holding 0 and at least one later time")
    if not np.all(np.isfinite(times)):
        raise ValueError("t_out must be finite")
    if times[0] != 0.0:
        raise ValueError(f"t_out must start at 0, got t_out[0]={times[0]}")
    if np.any(np.diff(times) <= 0):
        raise ValueError("t_out must be strictly increasing")
    return times


def check_finite_scalar(value, name: str, *, minimum: float | None = None) -> float:
    """Return `value` as a float after checking it is finite (and not below `minimum`)."""
    number = float(value)
    if not np.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return number


def check_grid_size(n, name: str, minimum: int) -> int:
    """Return `n` as an int after checking it is an integer >= `minimum`."""
    if int(n) != n or n < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {n}")
    return int(n)


def _step_indices(times: np.ndarray, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nearest step index of every output time, and a mask of the times not on the step grid."""
    steps_exact = times / times[-1] * n_steps
    indices = np.rint(steps_exact).astype(np.int64)
    return indices, np.abs(steps_exact - indices) > _TIME_GRID_RTOL * n_steps


def default_step_count(times: np.ndarray, h: float) -> int:
    """Smallest step count with dt close to h whose step grid contains every output time."""
    final_time = times[-1]
    denominators = [
        Fraction(t / final_time).limit_denominator(_MAX_DENOMINATOR).denominator for t in times[1:]
    ]
    common = lcm(*denominators)
    target = max(1, round(final_time / h))
    n_steps = common * -(-target // common)  # round target up to a multiple of `common`
    if n_steps > _MAX_DEFAULT_STEPS or np.any(_step_indices(times, n_steps)[1]):
        raise ValueError(
            "t_out is not on any uniform step grid near dt = h; pass n_steps explicitly"
        )
    return n_steps


def _output_step_indices(times: np.ndarray, n_steps: int) -> np.ndarray:
    """Step index of every output time; raises if an output time is not a multiple of dt."""
    indices, off_grid = _step_indices(times, n_steps)
    if np.any(off_grid):
        raise ValueError(
            f"t_out entry {times[np.argmax(off_grid)]} is not a multiple of "
            f"dt = {times[-1]}/{n_steps}; choose n_steps so that every output time is a step"
        )
    return indices


def _laplacian(interior: np.ndarray) -> np.ndarray:
    """Unscaled second difference u[i-1] - 2u[i] + u[i+1] with zero boundary values."""
    result = -2.0 * interior
    result[1:] += interior[:-1]
    result[:-1] += interior[1:]
    return result


def theta_step(u, dt, theta, scaled_diffusivity, reaction, reaction_du):
    """One theta-scheme step for the interior values (theta=1/2: CN, theta=1: implicit Euler).

    Solves  v - u = dt*[theta*N(v) + (1-theta)*N(u)],  N(w) = c*Lap(w) + reaction(w),
    c = diffusivity/h^2, by Newton's method with the tridiagonal Jacobian
    I - dt*theta*(c*Lap + diag(reaction_du(v))). Without reaction one linear solve suffices.
    """
    implicit_weight = dt * theta
    explicit_part = u + dt * (1.0 - theta) * scaled_diffusivity * _laplacian(u)
    if reaction is not None:
        explicit_part += dt * (1.0 - theta) * reaction(u)

    jacobian = np.empty((3, u.size))
    jacobian[0] = -implicit_weight * scaled_diffusivity
    jacobian[2] = -implicit_weight * scaled_diffusivity
    jacobian[1] = 1.0 + 2.0 * implicit_weight * scaled_diffusivity
    if reaction is None:
        return solve_banded((1, 1), jacobian, explicit_part)

    diagonal_without_reaction = jacobian[1].copy()
    v = u.copy()
    for _ in range(NEWTON_MAX_ITERATIONS):
        residual = (
            v - implicit_weight * (scaled_diffusivity * _laplacian(v) + reaction(v)) - explicit_part
        )
        jacobian[1] = diagonal_without_reaction - implicit_weight * reaction_du(v)
        correction = solve_banded((1, 1), jacobian, -residual)
        v += correction
        if not np.all(np.isfinite(v)):
            raise RuntimeError("Newton iteration produced non-finite values; reduce dt")
        if np.max(np.abs(correction)) <= NEWTON_RTOL * np.max(np.abs(v)):
            return v
    raise RuntimeError(f"Newton iteration did not converge in {NEWTON_MAX_ITERATIONS} iterations")


def solve_reaction_diffusion(
    u_init,
    diffusivity: float,
    t_out,
    *,
    reaction: ArrayFunction | None = None,
    reaction_du: ArrayFunction | None = None,
    n_steps: int | None = None,
) -> np.ndarray:
    """Solve u_t = diffusivity*u_xx + reaction(u) on [0,1] with u(0,t) = u(1,t) = 0.

    Space: second-order central differences on the uniform grid of len(u_init) nodes
    (both boundary nodes included; the boundary values of u_init are replaced by 0).
    Time: Crank–Nicolson with n_steps uniform steps over [0, t_out[-1]]; each step solves the
    nonlinear system by Newton's method (tridiagonal Jacobian, relative tolerance 1e-12).
    Rannacher start-up: the first CN step is replaced by four implicit-Euler quarter steps,
    which damps the high-frequency modes of non-smooth initial data that CN would otherwise
    carry along undamped; the start-up error is O(dt^2), so the scheme stays second order.

    Args:
        u_init: initial values at the nx >= 3 grid nodes.
        diffusivity: diffusion coefficient (>= 0).
        t_out: output times; t_out[0] must be 0, strictly increasing.
        reaction: r(u), applied elementwise; None for pure diffusion (linear steps).
        reaction_du: r'(u); required together with `reaction` (Newton Jacobian).
        n_steps: number of time steps; every t_out must be a multiple of t_out[-1]/n_steps.
            Default: the smallest such count with dt close to the grid spacing h.

    Returns:
        u of shape (len(t_out), nx): the solution at the output times, boundaries included.
    """
    initial = np.array(u_init, dtype=np.float64)
    if initial.ndim != 1 or initial.size < 3:
        raise ValueError("u_init must be a 1-D array of at least 3 node values (nx >= 3)")
    if not np.all(np.isfinite(initial)):
        raise ValueError("u_init must be finite")
    diffusivity = check_finite_scalar(diffusivity, "diffusivity", minimum=0.0)
    times = check_output_times(t_out)
    if (reaction is None) != (reaction_du is None):
        raise ValueError("reaction and reaction_du must be given together")

    h = 1.0 / (initial.size - 1)
    if n_steps is None:
        n_steps = default_step_count(times, h)
    else:
        n_steps = check_grid_size(n_steps, "n_steps", 1)
    output_steps = _output_step_indices(times, n_steps)

    dt = times[-1] / n_steps
    scaled_diffusivity = diffusivity / h**2
    solution = np.zeros((times.size, initial.size))
    interior = initial[1:-1].copy()
    solution[0, 1:-1] = interior

    def advance(values, step_size, theta):
        return theta_step(values, step_size, theta, scaled_diffusivity, reaction, reaction_du)

    next_output = 1
    for step in range(1, n_steps + 1):
        if step == 1:
            for _ in range(RANNACHER_SUBSTEPS):
                interior = advance(interior, dt / RANNACHER_SUBSTEPS, 1.0)
        else:
            interior = advance(interior, dt, 0.5)
        if output_steps[next_output] == step:
            solution[next_output, 1:-1] = interior
            next_output += 1
    return solution
