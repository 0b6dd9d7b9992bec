"""Two-point boundary-value problem with a point (Dirac delta) source."""

import numpy as np
from scipy.linalg import solve_banded

from solvers.fdm.reaction_diffusion import check_finite_scalar, check_grid_size


def _check_parameters(lam, mu, z) -> tuple[float, float, float]:
    lam = check_finite_scalar(lam, "lam")
    mu = check_finite_scalar(mu, "mu", minimum=0.0)
    z = check_finite_scalar(z, "z")
    if not 0.0 < z < 1.0:
        raise ValueError(f"z must lie strictly inside (0, 1), got {z}")
    return lam, mu, z


def solve_singular_forcing(
    lam: float,
    mu: float,
    *,
    z: float = 0.5,
    nx: int = 1001,
) -> tuple[np.ndarray, np.ndarray]:
    """Solve u'' - mu*u + lam*delta(x - z) = 0 on [0,1], u(0) = u(1) = 0 (mu >= 0).

    Central differences (-u_{i-1} + 2u_i - u_{i+1})/h^2 + mu*u_i = lam*w_i/h, where the delta
    is split over the two nodes around z with the linear hat weights w_j = 1 - s, w_{j+1} = s,
    s = (z - x_j)/h. For mu = 0 the nodal values are exact for any z (the Green's function is
    piecewise linear in z); for mu > 0 the scheme is second order at the nodes.

    Args:
        lam: source strength.
        mu: reaction coefficient (>= 0).
        z: source location in (0, 1); it need not be a grid node.
        nx: number of grid nodes including both boundaries (>= 3).

    Returns:
        (x, u): nodes (nx,) and solution (nx,).
    """
    x, matrix, rhs = singular_forcing_system(lam, mu, z=z, nx=nx)
    u = np.zeros_like(x)
    u[1:-1] = solve_banded((1, 1), matrix, rhs)
    return x, u


def singular_forcing_system(
    lam: float,
    mu: float,
    *,
    z: float = 0.5,
    nx: int = 1001,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The linear system that `solve_singular_forcing` solves, for its discrete adjoint.

    Rows are the interior nodes multiplied through by h^2: A u = b with A = tridiag(-1,
    2 + mu*h^2, -1) (symmetric) and b = h * lam * w, w the hat weights of the delta at z.

    Returns:
        (x, matrix, rhs): nodes (nx,), A in `scipy.linalg.solve_banded`'s (1, 1) layout
        (3, nx - 2), and b (nx - 2,).
    """
    lam, mu, z = _check_parameters(lam, mu, z)
    x = np.linspace(0.0, 1.0, check_grid_size(nx, "nx", 3))
    h = x[1] - x[0]

    left_node = min(int(np.floor(z / h)), x.size - 2)
    fraction = z / h - left_node
    load = np.zeros_like(x)
    load[left_node] = (1.0 - fraction) * lam / h
    load[left_node + 1] = fraction * lam / h

    # Rows are the interior nodes, multiplied through by h^2.
    matrix = np.empty((3, x.size - 2))
    matrix[0] = -1.0
    matrix[1] = 2.0 + mu * h**2
    matrix[2] = -1.0
    return x, matrix, h**2 * load[1:-1]


def singular_forcing_exact(x, lam: float, mu: float, z: float = 0.5) -> np.ndarray:
    """Exact solution of u'' - mu*u + lam*delta(x - z) = 0, u(0) = u(1) = 0.

    For mu > 0, with k = sqrt(mu): u = A*sinh(k x) for x <= z and B*sinh(k(1-x)) for x >= z,
    continuous at z with u'(z+) - u'(z-) = -lam, i.e. the Green's function
        u = lam * sinh(k*min(x,z)) * sinh(k*(1-max(x,z))) / (k*sinh(k)),
    evaluated in exponential form so that large mu does not overflow.
    For mu = 0: u = lam * min(x,z) * (1 - max(x,z)).
    """
    lam, mu, z = _check_parameters(lam, mu, z)
    x = np.asarray(x, dtype=np.float64)
    near = np.minimum(x, z)
    far = 1.0 - np.maximum(x, z)
    if mu == 0.0:
        return lam * near * far
    k = np.sqrt(mu)
    # sinh(p)*sinh(q)/sinh(k) = exp(p+q-k)*(1-e^{-2p})*(1-e^{-2q}) / (2*(1-e^{-2k}))
    return (
        lam
        / k
        * np.exp(k * (near + far - 1.0))
        * np.expm1(-2.0 * k * near)
        * np.expm1(-2.0 * k * far)
        / (-2.0 * np.expm1(-2.0 * k))
    )
