"""Discrete adjoint for the diffusion coefficient of -(D(x) u')' = f, u(0) = u(1) = 0.

D is piecewise linear with nodal values D_0..D_{nx-1}; D_0 = D_{nx-1} = 1 are fixed and the
interior values are the unknowns m. The forward solve is `solvers.fdm.solve_variable_diffusion`
with these nodal values (flux coefficients k_e = (D_e + D_{e+1})/2 at the cell midpoints):

    A(k) u = h^2 f  on the interior nodes,
    (A u)_i = k_{i-1/2} (u_i - u_{i-1}) - k_{i+1/2} (u_{i+1} - u_i).

J = misfit.value(u(x_i), d) + w_reg ∫|D'|^2 dx. With A symmetric, the adjoint state solves
A lam = dJ/du, and dJ/dk_e = -(u_{e+1} - u_e)(lam_{e+1} - lam_e) (boundary u, lam = 0), so
dJ/dD_j = (dJ/dk_{j-1} + dJ/dk_j)/2: one tridiagonal solve forward and one backward.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_banded

from adjoint.fisher_kpp import POSITIVE
from adjoint.optimize import GridAdjointProblem, gradient_energy, interpolation_matrix
from solvers.fdm.poisson import solve_variable_diffusion
from solvers.fdm.reaction_diffusion import check_grid_size, sample_on_grid


class PoissonProblem(GridAdjointProblem):
    """Infer D(x) (interior nodal values) of -(D u')' = f, u(0) = u(1) = 0, D(0) = D(1) = 1.

    J(m) = misfit.value(u(x_i), d) + w_reg ∫|D'|^2 dx, u linearly interpolated between nodes.

    Args:
        x_obs: (n,) observation points in [0, 1].
        values: (n,) observed u.
        f: the source: a callable of x, a scalar or nx nodal values.
        nx: grid nodes including both boundaries.
        misfit: the data term (value and gradient in the predicted u), the problem's likelihood.
        w_reg: weight of the H1-seminorm regularisation of D.
    """

    function = "D"

    def __init__(self, x_obs, values, f, *, misfit, nx: int = 1001, w_reg: float = 1e-3):
        super().__init__()
        self.misfit = misfit
        self.nx = check_grid_size(nx, "nx", 3)
        self.x = np.linspace(0.0, 1.0, self.nx)
        self.h = self.x[1] - self.x[0]
        self.source = sample_on_grid(f, self.x, "f")
        self.w_reg = float(w_reg)
        x_obs = np.asarray(x_obs, dtype=np.float64).ravel()
        self.values = np.asarray(values, dtype=np.float64).ravel()
        if self.values.shape != x_obs.shape:
            raise ValueError(f"{x_obs.size} observation points but {self.values.size} values")
        self.matrix = interpolation_matrix(x_obs[:, None], (self.x,))

    def full_function(self, m) -> np.ndarray:
        """Nodal D on the whole grid: the interior values m with D(0) = D(1) = 1."""
        return np.concatenate([[1.0], np.asarray(m, dtype=np.float64), [1.0]])

    def initial_guess(self) -> np.ndarray:
        return np.ones(self.nx - 2)

    def bounds(self):
        return [(POSITIVE, None)] * (self.nx - 2)

    def _solve(self, m):
        D = self.full_function(m)
        _, u = solve_variable_diffusion(D, self.source, nx=self.nx)
        return D, u, self.matrix @ u

    def _objective(self, m, state) -> float:
        D, _, predicted = state
        regularisation = gradient_energy(D, self.h)[0]
        return float(self.misfit.value(predicted, self.values)) + self.w_reg * regularisation

    def _gradient(self, m, state) -> np.ndarray:
        D, u, predicted = state
        k = 0.5 * (D[:-1] + D[1:])
        banded = np.zeros((3, self.nx - 2))
        banded[0, 1:] = -k[1:-1]
        banded[1] = k[:-1] + k[1:]
        banded[2, :-1] = -k[1:-1]
        du = self.matrix.T @ self.misfit.gradient(predicted, self.values)
        lam = np.zeros(self.nx)
        lam[1:-1] = solve_banded((1, 1), banded, du[1:-1])
        d_k = -np.diff(u) * np.diff(lam)
        d_D = np.zeros(self.nx)
        d_D[:-1] += 0.5 * d_k
        d_D[1:] += 0.5 * d_k
        d_D += self.w_reg * gradient_energy(D, self.h)[1]
        return d_D[1:-1]

    def solution(self, m) -> tuple[np.ndarray, np.ndarray]:
        """(x, u) at D given by m."""
        _, state = self._state(m)
        return self.x, state[1]
