"""Darcy's network formulation (bilo/problems/darcy.py, docs/darcy.md): −∇·(A∇u) = f on the
unit square, u = N_u(x, y, z)·x(1−x)·y(1−y) with z = A(x, y) BiLO's auxiliary input, and
A = 3 + 9·sigmoid(N_A(x, y)), an unknown function of two coordinates.

The checks: A's jet in (x, y) against central differences, the declared residual at a
manufactured u and A against its closed form, the surrogate's residual (u through A's network)
against autograd of its values, the 2-D regulariser points, and a short BiLO run on darcy whose
u_NN matches the FEM solution at A0 (`--u0 auto`) and that `bilo validate` re-solves."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from bilo.functions import FunctionNet
from bilo.jet import Jet
from bilo.problems import get_problem
from bilo.problems.darcy import Darcy
from bilo.surrogate import Surrogate

KEYS = [(), ("x",), ("y",), ("x", "x"), ("y", "y")]
TOL = 0.05


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _points(n, seed=0):
    return torch.as_tensor(np.random.default_rng(seed).uniform(0.05, 0.95, (n, 2)))


def test_function_jet_in_two_coordinates_matches_differences(float64, report):
    """A = 3 + 9·sigmoid(N_A(x, y)) of a random network (width 64, depth 2, float64): its
    channels ∂x, ∂y, ∂xx, ∂yy at 20 random points against central differences of A's values
    with h = 1e-3 (truncation error ~h²/6·A‴ ~ 1e-7·A‴; rounding ~1e-15/h² ~ 1e-9); agreement
    to 2e-6 relative to the largest entry of each channel (measured ≤ 3e-7). `gradient` returns
    (∂xA, ∂yA)."""
    torch.manual_seed(0)
    net = FunctionNet(get_problem("darcy").functions["A"])
    p = _points(20)
    jet = net.jet(p, KEYS)
    h = 1e-3
    with torch.no_grad():
        shifted = {(axis, s): net(p + s * h * torch.eye(2)[axis]) for axis in (0, 1)
                   for s in (-1, 1)}
        value = net(p)
    for axis, name in enumerate("xy"):
        first = (shifted[axis, 1] - shifted[axis, -1]) / (2 * h)
        second = (shifted[axis, 1] - 2 * value + shifted[axis, -1]) / h**2
        for key, expected in (((name,), first), ((name, name), second)):
            error = float((jet[key].detach() - expected).abs().max() / expected.abs().max())
            report(f"∂{''.join(key)}A: max relative difference {error:.1e}")
            assert error < 2e-6
    gradient = net.gradient(p).detach()
    assert torch.equal(gradient, torch.stack([jet[("x",)], jet[("y",)]], 1).detach())


def test_declared_residual_at_a_manufactured_solution(float64):
    """u = sin(πx)·sin(πy), A = 2 + x·y, f = 1: −∇·(A∇u) − f = −(y·u_x + x·u_y) + 2π²·A·u − 1
    with u_x = π cos(πx) sin(πy), u_y = π sin(πx) cos(πy) (worked by hand); the problem's
    residual in jet arithmetic equals it to 1e-12 at 50 random points."""
    problem = get_problem("darcy")
    p = _points(50)
    x, y = (Jet.variable(name, p[:, i], KEYS) for i, name in enumerate("xy"))
    u = (math.pi * x).sin() * (math.pi * y).sin()
    residual = problem.residual(u, {"x": x, "y": y}, {"f": 1.0}, {"A": 2.0 + x * y})
    px, py = p[:, 0], p[:, 1]
    su, a = torch.sin(math.pi * px) * torch.sin(math.pi * py), 2.0 + px * py
    ux = math.pi * torch.cos(math.pi * px) * torch.sin(math.pi * py)
    uy = math.pi * torch.sin(math.pi * px) * torch.cos(math.pi * py)
    expected = -(py * ux + px * uy) + 2 * math.pi**2 * a * su - 1.0
    assert torch.allclose(residual.value, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("takes_parameters", [True, False], ids=["bilo", "pinn"])
def test_surrogate_residual_matches_autograd(float64, takes_parameters):
    """The surrogate's residual on darcy (random networks, float64; BiLO: u takes z = A(x, y),
    so its x-derivatives go through A's network) against −∇·(A∇u) − 1 from autograd of the
    surrogate's values u(x, y) and A(x, y) at 30 random points: equal to 1e-10 relative to the
    residual's largest entry. The output transform makes u vanish on the boundary (to 1e-15)."""
    torch.manual_seed(1)
    problem = get_problem("darcy")
    surrogate = Surrogate(problem, 32, 2, torch.zeros(0), {"f": 1.0},
                          takes_parameters=takes_parameters)
    p = _points(30)
    u, coords, theta, functions = surrogate.u_jet(p)
    residual = problem.residual(u, coords, theta, functions).value.detach()
    q = p.clone().requires_grad_(True)
    grad_u = torch.autograd.grad(surrogate.predict(q).sum(), q, create_graph=True)[0]
    flux = surrogate.function_nets["A"](q)[:, None] * grad_u
    divergence = sum(torch.autograd.grad(flux[:, i].sum(), q, retain_graph=True)[0][:, i]
                     for i in range(2))
    expected = (-divergence - 1.0).detach()
    assert float((residual - expected).abs().max() / expected.abs().max()) < 1e-10
    edge = torch.tensor([[0.0, 0.3], [1.0, 0.7], [0.4, 0.0], [0.6, 1.0]])
    assert float(surrogate.predict(edge).detach().abs().max()) < 1e-15


def test_regulariser_points_cover_the_square(tmp_path):
    """darcy's quick preset (n_reg = 26): at step 0 the regulariser points are the 26 x 26 grid
    over [0, 1]² and A0 there is darcy's initial guess; at step 5 exactly one point lies in each
    of the 26² cells (stratified, redrawn per step)."""
    pytest.importorskip("dolfinx")
    from bilo.cli import main
    from bilo.strategies import METHODS, load_data, make_options

    data = tmp_path / "d.h5"
    assert main(["solve", "darcy", "--nx", "8", "--out", str(data)]) == 0
    problem = get_problem("darcy")
    run = METHODS["pinn"].make_run(problem, *load_data(problem, data),
                                   make_options(problem, "pinn"), tmp_path / "run")
    grid, f0 = run.regulariser_points(0)
    axis = np.linspace(0.0, 1.0, 26)
    expected = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    np.testing.assert_allclose(grid.numpy(), expected, atol=1e-7)
    np.testing.assert_allclose(f0["A"].numpy(), problem.functions["A"].initial(expected),
                               rtol=1e-6)
    drawn, _ = run.regulariser_points(5)
    cells = np.floor(drawn.numpy().astype(np.float64) * 26).astype(int)
    assert len({tuple(c) for c in cells}) == 26 * 26


class SmoothStart(Darcy):
    """darcy with a smooth initial guess A0 = 6 + 3·sin(πx)·sin(πy), which a small network
    resolves in a few hundred steps (the declared GRF A0 needs thousands, docs/darcy.md)."""

    functions = {"A": replace(Darcy.functions["A"], initial=lambda p: 6.0 + 3.0 * np.sin(
        np.pi * p[:, 0]) * np.sin(np.pi * p[:, 1]))}


def test_bilo_pretraining_matches_the_fem_solution_at_a0(tmp_path, report):
    """`bilo train darcy --method bilo --u0 auto`, pre-training only, with a smooth A0 (above)
    on a 16 x 16 mesh (f = 1, u observed at the 289 vertices): the FEM solution at A0
    (dolfinx, solved in the trainer and kept as u0.h5) is the reference. After 500 steps
    (width 32, a 17 x 17 collocation grid) u_NN at the vertices is within TOL = 5 % relative
    L2 of it (measured 2.1 %; the 16 x 16 FEM's own error is of the order of 1 %) and A within
    2 % of A0 (measured 0.96 %); `bilo validate` re-solves at the network's A and finds u_NN
    within TOL of that solve too. The summary carries A's classification accuracy."""
    pytest.importorskip("dolfinx")
    from bilo.cli import main
    from bilo.strategies import fit, make_options
    from solvers.exchange import read_solution

    data = tmp_path / "d.h5"
    assert main(["solve", "darcy", "--nx", "16", "--out", str(data)]) == 0
    problem = SmoothStart()
    options = make_options(problem, "bilo", overrides={
        "width": 32, "n_res": (17, 17), "n_reg": 17, "pretrain_steps": 500,
        "finetune_steps": 0, "settle_steps": 0}, u0="auto", device="cpu")
    result = fit(problem, data, "bilo", tmp_path / "run", options, log=None)
    u0 = read_solution(tmp_path / "run" / "u0.h5")
    a0 = problem.functions["A"].initial(u0.mesh.vertices[:, :2])
    u_error = np.linalg.norm(result.u - u0.u) / np.linalg.norm(u0.u)
    a_error = np.linalg.norm(result.functions["A"] - a0) / np.linalg.norm(a0)
    summary = result.summary
    report(f"u_NN vs FEM at A0 {u_error:.3e}, A vs A0 {a_error:.3e}, u_NN vs FEM at A_NN "
           f"{summary['u_rel_l2_vs_reference']:.3e}, wall {summary['wall_s']:.1f} s")
    assert u_error < TOL and a_error < 0.02
    assert summary["u_rel_l2_vs_reference"] < TOL
    assert 0.0 <= summary["function_metrics"]["A_accuracy"] <= 1.0
    assert (tmp_path / "run" / "functions.png").exists()


@pytest.mark.slow
def test_compare_runs_every_method_on_darcy(tmp_path):
    """`bilo compare darcy --methods adjoint,bilo,pinn` (Python API, tiny networks and step
    counts, an 8 x 8 mesh; about 6 s, `slow` to spare `make test`'s budget): one row per
    method with A's error, its classification accuracy and J recomputed by `bilo validate`'s
    FEM re-solve; the adjoint's u is that solve (to 1e-12) and its J is the smallest of the
    three (it minimises that J)."""
    pytest.importorskip("dolfinx")
    from bilo.cli import main
    from bilo.compare import compare

    data = tmp_path / "d.h5"
    assert main(["solve", "darcy", "--nx", "8", "--out", str(data)]) == 0
    rows = compare("darcy", str(data), ["adjoint", "bilo", "pinn"], tmp_path / "cmp",
                   w_dats=(1.0,), overrides={"pretrain_steps": 50, "finetune_steps": 20,
                                             "settle_steps": 20,
                                             "width": 16, "n_res": (9, 9), "n_reg": 9})
    by_method = {row["method"]: row for row in rows}
    assert set(by_method) == {"adjoint", "bilo", "pinn_wdat1"}
    for row in rows:
        assert 0.0 <= row["A_accuracy"] <= 1.0 and row["rel_err_A"] > 0.0
    assert by_method["adjoint"]["u_rel_l2_vs_reference"] < 1e-12
    objectives = {m: row["reference_objective"] for m, row in by_method.items()}
    assert objectives["adjoint"] == min(objectives.values())
    assert (tmp_path / "cmp" / "comparison.md").exists()


def test_mesh_that_misses_the_residual_points_is_one_line(tmp_path, capsys):
    """darcy data on [0, 0.5]² (a 4 x 4 mesh scaled by one half): the networks' residual points
    cover the unit square, so `--u0 auto` (the FEM at A0 on that mesh) cannot give u0 there.
    `bilo train` exits with status 2 and one line naming u0.h5 and its field 'mesh'."""
    pytest.importorskip("dolfinx")
    from bilo.cli import main
    from meshes import write_mesh
    from meshes.image_mesh import unit_square_mesh

    mesh = unit_square_mesh(4)
    mesh.vertices[:] *= 0.5
    write_mesh(tmp_path / "half.xdmf", mesh)
    data = tmp_path / "d.h5"
    assert main(["solve", "darcy", "--mesh", str(tmp_path / "half.xdmf"), "--out",
                 str(data)]) == 0
    capsys.readouterr()
    assert main(["train", "darcy", "--data", str(data), "--method", "pinn", "--u0", "auto",
                 "--pretrain-steps", "1", "--steps", "1", "--out", str(tmp_path / "run")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "u0.h5" in lines[0] and "field 'mesh'" in lines[0], lines[0]


def test_regularisers_of_gradient_vectors():
    """R from gradients (k, d): for A = 1 + 2x + 3y, ∇A = (2, 3) everywhere, so the Dirichlet
    energy is 13, the smoothed TV (ε = 0.5) sqrt(13.25) and the anisotropic TV 5, exactly;
    slopes of a function of x alone, (k,), give the same numbers as (k, 1)."""
    from bilo.model import DirichletEnergy, SmoothedTotalVariation, TotalVariation

    gradients = torch.tensor([[2.0, 3.0]] * 7, dtype=torch.float64)
    assert float(DirichletEnergy().of_slopes(gradients)) == pytest.approx(13.0, rel=1e-15)
    assert float(SmoothedTotalVariation(0.5).of_slopes(gradients)) == pytest.approx(
        math.sqrt(13.25), rel=1e-15)
    assert float(TotalVariation().of_slopes(gradients)) == pytest.approx(5.0, rel=1e-15)
    slopes = np.array([-1.0, 0.5, 2.0])
    for regulariser in (DirichletEnergy(), TotalVariation(), SmoothedTotalVariation(0.5)):
        assert regulariser.of_slopes(slopes) == regulariser.of_slopes(slopes[:, None])
