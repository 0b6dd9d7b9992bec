"""Discrete adjoint of the trapezoidal scheme for logistic growth u' = a u (1 - u); infer a.

The forward model is the scheme of `solvers.fdm.solve_logistic` (the same step function), kept
at its N + 1 step times t_n = n dt. With f(u) = a u (1 - u), f'(u) = a (1 - 2u) and
phi(u) = u (1 - u) (so f = a phi), step n = 0..N-1 solves

    G_n = u_{n+1} - u_n - (dt/2) (f(u_{n+1}) + f(u_n)) = 0,

whose partial derivatives are

    dG_n/du_{n+1} = A_n = 1 - (dt/2) f'(u_{n+1}),
    dG_n/du_n     = -B_n,  B_n = 1 + (dt/2) f'(u_n),
    dG_n/da       = -(dt/2) (phi(u_{n+1}) + phi(u_n)).

The data term is J(a) = misfit.value(Q u, d), Q the linear interpolation from the step grid to
the observation times, so dJ/du = g = Q^T misfit.gradient(Q u, d). With the Lagrangian
L = J - sum_n lam_n G_n, dL/du_k = 0 for k = N..1 gives the backward sweep

    lam_{N-1} = g_N / A_{N-1},   lam_{k-1} = (g_k + B_k lam_k) / A_{k-1}  (k = N-1..1),

and dJ/da = -sum_n lam_n dG_n/da = (dt/2) sum_n lam_n (phi(u_{n+1}) + phi(u_n)) (u_0 is
fixed, so g_0 does not enter). A_n is the positive square root of the step's discriminant
(see solvers.fdm.logistic), so the sweep never divides by zero. One gradient costs one forward
sweep and one backward sweep of N scalar updates.

The tangent-linear (forward) sensitivity s_n = du_n/da of the same scheme solves
A_n s_{n+1} = B_n s_n + (dt/2) (phi(u_{n+1}) + phi(u_n)), s_0 = 0; <g, s> equals the adjoint
gradient.
"""

from __future__ import annotations

import numpy as np

from adjoint.fisher_kpp import POSITIVE
from adjoint.optimize import GridAdjointProblem, interpolation_matrix, points_and_values
from solvers.fdm.logistic import DEFAULT_N_STEPS, DEFAULT_U0, logistic_steps, step_times
from solvers.fdm.reaction_diffusion import (
    check_finite_scalar,
    check_grid_size,
    check_output_times,
)


class LogisticProblem(GridAdjointProblem):
    """Infer m = (a,) of u' = a u (1 - u), u(0) = u0, from observations u(t_i) ~ d_i.

    J(a) = misfit.value(u(t_i), d): the data term is entirely the `misfit` object's. u is the
    trapezoidal scheme of solve_logistic on n_steps uniform steps over [0, t_out[-1]],
    interpolated linearly between steps at the observation times.

    Args:
        times: (n,) or (n, 1) observation times in [0, t_out[-1]].
        values: (n,) observed values.
        misfit: an object with value(predicted, observed) -> float and
            gradient(predicted, observed) -> d value / d predicted (same shape as predicted).
        u0: the (known) initial value.
        t_out: output times as for solve_logistic; only the final time t_out[-1] is used.
            Default linspace(0, 1, 101).
        n_steps: number of time steps (>= 1).
    """

    names = ("a",)

    def __init__(self, times, values, *, misfit, u0: float = DEFAULT_U0, t_out=None,
                 n_steps: int = DEFAULT_N_STEPS):
        super().__init__()
        times, self.values = points_and_values(times, values, "times")
        self.times = times
        self.misfit = misfit
        self.u0 = check_finite_scalar(u0, "u0")
        output = check_output_times(np.linspace(0.0, 1.0, 101) if t_out is None else t_out)
        self.t_final = float(output[-1])
        self.n_steps = check_grid_size(n_steps, "n_steps", 1)
        self.dt = self.t_final / self.n_steps
        self.t = step_times(self.t_final, self.n_steps)
        self.matrix = interpolation_matrix(times[:, None], (self.t,))

    def initial_guess(self) -> np.ndarray:
        return np.array([1.0])

    def bounds(self):
        return [(POSITIVE, None)]

    def _solve(self, m):
        u = logistic_steps(float(m[0]), self.u0, self.t_final, self.n_steps)
        return u, self.matrix @ u

    def _objective(self, m, state) -> float:
        return float(self.misfit.value(state[1], self.values))

    def _data_sources(self, predicted: np.ndarray) -> np.ndarray:
        """dJ/du at the step times, Q^T misfit.gradient."""
        gradient = np.asarray(self.misfit.gradient(predicted, self.values), dtype=np.float64)
        if gradient.shape != predicted.shape:
            raise ValueError(f"misfit.gradient returned shape {gradient.shape}, expected "
                             f"{predicted.shape}")
        return self.matrix.T @ gradient

    def _step_coefficients(self, a: float, u: np.ndarray):
        """A_n, B_n and -dG_n/da for the steps n = 0..N-1 (see the module docstring)."""
        half = 0.5 * self.dt
        slope = a * (1.0 - 2.0 * u)  # f'(u) at every step time
        phi = u * (1.0 - u)
        return 1.0 - half * slope[1:], 1.0 + half * slope[:-1], half * (phi[1:] + phi[:-1])

    def _gradient(self, m, state) -> np.ndarray:
        u, predicted = state
        sources = self._data_sources(predicted).tolist()
        A, B, forcing = (c.tolist() for c in self._step_coefficients(float(m[0]), u))
        lam = 0.0
        d_a = 0.0
        for n in range(self.n_steps - 1, -1, -1):
            # lam_n from dL/du_{n+1} = 0: A_n lam_n = g_{n+1} + B_{n+1} lam_{n+1}
            coupling = B[n + 1] * lam if n + 1 < self.n_steps else 0.0
            lam = (sources[n + 1] + coupling) / A[n]
            d_a += lam * forcing[n]
        return np.array([d_a])

    def _tangent(self, a: float, u: np.ndarray) -> np.ndarray:
        """du_n/da at every step time by the tangent-linear scheme."""
        A, B, forcing = (c.tolist() for c in self._step_coefficients(a, u))
        s = [0.0] * (self.n_steps + 1)
        for n in range(self.n_steps):
            s[n + 1] = (B[n] * s[n] + forcing[n]) / A[n]
        return np.array(s)

    def sensitivity(self, m, points) -> np.ndarray:
        """du/da at points ((n,) or (n, 1) times), interpolated as the predictions are.

        The forward sensitivity of the discrete scheme (one extra forward sweep), e.g. the
        Jacobian column for Gauss–Newton: J_GN = sensitivity(m, times).
        """
        m, state = self._state(m)
        points = np.asarray(points, dtype=np.float64).reshape(-1, 1)
        return interpolation_matrix(points, (self.t,)) @ self._tangent(float(m[0]), state[0])

    def solution(self, m) -> tuple[np.ndarray, np.ndarray]:
        """(t, u) at the step times for m = (a,)."""
        _, state = self._state(m)
        return self.t, state[0]
