"""Singular forcing u″ − μu + λδ(x − z) = 0, u(0) = u(1) = 0, z = 0.5 (paper Part I §3.2): u is
the intensity of the spatial Poisson process of mRNA positions, observed as events pooled over
M snapshots (`bilo solve singular --param lam=500 --param mu=2.5 --snapshots 100 --seed 0`);
infer (λ, μ) by maximum likelihood, −log L = M∫u − Σ log u(q_i) (`PoissonProcess`, ∫u split at
the cusp z). Truth (500, 2.5), initial guess (250, 5).

The reference solver and the discrete adjoint (`adjoint.singular.SingularProblem`, `bilo train
singular --method adjoint`) only, so far: no network formulation yet (the paper's
cusp-capturing ũ(x, |x − z|, θ) with its jump losses). The paper trains the network on
λ̄ = λ/100 for conditioning; the declaration keeps λ (the adjoint's L-BFGS-B converges without
rescaling), so a network formulation should rescale inside its own inputs.
"""

from bilo.likelihoods import PoissonProcess
from bilo.model import Parameter, Problem, ReferenceSpec
from solvers import fdm
from solvers.reference import Reference

Z = 0.5


def solve(params, functions, nx, nt) -> Reference:
    x, u = fdm.solve_singular_forcing(params["lam"], params["mu"], z=params["z"], nx=nx)
    return Reference(("x",), {"x": x}, u, {},
                     "2nd-order finite differences, delta spread to neighbouring nodes",
                     f"nx={nx}")


class Singular(Problem):
    name = "singular"
    coords = ("x",)
    parameters = (Parameter("lam", 250.0, bounds=(1e-6, float("inf"))),
                  Parameter("mu", 5.0, bounds=(0.0, float("inf"))))
    constants = {"z": Z}
    likelihood = PoissonProcess(cusp=Z)
    reference = ReferenceSpec(
        solve, "singular forcing u'' - mu u + lam delta(x - z) = 0, u(0)=u(1)=0",
        defaults={"lam": 500.0, "mu": 2.5}, nx=1001, n_obs=51)

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
