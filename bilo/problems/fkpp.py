"""Fisher-KPP: u_t = 0.01·D·u_xx + ρ·u(1−u) on [0,1]², u(x,0) = ½sin²(πx), u(0,t) = u(1,t) = 0.

Output transform (paper Appendix B.1): u = ½sin²(πx) + N·x(1−x)·t, which satisfies the initial
and boundary conditions for every network N.
"""

import math

from bilo.problems.base import Problem, Settings


class FisherKPP(Problem):
    name = "fkpp"
    coords = ("x", "t")
    params = ("D", "rho")
    initial_guess = {"D": 1.0, "rho": 1.0}
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
