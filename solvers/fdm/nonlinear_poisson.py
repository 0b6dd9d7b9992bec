"""Nonlinear Poisson lam u'' + k tanh(u) = f on [-0.7, 0.7] (the B-PINN benchmark of Yang, Meng &
Karniadakis 2021): Newton's method on second-order central differences, followed in k along
one solution branch.

Manufactured solution: u = sin^3(6y) with lam = 0.01 and k = 0.7, so that (s = sin 6y,
c = cos 6y)

    u'' = 216 s c^2 - 108 s^3,   f = lam u'' + 0.7 tanh(u),

and the Dirichlet values are u(-0.7) = -sin^3(4.2) = 0.6621, u(0.7) = -0.6621. The source keeps
k = 0.7 (K_SOURCE) whatever k is solved for: at other k the solution is not sin^3(6y).

Scheme: on the uniform grid y_0..y_{n-1}, h = 1.4/(n - 1), the interior equations

    F_i(u, k) = lam (u_{i-1} - 2 u_i + u_{i+1}) / h^2 + k tanh(u_i) - f_i = 0

have the symmetric tridiagonal Jacobian dF/du = lam D2 + k diag(sech^2 u_i) and dF/dk = tanh(u).
Newton's method solves F = 0 (relative step tolerance 1e-13).

Several solution branches: lam D2 has eigenvalues -lam (j pi / 1.4)^2 = -0.0504 j^2 (j = 1, 2,
...), and k sech^2(u) in [0, k] lifts several of them above zero, so the Jacobian is indefinite
and can be singular. Newton from an arbitrary start may land on another branch (from sin^3(6y)
itself it does, or fails, at several k >= 0.95). The solver therefore follows the branch
through a known solution `start` = (k0, u0) (default: k0 = 0.7 and the exact profile, on which
Newton converges in a few steps) by continuation in k: steps of at most 0.05, each from the
tangent predictor u + dk du/dk (du/dk = -(dF/du)^{-1} tanh u), halved when Newton fails or its
correction exceeds 0.1 (a jump to another branch). J(k) is then the same function of k for
every caller.

Measured on that branch (nx = 1001; docs/poisson_bayes.md): it exists for k > 0.5064 (a fold:
the null vector of dF/du is odd, and continuation fails below it), dF/du is singular again at
k = 0.551 (an even null vector: a symmetry-breaking pitchfork that the odd branch passes
through, where Newton stalls), and for k >= 0.6 the smallest |eigenvalue| of dF/du is at least
0.081 (at k = 0.6; 0.203 at the truth, >= 0.13 for 0.65 <= k <= 3), its condition number at
most 2.5e5. Use k >= 0.6: bilo/problems/nonlinear_poisson.py bounds k to [0.6, 2].
"""

import numpy as np
from scipy.linalg import eigvalsh_tridiagonal, solve_banded

from solvers.fdm.reaction_diffusion import check_finite_scalar, check_grid_size, sample_on_grid

LAMBDA = 0.01
DOMAIN = (-0.7, 0.7)
K_SOURCE = 0.7  # the k of the manufactured source (the truth)
DEFAULT_NX = 1001
NEWTON_RTOL = 1e-13
NEWTON_MAX_ITERATIONS = 30
MAX_STEP = 0.05  # largest continuation step in k
MIN_STEP = 1e-4  # continuation gives up below this step
BRANCH_TOLERANCE = 0.1  # largest Newton correction of a predicted continuation step


def nonlinear_poisson_exact(y) -> np.ndarray:
    """u = sin^3(6y), the solution at k = K_SOURCE (physical coordinate y in [-0.7, 0.7])."""
    return np.sin(6.0 * np.asarray(y, dtype=np.float64)) ** 3


def nonlinear_poisson_source(y, lam: float = LAMBDA, k: float = K_SOURCE) -> np.ndarray:
    """f = lam u'' + k tanh(u) for u = sin^3(6y): u'' = 216 sin(6y) cos^2(6y) - 108 sin^3(6y)."""
    y = np.asarray(y, dtype=np.float64)
    s, c = np.sin(6.0 * y), np.cos(6.0 * y)
    return lam * (216.0 * s * c**2 - 108.0 * s**3) + k * np.tanh(s**3)


def physical_grid(nx: int) -> np.ndarray:
    """nx uniform nodes on [-0.7, 0.7], the ends exact."""
    y = np.linspace(DOMAIN[0], DOMAIN[1], check_grid_size(nx, "nx", 3))
    y[0], y[-1] = DOMAIN
    return y


def residual(u: np.ndarray, k: float, source: np.ndarray, h: float, lam: float) -> np.ndarray:
    """F(u, k) at the interior nodes (u with its boundary values, source at every node)."""
    inner = u[1:-1]
    return lam * (u[:-2] - 2.0 * inner + u[2:]) / h**2 + k * np.tanh(inner) - source[1:-1]


def jacobian_banded(u: np.ndarray, k: float, h: float, lam: float) -> np.ndarray:
    """dF/du at the interior nodes in banded (1, 1) form; symmetric, so also dF/du^T."""
    n = u.size - 2
    matrix = np.empty((3, n))
    matrix[0] = matrix[2] = lam / h**2
    matrix[0, 0] = matrix[2, -1] = 0.0  # outside the matrix
    matrix[1] = -2.0 * lam / h**2 + k / np.cosh(u[1:-1]) ** 2
    return matrix


def jacobian_eigenvalues(u: np.ndarray, k: float, h: float, lam: float = LAMBDA) -> np.ndarray:
    """The eigenvalues of dF/du (symmetric tridiagonal), ascending: the well-posedness check."""
    n = u.size - 2
    return eigvalsh_tridiagonal(-2.0 * lam / h**2 + k / np.cosh(u[1:-1]) ** 2,
                                np.full(n - 1, lam / h**2))


def newton(u: np.ndarray, k: float, source: np.ndarray, h: float, lam: float) -> np.ndarray | None:
    """Newton's method for F(., k) = 0 from u (boundary values kept); None if it fails."""
    u = u.copy()
    for _ in range(NEWTON_MAX_ITERATIONS):
        step = solve_banded((1, 1), jacobian_banded(u, k, h, lam), -residual(u, k, source, h, lam),
                            check_finite=False)
        if not np.all(np.isfinite(step)):
            return None
        u[1:-1] += step
        if np.max(np.abs(step)) <= NEWTON_RTOL * (1.0 + np.max(np.abs(u))):
            return u
    return None


def tangent(u: np.ndarray, k: float, h: float, lam: float) -> np.ndarray:
    """du/dk along the branch at (u, k): the interior solve dF/du s = -tanh(u), s = 0 at the
    boundary."""
    s = np.zeros_like(u)
    s[1:-1] = solve_banded((1, 1), jacobian_banded(u, k, h, lam), -np.tanh(u[1:-1]),
                           check_finite=False)
    return s


def follow_branch(k: float, k0: float, u0: np.ndarray, source: np.ndarray, h: float,
                  lam: float) -> np.ndarray:
    """The solution at k on the branch through the solution u0 at k0 (u0 converged), by
    continuation with tangent predictors; RuntimeError where the branch cannot be followed."""
    current_k, u = k0, u0
    step = MAX_STEP
    while current_k != k:
        dk = float(np.clip(k - current_k, -step, step))
        target = k if abs(k - current_k) <= step else current_k + dk
        predicted = u + (target - current_k) * tangent(u, current_k, h, lam)
        solved = newton(predicted, target, source, h, lam) if np.all(np.isfinite(predicted)) \
            else None
        if solved is None or np.max(np.abs(solved - predicted)) > BRANCH_TOLERANCE:
            step *= 0.5
            if step < MIN_STEP:
                raise RuntimeError(
                    f"nonlinear Poisson: the solution branch from k = {k0:g} cannot be followed "
                    f"past k = {current_k:.6g} towards k = {k:g} (Newton fails there: a fold "
                    "or a singular Jacobian; the default branch exists for k > 0.5064 and is "
                    "regular for k >= 0.6)")
            continue
        current_k, u = target, solved
        step = min(2.0 * step, MAX_STEP)
    return u


def solve_nonlinear_poisson(
    k: float,
    *,
    nx: int = DEFAULT_NX,
    lam: float = LAMBDA,
    f=nonlinear_poisson_source,
    left: float | None = None,
    right: float | None = None,
    start: tuple[float, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Solve lam u'' + k tanh(u) = f on [-0.7, 0.7] with Dirichlet values, on the solution branch
    through `start` (see the module docstring).

    Args:
        k: the reaction coefficient (finite).
        nx: grid nodes including both boundaries (>= 3).
        lam: the diffusion coefficient (finite, > 0).
        f: the source: a callable of y, a scalar or nx nodal values; default the manufactured
            source for u = sin^3(6y) at k = 0.7.
        left, right: u(-0.7) and u(0.7); default sin^3(6y) there (0.6621 and -0.6621).
        start: (k0, u0): a point of the branch to follow, u0 nodal values (nx,) whose boundary
            entries are replaced by left/right; Newton is first run at k0 from u0. Default
            (0.7, sin^3(6y)).

    Returns:
        (y, u): nodes (nx,) on [-0.7, 0.7] and the solution there, boundary values included.

    Raises:
        RuntimeError: Newton fails at k0, or the branch cannot be followed to k (a fold).
    """
    k = check_finite_scalar(k, "k")
    lam = check_finite_scalar(lam, "lam")
    if not lam > 0.0:
        raise ValueError(f"lam must be positive, got {lam}")
    y = physical_grid(nx)
    h = y[1] - y[0]
    source = sample_on_grid(f, y, "f")
    exact_ends = nonlinear_poisson_exact(np.array(DOMAIN))
    left = float(exact_ends[0]) if left is None else check_finite_scalar(left, "left")
    right = float(exact_ends[1]) if right is None else check_finite_scalar(right, "right")
    if start is None:
        k0, u0 = K_SOURCE, nonlinear_poisson_exact(y)
    else:
        k0 = check_finite_scalar(start[0], "start k0")
        u0 = sample_on_grid(start[1], y, "start u0")
    u0 = u0.copy()
    u0[0], u0[-1] = left, right
    anchor = newton(u0, k0, source, h, lam)
    if anchor is None:
        raise RuntimeError(f"nonlinear Poisson: Newton's method from the start did not converge "
                           f"at k0 = {k0:g}; give a start closer to a solution")
    return y, follow_branch(k, k0, anchor, source, h, lam)
