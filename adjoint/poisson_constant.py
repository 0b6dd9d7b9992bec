"""Discrete adjoint of D u'' = f on [0, 1], u(0) = u(1) = 0 (constant D); infer D.

The forward model is `solvers.fdm.solve_poisson_constant`: at the interior nodes

    F(u, D) = D L u - f = 0,   (L u)_i = (u_{i-1} - 2 u_i + u_{i+1}) / h^2,

so dF/du = D L (symmetric tridiagonal) and dF/dD = L u. The data term is
J(D) = misfit.value(Q u, d), Q the linear interpolation from the grid to the observation points,
so dJ/du = g = Q^T misfit.gradient(Q u, d). The adjoint state mu solves (dF/du)^T mu = g on the
interior nodes, and

    dJ/dD = -mu^T dF/dD = -mu^T L u:

one tridiagonal solve forward, one backward.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_banded

from adjoint.fisher_kpp import POSITIVE
from adjoint.optimize import GridAdjointProblem, interpolation_matrix, points_and_values
from solvers.fdm.poisson_constant import (
    DEFAULT_NX,
    poisson_constant_source,
    second_difference_banded,
    solve_poisson_constant,
)
from solvers.fdm.reaction_diffusion import check_grid_size, sample_on_grid


class PoissonConstantProblem(GridAdjointProblem):
    """Infer m = (D,) of D u'' = f, u(0) = u(1) = 0, from observations u(x_i) ~ d_i.

    J(D) = misfit.value(u(x_i), d): the data term is entirely the `misfit` object's; u is the
    solution of solve_poisson_constant on nx nodes, linearly interpolated at the points.

    Args:
        x_obs: (n,) or (n, 1) observation points in [0, 1].
        values: (n,) observed u.
        misfit: an object with value(predicted, observed) -> float and
            gradient(predicted, observed) -> d value / d predicted (same shape as predicted).
        f: the source: a callable of x, a scalar or nx nodal values; default -pi^2 sin(pi x).
        nx: grid nodes including both boundaries (>= 3).
        initial: the default starting D of the optimiser.
    """

    names = ("D",)

    def __init__(self, x_obs, values, *, misfit, f=poisson_constant_source,
                 nx: int = DEFAULT_NX, initial: float = 2.0):
        super().__init__()
        x_obs, self.values = points_and_values(x_obs, values, "x_obs")
        self.misfit = misfit
        self.nx = check_grid_size(nx, "nx", 3)
        self.x = np.linspace(0.0, 1.0, self.nx)
        self.h = self.x[1] - self.x[0]
        self.source = sample_on_grid(f, self.x, "f")
        self.initial = float(initial)
        self.matrix = interpolation_matrix(x_obs[:, None], (self.x,))

    def initial_guess(self) -> np.ndarray:
        return np.array([self.initial])

    def bounds(self):
        return [(POSITIVE, None)]

    def _solve(self, m):
        _, u = solve_poisson_constant(float(m[0]), nx=self.nx, f=self.source)
        return u, self.matrix @ u

    def _objective(self, m, state) -> float:
        return float(self.misfit.value(state[1], self.values))

    def _gradient(self, m, state) -> np.ndarray:
        u, predicted = state
        gradient = np.asarray(self.misfit.gradient(predicted, self.values), dtype=np.float64)
        if gradient.shape != predicted.shape:
            raise ValueError(f"misfit.gradient returned shape {gradient.shape}, expected "
                             f"{predicted.shape}")
        g = self.matrix.T @ gradient
        D = float(m[0])
        mu = solve_banded((1, 1), second_difference_banded(self.nx - 2, D, self.h), g[1:-1])
        second_difference = (u[:-2] - 2.0 * u[1:-1] + u[2:]) / self.h**2  # L u: dF/dD
        return np.array([-float(mu @ second_difference)])

    def solution(self, m) -> tuple[np.ndarray, np.ndarray]:
        """(x, u) on the grid for m = (D,)."""
        _, state = self._state(m)
        return self.x, state[0]
