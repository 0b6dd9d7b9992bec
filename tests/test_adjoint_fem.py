"""Discrete adjoints on the dolfinx P1 solvers (adjoint.fem), one rank: Taylor tests of the
Darcy A(x) and the 2-D reaction-diffusion (D, rho) gradients, the objective convention, the
forward model against solve_fkpp2d, a (D, rho) recovery, and the symmetry the adjoint solves
rely on. The same Taylor tests on 2 ranks are in tests/mpi/test_adjoint_fem_mpi.py.

Objective convention (bilo.model): J = misfit.value(u(x_i), d) + w_reg int |grad A|^2, no 1/2 on
either term; the tests pass the Gaussian likelihood (mean((u - d)^2)) as the misfit. Before, both
terms carried a 1/2, so J is now exactly twice the former J at the same w_reg: the same
minimiser, the same Taylor rates (remainders and gradient scale alike)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from adjoint import minimize, taylor_test
from bilo.likelihoods import Gaussian

pytest.importorskip("dolfinx")

ROOT = Path(__file__).resolve().parents[1]


def check_taylor(name, report):
    from adjoint.fem import taylor_check

    result = taylor_check(name, Gaussian())
    report(f"{name}: rates of |J(m+eps dm) - J(m)| {np.round(result['rates_first'], 3)}, "
           f"gradient-corrected {np.round(result['rates_second'], 3)}")
    assert result["passed"] and result["min_rate"] >= 1.9
    np.testing.assert_allclose(result["rates_first"], 1.0, atol=0.1)


def test_darcy_gradient_passes_the_taylor_test(report):
    """-div(A grad u) = 1 on the unit square (16 x 16 squares, P1), u = 0 on the boundary;
    J = mean((u(x_i) - d_i)^2) + 1e-5 int |grad A|^2 over 7 x 7 points, data from
    A = 1 + sin(2 pi x) sin(pi y)/2, unknown A at the 289 vertices. Reference: the Taylor
    test at A = 1 + g2/4 along a smooth random field g1. The gradient-corrected remainder
    must fall at rate >= 1.9 and the plain one at rate 1 +- 0.1; measured 2.000 at every
    step, plain 1.08 -> 1.01."""
    check_taylor("darcy", report)


def test_reaction_diffusion_gradient_passes_the_taylor_test(report):
    """u_t = div(D P grad u) + rho u(1-u), no flux, on a 10 x 10 square (16 x 16 squares, P1),
    P = 1 - x/20, Gaussian u0 (amplitude 0.5, sigma 1.41), T = 1 in 20 Crank-Nicolson steps
    after the Rannacher start-up; J = mean((u(x_i, T) - d_i)^2) over 6 x 6 points, data from
    (D, rho) = (2, 1.5). Reference: the Taylor test at (1, 1) along a random direction. The
    gradient-corrected remainder must fall at rate >= 1.9 and the plain one at rate 1 +- 0.1;
    measured 1.997..2.000, plain 1.015 -> 1.002."""
    check_taylor("fkpp2d", report)


def test_gradients_with_the_iterative_solver_pass_the_taylor_test(report):
    """Both problems with solver="cg" (CG + BoomerAMG, rtol 1e-12) on 8 x 8 squares: Darcy at
    A = 1 + x/2 along a random direction (no regulariser, 5 x 5 points, data u = 0), and
    reaction-diffusion (P = 1, T = 0.5, 5 steps) at (D, rho) = (0.02, 1) along (0.01, 0.5).
    The adjoint solves reuse the forward operator (symmetric), so an iterative solver must
    give a correct gradient too: gradient-corrected rate >= 1.9, plain rate 1 +- 0.1."""
    from adjoint.fem import DarcyAdjointProblem, ReactionDiffusion2DAdjointProblem

    axis = np.linspace(0.1, 0.9, 5)
    points = np.array([[x, y] for x in axis for y in axis])
    darcy = DarcyAdjointProblem(points, np.zeros(len(points)), misfit=Gaussian(), n=8,
                                w_reg=0.0, solver="cg")
    darcy_result = taylor_test(darcy.objective, darcy.gradient, 1.0 + 0.5 * darcy.x[:, 0])
    darcy.close()
    growth = ReactionDiffusion2DAdjointProblem(points, np.zeros(len(points)), 0.5,
                                               misfit=Gaussian(), n_steps=5, n=8, solver="cg",
                                               initial=(0.02, 1.0))
    growth_result = taylor_test(growth.objective, growth.gradient, growth.initial_guess(),
                                dm=np.array([0.01, 0.5]))
    growth.close()
    for name, result in (("Darcy", darcy_result), ("reaction-diffusion", growth_result)):
        report(f"cg, {name}: plain rates {np.round(result.rates_first, 3)}, "
               f"gradient-corrected {np.round(result.rates_second, 3)}")
        assert result.passed()
        np.testing.assert_allclose(result.rates_first, 1.0, atol=0.1)


def test_adjoint_solves_use_symmetric_operators():
    """The adjoint systems are solved with the forward matrices themselves, which is right
    only because they are symmetric: the Darcy matrix K(A) (Dirichlet rows and columns both
    replaced by the identity) for a non-constant A, and the Newton Jacobian
    M/dt + theta (D K_P - rho M_(1-2u)) of a reaction-diffusion step at a non-constant u
    (symmetric to 1e-13)."""
    from adjoint.fem import DarcyAdjointProblem, ReactionDiffusion2DAdjointProblem

    points = np.array([[0.3, 0.4]])
    darcy = DarcyAdjointProblem(points, [0.0], misfit=Gaussian(), n=8)
    darcy.objective(1.0 + darcy.x[:, 0] * darcy.x[:, 1])
    growth = ReactionDiffusion2DAdjointProblem(points, [0.0], 0.5, misfit=Gaussian(), n_steps=5,
                                               n=8, initial=(0.02, 1.0))
    growth.objective(growth.initial_guess())
    growth.stepper.assemble_jacobian()
    assert darcy.operator.A.isSymmetric(1e-13) and growth.stepper.A.isSymmetric(1e-13)
    darcy.close()
    growth.close()


def test_objective_follows_the_project_convention(report):
    """J is misfit.value(u(x_i), d) + w_reg int |grad A|^2 with no 1/2 (bilo.model), checked by
    values known exactly. Darcy on 8 x 8 squares with A = 1 + 2x + 3y (P1 represents it exactly,
    so int |grad A|^2 = 2^2 + 3^2 = 13 over the unit square) and data = the model's own u plus
    0.1: J = 0.1^2 + w_reg 13 = 0.01 + 0.13 for w_reg = 0.01. Reaction-diffusion with data =
    u(T) + 0.1 at (D, rho) = (0.02, 1): J = 0.01. The data term is the misfit object's: a
    misfit that doubles the Gaussian doubles J and the gradient. The demo CLI's MeanSquares
    equals the Gaussian likelihood's value and gradient (to 1e-15 relative)."""
    from adjoint.fem import DarcyAdjointProblem, MeanSquares, ReactionDiffusion2DAdjointProblem

    class Doubled(Gaussian):
        def value(self, u, observed, theta=None):
            return 2.0 * super().value(u, observed)

        def gradient(self, u, observed, theta=None):
            return 2.0 * super().gradient(u, observed)

    points = np.array([[0.3, 0.4], [0.55, 0.2], [0.7, 0.8]])
    probe = DarcyAdjointProblem(points, np.zeros(3), misfit=Gaussian(), n=8)
    A = 1.0 + 2.0 * probe.x[:, 0] + 3.0 * probe.x[:, 1]
    data = probe.predict(A) + 0.1
    probe.close()
    darcy = DarcyAdjointProblem(points, data, misfit=Gaussian(), n=8, w_reg=0.01)
    doubled = DarcyAdjointProblem(points, data, misfit=Doubled(), n=8, w_reg=0.02)
    J, g = darcy.objective_and_gradient(A)
    J2, g2 = doubled.objective_and_gradient(A)
    darcy.close()
    doubled.close()
    report(f"Darcy: J = {J:.15f} (expected 0.14), reaction-diffusion below")
    assert J == pytest.approx(0.01 + 0.01 * 13.0, rel=1e-12)
    assert J2 == pytest.approx(2.0 * J, rel=1e-14)
    np.testing.assert_allclose(g2, 2.0 * g, rtol=1e-12, atol=1e-14 * np.abs(g).max())

    growth = ReactionDiffusion2DAdjointProblem(points, np.zeros(3), 0.5, misfit=Gaussian(),
                                               n_steps=5, n=8, initial=(0.02, 1.0))
    data = growth.predict(growth.initial_guess()) + 0.1
    growth.close()
    growth = ReactionDiffusion2DAdjointProblem(points, data, 0.5, misfit=Gaussian(), n_steps=5,
                                               n=8, initial=(0.02, 1.0))
    J = growth.objective(growth.initial_guess())
    growth.close()
    report(f"reaction-diffusion: J = {J:.15f} (expected 0.01)")
    assert J == pytest.approx(0.01, rel=1e-12)

    rng = np.random.default_rng(0)
    u, d = rng.random(50), rng.random(50)
    assert MeanSquares().value(u, d) == pytest.approx(Gaussian().value(u, d), rel=1e-15)
    np.testing.assert_allclose(MeanSquares().gradient(u, d), Gaussian().gradient(u, d),
                               rtol=1e-15)


def test_reaction_diffusion_forward_is_the_fem_solver(report):
    """u_t = div(D P grad u) + rho u(1-u), no flux, on the unit square (8 x 8 squares), P = 1
    on cells left of x = 0.5 and 0.3 right of it, Gaussian u0, (D, rho) = (0.05, 2), T = 0.5
    in 10 steps: the adjoint problem's u(T) at every 7th vertex equals solve_fkpp2d's (the
    reference FEM solver) to 1e-12 relative: the same scheme, step for step (measured 0:
    bitwise equal)."""
    from adjoint.fem import ReactionDiffusion2DAdjointProblem, centred_gaussian
    from meshes.image_mesh import unit_square_mesh
    from solvers.fem import solve_fkpp2d

    mesh = unit_square_mesh(8)
    vertices, cells = mesh.vertices[:, :2], mesh.cells
    P = np.where(vertices[cells].mean(axis=1)[:, 0] < 0.5, 1.0, 0.3)
    chosen = np.arange(0, len(vertices), 7)
    problem = ReactionDiffusion2DAdjointProblem(vertices[chosen], np.zeros(len(chosen)), 0.5,
                                                misfit=Gaussian(), n_steps=10, P=P, mesh=mesh,
                                                P_at="cell")
    predicted = problem.predict([0.05, 2.0])
    problem.close()
    reference = solve_fkpp2d(mesh, P, 0.05, 2.0, centred_gaussian(vertices),
                             [0.0, 0.5], n_steps=10, P_at="cell").u[-1, chosen]
    difference = float(np.max(np.abs(predicted - reference)) / np.max(np.abs(reference)))
    report(f"max |u_adjoint(T) - u_solve_fkpp2d(T)| / max|u| = {difference:.1e}")
    assert difference < 1e-12


def test_reaction_diffusion_recovers_D_and_rho(report):
    """The Taylor-test problem above (noise-free data from (D, rho) = (2, 1.5)) minimised by
    L-BFGS-B with the adjoint gradient from (1, 1): D and rho within 1e-6 relative (measured
    8.6e-10 and 9.1e-10 in 10 iterations; 5e-9 and 1.4e-8 with the former 1/2 convention,
    whose J was half of this one, so that L-BFGS-B's absolute tolerances stopped it earlier)."""
    from adjoint.fem import demo_reaction_diffusion

    demo = demo_reaction_diffusion(Gaussian())
    result = minimize(demo.problem, log=None)
    demo.problem.close()
    errors = np.abs(result.m / demo.truth - 1.0)
    report(f"(D, rho) = {np.round(result.m, 8)} from (1, 1) in {result.iterations} "
           f"iterations, relative errors {errors[0]:.1e}, {errors[1]:.1e}")
    assert np.all(errors < 1e-6)


def test_adjoint_package_imports_without_dolfinx():
    """`import adjoint` (which exports the FEM problems) loads neither dolfinx, ufl nor
    petsc4py: the adapter is imported when a FEM problem is constructed."""
    code = ("import sys, adjoint\n"
            "bad = [m for m in ('dolfinx', 'ufl', 'petsc4py') if m in sys.modules]\n"
            "assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
