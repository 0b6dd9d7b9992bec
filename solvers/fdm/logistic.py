"""Logistic growth u'(t) = a u (1 - u), u(0) = u0: closed form and the trapezoidal scheme.

The implicit trapezoidal (Crank–Nicolson) step from u_n to v = u_{n+1} with step dt,

    v - u_n - (dt/2) (a v (1 - v) + a u_n (1 - u_n)) = 0,

is, with h = a dt / 2 and c = u_n + h u_n (1 - u_n), the quadratic

    q(v) = h v^2 + (1 - h) v - c = 0.

It is solved exactly, without iteration: the root taken is v = (-(1 - h) + sqrt(disc)) / (2h),
disc = (1 - h)^2 + 4 h c, the one continuous with u_n (it tends to c -> u_n as dt -> 0; the
other root runs off to -(1 - h)/h). It is the root where q'(v) = 1 - h (1 - 2v) = sqrt(disc)
> 0, i.e. where the step's Jacobian is positive, as on the branch Newton's method would follow
from u_n. For 1 - h > 0 it is evaluated as 2c / ((1 - h) + sqrt(disc)), which has no
cancellation and is exact for h = 0 (a = 0). A negative discriminant (no real step, possible
only for large a*dt or data outside [0, 1]) raises RuntimeError.
"""

import math

import numpy as np

from solvers.fdm.reaction_diffusion import (
    check_finite_scalar,
    check_grid_size,
    check_output_times,
)

DEFAULT_U0 = 0.1
DEFAULT_N_STEPS = 1000
# An output time t is taken as step k when |t / dt - k| <= _TIME_GRID_RTOL * n_steps.
_TIME_GRID_RTOL = 1e-10


def logistic_exact(a: float, t, u0: float = DEFAULT_U0) -> np.ndarray:
    """Exact solution u(t) = u0 e^{at} / (1 - u0 + u0 e^{at}) of u' = a u (1 - u), u(0) = u0.

    Evaluated as u0 / (u0 + (1 - u0) e^{-at}) (the same expression divided by e^{at}), which
    does not overflow for large a*t > 0.
    """
    a = check_finite_scalar(a, "a")
    u0 = check_finite_scalar(u0, "u0")
    t = np.asarray(t, dtype=np.float64)
    return u0 / (u0 + (1.0 - u0) * np.exp(-a * t))


def logistic_trapezoid_step(u: float, half_step: float) -> float:
    """One trapezoidal step of u' = a u (1 - u) from u; half_step = a * dt / 2.

    Returns the root of half_step v^2 + (1 - half_step) v - c = 0 continuous with u (see the
    module docstring).
    """
    h = half_step
    b = 1.0 - h
    c = u + h * u * (1.0 - u)
    discriminant = b * b + 4.0 * h * c
    if not discriminant >= 0.0 or not math.isfinite(discriminant):
        raise RuntimeError(
            f"the trapezoidal step from u = {u} with a*dt/2 = {h} has no real solution; "
            "reduce dt"
        )
    root = math.sqrt(discriminant)
    if b > 0.0:
        return 2.0 * c / (b + root)
    return (root - b) / (2.0 * h)  # here h >= 1, so no division by zero


def logistic_steps(a: float, u0: float, t_final: float, n_steps: int) -> np.ndarray:
    """u at the n_steps + 1 step times k * t_final / n_steps of the trapezoidal scheme.

    No input checks: the callers (solve_logistic, adjoint.logistic) validate.
    """
    half_step = 0.5 * a * (t_final / n_steps)
    u = np.empty(n_steps + 1)
    value = float(u0)
    u[0] = value
    for n in range(1, n_steps + 1):
        value = logistic_trapezoid_step(value, half_step)
        u[n] = value
    return u


def step_times(t_final: float, n_steps: int) -> np.ndarray:
    """The step grid k * t_final / n_steps, k = 0..n_steps, ending exactly at t_final."""
    t = (t_final / n_steps) * np.arange(n_steps + 1)
    t[-1] = t_final
    return t


def solve_logistic(
    a: float,
    *,
    u0: float = DEFAULT_U0,
    t_out=None,
    n_steps: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Solve u'(t) = a u (1 - u), u(0) = u0 by the implicit trapezoidal (Crank–Nicolson) rule.

    n_steps uniform steps over [0, t_out[-1]], each implicit equation solved exactly (the root
    of a quadratic continuous with u_n; see the module docstring). Output at t_out by linear
    interpolation between the two neighbouring steps, exact at output times on the step grid
    (within 1e-10 of a step). Second order in dt at the step times; between steps the
    interpolation error is O(dt^2) as well.

    Args:
        a: growth rate (finite; a < 0 gives decay).
        u0: initial value (finite).
        t_out: output times; t_out[0] must be 0, strictly increasing. Default linspace(0, 1, 101).
        n_steps: number of time steps (>= 1); default 1000.

    Returns:
        (t_out, u): the output times (nt,) and the solution there (nt,).
    """
    a = check_finite_scalar(a, "a")
    u0 = check_finite_scalar(u0, "u0")
    times = check_output_times(np.linspace(0.0, 1.0, 101) if t_out is None else t_out)
    n_steps = check_grid_size(DEFAULT_N_STEPS if n_steps is None else n_steps, "n_steps", 1)

    u_steps = logistic_steps(a, u0, times[-1], n_steps)
    position = times / times[-1] * n_steps  # fractional step index of every output time
    nearest = np.rint(position)
    position = np.where(np.abs(position - nearest) <= _TIME_GRID_RTOL * n_steps, nearest, position)
    low = np.clip(np.floor(position).astype(np.int64), 0, n_steps - 1)
    weight = position - low
    return times, (1.0 - weight) * u_steps[low] + weight * u_steps[low + 1]
