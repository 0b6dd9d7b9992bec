"""Second-order finite differences for steady 1-D diffusion (two-point boundary-value problems)."""

import numpy as np
from scipy.linalg import solve_banded

from solvers.fdm.reaction_diffusion import check_finite_scalar, check_grid_size, sample_on_grid


def _midpoint_diffusivity(D, x: np.ndarray) -> np.ndarray:
    """D at the cell midpoints: evaluated there if callable, else averaged from the nodes."""
    midpoints = 0.5 * (x[:-1] + x[1:])
    if callable(D):
        values = sample_on_grid(D, midpoints, "D")
    else:
        nodes = sample_on_grid(D, x, "D")
        values = 0.5 * (nodes[:-1] + nodes[1:])
    if np.any(values <= 0.0):
        raise ValueError("D must be positive on [0, 1] (checked at the cell midpoints)")
    return values


def solve_variable_diffusion(
    D,
    f,
    *,
    nx: int = 1001,
    left: float = 0.0,
    right: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Solve -(D(x) u')' = f(x) on [0,1], u(0) = left, u(1) = right.

    Conservative flux form on the uniform grid x_i = i*h:
        -(D_{i+1/2}(u_{i+1} - u_i) - D_{i-1/2}(u_i - u_{i-1})) / h^2 = f(x_i),
    with D at the cell midpoints x_{i+1/2}; second order for smooth D and f.

    Args:
        D: diffusivity > 0: a callable (evaluated at the midpoints), a scalar, or an array of
            nx node values (neighbours averaged to the midpoints).
        f: source: a callable, a scalar, or an array of nx node values.
        nx: number of grid nodes including both boundaries (>= 3).
        left, right: Dirichlet values at x = 0 and x = 1.

    Returns:
        (x, u): nodes (nx,) and solution (nx,), boundary values included.
    """
    x = np.linspace(0.0, 1.0, check_grid_size(nx, "nx", 3))
    left = check_finite_scalar(left, "left")
    right = check_finite_scalar(right, "right")
    flux_coefficient = _midpoint_diffusivity(D, x)
    source = sample_on_grid(f, x, "f")
    h = x[1] - x[0]

    # Rows are the interior nodes 1..nx-2, multiplied through by h^2.
    matrix = np.zeros((3, x.size - 2))
    matrix[0, 1:] = -flux_coefficient[1:-1]
    matrix[1] = flux_coefficient[:-1] + flux_coefficient[1:]
    matrix[2, :-1] = -flux_coefficient[1:-1]
    rhs = h**2 * source[1:-1]
    rhs[0] += flux_coefficient[0] * left
    rhs[-1] += flux_coefficient[-1] * right

    u = np.empty_like(x)
    u[0], u[-1] = left, right
    u[1:-1] = solve_banded((1, 1), matrix, rhs)
    return x, u


def solve_two_point(
    theta0: float,
    theta1: float,
    *,
    nx: int = 1001,
    forcing=2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Solve y'' = forcing on [0,1], y(0) = theta0, y(1) = theta1.

    This is solve_variable_diffusion with D = 1 and f = -forcing (second-order central
    differences; exact at the nodes when y is a quadratic, e.g. the default forcing = 2).

    Args:
        theta0, theta1: boundary values.
        nx: number of grid nodes including both boundaries (>= 3).
        forcing: right-hand side: a scalar, a callable of x, or an array of nx node values.

    Returns:
        (x, y): nodes (nx,) and solution (nx,).
    """
    x = np.linspace(0.0, 1.0, check_grid_size(nx, "nx", 3))
    source = -sample_on_grid(forcing, x, "forcing")
    return solve_variable_diffusion(1.0, source, nx=nx, left=theta0, right=theta1)


def two_point_exact(x, theta0: float, theta1: float) -> np.ndarray:
    """Exact solution of y'' = 2, y(0) = theta0, y(1) = theta1.

    y(x) = x^2 + (theta1 - theta0 - 1)*x + theta0.
    """
    x = np.asarray(x, dtype=np.float64)
    return x**2 + (theta1 - theta0 - 1.0) * x + theta0
