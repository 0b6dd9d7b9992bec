"""What a problem is: one declaration that every method, the reference solver and the adjoint
read.

A problem (a subclass of `Problem`, one file in `bilo/problems/`) declares

* its coordinates and their domain;
* the parameters to infer (`Parameter`: initial guess, bounds, prior) and the constants fixed by
  the data (e.g. the heat equation's D);
* unknown functions of x, or of several coordinates (`FunctionSpec`: transform, initial guess,
  regulariser);
* the residual and the output transform, in jet arithmetic (`bilo/jet.py`): written once, they
  give BiLO the residual with its θ-derivatives and PINN the plain residual;
* the observation model (a `bilo.likelihoods.Likelihood`);
* the reference solver it is validated against (`ReferenceSpec`, a function in `solvers/`);
* where one exists, its adjoint (`adjoint(...)`, an `adjoint.optimize.AdjointProblem`).

The objective is written once, in `objective`: J(θ, f) = likelihood misfit + Σ_f w_reg·R(f),
R(f) = ∫₀¹ f′(x)² dx (the Dirichlet energy; `TotalVariation` uses ∫|f′|, `SmoothedTotalVariation`
∫sqrt(|∇f|² + ε²)). The networks estimate R by the mean over points drawn one per cell of [0, 1]
(of [0, 1]² for a function of two coordinates); the solvers and the adjoint take the exact
integral of the piecewise-linear interpolant (on a mesh: `Problem.regularisation`). For a
Gaussian likelihood with σ the negative log-posterior is scale·J − log p(θ) with
scale = n/(2σ²) (`log_prior` here; the samplers' targets in `bilo.posterior` and `bilo.bayes`
evaluate it): the regulariser then acts as a Gaussian prior on f.

This module does not import torch: `bilo solve` and `bilo validate` run without it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from bilo.likelihoods import Gaussian, Likelihood
from bilo.priors import Prior

if TYPE_CHECKING:
    from bilo.jet import Jet

_INF = float("inf")


@dataclass(frozen=True)
class Parameter:
    """A scalar parameter to infer. `bounds` keep every upper-level step inside a box
    (projection); `prior` is used by samplers and the negative log-posterior (None: flat on the
    bounds). `scale` is its typical size, for a parameter far from order one (a rate λ ~ 500):
    the networks see θ/scale, BiLO's residual-gradient loss takes derivatives per unit of
    θ/scale, and the upper level's Adam steps (about lr_theta each) are taken in units of
    scale: as if θ/scale were the variable. θ, its bounds and every reported number stay in
    the declared units."""

    name: str
    initial: float
    bounds: tuple[float, float] = (-_INF, _INF)
    prior: Prior | None = None
    scale: float = 1.0


class DirichletEnergy:
    """R(f) = ∫|∇f|² over the unit interval or square."""

    def of_slopes(self, slopes):
        """Monte Carlo estimate from ∇f at points spread over the unit box (torch or numpy):
        f′ (k,) for a function of one coordinate, or gradients (k, d)."""
        return self.density(slopes if slopes.ndim == 2 else slopes[:, None]).mean()

    def density(self, gradients):
        """The integrand at gradients (k, d)."""
        return (gradients * gradients).sum(-1)

    def of_samples(self, x: np.ndarray, values: np.ndarray) -> float:
        """Exact for the piecewise-linear interpolant of (x, values) in one coordinate, on 1001
        even points."""
        grid = np.linspace(0.0, 1.0, 1001)
        # equal intervals: the integral is the mean over them
        return float(self.of_slopes(np.diff(np.interp(grid, x, values)) / np.diff(grid)))


class TotalVariation(DirichletEnergy):
    """R(f) = ∫₀¹ |f′| dx (in several coordinates the anisotropic ∫Σ_i |∂_i f|)."""

    def density(self, gradients):
        return abs(gradients).sum(-1)


@dataclass(frozen=True)
class SmoothedTotalVariation(DirichletEnergy):
    """R(f) = ∫sqrt(|∇f|² + ε²): the total variation, differentiable where ∇f = 0."""

    eps: float = 1.0

    def density(self, gradients):
        return ((gradients * gradients).sum(-1) + self.eps**2) ** 0.5


@dataclass(frozen=True)
class FunctionSpec:
    """An unknown function of the spatial coordinates `coords` (default x alone).

    transform: (network jet, one jet per coordinate) -> f jet, fixing boundary values or sign.
    initial: the initial guess f0, a numpy function of x (pre-training fits f to it); of rows
        of the coordinates (k, d) for a function of several.
    w_reg: default weight of the regulariser.
    truth: the expression `bilo solve` uses for f when none is given.
    """

    transform: Callable
    initial: Callable[[np.ndarray], np.ndarray]
    w_reg: float = 1e-3
    regulariser: DirichletEnergy = field(default_factory=DirichletEnergy)
    truth: str = ""
    width: int = 64
    depth: int = 2
    coords: tuple[str, ...] = ("x",)
    # its typical size, for a function far from order one (darcy's A in [3, 12]): BiLO's network
    # takes z = f/scale and the residual-gradient loss takes ∂ per unit of f/scale, as for
    # `Parameter.scale` (a network input of 12 would saturate the first layer)
    scale: float = 1.0


@dataclass(frozen=True)
class Settings:
    """Network training settings that a preset fills in for a problem."""

    width: int = 128
    depth: int = 2
    n_res: tuple[int, ...] = (51, 51)
    pretrain_steps: int = 10_000
    finetune_steps: int = 50_000
    lr_net: float = 1e-3
    lr_theta: float = 1e-3
    # the network's learning rate at the last fine-tuning step, reached by a geometric decay
    # from lr_net (so that Adam's noise does not set the final residual); None: constant
    lr_net_final: float | None = None
    # unknown functions: points in x for the regulariser and the f0 fit (the paper's T_reg has
    # 101; n_reg × n_reg for a function of two coordinates). `stratified_reg` redraws them each
    # step, one per cell of that grid: with fixed points f grows wiggles between them
    # (docs/functions.md)
    n_reg: int = 101
    stratified_reg: bool = True
    # unknown functions: a fresh upper-level Adam at fine-tuning's start. Pre-training's f0 fit
    # leaves Adam second moments at its gradients' scale, and a misfit whose gradients are
    # orders smaller (darcy: J ~ 1e-6) then moves the functions by ~1e-7 of lr per step
    fresh_upper: bool = False
    # BiLO's weight of the residual-gradient loss ‖∂θ r‖² in the lower level
    w_rgrad: float = 0.1
    # BiLO: θ waits (no upper step) while the residual loss is above hold_upper × its value at
    # the first fine-tuning step, so that u_NN catches up with θ before θ moves on; None: the
    # paper's simultaneous steps throughout
    hold_upper: float | None = None
    # causal training (`bilo.methods.causal_weights`): the residual at time t weighs
    # exp(−causal·Σ mean r² over the earlier time slabs), so that later times are fitted once
    # the earlier ones are, as a time stepper would; for PDEs that amplify an early error
    # (logistic growth). None: every time alike. Needs a coordinate "t".
    causal: float | None = None
    # BiLO: after fine-tuning, this many steps of W alone on the residual loss (θ and the
    # functions frozen, no ‖∂θ r‖² term), so that u_NN is the PDE's solution at the answer
    # rather than one that lags the last upper steps. Not after the stop rule has ended
    # fine-tuning
    settle_steps: int = 0


@dataclass(frozen=True)
class ReferenceSpec:
    """The trusted solver of a problem and how `bilo solve` draws synthetic data from it.

    solve(params, functions, nx, nt) -> solvers.reference.Reference, with params the declared
    parameters and constants, functions callables of x. `defaults` are the parameter values
    when none are given (the truth of synthetic data); `inputs` the known input functions
    (expressions in x, e.g. a source term) beside the unknown ones."""

    solve: Callable
    summary: str
    defaults: dict[str, float] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    time_dependent: bool = False
    nx: int = 1001
    nt: int = 101
    layout: str = "points"
    n_obs: int = 51
    # nodes a solution reports beyond the solver's nx (Burgers adds its two boundary traces)
    extra_nodes: int = 0
    on_mesh = False

    def layouts(self) -> tuple[str, ...]:
        return ("grid", "final") if self.time_dependent else ("points",)

    def resolution(self, grid: dict[str, np.ndarray]) -> dict[str, int]:
        """The nx and nt that reproduce a solution's grid (so validation re-solves at the
        resolution of the data)."""
        space = "x" if "x" in grid else next(iter(grid))
        found = {"nx": len(grid[space]) - self.extra_nodes}
        if self.time_dependent:
            found["nt"] = len(grid["t"])
        return found


@dataclass(frozen=True)
class MeshReferenceSpec:
    """A reference solved on a mesh (dolfinx FEM, also under MPI), which writes its exchange file
    itself: `solvers.fem.cli.run_fem_solve(solver, params, mesh, out, ...)`. `defaults` are the
    solver's parameters, `optional` the ones it derives when not given."""

    solver: str
    summary: str
    defaults: dict[str, float] = field(default_factory=dict)
    optional: tuple[str, ...] = ()
    on_mesh = True


class Problem:
    name: str = ""
    coords: tuple[str, ...] = ()
    parameters: tuple[Parameter, ...] = ()
    # fixed by the data file (its params); the values here are `bilo solve`'s defaults
    constants: dict[str, float] = {}
    functions: dict[str, FunctionSpec] = {}
    likelihood: Likelihood = Gaussian()
    reference: ReferenceSpec | MeshReferenceSpec | None = None
    # derivatives of u (multi-indices over coordinates) that the residual reads
    residual_keys: tuple = ((),)
    presets: dict[str, Settings] = {}
    resample_collocation: bool = False
    # whether a network sampler records u on the reference grid at each recorded draw (to check
    # it against the solver there); off where that grid is large (a mesh × times)
    predictive_on_grid: bool = True
    # factor on the initial first-layer weights of each coordinate (default 1): larger for a
    # coordinate along which u has features much finer than the coordinate's range
    coord_init_scale: dict[str, float] = {}
    # network inputs computed from the coordinates, after them (`network_features` gives
    # them): e.g. the distance |x − z| to a point source, so that u(x) = ũ(x, |x − z|) is
    # continuous with a kink at z however the network is trained
    features: tuple[str, ...] = ()
    # regularisers the adjoint offers by name (`--regulariser`, darcy: tv, h1) and its default
    regularisers: tuple[str, ...] = ()
    default_regulariser: str | None = None

    # -- derived views of the declaration -------------------------------------------------
    @property
    def params(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)

    @property
    def initial_guess(self) -> dict[str, float]:
        return {p.name: p.initial for p in self.parameters}

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        return {p.name: p.bounds for p in self.parameters}

    @property
    def observation_params(self) -> tuple[str, ...]:
        """Parameters of the observation model only (e.g. segmentation thresholds): upper
        level variables that are neither network inputs nor in the residual."""
        return tuple(self.likelihood.parameters)

    @property
    def pde_params(self) -> tuple[str, ...]:
        return tuple(p for p in self.params if p not in self.observation_params)

    @property
    def has_network(self) -> bool:
        return type(self).residual is not Problem.residual

    @property
    def function_coords(self) -> tuple[str, ...]:
        """The coordinates of the unknown functions, one set for all of them (they share the
        regulariser points)."""
        found = {spec.coords for spec in self.functions.values()} or {("x",)}
        if len(found) > 1:
            raise ValueError(f"problem '{self.name}': functions of different coordinates {found}")
        return found.pop()

    # -- data on a mesh and functions per vertex (darcy); defaults for the other problems --
    def check_data(self, data, where: str) -> None:
        """Checks of a data file beyond those of `bilo.strategies.load_data`; none by default."""

    def regularisation(self, mesh, values: np.ndarray, regulariser: str | None = None,
                       tv_eps: float | None = None) -> float:
        """R of the P1 function with `values` at the mesh's vertices, exact: what every method's
        J takes on a mesh (`bilo validate`). Problems with functions on a mesh declare it."""
        raise NotImplementedError(f"problem '{self.name}' has no regulariser on a mesh")

    def function_metrics(self, name: str, values: np.ndarray, truth: np.ndarray,
                         params: dict) -> dict:
        """Problem-specific scores of an inferred function against its truth; none by
        default."""
        return {}

    def reference_solution(self, data, functions: dict[str, np.ndarray]):
        """The reference on the data's mesh at functions given per vertex
        (`solvers.fem.FemSolution`), for `bilo validate` and pre-training's u0; None where the
        reference is not on a mesh."""
        return None

    # -- the network formulation (jet arithmetic) ------------------------------------------
    # `theta` maps each parameter name to a jet (BiLO) or a tensor (PINN), and holds the
    # constants as floats; `functions` maps each unknown function to its jet (BiLO: f(x) + ζ).
    def output(self, net: Jet, coords: dict[str, Jet], theta: dict, functions: dict) -> Jet:
        """u from the raw network output; default: no transform."""
        return net

    def residual(self, u: Jet, coords: dict[str, Jet], theta: dict, functions: dict) -> Jet:
        raise NotImplementedError

    def solution_checks(self, grid: dict[str, np.ndarray], u: np.ndarray,
                        theta: dict[str, float]) -> dict[str, float]:
        """Numbers `bilo validate` reports for a solution on the reference grid, the method's
        and the solver's (e.g. a jump condition the residual does not see); none by default."""
        return {}

    def network_features(self, coords: dict[str, Jet], theta: dict) -> dict[str, Jet]:
        """The `features` at the points of `coords`, as jets of the coordinates (theta holds
        the constants, e.g. a source position)."""
        return {}

    def constraints(self, evaluate, coords: dict, theta: dict, functions: dict) -> dict:
        """Extra conditions c = 0 not enforced by `output` (e.g. a boundary or jump condition),
        as jets. BiLO adds mean(c²) to the residual loss and mean((∂θ c)²) to the
        residual-gradient loss; PINN adds mean(c²). `evaluate(points)` gives u's jet at other
        points (rows of coordinates). None by default."""
        return {}

    def collocation(self, n_res: tuple[int, ...], dtype=None, seed: int = 0):
        """Residual points: an evenly spaced grid over the unit box, columns in `coords` order.
        Problems with `resample_collocation` draw new points for each step's `seed`."""
        import torch

        axes = [torch.linspace(0.0, 1.0, n, dtype=dtype or torch.float32) for n in n_res]
        mesh = torch.meshgrid(*axes, indexing="ij")
        return torch.stack([m.reshape(-1) for m in mesh], dim=1)

    # -- the adjoint ------------------------------------------------------------------------
    def adjoint(self, data, *, w_reg: dict[str, float], nx: int | None = None):
        """The adjoint problem (`adjoint.optimize.AdjointProblem`) for a data file's
        observations, its objective the one of `objective`; None when there is none."""
        return None

    def describe(self) -> str:
        params = ", ".join(f"{p.name}={p.initial:g}" for p in self.parameters) or "none"
        return f"{self.name}: {self.reference.summary if self.reference else ''} " \
               f"(initial guess {params})"


def regulariser(problem: Problem, functions: dict[str, tuple[np.ndarray, np.ndarray]],
                w_reg: dict[str, float]) -> float:
    """Σ_f w_reg·R(f) of functions given by samples (x, f(x))."""
    return float(sum(w_reg[name] * problem.functions[name].regulariser.of_samples(x, values)
                     for name, (x, values) in functions.items()))


def objective(problem: Problem, u: np.ndarray, observed: np.ndarray, theta: dict[str, float],
              functions: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
              w_reg: dict[str, float] | None = None) -> float:
    """J(θ, f) = misfit(u, d; θ) + Σ_f w_reg·R(f): the number every method reports at its
    answer, with u the reference solver's at the likelihood's points."""
    misfit = float(problem.likelihood.value(np.asarray(u, dtype=np.float64),
                                            np.asarray(observed, dtype=np.float64), theta))
    return misfit + regulariser(problem, functions or {}, w_reg or {})


def log_prior(problem: Problem, theta: dict[str, float]) -> float:
    """Σ log p(θ_k); a parameter without a prior is flat on its bounds."""
    total = 0.0
    for p in problem.parameters:
        value = theta[p.name]
        if p.prior is not None:
            total += float(p.prior.log_prob(value))
        elif not p.bounds[0] <= value <= p.bounds[1]:
            return -math.inf
    return total
