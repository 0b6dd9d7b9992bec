"""Nonlinear Poisson λ·u″ + k·tanh(u) = f on [−0.7, 0.7], λ = 0.01 (the B-PINN benchmark of
Yang, Meng & Karniadakis 2021, also B-BiLO Part II): infer k from u at 21 points (truth
k = 0.7, initial guess 1; `bilo solve nonlinear_poisson --param k=0.7 --noise 0.05`).

f = λ·u″ + 0.7·tanh(u) for the exact u = sin³(6y) (u″ = 216 sin(6y)cos²(6y) − 108 sin³(6y)),
Dirichlet values u(∓0.7) = ±0.6621 from it; the source keeps k = 0.7 whatever k is solved for.

The coordinate is the unit x ∈ [0, 1] of every problem here (data files, collocation), with
y = −0.7 + 1.4x, so in x the residual is (λ/1.4²)·u_xx + k·tanh(u) − f(y(x)). Output transform:
u = u(−0.7)(1 − x) + u(0.7)x + x(1 − x)·N, so both boundary conditions hold exactly.

Well-posedness and the bounds: the Jacobian λ·D2 + k·diag(sech²u) of the solver is indefinite
(λ(jπ/1.4)² = 0.0504·j² lies below k·sech²u for j = 1..3). Along the solution branch through the
truth it is singular at k = 0.551 (a symmetry-breaking pitchfork) and the branch ends in a fold
at k = 0.5064 (no solution near it below); other branches, far from the data, exist there. For
k ≥ 0.6 the smallest |eigenvalue| is ≥ 0.081 (0.203 at the truth, ≥ 0.13 on [0.65, 3]), so k is
bounded to [0.6, 2] (measured in tests/test_poisson_problems.py and docs/poisson_bayes.md).

Prior k ~ TruncatedNormal(mean 1, sd 0.5) on [0.6, 2]: k is a positive O(1) reaction
coefficient; the prior is weakly informative (its sd is many times the posterior's), centred
away from the truth, and its support is the range where the forward map k → u is a smooth
function (a LogNormal on (0, ∞) would put mass where the branch is singular or does not exist).

The networks and the other branches: a network trained on the residual alone finds *a* solution
of the PDE, not necessarily the solver's. Pretrained at k = 0.8, 0.9 or 1 on the residual alone
it lands on other branches (|u − u_ref|/|u_ref| = 0.50 at k = 0.8, 0.87 at 0.9); only at the
truth k = 0.7 does it find the solver's. Pretrain with the solver's solution at the initial
guess (`bilo train nonlinear_poisson --u0 auto`): the network then keeps the branch, but the
θ-derivative loss plateaus for about 6,500 steps at k = 1 before it converges, hence the quick
preset's 8,000 pretraining steps. With `--u0 auto` and the quick preset BiLO reaches
k = 0.6964 on the 21-point σ = 0.05 data (the adjoint: 0.69665); docs/poisson_bayes.md.
"""

import numpy as np

from bilo.model import Parameter, Problem, ReferenceSpec, Settings
from bilo.priors import TruncatedNormal
from solvers.common import InputError
from solvers.fdm.nonlinear_poisson import (
    DOMAIN,
    K_SOURCE,
    LAMBDA,
    nonlinear_poisson_exact,
    solve_nonlinear_poisson,
)
from solvers.reference import Reference

K_LOW, K_HIGH = 0.6, 2.0
LENGTH = DOMAIN[1] - DOMAIN[0]
U_LEFT, U_RIGHT = (float(v) for v in nonlinear_poisson_exact(DOMAIN))


def solve(params, functions, nx, nt) -> Reference:
    try:
        y, u = solve_nonlinear_poisson(params["k"], nx=nx)
    except RuntimeError as exc:  # a fold or a singular Jacobian: say so in one line
        raise InputError(f"k = {params['k']:g}: {exc}") from None
    # the unit coordinate x = (y + 0.7)/1.4, as the adjoint's grid
    return Reference(("x",), {"x": np.linspace(0.0, 1.0, y.size)}, u, {},
                     "Newton on 2nd-order central differences, branch of the truth "
                     "(x = (y + 0.7)/1.4)", f"nx={nx}")


class NonlinearPoisson(Problem):
    name = "nonlinear_poisson"
    coords = ("x",)
    parameters = (Parameter("k", 1.0, bounds=(K_LOW, K_HIGH),
                            prior=TruncatedNormal(1.0, 0.5, K_LOW, K_HIGH)),)
    reference = ReferenceSpec(solve, "nonlinear Poisson 0.01 u'' + k tanh(u) = f on "
                              "[-0.7, 0.7] (x = (y + 0.7)/1.4), u = sin^3(6y) at k = 0.7",
                              defaults={"k": K_SOURCE}, nx=1001, n_obs=21)
    residual_keys = ((), ("x", "x"))
    # pretraining needs `--u0 auto` and these many steps (module docstring)
    presets = {
        "quick": Settings(width=64, depth=2, n_res=(101,), pretrain_steps=8_000,
                          finetune_steps=3_000, lr_net=2e-3, lr_theta=1e-3),
        "paper": Settings(width=128, depth=2, n_res=(201,), pretrain_steps=15_000,
                          finetune_steps=10_000, lr_theta=1e-3),
    }

    def output(self, net, coords, theta, functions):
        x = coords["x"]
        return U_LEFT * (1.0 - x) + U_RIGHT * x + net * x * (1.0 - x)

    def residual(self, u, coords, theta, functions):
        y = DOMAIN[0] + LENGTH * coords["x"].value  # a tensor: the source has no θ-derivatives
        s, c = (6.0 * y).sin(), (6.0 * y).cos()
        source = LAMBDA * (216.0 * s * c**2 - 108.0 * s**3) + K_SOURCE * (s**3).tanh()
        return (LAMBDA / LENGTH**2) * u.d("x", "x") + theta["k"] * u.tanh() - source

    def adjoint(self, data, *, w_reg, nx=None):
        from adjoint.nonlinear_poisson import NonlinearPoissonProblem

        return NonlinearPoissonProblem(data.observations.points_in(("x",))[:, 0],
                                       data.observations.values, misfit=self.likelihood,
                                       nx=nx or len(data.grid["x"]),
                                       initial=self.initial_guess["k"],
                                       bounds=(K_LOW, K_HIGH))
