"""Singular forcing u″ − μu + λδ(x − z) = 0, u(0) = u(1) = 0, z = 0.5 (paper Part I §3.2): u is
the intensity of the spatial Poisson process of mRNA positions, observed as events pooled over
M snapshots (`bilo solve singular --param lam=500 --param mu=2.5 --snapshots 100 --seed 0`);
infer (λ, μ) by maximum likelihood, −log L = M∫u − Σ log u(q_i) (`PoissonProcess`, ∫u split at
the cusp z). Truth (500, 2.5), initial guess (250, 5).

Network (the cusp-capturing form): u(x) = ũ(x, |x − z|), so u is continuous at z and its kink
is the network's slope in φ = |x − z|: u′(z⁺) − u′(z⁻) = 2∂φũ(z, 0). The jump condition
u′(z⁺) − u′(z⁻) = −λ is a constraint (BiLO: with its θ-derivative, the paper's jump and
jump-gradient losses), evaluated from the one-sided slopes just either side of z, so the
factor 2 cannot be got wrong. Output transform U·m²·x(1 − x) (u ≥ 0 for log u; the boundary
conditions), U = 100 the size of u; the residual and the jump are divided by U. λ enters the
network and its Adam steps as λ/100 (the paper's λ̄: `Parameter.scale`); θ stays λ.
"""

import numpy as np

from bilo.likelihoods import PoissonProcess
from bilo.model import Parameter, Problem, ReferenceSpec, Settings
from bilo.priors import Gamma, Uniform
from solvers import fdm
from solvers.reference import Reference

Z = 0.5
U_SCALE = 100.0  # the size of u (max u = 104 at the truth): m and the losses of order one
# the one-sided slopes are read this far from z (far below the residual points' spacing)
SIDE = 1e-5


def solve(params, functions, nx, nt) -> Reference:
    x, u = fdm.solve_singular_forcing(params["lam"], params["mu"], z=params["z"], nx=nx)
    return Reference(("x",), {"x": x}, u, {},
                     "2nd-order finite differences, delta spread to neighbouring nodes",
                     f"nx={nx}")


class Singular(Problem):
    name = "singular"
    coords = ("x",)
    # priors for the samplers: λ Gamma with mean 500 and sd 354 (shape 2: a rate of the
    # order of hundreds, zero at λ = 0), μ uniform on [0, 20] (the paper's range of μ)
    parameters = (Parameter("lam", 250.0, bounds=(1e-6, float("inf")), scale=100.0,
                            prior=Gamma(2.0, 1.0 / 250.0)),
                  Parameter("mu", 5.0, bounds=(0.0, float("inf")), prior=Uniform(0.0, 20.0)))
    constants = {"z": Z}
    likelihood = PoissonProcess(cusp=Z)
    reference = ReferenceSpec(
        solve, "singular forcing u'' - mu u + lam delta(x - z) = 0, u(0)=u(1)=0",
        defaults={"lam": 500.0, "mu": 2.5}, nx=1001, n_obs=51)
    residual_keys = ((), ("x",), ("x", "x"))
    features = ("phi",)
    # w_rgrad 1: at 0.1 the pre-trained ∂u/∂μ is 37 % from the solver's after 3000 steps (1.5 %
    # at 1), and BiLO's gradient along the likelihood's flat ridge has the wrong sign
    presets = {
        "paper": Settings(width=128, depth=2, n_res=(100,), pretrain_steps=10_000,
                          finetune_steps=20_000, w_rgrad=1.0, lr_net_final=1e-4),
        "quick": Settings(width=64, depth=2, n_res=(100,), pretrain_steps=3_000,
                          finetune_steps=10_000, lr_theta=1e-2, w_rgrad=1.0,
                          lr_net_final=1e-4),
    }

    def network_features(self, coords, theta):
        import torch

        x = coords["x"]
        side = torch.where(x.value >= theta["z"], 1.0, -1.0).to(x.value.dtype)
        return {"phi": (x - theta["z"]) * side}

    def output(self, net, coords, theta, functions):
        x = coords["x"]
        return U_SCALE * net.square() * x * (1.0 - x)

    def residual(self, u, coords, theta, functions):
        return (u.d("x", "x") - theta["mu"] * u) / U_SCALE

    def constraints(self, evaluate, coords, theta, functions):
        import torch

        z = theta["z"]
        dtype, device = coords["x"].value.dtype, coords["x"].value.device
        left, right = (evaluate(torch.tensor([[z + side * SIDE]], dtype=dtype, device=device))
                       .d("x") for side in (-1.0, 1.0))
        return {"jump": (right - left + theta["lam"]) / U_SCALE}

    def solution_checks(self, grid, u, theta):
        """The jump u′(z⁺) − u′(z⁻) from one-sided second-order differences on the grid (z a
        node), against −λ."""
        x, z = grid["x"], theta.get("z", Z)
        j = int(np.argmin(np.abs(x - z)))
        if not (2 <= j <= x.size - 3 and abs(x[j] - z) < 1e-9):
            return {}
        h = x[j + 1] - x[j]
        right = (-3.0 * u[j] + 4.0 * u[j + 1] - u[j + 2]) / (2.0 * h)
        left = (3.0 * u[j] - 4.0 * u[j - 1] + u[j - 2]) / (2.0 * h)
        jump = float(right - left)
        return {"slope_jump": jump, "slope_jump_rel_err": abs(jump + theta["lam"]) / theta["lam"]}

    def collocation(self, n_res, dtype=None, seed=0):
        points = super().collocation(n_res, dtype, seed)
        # the residual does not hold at z (the delta's support)
        return points[(points[:, 0] - Z).abs() > 1e-9]

    def adjoint(self, data, *, w_reg, nx=None):
        from adjoint.singular import SingularProblem

        z = float(data.params.get("z", Z))
        if z != self.likelihood.cusp:
            likelihood = PoissonProcess(cusp=z, n_gauss=self.likelihood.n_gauss)
        else:
            likelihood = self.likelihood
        return SingularProblem(data.events, misfit=likelihood, z=z,
                               nx=nx or len(data.grid["x"]),
                               initial=[p.initial for p in self.parameters])
