"""PDE problems for the trainer, one small file each, picked by name."""

from bilo.problems.base import Problem
from bilo.problems.burgers import Burgers
from bilo.problems.fkpp import FisherKPP
from bilo.problems.heat import Heat
from bilo.problems.poisson import Poisson
from bilo.problems.two_point import TwoPoint

PROBLEMS: dict[str, type[Problem]] = {
    p.name: p for p in (FisherKPP, TwoPoint, Poisson, Heat, Burgers)}


def get_problem(name: str) -> Problem:
    from solvers.exchange import InputError

    if name not in PROBLEMS:
        raise InputError(f"no trainer for problem '{name}'; known: {', '.join(PROBLEMS)}")
    return PROBLEMS[name]()


__all__ = ["PROBLEMS", "Problem", "get_problem"]
