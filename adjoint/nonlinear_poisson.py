"""Discrete adjoint of lam u'' + k tanh(u) = f on [-0.7, 0.7] (Dirichlet); infer k.

The forward model is `solvers.fdm.solve_nonlinear_poisson` (Newton on second-order central
differences, on the solution branch through the manufactured solution at k = 0.7): at the
interior nodes

    F_i(u, k) = lam (u_{i-1} - 2 u_i + u_{i+1}) / h^2 + k tanh(u_i) - f_i = 0,

dF/du = lam D2 + k diag(sech^2 u) (symmetric tridiagonal) and dF/dk = tanh(u). With
J(k) = misfit.value(Q u, d), Q the linear interpolation from the grid to the observation points
and g = Q^T misfit.gradient(Q u, d), the adjoint state solves (dF/du)^T mu = g at the converged
u, and

    dJ/dk = -mu^T dF/dk = -mu^T tanh(u).

The Jacobian is indefinite and singular at k = 0.551 and at the fold k = 0.5064 (see
solvers/fdm/nonlinear_poisson.py); on k >= 0.6 its smallest |eigenvalue| is at least 0.081, so
the adjoint solve is well conditioned there (the bounds).

The observation points are in the unit coordinate x in [0, 1] of the problem declaration,
y = -0.7 + 1.4 x; the solution is reported on that coordinate.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_banded

from adjoint.optimize import GridAdjointProblem, interpolation_matrix, points_and_values
from solvers.fdm.nonlinear_poisson import (
    DEFAULT_NX,
    LAMBDA,
    jacobian_banded,
    nonlinear_poisson_source,
    solve_nonlinear_poisson,
)
from solvers.fdm.reaction_diffusion import check_finite_scalar, check_grid_size

K_BOUNDS = (0.6, 2.0)  # where the followed branch is regular (see the module docstring)


class NonlinearPoissonProblem(GridAdjointProblem):
    """Infer m = (k,) of lam u'' + k tanh(u) = f on [-0.7, 0.7] from observations of u.

    J(k) = misfit.value(u(x_i), d), u the solution of solve_nonlinear_poisson on nx nodes,
    linearly interpolated at the observation points x_i in the unit coordinate
    x = (y + 0.7)/1.4.

    Args:
        x_obs: (n,) or (n, 1) observation points in [0, 1] (the unit coordinate).
        values: (n,) observed u.
        misfit: value(predicted, observed) -> float and gradient(predicted, observed).
        nx: grid nodes including both boundaries (>= 3).
        lam: the diffusion coefficient (default 0.01).
        initial: the default starting k of the optimiser.
        bounds: (lo, hi) for k; default (0.6, 2.0).
    """

    names = ("k",)

    def __init__(self, x_obs, values, *, misfit, nx: int = DEFAULT_NX, lam: float = LAMBDA,
                 initial: float = 1.0, bounds: tuple[float, float] = K_BOUNDS):
        super().__init__()
        x_obs, self.values = points_and_values(x_obs, values, "x_obs")
        self.misfit = misfit
        self.nx = check_grid_size(nx, "nx", 3)
        self.lam = check_finite_scalar(lam, "lam")
        self.x = np.linspace(0.0, 1.0, self.nx)
        self.initial = float(initial)
        self.k_bounds = (float(bounds[0]), float(bounds[1]))
        self.matrix = interpolation_matrix(x_obs[:, None], (self.x,))

    def initial_guess(self) -> np.ndarray:
        return np.array([self.initial])

    def bounds(self):
        return [self.k_bounds]

    def _solve(self, m):
        y, u = solve_nonlinear_poisson(float(m[0]), nx=self.nx, lam=self.lam,
                                       f=nonlinear_poisson_source)
        return y, u, self.matrix @ u

    def _objective(self, m, state) -> float:
        return float(self.misfit.value(state[2], self.values))

    def _gradient(self, m, state) -> np.ndarray:
        y, u, predicted = state
        gradient = np.asarray(self.misfit.gradient(predicted, self.values), dtype=np.float64)
        if gradient.shape != predicted.shape:
            raise ValueError(f"misfit.gradient returned shape {gradient.shape}, expected "
                             f"{predicted.shape}")
        g = self.matrix.T @ gradient
        h = y[1] - y[0]
        # dF/du is symmetric: its banded form is that of its transpose
        mu = solve_banded((1, 1), jacobian_banded(u, float(m[0]), h, self.lam), g[1:-1])
        return np.array([-float(mu @ np.tanh(u[1:-1]))])

    def solution(self, m) -> tuple[np.ndarray, np.ndarray]:
        """(x, u) on the grid in the unit coordinate x = (y + 0.7)/1.4, for m = (k,)."""
        _, state = self._state(m)
        return self.x, state[1]
