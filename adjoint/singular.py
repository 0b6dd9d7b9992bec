"""Discrete adjoint of the singular-forcing solver; infer (λ, μ) of u″ − μu + λδ(x − z) = 0,
u(0) = u(1) = 0, from events of the Poisson process whose intensity is u (paper Part I §3.2).

The forward model is `solvers.fdm.solve_singular_forcing`'s system (`singular_forcing_system`):
on the interior nodes, with rows multiplied by h²,

    A(μ) u = b(λ),   A = tridiag(−1, 2 + μh², −1) (symmetric),   b = λ·b₁,

b₁ = h·w the hat weights of the delta at z (two nonzero entries). The data term is the
likelihood's misfit on the nodal values, J(u) = −log L(u)/M = ∫u − (1/M) Σ log u(q_i)
(`misfit.grid_value`: composite Simpson split at z, u(q_i) by linear interpolation), with
g = ∂J/∂u. With the Lagrangian J − pᵀ(A u − b):

    A p = g  (one tridiagonal solve; A is symmetric),
    dJ/dλ = pᵀ b₁,   dJ/dμ = −pᵀ (∂A/∂μ) u = −h² pᵀ u.

A gradient costs one forward and one backward tridiagonal solve. u is linear in λ (u = λ·G_μ),
so dJ/dλ = gᵀu/λ too; the adjoint formula does not use that and works at any λ.

Conditioning: λ is of order 10² and μ of order 1–10, and the paper trains the network on
λ̄ = λ/100. L-BFGS-B here works on (λ, μ) as declared: it is invariant enough to the scaling
of a 2-parameter problem that it converges from (250, 5) in 15 iterations on 100 snapshots (seed 0,
tests/test_point_process.py), so no rescaling is applied.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_banded

from adjoint.fisher_kpp import POSITIVE
from adjoint.optimize import GridAdjointProblem
from solvers.fdm.singular import singular_forcing_system


class SingularProblem(GridAdjointProblem):
    """Infer m = (λ, μ) from event positions pooled over M snapshots.

    Args:
        events: an object with `positions` ((n,) or (n, 1), in [0, 1]) and `n_snapshots` M,
            e.g. `solvers.exchange.Events`.
        misfit: the likelihood (`bilo.likelihoods.PoissonProcess`): grid_value(x, u, events)
            -> (J, ∂J/∂u at the nodes).
        z: the source location.
        nx: grid nodes of the solver (>= 3; odd puts z = 0.5 on a node, which the likelihood's
            Simpson rule needs for 4th order).
        initial: the default starting point (λ, μ).
    """

    names = ("lam", "mu")

    def __init__(self, events, *, misfit, z: float = 0.5, nx: int = 1001,
                 initial=(250.0, 5.0)):
        super().__init__()
        self.events = events
        self.misfit = misfit
        self.z = float(z)
        self.nx = int(nx)
        self.initial = np.array(initial, dtype=np.float64)
        self.x, _, unit = singular_forcing_system(1.0, 0.0, z=self.z, nx=self.nx)
        self.h = float(self.x[1] - self.x[0])
        self.unit_load = unit  # b₁ = ∂b/∂λ

    def initial_guess(self) -> np.ndarray:
        return self.initial.copy()

    def bounds(self):
        return [(POSITIVE, None), (0.0, None)]

    def _solve(self, m):
        lam, mu = float(m[0]), float(m[1])
        _, matrix, rhs = singular_forcing_system(lam, mu, z=self.z, nx=self.nx)
        u = np.zeros_like(self.x)
        u[1:-1] = solve_banded((1, 1), matrix, rhs)
        value, gradient = self.misfit.grid_value(self.x, u, self.events)
        return u, matrix, value, gradient

    def _objective(self, m, state) -> float:
        return float(state[2])

    def _gradient(self, m, state) -> np.ndarray:
        u, matrix, value, source = state
        if not np.isfinite(value):
            return np.full(2, np.nan)
        adjoint = solve_banded((1, 1), matrix, source[1:-1])
        return np.array([adjoint @ self.unit_load, -self.h**2 * (adjoint @ u[1:-1])])

    def solution(self, m) -> tuple[np.ndarray, np.ndarray]:
        """(x, u) at the nodes for m = (λ, μ)."""
        _, state = self._state(m)
        return self.x, state[0]
