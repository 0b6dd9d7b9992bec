"""Heat equation u_t = D·u_xx (D fixed by the data, 0.01 in the paper), u(0) = u(1) = 0; infer
the initial condition f = u(x, 0) from u(x, 1) (paper Section 3.4, Appendix B.3).

Transforms: u = N(x, t, z)·x(1−x)·t + z, so u(x, 0) = f(x); f = softplus(N_f(x))·x(1−x)
(non-negative, zero at the ends). Initial guess f0 = sin(πx); w_reg = 1e-2.
"""

import numpy as np

from bilo.functions import FunctionSpec
from bilo.problems.base import Problem, Settings


class Heat(Problem):
    name = "heat"
    coords = ("x", "t")
    functions = {"f": FunctionSpec(transform=lambda net, x: net.softplus() * x * (1.0 - x),
                                   initial=lambda x: np.sin(np.pi * x), w_reg=1e-2)}
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
