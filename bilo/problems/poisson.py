"""Variable-diffusion Poisson: −(D(x)u′)′ = π² sin(πx), u(0) = u(1) = 0; infer D(x) with
D(0) = D(1) = 1 (paper Section 3.3, Appendix B.2).

Transforms: u = N(x, z)·x(1−x); D = 1 + N_D(x)·x(1−x). Initial guess D0 = 1.
"""

import math

import numpy as np

from bilo.functions import FunctionSpec
from bilo.problems.base import Problem, Settings


class Poisson(Problem):
    name = "poisson"
    coords = ("x",)
    functions = {"D": FunctionSpec(transform=lambda net, x: 1.0 + net * x * (1.0 - x),
                                   initial=lambda x: np.ones_like(x), w_reg=1e-3)}
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
