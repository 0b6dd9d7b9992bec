"""Heat-equation reference solution on [0,1] with homogeneous Dirichlet conditions."""

import numpy as np

from solvers.fdm.reaction_diffusion import check_grid_size, sample_on_grid, solve_reaction_diffusion


def solve_heat(
    f,
    D: float,
    *,
    nx: int = 401,
    t_out=None,
    n_steps: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Solve u_t = D*u_xx on [0,1], u(0,t) = u(1,t) = 0, u(x,0) = f(x).

    Crank–Nicolson in time with a Rannacher start-up (so non-smooth f, e.g. a hat, keeps
    second-order convergence), central differences in space; see solve_reaction_diffusion.

    Args:
        f: initial condition, a callable of x or an array of nx node values.
        D: diffusivity (>= 0).
        nx: number of grid nodes including both boundaries.
        t_out: output times starting at 0; default linspace(0, 1, 101).
        n_steps: number of time steps; default gives dt close to the grid spacing.

    Returns:
        (x, t, u): nodes (nx,), output times (nt,), solution (nt, nx).
    """
    x = np.linspace(0.0, 1.0, check_grid_size(nx, "nx", 3))
    t = np.linspace(0.0, 1.0, 101) if t_out is None else np.array(t_out, dtype=np.float64)
    u = solve_reaction_diffusion(sample_on_grid(f, x, "f"), D, t, n_steps=n_steps)
    return x, t, u
