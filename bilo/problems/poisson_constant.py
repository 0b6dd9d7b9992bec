"""Constant-coefficient Poisson D·u″ = f on [0, 1], u(0) = u(1) = 0, f(x) = −π² sin(πx): infer
the coefficient D from u at 11 points (a Bayesian tutorial's setting: truth D = 1, initial guess
D = 2, noise σ = 0.2; `bilo solve poisson_constant --param D=1 --n-obs 11 --noise 0.2`).

The solution is u(x; D) = sin(πx)/D, so the posterior of D is known in closed form up to its
normalisation (tests/test_poisson_problems.py checks `bilo.posterior.grid_posterior` against it).
Prior D ~ Gamma(shape 2, rate 1) (mean 2, mode 1).

Output transform: u = x(1−x)·N(x, D), so both boundary conditions hold for every network. The
reference solver (second-order central differences, `solvers/fdm/poisson_constant.py`) and its
discrete adjoint (`adjoint/poisson_constant.py`) share the grid of the data file.
"""

import math

from bilo.model import Parameter, Problem, ReferenceSpec, Settings
from bilo.priors import Gamma
from solvers.fdm.poisson_constant import solve_poisson_constant
from solvers.reference import Reference


def solve(params, functions, nx, nt) -> Reference:
    x, u = solve_poisson_constant(params["D"], nx=nx)
    return Reference(("x",), {"x": x}, u, {}, "2nd-order central differences", f"nx={nx}")


class PoissonConstant(Problem):
    name = "poisson_constant"
    coords = ("x",)
    parameters = (Parameter("D", 2.0, bounds=(1e-6, float("inf")), prior=Gamma(2.0, 1.0)),)
    reference = ReferenceSpec(solve, "Poisson D u'' = -pi^2 sin(pi x), u(0) = u(1) = 0",
                              defaults={"D": 1.0}, nx=1001, n_obs=11)
    residual_keys = ((), ("x", "x"))
    presets = {
        "quick": Settings(width=32, depth=2, n_res=(51,), pretrain_steps=1_000,
                          finetune_steps=2_000, lr_net=1e-3, lr_theta=5e-3),
        "paper": Settings(width=64, depth=2, n_res=(101,), pretrain_steps=5_000,
                          finetune_steps=10_000),
    }

    def output(self, net, coords, theta, functions):
        x = coords["x"]
        return net * x * (1.0 - x)

    def residual(self, u, coords, theta, functions):
        source = -math.pi**2 * (math.pi * coords["x"]).sin()
        return theta["D"] * u.d("x", "x") - source

    def adjoint(self, data, *, w_reg, nx=None):
        from adjoint.poisson_constant import PoissonConstantProblem

        return PoissonConstantProblem(data.observations.points_in(("x",))[:, 0],
                                      data.observations.values, misfit=self.likelihood,
                                      nx=nx or len(data.grid["x"]),
                                      initial=self.initial_guess["D"])
