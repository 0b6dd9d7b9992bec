"""Logistic growth u′ = a·u(1 − u), u(0) = 0.1, t ∈ [0, 1] (the BiLO playground's ODE): infer
the rate a from u at 21 times (truth a = 2, initial guess 1; `bilo solve logistic --param a=2
--n-obs 21 --noise 0.01`). Time is already scaled to [0, 1]: a is the growth over the
observed window.

Output transform: u = 0.1 + t·N(t, a), so u(0) = 0.1 for every network. The reference solver
(implicit trapezoidal steps, second order) reports u at every step, so its discrete adjoint sees
the same grid as the data file.
"""

import numpy as np

from bilo.model import Parameter, Problem, ReferenceSpec, Settings
from solvers.fdm.logistic import solve_logistic
from solvers.reference import Reference

U0 = 0.1


def solve(params, functions, nx, nt) -> Reference:
    t, u = solve_logistic(params["a"], u0=U0, t_out=np.linspace(0.0, 1.0, nx), n_steps=nx - 1)
    return Reference(("t",), {"t": t}, u, {}, "implicit trapezoidal rule (2nd order)",
                     f"steps={nx - 1}")


class Logistic(Problem):
    name = "logistic"
    coords = ("t",)
    parameters = (Parameter("a", 1.0, bounds=(1e-6, float("inf"))),)
    reference = ReferenceSpec(solve, "logistic growth u' = a u (1 - u), u(0) = 0.1",
                              defaults={"a": 2.0}, nx=1001, n_obs=21)
    residual_keys = ((), ("t",))
    presets = {
        "quick": Settings(width=32, depth=2, n_res=(51,), pretrain_steps=1_000,
                          finetune_steps=2_000, lr_net=2e-3, lr_theta=1e-2),
        "paper": Settings(width=64, depth=2, n_res=(101,), pretrain_steps=5_000,
                          finetune_steps=10_000),
    }

    def output(self, net, coords, theta, functions):
        return U0 + coords["t"] * net

    def residual(self, u, coords, theta, functions):
        return u.d("t") - theta["a"] * u * (1.0 - u)

    def adjoint(self, data, *, w_reg, nx=None):
        from adjoint.logistic import LogisticProblem

        steps = (nx or len(data.grid["t"])) - 1
        return LogisticProblem(data.observations.points_in(("t",))[:, 0],
                               data.observations.values, misfit=self.likelihood, u0=U0,
                               n_steps=steps)
