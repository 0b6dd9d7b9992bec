"""Constant-coefficient Poisson D u'' = f on [0, 1], u(0) = left, u(1) = right.

Second-order central differences on the uniform grid x_i = i h, h = 1/(nx - 1): at the interior
nodes i = 1..nx-2,

    D (u_{i-1} - 2 u_i + u_{i+1}) / h^2 = f(x_i),

a symmetric tridiagonal system solved by `scipy.linalg.solve_banded`. With the default source
f(x) = -pi^2 sin(pi x) and homogeneous boundary values the exact solution is u = sin(pi x)/D
(`poisson_constant_exact`); the scheme's nodal error is (pi^2 h^2 / 12) sin(pi x)/D + O(h^4)
(second order).
"""

import numpy as np
from scipy.linalg import solve_banded

from solvers.fdm.reaction_diffusion import check_finite_scalar, check_grid_size, sample_on_grid

DEFAULT_NX = 1001


def poisson_constant_source(x) -> np.ndarray:
    """The default source f(x) = -pi^2 sin(pi x), for which u = sin(pi x)/D."""
    return -np.pi**2 * np.sin(np.pi * np.asarray(x, dtype=np.float64))


def poisson_constant_exact(x, D: float) -> np.ndarray:
    """Exact solution u = sin(pi x)/D of D u'' = -pi^2 sin(pi x), u(0) = u(1) = 0."""
    D = check_diffusivity(D)
    return np.sin(np.pi * np.asarray(x, dtype=np.float64)) / D


def check_diffusivity(D) -> float:
    """D as a float after checking it is finite and positive."""
    D = check_finite_scalar(D, "D")
    if not D > 0.0:
        raise ValueError(f"D must be positive, got {D}")
    return D


def second_difference_banded(n_interior: int, D: float, h: float) -> np.ndarray:
    """The banded (1, 1) form of the interior matrix D (u_{i-1} - 2 u_i + u_{i+1}) / h^2
    (symmetric, so it is also its own transpose's banded form)."""
    matrix = np.empty((3, n_interior))
    matrix[0] = matrix[2] = D / h**2
    matrix[1] = -2.0 * D / h**2
    matrix[0, 0] = matrix[2, -1] = 0.0  # outside the matrix
    return matrix


def solve_poisson_constant(
    D: float,
    *,
    nx: int = DEFAULT_NX,
    f=poisson_constant_source,
    left: float = 0.0,
    right: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Solve D u'' = f on [0, 1], u(0) = left, u(1) = right, by second-order central differences.

    Args:
        D: the (constant) coefficient, finite and > 0.
        nx: number of grid nodes including both boundaries (>= 3).
        f: the source: a callable of x, a scalar or nx nodal values; default -pi^2 sin(pi x)
            (exact solution sin(pi x)/D).
        left, right: Dirichlet values at x = 0 and x = 1.

    Returns:
        (x, u): nodes (nx,) and solution (nx,), boundary values included.
    """
    D = check_diffusivity(D)
    x = np.linspace(0.0, 1.0, check_grid_size(nx, "nx", 3))
    left = check_finite_scalar(left, "left")
    right = check_finite_scalar(right, "right")
    source = sample_on_grid(f, x, "f")
    h = x[1] - x[0]

    rhs = source[1:-1].copy()
    rhs[0] -= D * left / h**2
    rhs[-1] -= D * right / h**2
    u = np.empty_like(x)
    u[0], u[-1] = left, right
    u[1:-1] = solve_banded((1, 1), second_difference_banded(x.size - 2, D, h), rhs)
    return x, u
