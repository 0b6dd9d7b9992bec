"""Fisher–KPP reference solution on [0,1] (the BiLO Fisher–KPP benchmark)."""

import numpy as np

from solvers.fdm.reaction_diffusion import (
    check_finite_scalar,
    check_grid_size,
    solve_reaction_diffusion,
)

# The benchmark scales the diffusion parameter D by this factor.
DIFFUSION_SCALE = 0.01


def fisher_kpp_initial(x):
    """Initial condition u(x, 0) = 0.5*sin(pi*x)^2."""
    return 0.5 * np.sin(np.pi * np.asarray(x, dtype=np.float64)) ** 2


def solve_fisher_kpp(
    D: float,
    rho: float,
    *,
    nx: int = 401,
    t_out=None,
    n_steps: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Solve u_t = 0.01*D*u_xx + rho*u*(1 - u) on [0,1], u(0,t) = u(1,t) = 0.

    Initial condition fisher_kpp_initial. Crank–Nicolson/Newton with central differences
    (see solve_reaction_diffusion), second order in space and time.

    Args:
        D: diffusion parameter (>= 0); the PDE uses 0.01*D.
        rho: growth rate.
        nx: number of grid nodes including both boundaries.
        t_out: output times starting at 0; default linspace(0, 1, 101).
        n_steps: number of time steps; default gives dt close to the grid spacing.

    Returns:
        (x, t, u): nodes (nx,), output times (nt,), solution (nt, nx).
    """
    D = check_finite_scalar(D, "D", minimum=0.0)
    rho = check_finite_scalar(rho, "rho")
    x = np.linspace(0.0, 1.0, check_grid_size(nx, "nx", 3))
    t = np.linspace(0.0, 1.0, 101) if t_out is None else np.array(t_out, dtype=np.float64)
    u = solve_reaction_diffusion(
        fisher_kpp_initial(x),
        DIFFUSION_SCALE * D,
        t,
        reaction=lambda v: rho * v * (1.0 - v),
        reaction_du=lambda v: rho * (1.0 - 2.0 * v),
        n_steps=n_steps,
    )
    return x, t, u
