"""The boundary-parameter problem (paper Appendix E): y'' = 2 on [0, 1], y(0) = θ0, y(1) = θ1,
with objective ∫(y − x²)² (data: y = x², which the PDE reaches at θ = (0, 1)).

Output transform: y = θ0·(1−x) + θ1·x + N·x(1−x), so the parameters enter through the boundary
values exactly; the θ-derivatives of the residual then come from the network alone.
"""

from bilo.problems.base import Problem, Settings


class TwoPoint(Problem):
    name = "two_point"
    coords = ("x",)
    params = ("theta0", "theta1")
    initial_guess = {"theta0": 1.0, "theta1": 0.0}
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
