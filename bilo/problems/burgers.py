"""Inviscid Burgers u_t + a·u·u_x = 0 (a fixed by the data, 0.2 in the paper), u(0) = u(1) = 0;
infer the initial condition f = u(x, 0) from u(x, 1) (paper Section 3.5, Appendix B.5).

The boundary datum 0 holds in the entropy sense (Bardos-LeRoux-Nedelec): where the flow leaves
the domain (u < 0 at x = 0, u > 0 at x = 1) the solution keeps its own trace and has no
boundary layer. So u = z + t·N(x, t, z) leaves the ends free, and a constraint asks for the
admissible traces u(0, t) ≤ 0 and u(1, t) ≥ 0 (a fan from 0 where the flow enters).
f = N_f(x)·x(1−x). docs/functions.md compares this with fixed ends.

The initial guess is a Gaussian random field (seed 0, `solvers.grf.BURGERS_GRF`, zero at the
ends; `bilo solve burgers` draws its default truth from the same field with seed 1: both
steepen into shocks before t = 1); w_reg = 1e-3.
"""

import numpy as np

from bilo.model import FunctionSpec, Problem, ReferenceSpec, Settings
from solvers import fdm
from solvers.grf import BURGERS_GRF, grf
from solvers.reference import Reference


def solve(params, functions, nx, nt) -> Reference:
    n_cells = nx - 1
    centres = (np.arange(n_cells) + 0.5) / n_cells
    xc, t, uc = fdm.solve_burgers(functions["f"](centres), a=params["a"], n_cells=n_cells,
                                  t_out=np.linspace(0.0, 1.0, nt))
    # Report on [0, 1] including the boundary traces, so observations anywhere in the domain
    # interpolate instead of extrapolating.
    x = np.concatenate([[0.0], xc, [1.0]])
    return Reference(("t", "x"), {"t": t, "x": x}, fdm.boundary_traces(uc),
                     {"f": functions["f"](x)},
                     "Godunov finite volumes, exact Riemann flux, CFL 0.5 (first order)",
                     f"cells={n_cells}, output times={nt}")


class Burgers(Problem):
    name = "burgers"
    coords = ("x", "t")
    constants = {"a": 0.2}
    functions = {"f": FunctionSpec(transform=lambda net, x: net * x * (1.0 - x),
                                   initial=lambda x: grf(x, seed=0, **BURGERS_GRF), w_reg=1e-3,
                                   truth="grf(x, seed=1, length_scale=0.15, variance=0.5)")}
    reference = ReferenceSpec(
        solve, "inviscid Burgers u_t + a u u_x = 0, u(x,0) = f(x), u(0)=u(1)=0",
        time_dependent=True, nx=1001, nt=101, layout="final", n_obs=51, extra_nodes=1)
    residual_keys = ((), ("t",), ("x",))
    presets = {
        "paper": Settings(width=128, depth=2, n_res=(51, 51), pretrain_steps=10_000,
                          finetune_steps=10_000),
        "quick": Settings(width=64, depth=2, n_res=(51, 26), pretrain_steps=2_000,
                          finetune_steps=4_000),
    }

    def output(self, net, coords, theta, functions):
        return net * coords["t"] + functions["f"]

    def residual(self, u, coords, theta, functions):
        return u.d("t") + theta["a"] * u * u.d("x")

    def constraints(self, evaluate, coords, theta, functions):
        import torch

        t = torch.unique(coords["t"].value)
        ends = {}
        for name, x, inadmissible in (("bc_left", 0.0, lambda u: u > 0),
                                      ("bc_right", 1.0, lambda u: u < 0)):
            u = evaluate(torch.stack([torch.full_like(t, x), t], dim=1))
            ends[name] = u * inadmissible(u.value).to(t.dtype)
        return ends

    def adjoint(self, data, *, w_reg, nx=None):
        from adjoint.burgers import BurgersProblem

        nx = nx or len(data.grid["x"])
        return BurgersProblem(data.observations.points_in(("x", "t")), data.observations.values,
                              misfit=self.likelihood, a=data.params["a"], n_cells=nx - 2,
                              t_final=float(data.grid["t"][-1]), w_reg=w_reg["f"])
