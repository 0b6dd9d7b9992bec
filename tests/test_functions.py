"""Inferring unknown functions through the auxiliary variable z = f(x)."""

import numpy as np
import torch

from bilo.functions import mlp_jet_of_inputs
from bilo.jet import Jet
from bilo.network import MLP
from bilo.problems import get_problem
from bilo.strategies import METHODS, load_data, make_options
from bilo.synthetic import run_reference
from solvers import fdm
from solvers.exchange import write_solution


def test_input_jets_match_the_network_jet_for_plain_variables():
    """A 2×32 tanh network of (x, t, D, rho): the first-layer-as-jet-product evaluation with
    plain variable inputs equals `MLP.jet` on every Fisher-KPP BiLO channel (float64, 1e-12)."""
    torch.manual_seed(0)
    net = MLP(2, 2, 32, 2).double()
    points = torch.rand(40, 2, dtype=torch.float64)
    theta = torch.tensor([1.0, 2.0], dtype=torch.float64)
    keys = [(), ("t",), ("x", "x"), ("D",), ("D", "t"), ("D", "x", "x"), ("rho",),
            ("rho", "t"), ("rho", "x", "x")]
    expected = net.jet(points, theta, keys, ("x", "t"), ("D", "rho"))
    inputs = [Jet.variable("x", points[:, 0], keys), Jet.variable("t", points[:, 1], keys),
              Jet.variable("D", theta[0], keys), Jet.variable("rho", theta[1], keys)]
    got = mlp_jet_of_inputs(net, inputs)
    for key in expected.keys:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-12)


def test_composite_derivatives_go_through_f():
    """u(x, z) = z² with z = f(x) = sin(x): the composite jet in x gives d²/dx² sin²(x) =
    2cos(2x), and ∂ζ of u_xx (the z-slot derivative with f″ held fixed) is 2f″ = −2 sin(x)."""
    x = torch.linspace(0.1, 0.9, 7, dtype=torch.float64)
    keys = [(), ("x",), ("x", "x"), ("zeta",), ("x", "zeta"), ("x", "x", "zeta")]
    f = Jet.variable("x", x, keys).sin()
    z = f + Jet.variable("zeta", torch.zeros((), dtype=torch.float64), keys)
    u_xx = (z * z).d("x", "x")
    torch.testing.assert_close(u_xx.value, 2 * torch.cos(2 * x))
    torch.testing.assert_close(u_xx[("zeta",)], -2 * torch.sin(x))


def test_local_operator_predicts_nearby_diffusion(tmp_path, report):
    """Poisson −(D u′)′ = π² sin(πx): BiLO pre-trained at D0 = 1 (quick preset, 3000 steps with
    the FDM u0). For δD = −0.1 and δD = 0.1x the network evaluated at z = D0 + δD is closer to
    the FDM solution at D0 + δD than the network at z = D0 is (the local-operator property,
    paper Fig. 8); relative L2 errors reported."""
    data = tmp_path / "poisson.h5"
    write_solution(data, run_reference("poisson", noise=0.01, seed=0))
    problem = get_problem("poisson")
    options = make_options(problem, "bilo", "quick", {"finetune_steps": 0}, u0="auto")
    run = METHODS["bilo"].make_run(problem, *load_data(problem, data), options, tmp_path)
    run.train()
    network = run.method.surrogate.network
    x = np.linspace(0.0, 1.0, 201)
    x_t = torch.as_tensor(x, dtype=torch.float32)[:, None]

    def network_at(z: np.ndarray) -> np.ndarray:
        inputs = torch.as_tensor(z, dtype=torch.float32)[:, None]
        with torch.no_grad():
            net = network(x_t, inputs).numpy()
        return net * x * (1 - x)

    source = np.pi**2 * np.sin(np.pi * x)
    at_d0 = network_at(np.ones_like(x))
    for label, delta in (("-0.1", -0.1 * np.ones_like(x)), ("0.1x", 0.1 * x)):
        _, exact = fdm.solve_variable_diffusion(1.0 + delta, source, nx=len(x))
        moved = np.linalg.norm(network_at(1.0 + delta) - exact) / np.linalg.norm(exact)
        still = np.linalg.norm(at_d0 - exact) / np.linalg.norm(exact)
        report(f"δD = {label}: |u_NN(D0+δD) - u_FDM| {moved:.2e} vs |u_NN(D0) - u_FDM| {still:.2e}")
        assert moved < 0.5 * still


def test_regulariser_points_are_redrawn_one_per_cell(tmp_path):
    """Heat (f0 = sin(πx)): at step 0 the 101 regulariser points are evenly spaced; at later
    steps there is exactly one in each of the 101 cells [k/101, (k+1)/101), different each
    step and the same for the same step (resumable), and the f0 targets there match sin(πx)
    to 1e-6 (interpolated from 4001 samples: error ≤ π²h²/8 ≈ 8e-8)."""
    data = tmp_path / "heat.h5"
    write_solution(data, run_reference("heat", layout="final", n_obs=11))
    problem = get_problem("heat")
    run = METHODS["bilo"].make_run(problem, *load_data(problem, data),
                                   make_options(problem, "bilo"), tmp_path / "run")
    grid, _ = run.regulariser_points(0)
    assert np.allclose(grid.numpy(), np.linspace(0.0, 1.0, 101))
    first, f0 = run.regulariser_points(7)
    again, _ = run.regulariser_points(7)
    other, _ = run.regulariser_points(8)
    cells = np.floor(first.numpy().astype(np.float64) * 101).astype(int)
    assert np.array_equal(np.sort(cells), np.arange(101))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert np.abs(f0["f"].numpy() - np.sin(np.pi * first.numpy())).max() < 1e-6
