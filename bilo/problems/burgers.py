"""Inviscid Burgers u_t + a·u·u_x = 0 (a fixed by the data, 0.2 in the paper), u(0) = u(1) = 0;
infer the initial condition f = u(x, 0) from u(x, 1) (paper Section 3.5, Appendix B.5).

Transforms: u = N(x, t, z)·x(1−x)·t + z; f = N_f(x)·x(1−x). The datum 0 holds only where the
flow enters (the reference reports the outflow traces; docs/functions.md): where a shock leaves
the domain the network cannot follow the trace. Free ends with a constraint on admissible traces
(u(0, t) ≤ 0, u(1, t) ≥ 0) were measured and fitted the data worse (quick preset, grf seed 1:
the solver's solution at the inferred f missed the data by 45 % against 22 %).

The initial guess is a Gaussian random field (seed 0, `solvers.grf.BURGERS_GRF`, zero at the
ends; `bilo solve burgers` draws its default truth from the same field with seed 1: both steepen
into shocks before t = 1); w_reg = 1e-3.
"""

from bilo.functions import FunctionSpec
from bilo.problems.base import Problem, Settings
from solvers.grf import BURGERS_GRF, grf


class Burgers(Problem):
    name = "burgers"
    coords = ("x", "t")
    functions = {"f": FunctionSpec(transform=lambda net, x: net * x * (1.0 - x),
                                   initial=lambda x: grf(x, seed=0, **BURGERS_GRF), w_reg=1e-3)}
    residual_keys = ((), ("t",), ("x",))
    presets = {
        "paper": Settings(width=128, depth=2, n_res=(51, 51), pretrain_steps=10_000,
                          finetune_steps=10_000),
        "quick": Settings(width=64, depth=2, n_res=(51, 26), pretrain_steps=2_000,
                          finetune_steps=4_000),
    }

    def output(self, net, coords, theta, functions):
        x, t = coords["x"], coords["t"]
        return net * x * (1.0 - x) * t + functions["f"]

    def residual(self, u, coords, theta, functions):
        return u.d("t") + theta["a"] * u * u.d("x")
