"""Discrete adjoint for the initial condition of inviscid Burgers u_t + a·u·u_x = 0 on [0, 1].

The forward model is the scheme of `solvers.fdm.solve_burgers` (first-order Godunov finite
volumes, exact Riemann flux, ghost cells holding the boundary datum 0, boundary traces in the
Bardos-LeRoux-Nedelec sense), with uniform time steps: n_steps = ceil(T·a·max|f| / (cfl·h)),
which keeps the CFL number at most `cfl` because max|u| never exceeds max|f|. The unknown m is
f at the cell centres (f(0) = f(1) = 0), and

    J(f) = misfit.value(u(x_i, t_i), d) + w_reg ∫|f′|² dx

(u interpolated linearly between the nodes [0, cell centres, 1] and the time steps; f′ of the
piecewise-linear f through the same nodes). The flux is piecewise smooth, so the backward sweep
is the exact gradient of the discrete map away from the switching points (sonic points, shock
branches), where it is one of the one-sided derivatives. The step count depends on max|f|, so
J jumps where it changes: take Taylor tests where it is fixed.
"""

from __future__ import annotations

import math

import numpy as np

from adjoint.optimize import GridAdjointProblem, gradient_energy, interpolation_matrix
from solvers.fdm.burgers import boundary_traces, burgers_godunov_flux
from solvers.fdm.reaction_diffusion import check_finite_scalar
from solvers.grf import BURGERS_GRF, grf


class BurgersProblem(GridAdjointProblem):
    """Infer f = u(x, 0) at the cell centres of u_t + a u u_x = 0 from observations of u.

    Args:
        points: (n, 2) observation coordinates, columns (x, t) (e.g. t = 1 only).
        values: (n,) observed u.
        misfit: the data term (value and gradient in the predicted u), the problem's likelihood.
        a: the (known) flux coefficient.
        n_cells: finite-volume cells.
        t_final: the final time of the model (at least the latest observation).
        cfl: largest Courant number.
        w_reg: weight of the H1-seminorm regularisation ∫|f'|² dx.
    """

    function = "f"

    def __init__(self, points, values, *, misfit, a: float = 0.2, n_cells: int = 1000,
                 t_final: float = 1.0, cfl: float = 0.5, w_reg: float = 1e-3):
        super().__init__()
        self.a = check_finite_scalar(a, "a", minimum=0.0)
        self.n_cells, self.t_final, self.cfl = int(n_cells), float(t_final), float(cfl)
        self.h = 1.0 / self.n_cells
        centres = (np.arange(self.n_cells) + 0.5) * self.h
        self.x = np.concatenate([[0.0], centres, [1.0]])  # nodes: boundaries and centres
        self.nx = len(self.x)
        self.spacing = np.diff(self.x)
        self.points = np.atleast_2d(np.asarray(points, dtype=np.float64))
        self.values = np.asarray(values, dtype=np.float64).ravel()
        if self.points.shape != (self.values.size, 2):
            raise ValueError(f"observation points of shape {self.points.shape} for "
                             f"{self.values.size} values; expected columns (x, t)")
        self.w_reg = float(w_reg)
        self.misfit = misfit

    def full_function(self, m) -> np.ndarray:
        """f on the nodes [0, centres, 1], zero at the ends."""
        return np.concatenate([[0.0], np.asarray(m, dtype=np.float64), [0.0]])

    def initial_guess(self) -> np.ndarray:
        return grf(self.x[1:-1], seed=0, **BURGERS_GRF)

    def steps_for(self, m) -> int:
        speed = self.a * max(float(np.max(np.abs(m))), 1e-6)
        return max(1, math.ceil(self.t_final * speed / (self.cfl * self.h)))

    # -- forward and backward sweeps ----------------------------------------------------------
    def _fluxes(self, u):
        """Interface fluxes of one state (n_cells + 1) and their derivatives with respect to the
        left and right states."""
        left = np.concatenate([[0.0], u])  # ghost cells hold the datum 0
        right = np.concatenate([u, [0.0]])
        from_left = np.maximum(left, 0.0) ** 2 >= np.minimum(right, 0.0) ** 2
        flux = burgers_godunov_flux(left, right, self.a)
        d_left = np.where(from_left, self.a * np.maximum(left, 0.0), 0.0)
        d_right = np.where(from_left, 0.0, self.a * np.minimum(right, 0.0))
        return flux, d_left, d_right

    def _solve(self, m):
        n_steps = self.steps_for(m)
        ratio = self.t_final / n_steps / self.h
        states = np.empty((n_steps + 1, self.n_cells))
        states[0] = m
        for n in range(n_steps):
            flux = self._fluxes(states[n])[0]
            states[n + 1] = states[n] - ratio * np.diff(flux)
        times = np.linspace(0.0, self.t_final, n_steps + 1)
        matrix = interpolation_matrix(self.points[:, [1, 0]], (times, self.x))
        nodal = boundary_traces(states)
        return states, times, nodal, matrix, matrix @ nodal.ravel()

    def _objective(self, m, state) -> float:
        misfit = float(self.misfit.value(state[-1], self.values))
        return misfit + self.w_reg * gradient_energy(self.full_function(m), self.spacing)[0]

    def _gradient(self, m, state) -> np.ndarray:
        states, times, _, matrix, predicted = state
        ratio = times[1] / self.h
        sources = (matrix.T @ self.misfit.gradient(predicted, self.values)).reshape(len(times), -1)
        # node sources onto cells: a boundary trace follows its cell only where flow leaves
        # (the rule of `boundary_traces`)
        cell_sources = sources[:, 1:-1].copy()
        cell_sources[:, 0] += np.where(states[:, 0] < 0.0, sources[:, 0], 0.0)
        cell_sources[:, -1] += np.where(states[:, -1] > 0.0, sources[:, -1], 0.0)
        adjoint = cell_sources[-1]
        for n in range(len(times) - 2, -1, -1):
            _, d_left, d_right = self._fluxes(states[n])
            # u_j^{n+1} = u_j − r (F_{j+1} − F_j): the adjoint of interface flux F_i
            weight = ratio * np.diff(np.concatenate([[0.0], adjoint, [0.0]]))
            adjoint = adjoint + (weight * d_left)[1:] + (weight * d_right)[:-1] + cell_sources[n]
        regularisation = gradient_energy(self.full_function(m), self.spacing)[1][1:-1]
        return adjoint + self.w_reg * regularisation

    # -- outputs ------------------------------------------------------------------------------
    def solution(self, m) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, t, u) on the nodes and time steps for the cell values m."""
        _, (_, times, nodal, _, _) = self._state(m)
        return self.x, times, nodal
