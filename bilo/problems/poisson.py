"""Variable-diffusion Poisson: −(D(x)u′)′ = π² sin(πx), u(0) = u(1) = 0; infer D(x) with
D(0) = D(1) = 1 (paper Section 3.3, Appendix B.2).

Transforms: u = N(x, z)·x(1−x); D = 1 + N_D(x)·x(1−x). Initial guess D0 = 1.
"""

import math

import numpy as np

from bilo.model import FunctionSpec, Problem, ReferenceSpec, Settings
from solvers import fdm
from solvers.reference import Reference


def solve(params, functions, nx, nt) -> Reference:
    x, u = fdm.solve_variable_diffusion(functions["D"], functions["f"], nx=nx)
    return Reference(("x",), {"x": x}, u, {"D": functions["D"](x), "f": functions["f"](x)},
                     "conservative 2nd-order finite differences, D at cell midpoints",
                     f"nx={nx}")


class Poisson(Problem):
    name = "poisson"
    coords = ("x",)
    functions = {"D": FunctionSpec(transform=lambda net, x: 1.0 + net * x * (1.0 - x),
                                   initial=lambda x: np.ones_like(x), w_reg=1e-3,
                                   truth="where(x < 0.5, 1 + 0.5*x, 1.5 - 0.5*x)")}
    reference = ReferenceSpec(solve, "variable-diffusion Poisson -(D(x) u')' = f(x), u(0)=u(1)=0",
                              inputs={"f": "pi**2*sin(pi*x)"}, nx=1001, n_obs=51)
    residual_keys = ((), ("x",), ("x", "x"))
    presets = {
        "paper": Settings(width=128, depth=2, n_res=(101,), pretrain_steps=10_000,
                          finetune_steps=10_000),
        "quick": Settings(width=64, depth=2, n_res=(101,), pretrain_steps=3_000,
                          finetune_steps=5_000),
    }

    def output(self, net, coords, theta, functions):
        x = coords["x"]
        return net * x * (1.0 - x)

    def residual(self, u, coords, theta, functions):
        source = math.pi**2 * (math.pi * coords["x"]).sin()
        return -(functions["D"] * u.d("x")).d("x") - source

    def adjoint(self, data, *, w_reg, nx=None):
        from adjoint.poisson import PoissonProblem

        nx = nx or len(data.grid["x"])
        source = np.interp(np.linspace(0.0, 1.0, nx), data.grid["x"], data.inputs["f"])
        return PoissonProblem(data.observations.points_in(("x",))[:, 0],
                              data.observations.values, source, misfit=self.likelihood, nx=nx,
                              w_reg=w_reg["D"])
