"""Discrete adjoint of the Crank–Nicolson/Newton reaction–diffusion scheme; Fisher–KPP (D, rho).

:class:`ReactionDiffusionScheme` re-implements the time stepping of
`solvers.fdm.solve_reaction_diffusion` (same grid, same default step count, Rannacher start-up of
four implicit-Euler quarter steps, then Crank–Nicolson, Newton to the same tolerance) and keeps
every sub-step state, so the backward sweep can differentiate the scheme exactly.

Each sub-step j (step size tau_j, theta_j = 1 for the start-up, 1/2 after) solves

    G_j = w_j - a_j (c L w_j + r(w_j)) - w_{j-1} - b_j (c L w_{j-1} + r(w_{j-1})) = 0,
    a_j = tau_j theta_j,  b_j = tau_j (1 - theta_j),  c = diffusivity / h^2,

with L the second difference (zero Dirichlet values) and r(w) = rho w (1 - w). For
J = sum_j phi_j(w_j) the adjoint states solve, from the last sub-step M backwards,

    A_j lam_j = dphi_j/dw_j + B_{j+1} lam_{j+1},   lam_{M+1} = 0,
    A_j = I - a_j (c L + diag r'(w_j)),  B_{j+1} = I + b_{j+1} (c L + diag r'(w_j)),

(both symmetric tridiagonal), and dJ/dp = -sum_j lam_j . dG_j/dp, dJ/dw_0 = dphi_0/dw_0 +
B_1 lam_1. One gradient costs one forward sweep (Newton per step) and one backward sweep (one
tridiagonal solve per step).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_banded

from adjoint.optimize import GridAdjointProblem, interpolation_matrix
from solvers.fdm.fisher_kpp import DIFFUSION_SCALE, fisher_kpp_initial

# The reference's own step-count rule and step, so the schemes agree step for step.
from solvers.fdm.reaction_diffusion import (
    RANNACHER_SUBSTEPS,
    check_grid_size,
    check_output_times,
    default_step_count,
    theta_step,
)

# Lower bound of positive parameters in L-BFGS-B.
POSITIVE = 1e-6


def _laplacian(interior: np.ndarray) -> np.ndarray:
    """u[i-1] - 2u[i] + u[i+1] with zero boundary values (unscaled)."""
    result = -2.0 * interior
    result[1:] += interior[:-1]
    result[:-1] += interior[1:]
    return result


class ReactionDiffusionScheme:
    """The discrete scheme of solve_reaction_diffusion on nx nodes over [0, t_out[-1]].

    Args:
        nx: grid nodes including both boundaries.
        t_out: the output times the reference would be asked for; they fix the final time and,
            when n_steps is None, the reference's default step count. Default linspace(0,1,101).
        n_steps: number of time steps (default: the reference's choice for t_out).
    """

    def __init__(self, nx: int, t_out=None, n_steps: int | None = None):
        self.nx = check_grid_size(nx, "nx", 3)
        times = check_output_times(np.linspace(0.0, 1.0, 101) if t_out is None else t_out)
        self.h = 1.0 / (self.nx - 1)
        self.x = np.linspace(0.0, 1.0, self.nx)
        self.n_steps = (default_step_count(times, self.h) if n_steps is None
                        else check_grid_size(n_steps, "n_steps", 1))
        self.dt = times[-1] / self.n_steps
        self.t = self.dt * np.arange(self.n_steps + 1)
        self.t[-1] = times[-1]
        quarter = self.dt / RANNACHER_SUBSTEPS
        sizes = [quarter] * RANNACHER_SUBSTEPS + [self.dt] * (self.n_steps - 1)
        thetas = [1.0] * RANNACHER_SUBSTEPS + [0.5] * (self.n_steps - 1)
        # Sub-step j = 1..M; index 0 is unused so that a[j], b[j] belong to sub-step j.
        self.sizes, self.thetas = np.array([0.0] + sizes), np.array([0.0] + thetas)
        self.a = np.array([0.0] + [s * th for s, th in zip(sizes, thetas, strict=True)])
        self.b = np.array([0.0] + [s * (1.0 - th) for s, th in zip(sizes, thetas, strict=True)])
        self.n_substeps = len(sizes)
        # Sub-step index of the state at time step k (k = 0..n_steps).
        self.full_index = np.concatenate(
            [[0], RANNACHER_SUBSTEPS + np.arange(self.n_steps)]).astype(np.int64)

    def forward(self, u0_interior: np.ndarray, diffusivity: float,
                rho: float | None = None) -> np.ndarray:
        """All sub-step states (M+1, nx-2) from the interior initial values."""
        c = diffusivity / self.h**2
        states = np.empty((self.n_substeps + 1, self.nx - 2))
        states[0] = u0_interior
        for j in range(1, self.n_substeps + 1):
            states[j] = self._step(states[j - 1], j, c, rho)
        return states

    def _step(self, u: np.ndarray, j: int, c: float, rho: float | None) -> np.ndarray:
        """Sub-step j with the reference solver's own step, so both stay the same scheme."""
        if rho is None:
            return theta_step(u, self.sizes[j], self.thetas[j], c, None, None)
        return theta_step(u, self.sizes[j], self.thetas[j], c,
                           lambda v: rho * v * (1.0 - v), lambda v: rho * (1.0 - 2.0 * v))

    def full_states(self, states: np.ndarray) -> np.ndarray:
        """u at the time steps (n_steps+1, nx), boundary zeros included."""
        u = np.zeros((self.n_steps + 1, self.nx))
        u[:, 1:-1] = states[self.full_index]
        return u

    def backward(self, states: np.ndarray, sources: np.ndarray, diffusivity: float,
                 rho: float | None = None) -> tuple[np.ndarray, float, float]:
        """Adjoint sweep.

        Args:
            states: the forward sub-step states.
            sources: dJ/du at the time steps, shape (n_steps+1, nx-2) (interior nodes).
            diffusivity, rho: the parameters of the forward solve (rho None: no reaction).

        Returns:
            (dJ/du0 on the interior nodes, dJ/d diffusivity, dJ/d rho (0 without reaction)).
        """
        c = diffusivity / self.h**2
        per_substep = np.zeros_like(states)
        per_substep[self.full_index] = sources
        n = self.nx - 2
        lam_next = np.zeros(n)
        d_c = 0.0
        d_rho = 0.0
        matrix = np.empty((3, n))
        for j in range(self.n_substeps, 0, -1):
            w, w_prev = states[j], states[j - 1]
            rhs = per_substep[j].copy()
            if j < self.n_substeps:
                # B_{j+1} lam_{j+1}, with r' at w_j (the previous state of sub-step j+1)
                b = self.b[j + 1]
                if b != 0.0:
                    coupling = c * _laplacian(lam_next)
                    if rho is not None:
                        coupling += rho * (1.0 - 2.0 * w) * lam_next
                    rhs += lam_next + b * coupling
                else:
                    rhs += lam_next
            a = self.a[j]
            matrix[0] = -a * c
            matrix[2] = -a * c
            matrix[1] = 1.0 + 2.0 * a * c
            if rho is not None:
                matrix[1] -= a * rho * (1.0 - 2.0 * w)
            lam = solve_banded((1, 1), matrix, rhs)
            b = self.b[j]
            d_c += lam @ (a * _laplacian(w) + b * _laplacian(w_prev))
            if rho is not None:
                d_rho += lam @ (a * w * (1.0 - w) + b * w_prev * (1.0 - w_prev))
            lam_next = lam
        # dJ/dw_0 = source_0 + B_1 lam_1
        d_u0 = per_substep[0] + lam_next
        if self.b[1] != 0.0:
            coupling = c * _laplacian(lam_next)
            if rho is not None:
                coupling += rho * (1.0 - 2.0 * states[0]) * lam_next
            d_u0 = d_u0 + self.b[1] * coupling
        return d_u0, d_c / self.h**2, d_rho


class SpaceTimeMisfit:
    """The data term misfit.value(Q u, d) of u on the (t, x) step grid, Q bilinear interpolation
    at the observation points; `misfit` is the problem's likelihood (value and gradient)."""

    def __init__(self, scheme: ReactionDiffusionScheme, points, values, misfit):
        points = np.atleast_2d(np.asarray(points, dtype=np.float64))
        if points.shape[1] != 2:
            raise ValueError(f"observation points need columns (x, t), got shape {points.shape}")
        self.values = np.asarray(values, dtype=np.float64).ravel()
        if self.values.shape != (points.shape[0],):
            raise ValueError(f"{points.shape[0]} points but {self.values.size} values")
        self.scheme, self.misfit = scheme, misfit
        # the step grid's axes are (t, x)
        self.matrix = interpolation_matrix(points[:, [1, 0]], (scheme.t, scheme.x))

    def predicted(self, u_full: np.ndarray) -> np.ndarray:
        return self.matrix @ u_full.ravel()

    def value(self, predicted: np.ndarray) -> float:
        return float(self.misfit.value(predicted, self.values))

    def sources(self, predicted: np.ndarray) -> np.ndarray:
        """d value/du on the interior nodes at every time step, (n_steps+1, nx-2)."""
        full = (self.matrix.T @ self.misfit.gradient(predicted, self.values)).reshape(
            self.scheme.n_steps + 1, self.scheme.nx)
        return full[:, 1:-1]


class FisherKPPProblem(GridAdjointProblem):
    """Infer m = (D, rho) of u_t = 0.01 D u_xx + rho u (1-u), u(x,0) = sin^2(pi x)/2, u = 0 at
    x = 0, 1, from observations u(x_i, t_i) ~ d_i:  J = misfit.value(u(x_i, t_i), d).

    The forward model is the scheme of solvers.fdm.solve_fisher_kpp (see ReactionDiffusionScheme);
    u is interpolated linearly in x and t between grid nodes and time steps.

    Args:
        points: (n, 2) observation coordinates, columns (x, t).
        values: (n,) observed values.
        misfit: the data term, an object with value(predicted, observed) and its gradient
            (the problem's likelihood, e.g. `bilo.likelihoods.Gaussian`).
        nx, t_out, n_steps: resolution as in solve_fisher_kpp (t_out fixes the final time and
            the default step count).
    """

    names = ("D", "rho")

    def __init__(self, points, values, *, misfit, nx: int = 401, t_out=None,
                 n_steps: int | None = None):
        super().__init__()
        self.scheme = ReactionDiffusionScheme(nx, t_out, n_steps)
        self.nx, self.n_steps = self.scheme.nx, self.scheme.n_steps
        self.misfit = SpaceTimeMisfit(self.scheme, points, values, misfit)
        self.u0 = fisher_kpp_initial(self.scheme.x)[1:-1]

    def initial_guess(self) -> np.ndarray:
        return np.array([1.0, 1.0])

    def bounds(self):
        return [(POSITIVE, None), (POSITIVE, None)]

    def _solve(self, m):
        D, rho = m
        states = self.scheme.forward(self.u0, DIFFUSION_SCALE * D, rho)
        return states, self.misfit.predicted(self.scheme.full_states(states))

    def _objective(self, m, state) -> float:
        return self.misfit.value(state[1])

    def _gradient(self, m, state) -> np.ndarray:
        states, predicted = state
        D, rho = m
        _, d_diffusivity, d_rho = self.scheme.backward(
            states, self.misfit.sources(predicted), DIFFUSION_SCALE * D, rho)
        return np.array([DIFFUSION_SCALE * d_diffusivity, d_rho])

    def solution(self, m) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, t, u) on the model's grid and time steps at parameters m = (D, rho)."""
        _, state = self._state(m)
        return self.scheme.x, self.scheme.t, self.scheme.full_states(state[0])
