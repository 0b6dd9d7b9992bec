"""Discrete adjoint for the initial condition of the heat equation u_t = D u_xx, u = 0 at x = 0, 1.

The unknown is f = u(x, 0) at the interior nodes (f(0) = f(1) = 0). The forward model is the
scheme of `solvers.fdm.solve_heat` (Crank–Nicolson with a Rannacher start-up; see
`adjoint.fisher_kpp.ReactionDiffusionScheme`, here without reaction), and

    J(f) = misfit.value(u(x_i, t_i), d) + w_reg ∫|f'|^2 dx.

The gradient w.r.t. f is dJ/du0 from the backward sweep plus the regularisation's gradient.
"""

from __future__ import annotations

import numpy as np

from adjoint.fisher_kpp import ReactionDiffusionScheme, SpaceTimeMisfit
from adjoint.optimize import GridAdjointProblem, gradient_energy
from solvers.fdm.reaction_diffusion import check_finite_scalar


class HeatProblem(GridAdjointProblem):
    """Infer f = u(x, 0) (interior nodal values) of u_t = D u_xx from observations of u.

    Args:
        points: (n, 2) observation coordinates, columns (x, t) (e.g. t = 1 only).
        values: (n,) observed u.
        misfit: the data term (value and gradient in the predicted u), the problem's likelihood.
        D: the (known) diffusivity.
        nx, t_out, n_steps: resolution as in solve_heat.
        w_reg: weight of the H1-seminorm regularisation ∫|f'|^2 dx.
    """

    function = "f"

    def __init__(self, points, values, *, misfit, D: float = 0.01, nx: int = 401, t_out=None,
                 n_steps: int | None = None, w_reg: float = 1e-4):
        super().__init__()
        self.D = check_finite_scalar(D, "D", minimum=0.0)
        self.scheme = ReactionDiffusionScheme(nx, t_out, n_steps)
        self.nx, self.n_steps, self.x = self.scheme.nx, self.scheme.n_steps, self.scheme.x
        self.h = self.scheme.h
        self.misfit = SpaceTimeMisfit(self.scheme, points, values, misfit)
        self.w_reg = float(w_reg)

    def full_function(self, m) -> np.ndarray:
        """Nodal f on the whole grid: the interior values m with f(0) = f(1) = 0."""
        return np.concatenate([[0.0], np.asarray(m, dtype=np.float64), [0.0]])

    def initial_guess(self) -> np.ndarray:
        return np.sin(np.pi * self.x[1:-1])

    def _solve(self, m):
        states = self.scheme.forward(np.asarray(m, dtype=np.float64), self.D)
        return states, self.misfit.predicted(self.scheme.full_states(states))

    def _objective(self, m, state) -> float:
        regularisation = gradient_energy(self.full_function(m), self.h)[0]
        return self.misfit.value(state[1]) + self.w_reg * regularisation

    def _gradient(self, m, state) -> np.ndarray:
        states, predicted = state
        d_u0, _, _ = self.scheme.backward(states, self.misfit.sources(predicted), self.D)
        return d_u0 + self.w_reg * gradient_energy(self.full_function(m), self.h)[1][1:-1]

    def solution(self, m) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, t, u) on the model's grid and time steps for the initial values m."""
        _, state = self._state(m)
        return self.scheme.x, self.scheme.t, self.scheme.full_states(state[0])
