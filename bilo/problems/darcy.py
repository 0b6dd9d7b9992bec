"""Darcy flow −∇·(A∇u) = f on a mesh (default: the unit square), u = 0 on the boundary; infer
the conductivity A(x) from u (paper Section 3.6, Appendix B.6).

The truth: A = `high` where the seeded Gaussian random field is positive and `low` elsewhere
(the paper: 12 and 3), or a cell field of the mesh; the data file holds it per vertex
(`inputs/A`, `solvers.fem.cli`). The initial guess A0 = 3 + 9·sigmoid(φ0), φ0 the same GRF
with seed `INITIAL_SEED`, rescaled to the paper's marginal standard deviation √10
(`solvers.fem.darcy.darcy_initial_coefficient`; docs/darcy.md says why not the paper's
length 0.01). The adjoint (`adjoint.fem.DarcyAdjointProblem`) infers A at every mesh vertex,
regularised by the smoothed total variation ∫sqrt(|∇A|² + ε²) (default, the paper's TV) or
∫|∇A|²; A ≥ `LOWER` through L-BFGS-B's bounds.

The networks (Appendix B.6): A(x, y) = 3 + 9·sigmoid(N_A(x, y)),
u = 0.1·N_u(x, y, z)·x(1−x)·y(1−y) with z = A(x, y) BiLO's auxiliary input (the factor 0.1 is
ours, `U_SCALE`); the residual −∂x(A∂xu) − ∂y(A∂yu) − f on a grid over the unit square;
R(A) the smoothed TV on n_reg × n_reg stratified points (the same ε and w_reg as the adjoint,
so that every method's J, recomputed on the mesh by `bilo validate`, is one number).
Pre-training fits u to the FEM solution at A0 (`--u0 auto`).

Beyond `bilo.model.Problem`'s defaults it declares what a function on a mesh needs:
`check_data`, `regularisation` (R on the mesh), `function_metrics` (the classification
accuracy) and `reference_solution` (the FEM at A per vertex).
"""

import numpy as np

from bilo.model import FunctionSpec, MeshReferenceSpec, Problem, Settings, SmoothedTotalVariation
from solvers.common import InputError
from solvers.fem.cli import PARAMS
from solvers.fem.darcy import REGULARISERS, darcy_initial_coefficient, p1_regulariser

INITIAL_SEED = 1  # φ0's seed; the truth's is the data's `seed` parameter (default 0)
LOWER = 0.1  # A ≥ LOWER at every vertex
TV_EPS = 1.0  # ε of the smoothed TV: |∇A| across a 12/3 interface of a 50×50 mesh is ~450
# u = U_SCALE·N·x(1−x)y(1−y): u ~ 1e-2 and the bubble ≤ 1/16 would leave N ~ 0.2, where Adam's
# steps of about lr on the output layer move u by percents; with it N ~ 2 (docs/darcy.md)
U_SCALE = 0.1


def initial_coefficient(points: np.ndarray) -> np.ndarray:
    return darcy_initial_coefficient(points[:, :2], seed=INITIAL_SEED,
                                     high=PARAMS["darcy"]["high"], low=PARAMS["darcy"]["low"])


class Darcy(Problem):
    name = "darcy"
    coords = ("x", "y")
    reference = MeshReferenceSpec("darcy", "Darcy -div(A grad u) = f, u = 0 on the boundary "
                                  "(dolfinx P1; --mesh, --np)", defaults=PARAMS["darcy"])
    # w_reg: the TV weight with the smallest A error on the noise-free 51×51 data of
    # docs/darcy.md (u ~ 1e-2 makes J ~ 1e-8; the paper's 1e-9 is for its network's losses)
    functions = {"A": FunctionSpec(transform=lambda net, x, y: 3.0 + 9.0 * net.sigmoid(),
                                   initial=initial_coefficient, w_reg=1e-10,
                                   regulariser=SmoothedTotalVariation(TV_EPS), coords=("x", "y"),
                                   scale=10.0)}
    regularisers = REGULARISERS
    default_regulariser = "tv"
    residual_keys = ((), ("x",), ("y",), ("x", "x"), ("y", "y"))
    # w_rgrad 0.01: with z = A/10 the residual-gradient loss is 100 times the one per unit of
    # A, and at 0.1 its term was as large as the residual loss; quick: 0.003 and lr_net 2e-3
    # fit u more closely, while 0.001 left A at A0 (docs/darcy.md). settle_steps: the
    # residual-gradient term left u_NN 1.45 % from the FEM at the answer, 2000 steps without it
    # 0.18 % (quick)
    presets = {
        "paper": Settings(width=128, depth=2, n_res=(51, 51), pretrain_steps=10_000,
                          finetune_steps=5_000, n_reg=51, fresh_upper=True, w_rgrad=0.01,
                          settle_steps=2_000),
        "quick": Settings(width=128, depth=2, n_res=(26, 26), pretrain_steps=6_000,
                          finetune_steps=3_000, n_reg=26, fresh_upper=True, w_rgrad=0.003,
                          lr_net=2e-3, settle_steps=2_000),
    }

    def output(self, net, coords, theta, functions):
        x, y = coords["x"], coords["y"]
        return net * x * (1.0 - x) * y * (1.0 - y) * U_SCALE

    def residual(self, u, coords, theta, functions):
        a = functions["A"]
        return -(a * u.d("x")).d("x") - (a * u.d("y")).d("y") - theta["f"]

    def check_data(self, data, where: str) -> None:
        """The data must be on a mesh and hold the source f per vertex."""
        if data.mesh is None:
            raise InputError(f"{where}: field 'mesh': missing; darcy data come from `bilo solve "
                             "darcy`")
        if "f" not in data.inputs:
            raise InputError(f"{where}: field 'inputs/f': missing (the source per vertex)")

    def adjoint(self, data, *, w_reg, nx=None, regulariser=None, tv_eps=None):
        from adjoint.fem import DarcyAdjointProblem

        if nx is not None:
            raise InputError(f"--nx {nx}: darcy solves on the data's mesh")
        return DarcyAdjointProblem(
            data.observations.points_in(self.coords), data.observations.values,
            data.inputs["f"], misfit=self.likelihood, mesh=data.mesh, w_reg=w_reg["A"],
            A0=initial_coefficient, regulariser=regulariser or self.default_regulariser,
            tv_eps=TV_EPS if tv_eps is None else tv_eps, lower=LOWER)

    def regularisation(self, mesh, values, regulariser=None, tv_eps=None) -> float:
        """R(A) of the P1 function with `values` at the mesh's vertices."""
        return p1_regulariser(mesh.vertices, mesh.cells, values,
                              regulariser or self.default_regulariser,
                              TV_EPS if tv_eps is None else tv_eps)[0]

    def function_metrics(self, name: str, values: np.ndarray, truth: np.ndarray,
                         params: dict) -> dict:
        """The share of vertices where A thresholded halfway between low and high is on the
        truth's side (the paper's classification accuracy)."""
        threshold = 0.5 * (params.get("high", 12.0) + params.get("low", 3.0))
        return {f"{name}_threshold": threshold,
                f"{name}_accuracy": float(np.mean((values > threshold) == (truth > threshold)))}

    def reference_solution(self, data, functions: dict[str, np.ndarray]):
        """The FEM solution (`solvers.fem.FemSolution`) at A given per vertex: A per cell the
        mean of its three vertices, which for P1 u gives the same stiffness matrix as the P1 A
        of the adjoint (∇u·∇v is constant on a triangle and the mean of a P1 function over it
        is its vertex mean)."""
        from solvers.fem.darcy import solve_darcy

        cells = data.mesh.cells
        return solve_darcy(functions["A"][cells].mean(axis=1), data.inputs["f"], mesh=data.mesh)
