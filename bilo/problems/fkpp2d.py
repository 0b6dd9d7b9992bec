"""Fisher–KPP on a 2-D mesh, u_t = ∇·(D·P∇u) + ρu(1−u) with no flux, P a tissue field of the
mesh (default 1), a Gaussian initial seed: the FEM forward model of the GBM app
(`apps/gbm/problem.py` declares the patient's inverse problem). The FEM reference solver only
here; its adjoint is `adjoint.fem.ReactionDiffusion2DAdjointProblem`.
"""

from bilo.model import MeshReferenceSpec, Problem
from solvers.fem.cli import OPTIONAL, PARAMS


class FisherKPP2D(Problem):
    name = "fkpp2d"
    coords = ("x", "y", "t")
    reference = MeshReferenceSpec("fkpp2d", "Fisher-KPP u_t = div(D P grad u) + rho u(1-u), no "
                                  "flux (dolfinx P1; --mesh, --np)", defaults=PARAMS["fkpp2d"],
                                  optional=OPTIONAL["fkpp2d"])
