"""The problem registry: one declaration per file (`bilo.model.Problem`), one line each here."""

from bilo.model import Problem
from bilo.problems.burgers import Burgers
from bilo.problems.darcy import Darcy
from bilo.problems.fkpp import FisherKPP
from bilo.problems.fkpp2d import FisherKPP2D
from bilo.problems.heat import Heat
from bilo.problems.logistic import Logistic
from bilo.problems.nonlinear_poisson import NonlinearPoisson
from bilo.problems.poisson import Poisson
from bilo.problems.poisson_constant import PoissonConstant
from bilo.problems.singular import Singular
from bilo.problems.two_point import TwoPoint
from solvers.common import InputError

PROBLEMS: dict[str, type[Problem]] = {p.name: p for p in (
    FisherKPP,
    TwoPoint,
    Poisson,
    Heat,
    Burgers,
    Singular,
    Logistic,
    Darcy,
    FisherKPP2D,
    PoissonConstant,
    NonlinearPoisson,
)}


def get_problem(name: str) -> Problem:
    if name not in PROBLEMS:
        raise InputError(f"unknown problem '{name}'; known: {', '.join(PROBLEMS)}")
    return PROBLEMS[name]()


__all__ = ["PROBLEMS", "Problem", "get_problem"]
