"""Fisher-KPP: u_t = 0.01·D·u_xx + ρ·u(1−u) on [0,1]², u(x,0) = ½sin²(πx), u(0,t) = u(1,t) = 0;
infer (D, ρ) from u on a space-time grid (paper Section 3.1).

Output transform (paper Appendix B.1): u = ½sin²(πx) + N·x(1−x)·t, which satisfies the initial
and boundary conditions for every network N.
"""

import math

import numpy as np

from bilo.model import Parameter, Problem, ReferenceSpec, Settings
from bilo.priors import LogNormal
from solvers import fdm
from solvers.reference import Reference


def solve(params, functions, nx, nt) -> Reference:
    x, t, u = fdm.solve_fisher_kpp(params["D"], params["rho"], nx=nx,
                                   t_out=np.linspace(0.0, 1.0, nt))
    return Reference(("t", "x"), {"t": t, "x": x}, u, {},
                     "Crank-Nicolson + Newton, 2nd-order central differences",
                     f"nx={nx}, output times={nt}")


class FisherKPP(Problem):
    name = "fkpp"
    coords = ("x", "t")
    # weakly informative: the median at the truth's order of magnitude, a factor e per sd
    parameters = (Parameter("D", 1.0, bounds=(1e-6, float("inf")), prior=LogNormal(0.0, 1.0)),
                  Parameter("rho", 1.0, bounds=(1e-6, float("inf")),
                            prior=LogNormal(0.0, 1.0)))
    reference = ReferenceSpec(
        solve, "Fisher-KPP u_t = 0.01 D u_xx + rho u(1-u), u(x,0) = sin^2(pi x)/2",
        defaults={"D": 1.0, "rho": 1.0}, time_dependent=True, nx=401, nt=101, layout="grid",
        n_obs=51)
    residual_keys = ((), ("t",), ("x", "x"))
    presets = {
        "paper": Settings(width=128, depth=2, n_res=(51, 51), pretrain_steps=10_000,
                          finetune_steps=50_000),
        "quick": Settings(width=64, depth=2, n_res=(26, 26), pretrain_steps=1_500,
                          finetune_steps=3_000, lr_net=2e-3, lr_theta=1e-2),
    }

    def output(self, net, coords, theta, functions):
        x, t = coords["x"], coords["t"]
        initial = 0.5 * (math.pi * x).sin().square()
        return initial + net * x * (1.0 - x) * t

    def residual(self, u, coords, theta, functions):
        D, rho = theta["D"], theta["rho"]
        return u.d("t") - 0.01 * D * u.d("x", "x") - rho * u * (1.0 - u)

    def adjoint(self, data, *, w_reg, nx=None):
        from adjoint.fisher_kpp import FisherKPPProblem

        return FisherKPPProblem(data.observations.points_in(("x", "t")),
                                data.observations.values, misfit=self.likelihood,
                                nx=nx or len(data.grid["x"]), t_out=data.grid["t"])
