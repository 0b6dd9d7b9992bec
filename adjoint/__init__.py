"""Adjoint-method baselines: discrete-adjoint gradients of the reference FDM solvers.

    from adjoint import FisherKPPProblem, taylor_test, minimize, run_adjoint
    problem = FisherKPPProblem(points, values)          # J = mean((u(x_i, t_i) - d_i)^2)
    print(taylor_test(problem.objective, problem.gradient, [1.0, 1.0]))
    result = minimize(problem)                            # L-BFGS-B from (D, rho) = (1, 1)
    run_adjoint("fkpp", "gt.h5", "runs/adjoint")          # data file -> summary.json

Problems: FisherKPPProblem (D, rho), PoissonProblem (D(x)), HeatProblem (initial condition f),
numpy and scipy only; on the dolfinx P1 solvers, also under mpirun (dolfinx imported when one is
constructed): DarcyAdjointProblem (A(x) of -div(A grad u) = f) and
ReactionDiffusion2DAdjointProblem (D, rho of u_t = div(D P grad u) + rho u(1-u)).
"""

from adjoint.fem import DarcyAdjointProblem, ReactionDiffusion2DAdjointProblem
from adjoint.fisher_kpp import FisherKPPProblem, ReactionDiffusionScheme
from adjoint.heat import HeatProblem
from adjoint.optimize import (
    AdjointProblem,
    AdjointResult,
    interpolation_matrix,
    minimize,
    problem_from_data,
    run_adjoint,
)
from adjoint.poisson import PoissonProblem
from adjoint.taylor import TaylorResult, taylor_test

__all__ = [
    "AdjointProblem",
    "AdjointResult",
    "DarcyAdjointProblem",
    "FisherKPPProblem",
    "HeatProblem",
    "PoissonProblem",
    "ReactionDiffusion2DAdjointProblem",
    "ReactionDiffusionScheme",
    "TaylorResult",
    "interpolation_matrix",
    "minimize",
    "problem_from_data",
    "run_adjoint",
    "taylor_test",
]
