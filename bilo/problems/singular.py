"""Singular forcing u″ − μu + λδ(x − z) = 0, u(0) = u(1) = 0 (paper Part I Section 3.2): the
reference solver only, so far (no network formulation and no adjoint yet)."""

from bilo.model import Parameter, Problem, ReferenceSpec
from solvers import fdm
from solvers.reference import Reference


def solve(params, functions, nx, nt) -> Reference:
    x, u = fdm.solve_singular_forcing(params["lam"], params["mu"], z=params["z"], nx=nx)
    return Reference(("x",), {"x": x}, u, {},
                     "2nd-order finite differences, delta spread to neighbouring nodes",
                     f"nx={nx}")


class Singular(Problem):
    name = "singular"
    coords = ("x",)
    parameters = (Parameter("lam", 250.0, bounds=(0.0, float("inf"))),
                  Parameter("mu", 5.0, bounds=(0.0, float("inf"))))
    constants = {"z": 0.5}
    reference = ReferenceSpec(
        solve, "singular forcing u'' - mu u + lam delta(x - z) = 0, u(0)=u(1)=0",
        defaults={"lam": 500.0, "mu": 2.5}, nx=1001, n_obs=51)
