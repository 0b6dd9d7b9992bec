"""Discrete adjoints of the P1 finite-element solvers (``solvers.fem``), on one rank or under MPI.

* :class:`DarcyAdjointProblem`: −∇·(A(x)∇u) = f, u = 0 on ∂Ω; the unknown is A, a P1 field,
  regularised by ∫|∇A|² or the smoothed total variation ∫sqrt(|∇A|² + ε²).
* :class:`ReactionDiffusion2DAdjointProblem`: u_t = ∇·(D·P∇u) + ρu(1−u), no flux; the unknowns
  are (D, ρ), through the exact Crank–Nicolson/Newton sub-steps of ``solve_fkpp2d``.

The objective follows the project's convention (``bilo.model``): J = misfit.value(u(x_i), d)
+ w_reg·R(A), no ½ on either term; the data term is the `misfit` object (the problem's
likelihood, e.g. ``bilo.likelihoods.Gaussian()``: mean((u − d)²)), as in the FDM adjoints.

Parallel layout: m is the whole parameter vector (A at every mesh vertex in the mesh's input
order, or (D, ρ)), the same on every rank, so that :func:`adjoint.taylor_test` and
:func:`adjoint.minimize` (scipy) run unchanged on every rank and take the same steps. Each rank
reads the entries of its owned and ghost dofs; gradients are assembled over the owned dofs
(ghost contributions added to their owners) and gathered into input order on every rank, and
scalars are summed on rank 0 and broadcast, so every rank holds bitwise the same J and gradient.
The predictions u(x_i) are gathered on every rank (each point is evaluated by one rank), so the
misfit and its gradient are evaluated on the whole vector, the same on every rank (a misfit that
couples the points, like a relative norm, needs nothing more); each rank then takes the entries
of its own points into the adjoint source.

    python -m adjoint.fem darcy fkpp2d              # Taylor tests of both gradients
    mpirun -n 2 python -m adjoint.fem darcy fkpp2d  # the same on two ranks

dolfinx is imported (through ``solvers.fem.dolfinx_adapter``) when a problem is constructed.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np

from adjoint.fisher_kpp import POSITIVE
from adjoint.optimize import AdjointProblem
from adjoint.taylor import taylor_test
from solvers.common import write_json_atomic
from solvers.fem.darcy import REGULARISERS, darcy_grf, mesh_arrays, p1_regulariser, sample_field
from solvers.fem.reaction_diffusion import (
    SCHEMES,
    coefficient_location,
    default_step_count,
    gaussian_initial_condition,
    time_steps,
)


def _mesh_or_unit_square(mesh, n: int):
    if mesh is None:
        from meshes.image_mesh import unit_square_mesh

        mesh = unit_square_mesh(n)
    return mesh_arrays(mesh)


def _checked_values(points, values) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).ravel()
    if len(values) != len(points):
        raise ValueError(f"{len(points)} observation points but {len(values)} values")
    return values


class _PointMisfit:
    """misfit.value(u(x_i), d) of a P1 function u, and its derivative with respect to u's dofs
    (``PointObservation.transpose`` of misfit.gradient), on every rank."""

    def __init__(self, observation, values, misfit):
        self.observation, self.values, self.misfit = observation, values, misfit

    def predicted(self, u) -> np.ndarray:
        return self.observation.values(u)

    def value(self, predicted) -> float:
        return float(self.misfit.value(predicted, self.values))

    def source(self, predicted):
        gradient = np.asarray(self.misfit.gradient(predicted, self.values), dtype=np.float64)
        if gradient.shape != self.values.shape:
            raise ValueError(f"misfit.gradient returned shape {gradient.shape}, expected "
                             f"{self.values.shape}")
        return self.observation.transpose(gradient)


class DarcyAdjointProblem(AdjointProblem):
    """Infer A(x) of −∇·(A∇u) = f, u = 0 on the boundary, from values of u at points.

    A is the P1 function with the values m at the mesh's vertices (input order), and

        J(m) = misfit.value(u(x_i), d) + w_reg R(A),

    R(A) = ∫|∇A|² dx ("h1") or ∫sqrt(|∇A|² + ε²) dx ("tv"), u the P1 solution of the Darcy
    solver's system K(A) u = b (Dirichlet rows by the identity).
    Gradient: Kᵀλ = −∂J/∂u, then dJ/dA_k = λᵀ ∂(K u)/∂A_k + w_reg ∂R/∂A_k
    = ∫ φ_k ∇u·∇λ dx + w_reg ∂R/∂A_k: one factorisation serves both solves. The TV term is
    summed in numpy over the whole mesh on every rank (∇A is constant per triangle,
    ``solvers.fem.darcy.p1_regulariser``), the same on every rank like m itself.

    Args:
        points: (n, 2) observation points inside the mesh.
        values: (n,) observed u.
        f: the source: a scalar, a callable of points or one value per vertex.
        misfit: the data term, an object with value(predicted, observed) and
            gradient(predicted, observed) (the problem's likelihood, e.g.
            ``bilo.likelihoods.Gaussian()``: mean((u − d)²)).
        n: the unit square cut into n×n squares, unless `mesh` is given.
        mesh: ``solvers.exchange.Mesh`` or ``meshes.MeshData`` (every rank passes the same).
        comm: MPI communicator (default COMM_WORLD).
        w_reg: weight of the regulariser of A.
        A0: the initial guess: a constant, a callable of points or one value per vertex.
        solver: "lu" (MUMPS) or "cg" (CG + BoomerAMG), as in solve_darcy.
        regulariser: "h1" (∫|∇A|²) or "tv" (∫sqrt(|∇A|² + tv_eps²)).
        lower: the L-BFGS-B lower bound of A at every vertex.
    """

    function = "A"
    # L-BFGS-B's tolerance on the largest projected gradient entry: with u ~ 1e-2 (f = 1,
    # A ~ 10) J is ~1e-8 and its gradient per vertex ~1e-10, where minimize's default stops
    gtol = 1e-16

    def __init__(self, points, values, f=1.0, *, misfit, n: int = 16, mesh=None, comm=None,
                 w_reg: float = 1e-4, A0=1.0, solver: str = "lu", regulariser: str = "h1",
                 tv_eps: float = 1.0, lower: float = POSITIVE):
        from solvers.fem import dolfinx_adapter as dx

        super().__init__()
        if regulariser not in REGULARISERS:
            raise ValueError(f"regulariser must be one of {REGULARISERS}, got {regulariser!r}")
        self._adapter = dx
        self.x, self.cells, _ = _mesh_or_unit_square(mesh, n)
        self.values = _checked_values(points, values)
        self.w_reg, self.regulariser, self.tv_eps = float(w_reg), regulariser, float(tv_eps)
        self.lower = float(lower)
        self.A0 = sample_field(A0, self.x, self.cells, "A0", "vertex")
        self.dm = dx.DistributedMesh(self.x, self.cells, comm)
        self.source = self.dm.vertex_function(sample_field(f, self.x, self.cells, "f",
                                                           "vertex"))
        self.coefficient = self.dm.vertex_function(self.A0, "A")
        self.operator = dx.DiffusionOperator(self.dm, self.coefficient, solver)
        self.observation = dx.PointObservation(self.dm, points)
        self.misfit = _PointMisfit(self.observation, self.values, misfit)

    def initial_guess(self) -> np.ndarray:
        return self.A0.copy()

    def bounds(self):
        return [(self.lower, None)] * len(self.x)

    def full_function(self, m) -> np.ndarray:
        """A at every vertex (m holds them all: no boundary values are fixed)."""
        return np.array(m, dtype=np.float64)

    def _solve(self, m):
        self.dm.assign_vertex_values(self.coefficient, m)
        self.operator.assemble()
        u = self.operator.solve(self.source)
        return u, self.misfit.predicted(u)

    def regularisation(self, m) -> tuple[float, np.ndarray]:
        """R(A) and its gradient per vertex (on every rank); A's P1 function must hold m."""
        if self.regulariser == "h1":
            return self._adapter.gradient_energy(self.dm, self.coefficient)
        return p1_regulariser(self.x, self.cells, m, "tv", self.tv_eps)

    def _objective(self, m, state) -> float:
        return self.misfit.value(state[1]) + self.w_reg * self.regularisation(m)[0]

    def _gradient(self, m, state) -> np.ndarray:
        u, predicted = state
        lam = self.operator.solve_adjoint(self.misfit.source(predicted))
        return (self.operator.coefficient_sensitivity(u, lam)
                + self.w_reg * self.regularisation(m)[1])

    def solution(self, m) -> np.ndarray:
        """u at every vertex, in input order, for A given by m (on every rank)."""
        return self.dm.vertex_values_on_all_ranks(self._state(m)[1][0])

    def predict(self, m, points=None) -> np.ndarray:
        """u for A given by m at the observation points, or at `points` (k, 2) inside the mesh
        by P1 interpolation (on every rank)."""
        if points is None:
            return self._state(m)[1][1].copy()
        from meshes.interpolation import P1Interpolator

        return P1Interpolator(self.x, self.cells)(self.solution(m), points, outside=np.nan)

    def close(self) -> None:
        """Free the PETSc objects (collective: call on every rank)."""
        self.operator.destroy()


def centred_gaussian(vertices, amplitude: float = 0.5, width: float = 0.1) -> np.ndarray:
    """The default u0: ``gaussian_initial_condition`` at the vertices, centred at the centre c
    of their bounding box with σ = width × its diagonal."""
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    return gaussian_initial_condition(vertices, (low + high) / 2,
                                      width * float(np.linalg.norm(high - low)), amplitude)


class ReactionDiffusion2DAdjointProblem(AdjointProblem):
    """Infer (D, ρ) of u_t = ∇·(D·P∇u) + ρu(1−u), no-flux boundary, from u(x_i, T) at points.

        J(D, ρ) = misfit.value(u(x_i, T), d),

    u the solution of ``solve_fkpp2d``'s scheme (P1, Crank–Nicolson with Rannacher start-up, or
    backward Euler; Newton per sub-step), computed by the solver's own stepper and sub-step
    schedule. Every sub-step state is kept; the backward sweep
    (``ReactionDiffusionAdjoint``) solves one transposed Newton Jacobian per sub-step and sums
    λ_jᵀ ∂G_j/∂(D, ρ).

    Args:
        points: (n, 2) observation points inside the mesh.
        values: (n,) observed u at t_final.
        t_final: the observation time T.
        misfit: the data term, as in :class:`DarcyAdjointProblem`.
        n_steps: uniform time steps (default: solve_fkpp2d's, at least 100).
        u0: the initial condition, a callable of points or one value per vertex; default
            :func:`centred_gaussian`.
        P: the diffusion map (scalar, callable, per-vertex or per-cell values; see P_at).
        n, mesh, comm: the mesh, as in :class:`DarcyAdjointProblem`.
        initial: the initial guess (D, ρ).
        scheme, solver, P_at: as in solve_fkpp2d.
    """

    names = ("D", "rho")

    def __init__(self, points, values, t_final: float = 1.0, *, misfit,
                 n_steps: int | None = None,
                 u0=None, P=1.0, n: int = 16, mesh=None, comm=None, initial=(1.0, 1.0),
                 scheme: str = "cn", solver: str = "lu", P_at: str = "auto"):
        from solvers.fem import dolfinx_adapter as dx

        super().__init__()
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
        self.values = _checked_values(points, values)
        self.initial = np.array(initial, dtype=np.float64)
        vertices, cells, _ = _mesh_or_unit_square(mesh, n)
        self.n_steps = (default_step_count(np.array([0.0, t_final])) if n_steps is None
                        else int(n_steps))
        self.substeps = [sub for step in time_steps(t_final / self.n_steps, self.n_steps, scheme)
                         for sub in step]
        where = coefficient_location(P, len(vertices), len(cells), P_at)
        p_values = sample_field(P, vertices, cells, "P", where)
        u_initial = (centred_gaussian(vertices) if u0 is None
                     else sample_field(u0, vertices, cells, "u0", "vertex"))
        self.dm = dm = dx.DistributedMesh(vertices, cells, comm)
        p_function = (dm.cell_function(p_values, "P") if where == "cell"
                      else dm.vertex_function(p_values, "P"))
        self.stepper = dx.ReactionDiffusionStepper(dm, p_function, *self.initial, u_initial,
                                                   solver=solver)
        self.adjoint = dx.ReactionDiffusionAdjoint(self.stepper)
        self.observation = dx.PointObservation(dm, points)
        self.misfit = _PointMisfit(self.observation, self.values, misfit)

    def initial_guess(self) -> np.ndarray:
        return self.initial.copy()

    def bounds(self):
        return [(POSITIVE, None)] * 2

    def _solve(self, m):
        self.stepper.restart(*m)
        states = [self.stepper.snapshot()]
        for size, theta in self.substeps:
            self.stepper.step(size, theta)
            states.append(self.stepper.snapshot())
        return states, self.misfit.predicted(self.stepper.u)

    def _objective(self, m, state) -> float:
        return self.misfit.value(state[1])

    def _gradient(self, m, state) -> np.ndarray:
        states, predicted = state
        gradient = self.adjoint.parameter_gradient(
            self.substeps, states, {len(self.substeps): self.misfit.source(predicted)})
        return np.array([gradient[name] for name in self.names])

    def predict(self, m) -> np.ndarray:
        """u(x_i, T) at the observation points for (D, ρ) = m (on every rank)."""
        return self._state(m)[1][1].copy()

    def close(self) -> None:
        """Free the PETSc objects (collective: call on every rank)."""
        self.adjoint.destroy()
        self.stepper.destroy()


# --------------------------------------------------------------------------- demo problems


class MeanSquares:
    """mean((u − d)²) and its gradient 2(u − d)/n: the data term of ``python -m adjoint.fem``.
    The same function as ``bilo.likelihoods.Gaussian().value`` (what the tests and the problem
    declarations pass as `misfit`), restated because adjoint/ sits below bilo in the layers and
    cannot import it; tests/test_adjoint_fem.py checks that the two agree."""

    def value(self, predicted, observed) -> float:
        return float(np.mean((np.asarray(predicted) - np.asarray(observed)) ** 2))

    def gradient(self, predicted, observed) -> np.ndarray:
        residual = np.asarray(predicted, dtype=np.float64) - np.asarray(observed)
        return 2.0 * residual / residual.size


@dataclass
class Demo:
    """A problem with noise-free data, its true parameters, and the point and direction at
    which to Taylor-test its gradient (direction None: taylor_test's random one)."""

    problem: AdjointProblem
    truth: np.ndarray
    taylor_point: np.ndarray
    taylor_direction: np.ndarray | None = None


def _grid_points(low: float, high: float, count: int) -> np.ndarray:
    """count × count points evenly inside (low, high)², away from the boundary."""
    axis = np.linspace(low, high, count + 2)[1:-1]
    return np.array([[x, y] for x in axis for y in axis])


def _smooth_field(vertices, seed: int) -> np.ndarray:
    """A seeded smooth random field at the vertices, scaled to max |value| = 1."""
    field = darcy_grf(vertices, seed=seed)
    return field / np.max(np.abs(field))


def demo_darcy(misfit, n: int = 16, comm=None) -> Demo:
    """Darcy on the unit square (n×n squares), f = 1, J = misfit + 1e-5 ∫|∇A|², noise-free data
    at 7×7 points from A = 1 + sin(2πx) sin(πy)/2. Taylor test at A = 1 + g₂/4 along g₁ (g_s:
    smooth random fields, seeds 2 and 1), where the misfit and the regulariser contribute about
    equally to the directional derivative; a rough direction would leave only the
    regulariser's curvature in the remainders."""
    points = _grid_points(0.0, 1.0, 7)
    truth = DarcyAdjointProblem(points, np.zeros(len(points)), misfit=misfit, n=n, comm=comm)
    A_true = 1.0 + 0.5 * np.sin(2 * np.pi * truth.x[:, 0]) * np.sin(np.pi * truth.x[:, 1])
    data = truth.predict(A_true)
    truth.close()
    problem = DarcyAdjointProblem(points, data, misfit=misfit, n=n, comm=comm, w_reg=1e-5)
    return Demo(problem, A_true, 1.0 + 0.25 * _smooth_field(problem.x, 2),
                _smooth_field(problem.x, 1))


DEMO_SIDE = 10.0
DEMO_TRUE = (2.0, 1.5)


def demo_reaction_diffusion(misfit, n: int = 16, n_steps: int = 20, comm=None) -> Demo:
    """Fisher–KPP on a 10×10 square (n×n squares), P = 1 − x/20, the default Gaussian u0
    (σ = 1.41), T = 1 in n_steps Crank–Nicolson steps, noise-free data at 6×6 points from
    (D, ρ) = (2, 1.5). Start and Taylor point (1, 1)."""
    from meshes.image_mesh import unit_square_mesh

    square = unit_square_mesh(n)
    square.vertices[:, :2] *= DEMO_SIDE
    points = _grid_points(0.0, DEMO_SIDE, 6)

    def P(p):
        return 1.0 - p[:, 0] / (2 * DEMO_SIDE)

    def build(values):
        return ReactionDiffusion2DAdjointProblem(points, values, 1.0, misfit=misfit,
                                                 n_steps=n_steps, P=P, mesh=square, comm=comm)

    truth = build(np.zeros(len(points)))
    data = truth.predict(DEMO_TRUE)
    truth.close()
    problem = build(data)
    return Demo(problem, np.array(DEMO_TRUE), problem.initial_guess())


DEMOS = {"darcy": demo_darcy, "fkpp2d": demo_reaction_diffusion}


def taylor_check(name: str, misfit, n: int = 16, comm=None) -> dict:
    """Build demo `name` ("darcy" or "fkpp2d") with data term `misfit`, Taylor-test its gradient
    and free it.

    Returns (on every rank) J, the gradient at the Taylor point, the observed rates, the
    Taylor table (`table`), the number of ranks and the cells per rank (rank 0; else None).
    """
    demo = DEMOS[name](misfit, n=n, comm=comm)
    problem = demo.problem
    gradient = problem.gradient(demo.taylor_point)
    taylor = taylor_test(problem.objective, problem.gradient, demo.taylor_point,
                         dm=demo.taylor_direction)
    cells_per_rank = problem.dm.cells_per_rank()
    problem.close()
    return {"objective": taylor.objective, "gradient": gradient.tolist(),
            "rates_first": taylor.rates_first.tolist(),
            "rates_second": taylor.rates_second.tolist(), "min_rate": taylor.min_rate,
            "passed": taylor.passed(), "table": str(taylor), "mpi_ranks": problem.dm.comm.size,
            "cells_per_rank": cells_per_rank}


def main(argv=None) -> int:
    """Taylor tests of the demo problems' gradients (data term: mean squares); rank 0 prints
    the tables and, with --json, writes J, the gradient and the rates per problem. Exit status 1
    if one fails."""
    parser = argparse.ArgumentParser(prog="python -m adjoint.fem", description=main.__doc__)
    parser.add_argument("problems", nargs="+", choices=sorted(DEMOS))
    parser.add_argument("--n", type=int, default=16, help="squares per side of the mesh")
    parser.add_argument("--json", help="write the results here (rank 0)")
    args = parser.parse_args(argv)
    from solvers.fem.dolfinx_adapter import mpi_comm_world

    results = {name: taylor_check(name, MeanSquares(), n=args.n) for name in args.problems}
    if mpi_comm_world().rank == 0:
        for name, result in results.items():
            print(f"{name} on {result['mpi_ranks']} rank(s):\n{result['table']}")
        if args.json:
            write_json_atomic(args.json, results)
    return 0 if all(result["passed"] for result in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
