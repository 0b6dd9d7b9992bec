"""Heat equation u_t = D·u_xx (D fixed by the data, 0.01 in the paper), u(0) = u(1) = 0; infer
the initial condition f = u(x, 0) from u(x, 1) (paper Section 3.4, Appendix B.3).

Transforms: u = N(x, t, z)·x(1−x)·t + z, so u(x, 0) = f(x); f = softplus(N_f(x))·x(1−x)
(non-negative, zero at the ends). Initial guess f0 = sin(πx). w_reg = 1e-4 for every method:
at the paper's 1e-2 the minimiser of J itself is 0.156 from the truth (docs/functions.md).
"""

import numpy as np

from bilo.model import FunctionSpec, Problem, ReferenceSpec, Settings
from solvers import fdm
from solvers.reference import Reference


def solve(params, functions, nx, nt) -> Reference:
    x0 = np.linspace(0.0, 1.0, nx)
    f = functions["f"](x0)
    x, t, u = fdm.solve_heat(f, params["D"], nx=nx, t_out=np.linspace(0.0, 1.0, nt))
    return Reference(("t", "x"), {"t": t, "x": x}, u, {"f": f},
                     "Crank-Nicolson with Rannacher start-up, 2nd-order central differences",
                     f"nx={nx}, output times={nt}")


class Heat(Problem):
    name = "heat"
    coords = ("x", "t")
    constants = {"D": 0.01}
    functions = {"f": FunctionSpec(transform=lambda net, x: net.softplus() * x * (1.0 - x),
                                   initial=lambda x: np.sin(np.pi * x), w_reg=1e-4,
                                   truth="where(x < 0.5, 2*x, 2 - 2*x)")}
    reference = ReferenceSpec(solve, "heat u_t = D u_xx, u(x,0) = f(x), u(0)=u(1)=0",
                              time_dependent=True, nx=401, nt=101, layout="final", n_obs=11)
    residual_keys = ((), ("t",), ("x", "x"))
    presets = {
        "paper": Settings(width=128, depth=2, n_res=(51, 51), pretrain_steps=10_000,
                          finetune_steps=10_000),
        "quick": Settings(width=64, depth=2, n_res=(26, 26), pretrain_steps=2_000,
                          finetune_steps=4_000),
    }

    def output(self, net, coords, theta, functions):
        x, t = coords["x"], coords["t"]
        return net * x * (1.0 - x) * t + functions["f"]

    def residual(self, u, coords, theta, functions):
        return u.d("t") - theta["D"] * u.d("x", "x")

    def adjoint(self, data, *, w_reg, nx=None):
        from adjoint.heat import HeatProblem

        return HeatProblem(data.observations.points_in(("x", "t")), data.observations.values,
                           misfit=self.likelihood, D=data.params["D"],
                           nx=nx or len(data.grid["x"]), t_out=data.grid["t"], w_reg=w_reg["f"])
