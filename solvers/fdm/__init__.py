"""Finite-difference / finite-volume reference solvers (numpy and scipy only)."""

from solvers.fdm.burgers import boundary_traces, burgers_godunov_flux, solve_burgers
from solvers.fdm.fisher_kpp import fisher_kpp_initial, solve_fisher_kpp
from solvers.fdm.heat import solve_heat
from solvers.fdm.logistic import logistic_exact, solve_logistic
from solvers.fdm.nonlinear_poisson import nonlinear_poisson_exact, solve_nonlinear_poisson
from solvers.fdm.poisson import solve_two_point, solve_variable_diffusion, two_point_exact
from solvers.fdm.poisson_constant import poisson_constant_exact, solve_poisson_constant
from solvers.fdm.reaction_diffusion import solve_reaction_diffusion
from solvers.fdm.singular import (
    singular_forcing_exact,
    singular_forcing_system,
    solve_singular_forcing,
)

__all__ = [
    "boundary_traces",
    "burgers_godunov_flux",
    "fisher_kpp_initial",
    "logistic_exact",
    "nonlinear_poisson_exact",
    "poisson_constant_exact",
    "singular_forcing_exact",
    "singular_forcing_system",
    "solve_burgers",
    "solve_fisher_kpp",
    "solve_heat",
    "solve_logistic",
    "solve_nonlinear_poisson",
    "solve_poisson_constant",
    "solve_reaction_diffusion",
    "solve_singular_forcing",
    "solve_two_point",
    "solve_variable_diffusion",
    "two_point_exact",
]
