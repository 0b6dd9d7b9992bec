"""The point-process problem's network formulation (paper Part I §3.2, Appendix B.4):
u″ − μu + λδ(x − z) = 0, u(0) = u(1) = 0, z = 0.5, with the cusp-capturing network
u(x) = U·m(x, |x − z|, λ/100, μ)²·x(1 − x) and the jump condition u′(z⁺) − u′(z⁻) = −λ as a
constraint (BiLO: with its θ-derivative).

The jets through the feature φ = |x − z| against finite differences of the network's values, the
constraint against the one-sided slopes, and the pre-trained network against the FDM solver
(u, the jump and ∂u/∂θ)."""

import numpy as np
import pytest
import torch

from bilo.problems import get_problem
from bilo.problems.singular import SIDE
from bilo.strategies import METHODS, load_data, make_options
from bilo.surrogate import Surrogate
from bilo.synthetic import run_reference
from solvers.exchange import write_solution
from solvers.fdm.singular import solve_singular_forcing

THETA0 = (250.0, 5.0)


def float64_surrogate(takes_parameters=True) -> Surrogate:
    torch.manual_seed(0)
    problem = get_problem("singular")
    surrogate = Surrogate(problem, 16, 2, torch.tensor(THETA0, dtype=torch.float64),
                          {"z": 0.5}, takes_parameters=takes_parameters)
    surrogate.network.double()
    return surrogate


@pytest.mark.parametrize("takes_parameters", [True, False], ids=["bilo", "pinn"])
def test_jets_through_the_cusp_feature_match_finite_differences(takes_parameters):
    """An untrained float64 network (width 16): u, u′, u″ of the jet at x = 0.13, 0.37, 0.61,
    0.88 (either side of z) equal central differences of `predict` (step 1e-4 in x) to 1e-6
    relative; with θ as inputs, ∂u/∂λ, ∂u/∂μ and ∂u′/∂λ equal differences in θ (steps 1e-2 in
    λ, 1e-5 in μ). u is continuous at z: |u(z + 1e-9) − u(z − 1e-9)| < 1e-6·|u(z)|."""
    surrogate = float64_surrogate(takes_parameters)
    x = torch.tensor([0.13, 0.37, 0.61, 0.88], dtype=torch.float64)
    u, *_ = surrogate.u_jet(x[:, None])

    def values(shift=0.0, dtheta=(0.0, 0.0)):
        with torch.no_grad():
            before = surrogate.theta.clone()
            surrogate.theta += torch.tensor(dtheta, dtype=torch.float64)
            out = surrogate.predict((x + shift)[:, None])
            surrogate.theta.copy_(before)
        return out

    h = 1e-4
    checks = {(): values(), ("x",): (values(h) - values(-h)) / (2 * h),
              ("x", "x"): (values(h) - 2 * values() + values(-h)) / h**2}
    if takes_parameters:
        for name, dtheta in (("lam", (1e-2, 0.0)), ("mu", (0.0, 1e-5))):
            step, back = max(dtheta), tuple(-d for d in dtheta)
            checks[(name,)] = (values(0.0, dtheta) - values(0.0, back)) / (2 * step)
            checks[("x", name)] = ((values(h, dtheta) - values(-h, dtheta))
                                   - (values(h, back) - values(-h, back))) / (4 * h * step)
    for key, reference in checks.items():
        got = u[key].detach()
        scale = reference.abs().max()
        assert (got - reference).abs().max() < 1e-6 * scale + 1e-9, (key, got, reference)
    z = torch.tensor([[0.5 - 1e-9], [0.5 + 1e-9]], dtype=torch.float64)
    with torch.no_grad():
        sides = surrogate.predict(z)
    assert abs(float(sides[1] - sides[0])) < 1e-6 * abs(float(sides[0]))


def test_jump_constraint_is_the_one_sided_slope_difference():
    """The constraint c = (u′(z⁺) − u′(z⁻) + λ)/100 of an untrained float64 network equals the
    one-sided differences of `predict` at z (step 1e-6 outwards, second order), up to the
    slopes' change over the SIDE = 1e-5 from z at which it reads them, and its
    λ-channel is (∂λ jump + 1)/100 from differences in λ (step 1e-2)."""
    surrogate = float64_surrogate()
    problem = surrogate.problem
    u, coords, theta, functions = surrogate.u_jet(torch.tensor([[0.3]], dtype=torch.float64))
    jump = problem.constraints(lambda p: surrogate.u_jet(p)[0], coords, theta,
                               functions)["jump"]

    def slope_jump(dlam=0.0):
        with torch.no_grad():
            surrogate.theta[0] += dlam
            z, h = 0.5, 1e-6
            at = lambda xs: surrogate.predict(torch.tensor(xs, dtype=torch.float64)[:, None])  # noqa: E731
            right = at([z, z + h, z + 2 * h])
            left = at([z, z - h, z - 2 * h])
            surrogate.theta[0] -= dlam
        # one-sided second-order differences from z outwards
        d_right = (-3 * right[0] + 4 * right[1] - right[2]) / (2 * h)
        d_left = (3 * left[0] - 4 * left[1] + left[2]) / (2 * h)
        return float(d_right - d_left)

    # the constraint reads the slopes at z ± SIDE: they differ from those at z by about
    # SIDE·u″ on each side
    sides = torch.tensor([[0.5 - SIDE], [0.5 + SIDE]], dtype=torch.float64)
    curvature = surrogate.u_jet(sides)[0]["x", "x"].detach().abs().sum()
    expected = (slope_jump() + THETA0[0]) / 100.0
    assert abs(float(jump.value.detach()) - expected) * 100.0 < SIDE * float(curvature) + 1e-6
    d_jump = (slope_jump(1e-2) - slope_jump(-1e-2)) / 2e-2
    assert abs(float(jump["lam"]) - (d_jump + 1.0) / 100.0) < 1e-4


@pytest.mark.slow
def test_pretrained_network_is_the_fdm_solution_with_its_jump_and_theta_derivatives(
        tmp_path, report):
    """BiLO pre-trained at θ0 = (λ, μ) = (250, 5) (the quick preset: width 64, 100 residual
    points, w_rgrad 1, 3000 steps, fitting the FDM u0): against the FDM solution (nx = 1001)
    at θ0, u_NN within 1 % (relative L2); the derivative jump at z, u′(z⁺) − u′(z⁻), within
    2 % of −λ = −250; ∂u/∂λ within 2 % of the solver's, which is u/λ (u is linear in λ);
    ∂u/∂μ within 5 % of the solver's central difference (step 1e-3). Measured: 3.5e-4,
    −250.06, 2.5e-3, 1.5e-2 (with w_rgrad 0.1: ∂u/∂λ 4 %, ∂u/∂μ 37 %)."""
    problem = get_problem("singular")
    data = run_reference(problem, {"lam": 500.0, "mu": 2.5}, snapshots=20, seed=0)
    path = write_solution(tmp_path / "events.h5", data)
    options = make_options(problem, "bilo", "quick", {"finetune_steps": 0}, u0="auto")
    run = METHODS["bilo"].make_run(problem, *load_data(problem, path), options, tmp_path / "run")
    run.train()
    x = np.linspace(0.0, 1.0, 1001)
    _, u_fdm = solve_singular_forcing(*THETA0, z=0.5, nx=1001)
    points = torch.tensor(x[:, None], dtype=torch.float32)
    u, *_ = run.method.surrogate.u_jet(points)
    u_nn = u.value.detach().numpy()
    rel = np.linalg.norm(u_nn - u_fdm) / np.linalg.norm(u_fdm)
    sides = torch.tensor([[0.5 - 1e-5], [0.5 + 1e-5]])
    slope = run.method.surrogate.u_jet(sides)[0]["x"].detach().numpy()
    jump = float(slope[1] - slope[0])
    d_lam = u["lam"].detach().numpy()
    rel_lam = np.linalg.norm(d_lam - u_fdm / THETA0[0]) / np.linalg.norm(u_fdm / THETA0[0])
    d_mu_fdm = (solve_singular_forcing(THETA0[0], THETA0[1] + 1e-3, z=0.5, nx=1001)[1]
                - solve_singular_forcing(THETA0[0], THETA0[1] - 1e-3, z=0.5, nx=1001)[1]) / 2e-3
    rel_mu = np.linalg.norm(u["mu"].detach().numpy() - d_mu_fdm) / np.linalg.norm(d_mu_fdm)
    report(f"u_NN vs FDM {rel:.2e}; jump {jump:.2f} (−λ = −250); ∂u/∂λ {rel_lam:.2e}, "
           f"∂u/∂μ {rel_mu:.2e}")
    assert rel < 0.01
    assert abs(jump + THETA0[0]) < 0.02 * THETA0[0]
    assert rel_lam < 0.02
    assert rel_mu < 0.05


@pytest.mark.slow
def test_bilo_reaches_the_maximum_likelihood_estimate(tmp_path, report):
    """BiLO, quick preset, from (250, 5) on 100 snapshots drawn at (500, 2.5) with seed 0: λ and
    μ within 5 % of the adjoint's MLE (563.167, 4.1257), the target with finite data; u_NN
    within 1 % of the FDM solution at the inferred θ and its derivative jump at z within 2 % of
    −λ (`bilo validate`). Measured: (562.53, 4.1111), i.e. 0.11 % and 0.35 %; u 7.2e-5; jump
    7.2e-5, in 279 s."""
    from bilo.strategies import fit

    problem = get_problem("singular")
    path = write_solution(tmp_path / "s0.h5", run_reference(
        problem, {"lam": 500.0, "mu": 2.5}, snapshots=100, seed=0))
    options = make_options(problem, "bilo", "quick", u0="auto")
    summary = fit(problem, path, "bilo", tmp_path / "run", options, log=None).summary
    params = summary["params"]
    checks = summary["solution_checks"]["method"]
    report(f"BiLO lam={params['lam']:.3f}, mu={params['mu']:.4f}; u_NN vs FDM "
           f"{summary['u_rel_l2_vs_reference']:.2e}; jump rel. err "
           f"{checks['slope_jump_rel_err']:.2e}")
    assert abs(params["lam"] / 563.167 - 1) < 0.05
    assert abs(params["mu"] / 4.1257 - 1) < 0.05
    assert summary["u_rel_l2_vs_reference"] < 0.01
    assert checks["slope_jump_rel_err"] < 0.02
