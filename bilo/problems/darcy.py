"""Darcy flow −∇·(A∇u) = f on a mesh (default: the unit square), u = 0 on the boundary; A is
`high` where the seeded Gaussian random field is positive and `low` elsewhere (the BiLO paper:
12 and 3), or a cell field of the mesh. The FEM reference solver only, so far (the 2-D unknown
function A(x) for BiLO and PINN is a later step); its adjoint is `adjoint.fem.DarcyAdjointProblem`.
"""

from bilo.model import MeshReferenceSpec, Problem
from solvers.fem.cli import PARAMS


class Darcy(Problem):
    name = "darcy"
    coords = ("x", "y")
    reference = MeshReferenceSpec("darcy", "Darcy -div(A grad u) = f, u = 0 on the boundary "
                                  "(dolfinx P1; --mesh, --np)", defaults=PARAMS["darcy"])
