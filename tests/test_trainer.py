"""The BiLO trainer against independent references: the solver's gradient, the known optimum of
the boundary-parameter problem, and an uninterrupted run for checkpoint/resume."""

import json

import numpy as np
import pytest
import torch

from bilo.cli import main
from bilo.problems import get_problem
from bilo.results import reference_points
from bilo.strategies import METHODS, fit, load_data, make_options
from bilo.synthetic import run_reference
from solvers.exchange import read_solution, write_solution


@pytest.fixture(scope="module")
def fkpp_data(tmp_path_factory):
    """Noise-free Fisher-KPP observations at the ground truth (D, rho) = (2, 2), 51 x 51 grid."""
    path = tmp_path_factory.mktemp("fkpp") / "gt.h5"
    write_solution(path, run_reference("fkpp", {"D": 2.0, "rho": 2.0}))
    return path


def test_two_point_reaches_optimum_within_200_upper_steps(tmp_path, report):
    """y'' = 2, y(0) = θ0, y(1) = θ1, objective ∫(y − x²)² (paper Appendix E) from θ = (1, 0):
    the optimum is θ* = (0, 1); BiLO (paper's BPN-comparison settings: 4×50 tanh, 64 residual
    points, 1000 pre-training steps, Adam 1e-3 / 5e-2) must reach ‖θ − θ*‖ < 0.01 within 200
    upper-level steps (the paper: < 80). `bilo validate`'s misfit of the FDM solution at the
    inferred θ against the data equals that of the exact y = x² + (θ1 − θ0 − 1)x + θ0 to 1e-6
    (the reference is interpolated linearly to the data points)."""
    data = tmp_path / "target.h5"
    write_solution(data, run_reference("two_point", {"theta0": 0.0, "theta1": 1.0}))
    problem = get_problem("two_point")
    options = make_options(problem, "bilo", "paper")
    result = fit(problem, data, "bilo", tmp_path / "run", options)
    summary = result.summary
    history = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert history["u_rel_l2_vs_reference"] < 1e-2
    obs = read_solution(data).observations
    x, (t0, t1) = obs.points[:, 0], (summary["params"]["theta0"], summary["params"]["theta1"])
    exact = x**2 + (t1 - t0 - 1.0) * x + t0
    misfit = np.linalg.norm(exact - obs.values) / np.linalg.norm(obs.values)
    assert history["reference_rel_l2_vs_data"] == pytest.approx(misfit, abs=1e-6)
    steps = result.history["step"] - options.settings.pretrain_steps
    theta = result.history["theta"]
    distance = np.linalg.norm(theta - [0.0, 1.0], axis=1)
    reached = steps[(steps >= 0) & (distance < 0.01)]
    first = reached.min() if reached.size else None
    report(f"first recorded upper step with |θ-θ*| < 0.01: {first}; final θ {summary['params']}")
    assert reached.size and reached.min() <= 200
    assert np.linalg.norm([summary["params"]["theta0"], summary["params"]["theta1"] - 1]) < 0.01


def fdm_data_loss(theta, points, values):
    """Mean squared misfit of the FDM solution at θ = (D, rho) against the observations."""
    from solvers.reference import sample

    reference = get_problem("fkpp").reference.solve({"D": theta[0], "rho": theta[1]}, {}, 401,
                                                    101)
    return np.mean((sample(reference, points, ("x", "t")) - values) ** 2)


def test_bilo_theta_gradient_matches_fdm_after_pretraining(fkpp_data, tmp_path, report):
    """Fisher-KPP, data at (2, 2) on the 51×51 grid, BiLO pre-trained at θ0 = (1, 1) (fitting the
    FDM u0, width 64, 26×26 residual points, 1500 steps): `bilo.gradient_check` puts the
    network's θ-gradient of the data loss next to the central finite difference (step 1e-3 of
    θ) of the same loss computed with the FDM solver; they agree in direction, cosine > 0.95."""
    from bilo.gradient_check import theta_gradient_check

    problem = get_problem("fkpp")
    options = make_options(problem, "bilo", "quick", {"finetune_steps": 0}, u0="auto")
    run = METHODS["bilo"].make_run(problem, *load_data(problem, fkpp_data), options, tmp_path)
    run.train()
    obs = run.data.observations
    check = theta_gradient_check(
        run.method, run.batch,
        lambda theta: fdm_data_loss([theta["D"], theta["rho"]], obs.points, obs.values),
        step=1e-3)
    report(check.table().replace("\n", "; "))
    assert check.cosine > 0.95


def test_resume_continues_exactly(fkpp_data, tmp_path):
    """PINN on Fisher-KPP, 30 pre-training + 40 fine-tuning steps in one go, against 30 + 20
    steps, then --resume to 40: the final θ agrees to 1e-6 (checkpoints hold weights, θ,
    both Adam states and the step)."""
    problem = get_problem("fkpp")
    small = {"width": 16, "n_res": (11, 11), "pretrain_steps": 30}
    whole = make_options(problem, "pinn", "quick", {**small, "finetune_steps": 40}, w_dat=10.0)
    fit(problem, fkpp_data, "pinn", tmp_path / "whole", whole, validate=False)
    first = make_options(problem, "pinn", "quick", {**small, "finetune_steps": 20}, w_dat=10.0)
    fit(problem, fkpp_data, "pinn", tmp_path / "split", first, validate=False)
    resumed = fit(problem, fkpp_data, "pinn", tmp_path / "split", whole, resume=True,
                  validate=False).summary
    final = json.loads((tmp_path / "whole" / "summary.json").read_text())["params"]
    for name in ("D", "rho"):
        assert abs(resumed["params"][name] - final[name]) < 1e-6


def test_cli_train_pinn_writes_summary_fields(fkpp_data, tmp_path, capsys):
    """`bilo train fkpp --method pinn --w-dat 10` (tiny run) then `bilo validate`: summary.json
    has every documented field and a finite u error against the FDM solution."""
    out = tmp_path / "pinn"
    assert main(["train", "fkpp", "--data", str(fkpp_data), "--method", "pinn", "--w-dat", "10",
                 "--width", "16", "--n-res", "11", "11", "--pretrain-steps", "20",
                 "--steps", "20", "--out", str(out)]) == 0
    assert main(["validate", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for field in ("method", "problem", "params", "params_true", "rel_err",
                  "u_rel_l2_vs_reference", "steps", "wall_s", "device"):
        assert field in summary
    assert summary["method"] == "pinn" and summary["params_true"] == {"D": 2.0, "rho": 2.0}
    assert np.isfinite(summary["u_rel_l2_vs_reference"])
    assert (out / "training.png").exists() and (out / "solution.png").exists()


def test_train_rejects_data_of_another_problem(tmp_path, capsys):
    """Training fkpp on a two_point file: exit code 2 and one line naming the file and field."""
    data = tmp_path / "tp.h5"
    write_solution(data, run_reference("two_point"))
    assert main(["train", "fkpp", "--data", str(data), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "tp.h5" in err and "/@problem" in err and len(err.splitlines()) == 1


def test_compare_writes_table_with_every_method(fkpp_data, tmp_path):
    """`bilo compare fkpp` with adjoint, BiLO and PINN (w_dat 1 and 10; tiny networks and step
    counts) on one dataset: comparison.csv has one row per run, comparison.md a row per method,
    the adjoint recovers (2, 2) to 1e-4 (noise-free data) and the figure exists."""
    from bilo.compare import compare

    tiny = {"width": 16, "n_res": (11, 11), "pretrain_steps": 20, "finetune_steps": 20}
    rows = compare("fkpp", str(fkpp_data), ["adjoint", "bilo", "pinn"], tmp_path, seeds=2,
                   w_dats=(1.0, 10.0), u0=None, overrides=tiny)
    assert [r["method"] for r in rows] == ["adjoint", "bilo", "bilo", "pinn_wdat1", "pinn_wdat1",
                                           "pinn_wdat10", "pinn_wdat10"]
    adjoint = rows[0]
    assert adjoint["rel_err_D"] < 1e-4 and adjoint["rel_err_rho"] < 1e-4
    table = (tmp_path / "comparison.md").read_text()
    for method in ("| adjoint | 1 |", "| bilo | 2 |", "| pinn_wdat1 | 2 |", "| pinn_wdat10 | 2 |"):
        assert method in table
    assert (tmp_path / "comparison.csv").read_text().count("\n") == 8
    assert (tmp_path / "comparison.png").exists()


@pytest.mark.parametrize("method", ["bilo", "pinn"])
def test_parameter_bounds_are_kept_by_every_upper_step(method):
    """Two-point problem y'' = 2 with bounds θ0 ∈ [0, 0.2], θ1 ∈ [0.9, 1.1] declared on the
    problem: from θ = (0.5, 0.5), outside both boxes, one fine-tuning step leaves θ on the box:
    θ0 = 0.2 (its upper bound), θ1 = 0.9 (its lower bound), to float precision."""
    import bilo.methods
    from bilo.methods import Batch
    from bilo.model import Parameter

    problem = get_problem("two_point")
    problem.parameters = (Parameter("theta0", 1.0, bounds=(0.0, 0.2)),
                          Parameter("theta1", 0.0, bounds=(0.9, 1.1)))
    steps = {"bilo": bilo.methods.BiLO, "pinn": bilo.methods.PINN}[method]
    m = steps(problem, 16, 2, torch.tensor([0.5, 0.5]), 1e-3, 1e-3)
    x = torch.linspace(0, 1, 11)[:, None]
    batch = Batch(collocation=x, obs_points=x, obs_values=x[:, 0] ** 2)
    m.finetune_step(batch)
    assert m.theta.detach().tolist() == pytest.approx([0.2, 0.9], abs=1e-7)


def test_hold_upper_keeps_theta_while_the_residual_is_above_its_reference():
    """Two-point problem y'' = 2, BiLO with hold_upper 2: the first fine-tuning step records
    the reference residual loss r0 (that step's loss) and moves θ. With the reference then set
    to r0/100, the residual loss is far above 2× it: the next step leaves θ exactly where it
    was and records held = 1. The reference survives a state_dict round trip."""
    import bilo.methods
    from bilo.methods import Batch

    problem = get_problem("two_point")
    torch.manual_seed(0)
    m = bilo.methods.BiLO(problem, 16, 2, torch.tensor([0.0, 1.0]), 1e-3, 1e-2, hold_upper=2.0)
    x = torch.linspace(0, 1, 11)[:, None]
    batch = Batch(collocation=x, obs_points=x, obs_values=x[:, 0] ** 2)
    before = m.theta.detach().clone()
    losses = m.finetune_step(batch)
    reference = m.res_reference
    assert reference == pytest.approx(float(losses["res"].detach()))
    assert float(losses["held"]) == 0.0
    assert not torch.equal(m.theta.detach(), before)
    m.res_reference = reference / 100.0
    held_at = m.theta.detach().clone()
    losses = m.finetune_step(batch)
    assert float(losses["held"]) == 1.0 and torch.equal(m.theta.detach(), held_at)
    fresh = bilo.methods.BiLO(problem, 16, 2, torch.tensor([0.0, 1.0]), 1e-3, 1e-2,
                              hold_upper=2.0)
    fresh.load_state_dict(m.state_dict())
    assert fresh.res_reference == m.res_reference


def test_two_point_stops_on_convergence(tmp_path, report):
    """Two-point problem, BiLO with the paper's Appendix E settings and 2000 fine-tuning steps
    allowed, stop rule on (θ's relative change < 1e-3 and lower-level loss < 1e-4 over the last
    500 steps): fine-tuning stops well before 2000 steps with θ within 0.01 of the optimum
    (0, 1); the reason and the steps actually taken are in the result, its history and
    summary.json; resumed, the converged run takes no more steps."""
    data = tmp_path / "target.h5"
    write_solution(data, run_reference("two_point", {"theta0": 0.0, "theta1": 1.0}))
    problem = get_problem("two_point")
    options = make_options(problem, "bilo", "paper", {"finetune_steps": 2000},
                           stop_theta_tol=1e-3, stop_lower_tol=1e-4, stop_window=500)
    result = fit(problem, data, "bilo", tmp_path / "run", options, validate=False)
    done = result.steps["finetune"]
    reason = result.extra["stop_reason"]
    report(f"stopped after {done} of 2000 fine-tuning steps at θ {result.params}: {reason}")
    assert reason.startswith("converged") and 500 <= done <= 1500
    assert result.steps["pretrain"] == options.settings.pretrain_steps
    assert result.history["step"][-1] == options.settings.pretrain_steps + done - 1
    assert np.hypot(result.params["theta0"], result.params["theta1"] - 1.0) < 0.01
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stop_reason"] == reason
    assert summary["steps"] == options.settings.pretrain_steps + done
    # resumed with the same rule, the converged run takes no more steps
    resumed = fit(problem, data, "bilo", tmp_path / "run", options, resume=True, validate=False)
    assert resumed.steps == result.steps and resumed.extra["stop_reason"] == reason
    assert resumed.params == result.params


def test_stop_rule_needs_the_whole_window_and_every_tolerance():
    """`bilo.train.StopRule` on hand-made histories (records every 10 steps from step 100, the
    first fine-tuning step): no decision before a window of steps has passed; θ moving by 2e-3
    relative to max(|θ|, |θ0|) or one lower-level loss (res + rgrad) above the tolerance keeps
    training; otherwise "converged: ..."; invalid tolerances are refused in one line."""
    from types import SimpleNamespace

    from bilo.train import StopRule
    from solvers.common import InputError

    rule = StopRule(theta_tol=1e-3, lower_tol=1e-4, window=50)
    theta0 = np.array([0.0, 2.0])

    def history(n, theta=lambda i: [1e-5, 1.0], res=lambda i: 1e-5):
        steps = [100 + 10 * i for i in range(n)]
        return {"step": steps, "theta": [theta(i) for i in range(n)],
                "res": [res(i) for i in range(n)], "rgrad": [1e-6] * n}

    assert rule.check(history(5), 100, theta0) is None  # 40 steps: window not yet passed
    assert rule.check(history(6), 100, theta0).startswith("converged: over the last 50 steps")
    # θ1 moves by 4e-3 / max(1, 2) = 2e-3 within the window
    assert rule.check(history(12, theta=lambda i: [0.0, 1.0 + 1e-3 * (i % 5)]), 100,
                      theta0) is None
    assert rule.check(history(12, res=lambda i: 2e-4 if i == 8 else 1e-5), 100, theta0) is None
    assert rule.check(history(12, res=lambda i: 2e-4 if i == 4 else 1e-5), 100,
                      theta0).startswith("converged")  # that record is older than the window
    assert StopRule(lower_tol=1e-4, window=50).check(
        history(12, theta=lambda i: [i, i]), 100, theta0).startswith("converged")
    problem = get_problem("two_point")
    assert StopRule.from_options(SimpleNamespace(), problem) is None
    for bad in ({"stop_theta_tol": 0.0}, {"stop_lower_tol": float("nan")},
                {"stop_theta_tol": 1e-3, "stop_window": 0}):
        with pytest.raises(InputError, match="--stop-"):
            StopRule.from_options(SimpleNamespace(**bad), problem)


def test_causal_weights_follow_the_earlier_slabs_residuals():
    """`causal_weights` on hand-made residuals: 4 slabs over t ∈ [0, 1], r² = 0.5 in the first
    slab, 2 in the second, 0 after. The weights are exp(−ε·(sum of the earlier slabs' means)):
    1, e^{−0.5ε}, e^{−2.5ε}, e^{−2.5ε} per slab, the same for every point of a slab, and the last
    slab's weight is returned alone. ε = 0 weighs everything 1."""
    from bilo.methods import causal_weights

    t = torch.tensor([0.0, 0.1, 0.3, 0.45, 0.6, 0.7, 0.9, 1.0], dtype=torch.float64)
    squared = torch.tensor([0.25, 0.75, 1.0, 3.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    weights, last = causal_weights(t, squared, 2.0, slabs=4)
    expected = np.exp(-2.0 * np.array([0, 0, 0.5, 0.5, 2.5, 2.5, 2.5, 2.5]))
    assert weights.numpy() == pytest.approx(expected, rel=1e-12)
    assert float(last) == pytest.approx(np.exp(-5.0), rel=1e-12)
    assert torch.equal(causal_weights(t, squared, 0.0, slabs=4)[0], torch.ones(8, dtype=t.dtype))


def test_causal_training_weighs_the_residual_loss():
    """Fisher–KPP, BiLO with causal 1: the lower level's residual loss is the mean of r²
    weighted by `causal_weights` of the same points (computed here from the unweighted run's
    residuals), and the last slab's weight is recorded as "causal". A problem without a time
    coordinate refuses --causal in one line."""
    import bilo.methods
    from bilo.methods import Batch, causal_weights
    from solvers.common import InputError

    problem = get_problem("fkpp")
    x = torch.rand(200, 2, generator=torch.Generator().manual_seed(0))
    batch = Batch(collocation=x, obs_points=x, obs_values=x[:, 0])
    theta0 = torch.tensor([p.initial for p in problem.parameters])
    losses = {}
    for causal in (None, 1.0):
        torch.manual_seed(0)
        method = bilo.methods.BiLO(problem, 16, 2, theta0, 1e-3, 1e-3, causal=causal)
        losses[causal] = method.lower_losses(batch)[0]
        if causal is None:
            u, coords, theta, functions = method.surrogate.u_jet(x)
            r2 = problem.residual(u, coords, theta, functions).value.detach().square()
    weights, last = causal_weights(x[:, problem.coords.index("t")], r2, 1.0)
    res = {causal: float(values["res"].detach()) for causal, values in losses.items()}
    assert res[1.0] == pytest.approx(float((weights * r2).mean()), rel=1e-5)
    assert float(losses[1.0]["causal"]) == pytest.approx(float(last), rel=1e-6)
    assert res[1.0] < res[None] and "causal" not in losses[None]
    with pytest.raises(InputError, match="--causal: problem 'two_point' has no time coordinate"):
        make_options(get_problem("two_point"), "bilo", "quick", {"causal": 1.0})


def test_anchors_and_tangents_are_fitted_in_pre_training(fkpp_data, tmp_path):
    """Fisher–KPP at θ0 = (D 3, ρ 2), BiLO with two anchors (the FDM solutions at D = 1.5 and
    D = 2, ρ = 2) and a tangent for D (their difference quotient): a pre-training step's
    "anchors" loss is the mean over anchors of the squared misfit between the network at θ_a
    (the other parameters at θ0) and the anchor's solution at the residual points, computed
    here by setting the surrogate's θ to θ_a; its "tangents" loss is the mean squared misfit of
    the network's ∂u/∂D at θ0 (from its jet). A short run records both in pre-training only.
    Anchors naming an unknown parameter or outside the bounds, tangents of a parameter that is
    not the PDE's, and either given to PINN are refused in one line."""
    import bilo.methods
    from bilo.methods import Batch
    from bilo.train import Anchor
    from solvers.common import InputError
    from solvers.reference import sample

    problem = get_problem("fkpp")
    solutions = {1.5: run_reference("fkpp", {"D": 1.5, "rho": 2.0}),
                 2.0: read_solution(fkpp_data)}
    anchors = tuple(Anchor({"D": d}, lambda p, s=s: sample(s, p, problem.coords))
                    for d, s in solutions.items())
    x = torch.rand(300, 2, generator=torch.Generator().manual_seed(1))
    theta0 = torch.tensor([3.0, 2.0])
    torch.manual_seed(0)
    method = bilo.methods.BiLO(problem, 16, 2, theta0, 1e-3, 1e-3)
    thetas = [torch.tensor([d, 2.0]) for d in solutions]
    def tangent(points):
        return (anchors[1].solution(points) - anchors[0].solution(points)) / 0.5

    batch = Batch(collocation=x, obs_points=x, obs_values=x[:, 0], anchors=[
        (theta, torch.as_tensor(a.solution(x.numpy()), dtype=torch.float32))
        for theta, a in zip(thetas, anchors, strict=True)],
        tangents={"D": torch.as_tensor(tangent(x.numpy()), dtype=torch.float32)})
    du_dD = method.surrogate.u_jet(x)[0][("D",)].detach()
    expected = []
    for theta, (_, values) in zip(thetas, batch.anchors, strict=True):
        with torch.no_grad():
            method.theta.copy_(theta)
            expected.append(float((method.surrogate.predict(x) - values).square().mean()))
    with torch.no_grad():
        method.theta.copy_(theta0)
    losses = method.pretrain_step(batch)
    assert float(losses["anchors"].detach()) == pytest.approx(np.mean(expected), rel=1e-5)
    assert float(losses["tangents"].detach()) == pytest.approx(
        float((du_dD - batch.tangents["D"]).square().mean()), rel=1e-5)

    options = make_options(problem, "bilo", "quick", {"pretrain_steps": 20, "finetune_steps": 10,
                                                      "width": 16},
                           theta0={"D": 3.0, "rho": 2.0}, anchors=anchors,
                           tangents={"D": tangent})
    result = fit(problem, fkpp_data, "bilo", tmp_path / "run", options, validate=False)
    steps = result.history["step"]
    for name in ("anchors", "tangents"):
        recorded = result.history[name]
        assert np.isfinite(recorded[steps < 20]).all() and np.isnan(recorded[steps >= 20]).all()
    for bad, message in (({"k": 1.0}, r"\['k'\] are not parameters"),
                         ({"D": -1.0}, "anchors: D=-1.0: must be finite and in")):
        with pytest.raises(InputError, match=message):
            make_options(problem, "bilo", "quick", anchors=(Anchor(bad, anchors[0].solution),))
    with pytest.raises(InputError, match=r"tangents: \['u'\] are not PDE parameters"):
        make_options(problem, "bilo", "quick", tangents={"u": tangent})
    with pytest.raises(InputError, match="anchors, tangents: the pinn method does not take"):
        make_options(problem, "pinn", "quick", tangents={"D": tangent})



def test_settling_solves_the_lower_level_at_the_answer(tmp_path, report):
    """Two-point problem y'' = 2, y(0) = θ0, y(1) = θ1, BiLO (width 16) from θ = (1, 0) with
    200 pre-training and 20 fine-tuning steps at lr_theta 0.2, so that θ outruns the network,
    then 250 settling steps (W on the residual alone): θ stays exactly where fine-tuning left
    it, and the network's u against the exact solution x² + (θ1 − θ0 − 1)x + θ0 at that θ is at
    least 10 times closer than at the end of fine-tuning (the same run without settling, whose
    steps are the same; measured 3.3e-2 and 1.3e-3). PINN has no settling phase."""
    data = tmp_path / "target.h5"
    write_solution(data, run_reference("two_point", {"theta0": 0.0, "theta1": 1.0}))
    problem = get_problem("two_point")
    small = {"width": 16, "n_res": (32,), "pretrain_steps": 200, "finetune_steps": 20,
             "lr_theta": 0.2}

    def error(result):
        x = reference_points(problem, result.data)[:, 0]
        t0, t1 = result.params["theta0"], result.params["theta1"]
        exact = x**2 + (t1 - t0 - 1.0) * x + t0
        return np.linalg.norm(result.u.reshape(-1) - exact) / np.linalg.norm(exact)

    runs = {}
    for settle in (0, 250):
        options = make_options(problem, "bilo", "paper", {**small, "settle_steps": settle})
        runs[settle] = fit(problem, data, "bilo", tmp_path / f"settle{settle}", options,
                           validate=False)
    tuned, settled = runs[0], runs[250]
    assert settled.params == tuned.params
    assert settled.steps == {"pretrain": 200, "finetune": 20, "settle": 250}
    in_settling = settled.history["step"] >= 220
    assert np.all(settled.history["theta"][in_settling] == settled.history["theta"][-1])
    report(f"u against the exact solution at θ {settled.params}: {error(tuned):.2e} after "
           f"fine-tuning, {error(settled):.2e} after settling")
    assert error(settled) < error(tuned) / 10
    pinn = make_options(problem, "pinn", "paper", {**small, "pretrain_steps": 2,
                                                   "finetune_steps": 2, "settle_steps": 5})
    result = fit(problem, data, "pinn", tmp_path / "pinn", pinn, validate=False)
    assert result.steps == {"pretrain": 2, "finetune": 2}


def test_settling_resumes_exactly_and_keeps_its_start(tmp_path):
    """Two-point problem, BiLO with 20 pre-training, 10 fine-tuning and 20 settling steps in
    one go, against the same stopped after 10 settling steps and resumed to 20: the same θ and
    u to the bit, and 20 settling steps counted. Once settling has begun, a resume that moves
    its start (more fine-tuning steps) or drops it is refused with one line naming both."""
    from solvers.common import InputError

    data = tmp_path / "target.h5"
    write_solution(data, run_reference("two_point", {"theta0": 0.0, "theta1": 1.0}))
    problem = get_problem("two_point")
    small = {"width": 8, "n_res": (16,), "pretrain_steps": 20, "finetune_steps": 10}

    def options(**changes):
        return make_options(problem, "bilo", "paper", {**small, "settle_steps": 20, **changes})

    whole = fit(problem, data, "bilo", tmp_path / "whole", options(), validate=False)
    fit(problem, data, "bilo", tmp_path / "split", options(settle_steps=10), validate=False)
    resumed = fit(problem, data, "bilo", tmp_path / "split", options(), resume=True,
                  validate=False)
    assert resumed.params == whole.params and np.array_equal(resumed.u, whole.u)
    assert resumed.steps == whole.steps == {"pretrain": 20, "finetune": 10, "settle": 20}
    for changes in ({"finetune_steps": 20}, {"settle_steps": 0}):
        with pytest.raises(InputError, match="settled 20 steps after fine-tuning ended at step "
                                              "30"):
            fit(problem, data, "bilo", tmp_path / "split", options(**changes), resume=True,
                validate=False)
