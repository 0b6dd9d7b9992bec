"""Bayesian BiLO (`--method hmc`) against the solver's posterior, on the logistic ODE
u′ = a·u(1 − u), u(0) = 0.1 (21 points, σ = 0.01, seed 0; a flat prior on a > 0)."""

import json

import numpy as np
import pytest
import torch

from bilo.posterior import grid_posterior
from bilo.problems import get_problem
from bilo.strategies import METHODS, fit, load_data, make_options
from bilo.synthetic import run_reference
from solvers.exchange import read_solution, write_solution


@pytest.fixture(scope="module")
def logistic_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("logistic") / "data.h5"
    write_solution(path, run_reference("logistic", {"a": 2.0}, n_obs=21, noise=0.01, seed=0))
    return path


@pytest.mark.parametrize("lora_rank, lower_tol", [
    (0, 1e-5), pytest.param(2, 1e-6, marks=pytest.mark.slow)])
def test_b_bilo_matches_the_grid_posterior(logistic_data, tmp_path, lora_rank, lower_tol,
                                           report):
    """B-BiLO (quick preset: BiLO's 1000 + 2000 steps, then one chain of 150 warm-up and 800
    draws, 5 leapfrog steps) against the solver's grid posterior (801 nodes; mean 1.98412, sd
    0.01688): posterior mean within 3 MCSE (plus 1e-4 for the grid), sd within 15 %, and the
    network at the posterior mean within 1 % of the solver there.

    Full fine-tuning with the lower level to 1e-5 at each leapfrog position: measured mean
    1.98496 ± 0.00115, sd 0.01728, 0.24 lower steps per leapfrog, 22 s (cap 300). LoRA rank
    2 with the lower level to 1e-6 (slow; its default learning rate, 10× the network's):
    measured 1.98456 ± 0.00068, sd 0.01709, bulk ESS 620, u_NN within 2.3e-3 of the solver
    at every recorded draw, 4.6 lower steps per leapfrog, 60 s.
    (When LoRA froze the O(width) parameters too, it took 19 steps per leapfrog and 180 s, and
    at 1e-5 its increments left u_NN off the PDE enough to move the mean by 3.4 MCSE.)
    Measured with one thread, as make test runs.

    Along the chain (u_NN recorded at every 8th draw, against the solver at that draw's θ on
    the reference grid), the network stays within 1 % of the solver on average: full
    fine-tuning measured mean 8.5e-4, max 3.7e-3 (100 draws)."""
    problem = get_problem("logistic")
    options = make_options(problem, "hmc", "quick", n_chains=1, n_warmup=150, n_samples=800,
                           n_leapfrog=5, lora_rank=lora_rank, lower_tol=lower_tol)
    summary = fit(problem, logistic_data, "hmc", tmp_path / "hmc", options, log=None).summary
    grid = grid_posterior(problem, read_solution(logistic_data), 801)
    grid_mean, grid_sd = grid.mean["a"], grid.sd["a"]
    found = summary["posterior"]["a"]
    report(f"LoRA rank {lora_rank}: mean {found['mean']:.5f} ± {found['mcse_mean']:.5f} (grid "
           f"{grid_mean:.5f}), sd {found['sd']:.5f} (grid {grid_sd:.5f}), bulk ESS "
           f"{found['ess_bulk']:.0f}, lower steps per leapfrog "
           f"{summary['lower_steps_per_leapfrog']['mean']:.2f}, wall {summary['wall_s']:.1f} s")
    assert abs(found["mean"] - grid_mean) < 3 * found["mcse_mean"] + 1e-4
    assert abs(found["sd"] / grid_sd - 1) < 0.15
    assert summary["u_rel_l2_vs_reference"] < 1e-2
    along = summary["predictive"]["u_rel_l2_vs_solver"]
    report(f"u_NN against the solver at {along['n']} draws: relative L2 mean {along['mean']:.2e}, "
           f"max {along['max']:.2e}; data in the 95 % predictive band "
           f"{summary['predictive']['data_in_band95']:.2f}")
    assert along["n"] == 100 and along["mean"] < 1e-2


def test_a_rejection_restores_the_weights_of_the_last_accepted_position(logistic_data,
                                                                        tmp_path):
    """NetworkTarget's hooks: after fine-tuning at a = 1.5 and at a = 2.5, restoring the
    snapshot taken at a = 1.5 gives back those weights exactly (every tensor ==), not the
    pre-trained ones and not a = 2.5's, and the network's θ-input 1.5."""
    from bilo.bayes import NetworkTarget

    problem = get_problem("logistic")
    options = make_options(problem, "bilo", "quick", {"pretrain_steps": 50,
                                                      "finetune_steps": 0})
    run = METHODS["bilo"].make_run(problem, *load_data(problem, logistic_data), options,
                                   tmp_path)
    run.train()
    target = NetworkTarget(run.method, run.batch, 1.0, lower_tol=0.0, lower_cap=20, lr=1e-3)
    weights = run.method.surrogate.network.state_dict
    pretrained = {k: v.clone() for k, v in weights().items()}
    assert target.at_position(np.array([1.5])) == 20
    state = target.snapshot()
    at_15 = {k: v.clone() for k, v in weights().items()}
    target.at_position(np.array([2.5]))
    assert any(not torch.equal(weights()[k], at_15[k]) for k in at_15)
    target.restore(state)
    assert all(torch.equal(weights()[k], at_15[k]) for k in at_15)
    assert run.method.theta.item() == 1.5  # the network's θ-input too
    assert any(not torch.equal(at_15[k], pretrained[k]) for k in at_15)


def test_compare_puts_the_samplers_side_by_side(logistic_data, tmp_path, capsys):
    """`bilo compare logistic --methods hmc,hmc-solver` with the samplers' flags (two chains of
    60 warm-up + 150 draws, L = 3, B-BiLO's lower level to 1e-5 as above): one row per method
    with the posterior sd of a, the largest R-hat and the smallest bulk ESS beside the usual
    columns; both posterior means within half a posterior sd of the grid posterior's (mean
    1.98412, sd 0.01688) and both sds within 30 % of its sd (short chains)."""
    import csv

    from bilo.cli import main

    out = tmp_path / "cmp"
    assert main(["compare", "logistic", "--data", str(logistic_data), "--methods",
                 "hmc,hmc-solver", "--n-chains", "2", "--n-warmup", "60", "--n-samples",
                 "150", "--n-leapfrog", "3", "--lower-tol", "1e-5", "--out", str(out)]) == 0
    capsys.readouterr()
    rows = {row["method"]: row for row in csv.DictReader(open(out / "comparison.csv"))}
    assert set(rows) == {"hmc", "hmc-solver"}
    grid = grid_posterior(get_problem("logistic"), read_solution(logistic_data), 401)
    for method, row in rows.items():
        summary = json.loads((out / method / "seed0" / "summary.json").read_text())
        found = summary["posterior"]["a"]
        assert float(row["sd_a"]) == pytest.approx(found["sd"])
        assert float(row["rhat_max"]) == pytest.approx(found["rhat"])
        assert abs(found["mean"] - grid.mean["a"]) < 0.5 * grid.sd["a"], method
        assert abs(found["sd"] / grid.sd["a"] - 1) < 0.3, method
    assert "hmc-solver" in (out / "comparison.md").read_text()


def test_a_chain_the_network_cannot_carry_is_reported():
    """stuck_chains: a chain with 10 % of its leapfrog positions at the lower-level cap (300)
    and one accepting 10 % of its proposals are each named in a warning that says what to
    raise; a healthy chain (acceptance 0.9, no position at the cap) is not."""
    from types import SimpleNamespace

    from bilo.bayes import stuck_chains

    at_cap = SimpleNamespace(hook_counts=np.array([300] * 10 + [2] * 90), accept_rate=0.8)
    rejecting = SimpleNamespace(hook_counts=np.array([0] * 100), accept_rate=0.1)
    healthy = SimpleNamespace(hook_counts=np.array([1] * 100), accept_rate=0.9)
    lines = stuck_chains([at_cap, rejecting, healthy], 300)
    assert [line.split(":")[0] for line in lines] == ["chain 0", "chain 1"]
    assert "10.0%" in lines[0] and "--lower-cap" in lines[0]
    assert "acceptance 0.10" in lines[1]
