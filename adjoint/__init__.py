"""Adjoint-method baselines: discrete-adjoint gradients of the reference FDM solvers.

    from adjoint import FisherKPPProblem, taylor_test, minimize
    from bilo.likelihoods import Gaussian
    problem = FisherKPPProblem(points, values, misfit=Gaussian())   # J = mean((u - d)^2)
    print(taylor_test(problem.objective, problem.gradient, [1.0, 1.0]))
    result = minimize(problem)                                     # L-BFGS-B from (1, 1)

Problems: FisherKPPProblem (D, rho), LogisticProblem (a), PoissonProblem (D(x)),
PoissonConstantProblem (D of D u'' = f), NonlinearPoissonProblem (k of 0.01 u'' + k tanh u = f),
HeatProblem (initial condition f), BurgersProblem (initial condition f), SingularProblem (λ, μ of
u'' - mu u + lam delta(x - z) = 0 from point-process events), numpy and scipy
only; on the dolfinx P1 solvers, also under mpirun (dolfinx imported when one is constructed):
DarcyAdjointProblem (A(x) of -div(A grad u) = f) and ReactionDiffusion2DAdjointProblem (D, rho of
u_t = div(D P grad u) + rho u(1-u)). `bilo train PROBLEM --method adjoint` fits a problem's
declared adjoint to a data file.
"""

from adjoint.burgers import BurgersProblem
from adjoint.fem import DarcyAdjointProblem, ReactionDiffusion2DAdjointProblem
from adjoint.fisher_kpp import FisherKPPProblem, ReactionDiffusionScheme
from adjoint.heat import HeatProblem
from adjoint.logistic import LogisticProblem
from adjoint.nonlinear_poisson import NonlinearPoissonProblem
from adjoint.optimize import (
    AdjointProblem,
    AdjointResult,
    GridAdjointProblem,
    interpolation_matrix,
    minimize,
)
from adjoint.poisson import PoissonProblem
from adjoint.poisson_constant import PoissonConstantProblem
from adjoint.singular import SingularProblem
from adjoint.taylor import TaylorResult, taylor_test

__all__ = [
    "AdjointProblem",
    "AdjointResult",
    "BurgersProblem",
    "DarcyAdjointProblem",
    "FisherKPPProblem",
    "GridAdjointProblem",
    "HeatProblem",
    "LogisticProblem",
    "NonlinearPoissonProblem",
    "PoissonConstantProblem",
    "PoissonProblem",
    "ReactionDiffusion2DAdjointProblem",
    "ReactionDiffusionScheme",
    "SingularProblem",
    "TaylorResult",
    "interpolation_matrix",
    "minimize",
    "taylor_test",
]
