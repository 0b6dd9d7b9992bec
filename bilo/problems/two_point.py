"""The boundary-parameter problem (paper Appendix E): y'' = 2 on [0, 1], y(0) = θ0, y(1) = θ1,
with objective ∫(y − x²)² (data: y = x², which the PDE reaches at θ = (0, 1)).

Output transform: y = θ0·(1−x) + θ1·x + N·x(1−x), so the parameters enter through the boundary
values exactly; the θ-derivatives of the residual then come from the network alone.
"""

from bilo.model import Parameter, Problem, ReferenceSpec, Settings
from solvers import fdm
from solvers.reference import Reference


def solve(params, functions, nx, nt) -> Reference:
    x, y = fdm.solve_two_point(params["theta0"], params["theta1"], nx=nx)
    return Reference(("x",), {"x": x}, y, {}, "2nd-order finite differences", f"nx={nx}")


class TwoPoint(Problem):
    name = "two_point"
    coords = ("x",)
    parameters = (Parameter("theta0", 1.0), Parameter("theta1", 0.0))
    reference = ReferenceSpec(solve, "two-point problem y'' = 2, y(0) = theta0, y(1) = theta1",
                              defaults={"theta0": 0.0, "theta1": 1.0}, nx=1001, n_obs=65)
    residual_keys = ((), ("x", "x"))
    presets = {
        # the settings of the paper's comparison with BPN (Appendix E)
        "paper": Settings(width=50, depth=4, n_res=(64,), pretrain_steps=1_000,
                          finetune_steps=200, lr_net=1e-3, lr_theta=5e-2),
        "quick": Settings(width=50, depth=4, n_res=(64,), pretrain_steps=1_000,
                          finetune_steps=200, lr_net=1e-3, lr_theta=5e-2),
    }

    def output(self, net, coords, theta, functions):
        x = coords["x"]
        return theta["theta0"] * (1.0 - x) + theta["theta1"] * x + net * x * (1.0 - x)

    def residual(self, u, coords, theta, functions):
        return u.d("x", "x") - 2.0
