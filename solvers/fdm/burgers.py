"""First-order Godunov finite volumes for the inviscid Burgers equation on [0,1]."""

import numpy as np

from solvers.fdm.reaction_diffusion import (
    check_finite_scalar,
    check_grid_size,
    check_output_times,
    sample_on_grid,
)


def _godunov_flux(u_left: np.ndarray, u_right: np.ndarray, a: float) -> np.ndarray:
    # F(u) = a*u^2/2 with a > 0 is convex with its minimum at u = 0, so the flux of the exact
    # Riemann solution at the interface is max(F(max(u_L, 0)), F(min(u_R, 0))).
    return 0.5 * a * np.maximum(np.maximum(u_left, 0.0) ** 2, np.minimum(u_right, 0.0) ** 2)


def burgers_godunov_flux(u_left, u_right, a: float) -> np.ndarray:
    """Godunov flux for F(u) = a*u^2/2 (a > 0): F on the exact Riemann solution at x/t = 0.

    Shock (u_L > u_R): F(u_L) if the speed a*(u_L + u_R)/2 is positive, else F(u_R).
    Rarefaction (u_L <= u_R): F(u_L) if u_L >= 0, F(u_R) if u_R <= 0, else 0 (transonic).
    """
    a = check_finite_scalar(a, "a")
    if a <= 0.0:
        raise ValueError(f"a must be positive, got {a}")
    return _godunov_flux(np.asarray(u_left, np.float64), np.asarray(u_right, np.float64), a)


def boundary_traces(u: np.ndarray) -> np.ndarray:
    """Cell values (last axis) extended by the values at x = 0 and x = 1 for the boundary datum
    0, which holds only where the flow enters (Bardos-LeRoux-Nedelec): where u leaves the domain
    (u < 0 at x = 0, u > 0 at x = 1) the trace is the adjacent cell value, else 0."""
    u = np.asarray(u, dtype=np.float64)
    return np.concatenate([np.minimum(u[..., :1], 0.0), u, np.maximum(u[..., -1:], 0.0)],
                          axis=-1)


def solve_burgers(
    f,
    *,
    a: float = 0.2,
    n_cells: int = 1000,
    t_out=None,
    cfl: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Solve u_t + a*u*u_x = 0, i.e. u_t + (a*u^2/2)_x = 0, on [0,1] with u(0,t) = u(1,t) = 0.

    Cell-centred finite volumes on n_cells uniform cells, first-order Godunov scheme
        u_j <- u_j - dt/h * (G(u_j, u_{j+1}) - G(u_{j-1}, u_j)),  G = burgers_godunov_flux,
    forward Euler in time with dt = cfl*h/(a*max|u|), shortened to land on every output time.
    The boundary values enter through ghost cells holding 0, so the Riemann solver decides
    whether the boundary condition is felt (inflow) or the wave leaves the domain (outflow).
    Initial cell averages are approximated by the values at the cell centres.

    Args:
        f: initial condition, a callable of x or an array of n_cells cell values.
        a: flux coefficient (> 0).
        n_cells: number of cells (>= 2).
        t_out: output times starting at 0; default linspace(0, 1, 101).
        cfl: Courant number in (0, 1].

    Returns:
        (x, t, u): cell centres (n_cells,), output times (nt,), solution (nt, n_cells).
    """
    a = check_finite_scalar(a, "a")
    if a <= 0.0:
        raise ValueError(f"a must be positive, got {a}")
    cfl = check_finite_scalar(cfl, "cfl")
    if not 0.0 < cfl <= 1.0:
        raise ValueError(f"cfl must lie in (0, 1], got {cfl}")
    n_cells = check_grid_size(n_cells, "n_cells", 2)
    times = check_output_times(np.linspace(0.0, 1.0, 101) if t_out is None else t_out)

    h = 1.0 / n_cells
    x = (np.arange(n_cells) + 0.5) * h
    u = sample_on_grid(f, x, "f")
    solution = np.empty((times.size, n_cells))
    solution[0] = u
    padded = np.zeros(n_cells + 2)  # ghost cells at both ends stay 0
    t_now = 0.0
    for k, t_target in enumerate(times[1:], start=1):
        while t_now < t_target:
            remaining = t_target - t_now
            max_speed = a * np.max(np.abs(u))
            dt = cfl * h / max_speed if max_speed > 0.0 else np.inf
            if dt >= remaining:
                dt, t_now = remaining, t_target  # assign, so round-off cannot add a sliver step
            else:
                t_now += dt
            padded[1:-1] = u
            flux = _godunov_flux(padded[:-1], padded[1:], a)
            u = u - dt / h * np.diff(flux)
        solution[k] = u
    return x, times, solution
