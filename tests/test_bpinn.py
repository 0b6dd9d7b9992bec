"""B-PINN (`--method bpinn`, `bilo.bpinn`): HMC jointly over θ and the PINN's weights, on the
logistic ODE u′ = a·u(1 − u), u(0) = 0.1 (21 points, σ = 0.01, seed 0; a flat prior on a > 0),

    U(a, W) = n/(2σ²)·mean((u_NN − d)²) + Σ_j r_j²/(2σ_r²) + |W|²/(2σ_W²),

against an independent evaluation of that formula and the solver's grid posterior of a.
Measured with one thread (OMP_NUM_THREADS=1)."""

import json

import h5py
import numpy as np
import pytest
import torch

from bilo.bpinn import BPINNTarget
from bilo.cli import main
from bilo.compare import variants
from bilo.posterior import grid_posterior, likelihood_scale
from bilo.problems import get_problem
from bilo.strategies import METHODS, fit, load_data, make_options
from bilo.synthetic import run_reference
from solvers.common import InputError
from solvers.exchange import read_solution, write_solution


@pytest.fixture(scope="module")
def logistic_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("logistic") / "data.h5"
    write_solution(path, run_reference("logistic", {"a": 2.0}, n_obs=21, noise=0.01, seed=0))
    return path


def test_potential_and_its_gradient(logistic_data, tmp_path, report):
    """At a random point (a PINN after 50 pre-training steps; a = 1.7, every weight moved by
    N(0, 0.05²); σ_r = 0.02, σ_W = 0.7), in float64:

    * U equals the formula with u and r = u′ − a·u(1 − u) evaluated without the jets (the MLP's
      plain forward, u′ by autograd): measured relative difference 1e-16;
    * ∇U (1 + 1153 numbers) against central differences (h = 1e-6) in a and 40 random
      weights, and along a random direction: relative error below 1e-5 (measured 2e-10 and
      1e-9)."""
    problem = get_problem("logistic")
    options = make_options(problem, "pinn", "quick", {"pretrain_steps": 50,
                                                      "finetune_steps": 0})
    data, path = load_data(problem, logistic_data)
    run = METHODS["pinn"].make_run(problem, data, path, options, tmp_path)
    run.train()
    scale, sigma = likelihood_scale(problem, data)
    sigma_r, sigma_w = 0.02, 0.7
    target = BPINNTarget(run.method, run.batch, scale, sigma_r=sigma_r, sigma_w=sigma_w,
                         data=data)
    assert target.dtype == torch.float64 and target.size == 1 + 1153
    assert run.method.theta.dtype == torch.float32  # the trained PINN is left as it was
    rng = np.random.default_rng(0)
    x = target.position()
    x[0] = 1.7
    x[1:] += 0.05 * rng.standard_normal(x.size - 1)
    U, gradient = target.potential(x)

    # the formula, independently of the jets
    network = target.method.surrogate.network
    obs = data.observations
    with torch.no_grad():
        t_obs = torch.as_tensor(obs.points_in(("t",)), dtype=torch.float64)
        u_obs = 0.1 + t_obs[:, 0] * network(t_obs)
    t = run.batch.collocation.to(torch.float64).clone().requires_grad_(True)
    u = 0.1 + t[:, 0] * network(t)
    (du,) = torch.autograd.grad(u.sum(), t)
    r = du[:, 0] - x[0] * u * (1.0 - u)
    weights = sum(float(w.detach().square().sum()) for w in network.parameters())
    expected = (len(obs.values) / (2 * sigma**2) * float(np.mean((u_obs.numpy() - obs.values)**2))
                + float(r.detach().square().sum()) / (2 * sigma_r**2)
                + weights / (2 * sigma_w**2))
    formula_error = abs(U - expected) / abs(expected)

    h = 1e-6
    indices = np.concatenate([[0], 1 + rng.choice(x.size - 1, 40, replace=False)])
    fd = np.empty(len(indices))
    for i, j in enumerate(indices):
        step = np.zeros(x.size)
        step[j] = h
        fd[i] = (target.potential(x + step)[0] - target.potential(x - step)[0]) / (2 * h)
    component_error = np.linalg.norm(fd - gradient[indices]) / np.linalg.norm(gradient[indices])
    direction = rng.standard_normal(x.size)
    direction /= np.linalg.norm(direction)
    fd_direction = (target.potential(x + h * direction)[0]
                    - target.potential(x - h * direction)[0]) / (2 * h)
    direction_error = abs(fd_direction - gradient @ direction) / abs(gradient @ direction)
    report(f"U = {U:.6g}: formula {formula_error:.1e}; ∇U vs central differences: components "
           f"{component_error:.1e}, direction {direction_error:.1e}")
    assert formula_error < 1e-12
    assert component_error < 1e-5 and direction_error < 1e-5


def test_b_pinn_against_the_grid_posterior(logistic_data, tmp_path, report):
    """PINN's quick training (1000 + 2000 steps, a = 1.98779 at the end), then 2 chains of 100
    warm-up and 200 draws, 10 leapfrog steps, σ_r = σ = 0.01 (the default), σ_W = 1, against
    the solver's grid posterior (401 nodes: mean 1.98412, sd 0.01688).

    B-PINN's chains over 1154 numbers mix slowly (measured bulk ESS 3.3 of 400 draws, R-hat
    1.66), so the check is loose, a baseline's: the posterior mean within 3 grid sds of the
    grid mean (measured 1.96368, −1.21 grid sds) and the sd within a factor 3 of the grid's
    (measured 0.02759, × 1.63), acceptance above 0.5 (measured 0.95 and 0.87), no divergence,
    u_NN averaged over the draws within 1 % of the solver at the posterior mean (measured
    2.1e-3). The fit took 9.3 s (the test about 17 s)."""
    problem = get_problem("logistic")
    options = make_options(problem, "bpinn", "quick", n_chains=2, n_warmup=100, n_samples=200,
                           n_leapfrog=10)
    out = tmp_path / "bpinn"
    summary = fit(problem, logistic_data, "bpinn", out, options, log=None).summary
    grid = grid_posterior(problem, read_solution(logistic_data), 401)
    grid_mean, grid_sd = grid.mean["a"], grid.sd["a"]
    found = summary["posterior"]["a"]
    report(f"mean {found['mean']:.5f} (grid {grid_mean:.5f}: "
           f"{(found['mean'] - grid_mean) / grid_sd:+.2f} grid sds), sd {found['sd']:.5f} "
           f"(grid {grid_sd:.5f}), bulk ESS {found['ess_bulk']:.1f}, R-hat {found['rhat']:.3f}, "
           f"acceptance {summary['accept_rate']}, step sizes {summary['hmc']['step_size']}, "
           f"u vs solver {summary['u_rel_l2_vs_reference']:.1e}, wall {summary['wall_s']:.1f} s")
    assert abs(found["mean"] - grid_mean) < 3 * grid_sd
    assert 1 / 3 < found["sd"] / grid_sd < 3
    assert min(summary["accept_rate"]) > 0.5 and sum(summary["hmc"]["divergent"]) == 0
    assert summary["u_rel_l2_vs_reference"] < 1e-2
    # what the summary says, and the files: θ only
    assert summary["sigma_r"] == 0.01 and summary["sigma_r_from"] == "the data's σ"
    assert summary["sigma_w"] == 1.0 and summary["n_weights"] == 1153
    assert set(summary["posterior"]) == {"a"} and "rhat" in found and "ess_bulk" in found
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["posterior"]["a"]["mean"] == found["mean"]
    with h5py.File(out / "posterior.h5", "r") as h5:
        assert h5.attrs["names"] == "a"
        assert h5["samples"].shape == (2, 200, 1) and h5["warmup/samples"].shape == (2, 100, 1)
        assert h5["mass"].shape == (2, 1)
    with h5py.File(out / "result.h5", "r") as h5:
        assert h5["history/J"].shape == (400,) and np.all(h5["history/J"][()] > 0)
    assert (out / "posterior.png").exists()


def test_command_line_flags_and_limits(logistic_data, tmp_path, capsys):
    """--sigma-r and --sigma-w reach the options and the summary (a tiny run: 100 + 100 PINN
    steps, 20 + 20 iterations of 3 leapfrog steps); 0 is refused with one line and exit code
    2; `bilo compare` takes bpinn like any method (its variants: one per PINN data weight)."""
    out = tmp_path / "cli"
    args = ["train", "logistic", "--data", str(logistic_data), "--method", "bpinn",
            "--pretrain-steps", "100", "--steps", "100", "--n-chains", "1", "--n-warmup", "20",
            "--n-samples", "20", "--n-leapfrog", "3", "--no-validate"]
    assert main([*args, "--out", str(out), "--sigma-r", "0.05", "--sigma-w", "2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sigma_r"] == 0.05 and summary["sigma_r_from"] == "option"
    assert summary["sigma_w"] == 2.0 and summary["method"] == "bpinn"
    assert main([*args, "--out", str(tmp_path / "bad"), "--sigma-r", "0"]) == 2
    assert "--sigma-r 0.0: must be a finite number" in capsys.readouterr().err
    with pytest.raises(InputError, match="--sigma-w"):
        make_options(get_problem("logistic"), "bpinn", sigma_w=float("inf"))
    assert [v.label for v in variants(["hmc", "hmc-solver", "bpinn"], [1.0, 10.0])] == [
        "hmc", "hmc-solver", "bpinn_wdat1", "bpinn_wdat10"]


@pytest.mark.slow
def test_chains_in_processes_equal_chains_in_one(logistic_data, tmp_path):
    """--processes 2 runs B-PINN's two chains in two spawned processes: the draws of θ, the
    summary's posterior (but ESS per second, a wall time) and u_NN's mean over the draws equal
    the sequential run's bit for bit (a tiny run: 50 + 50 PINN steps, 2 chains of 5 + 5
    iterations of 3 leapfrog steps; `slow`: spawning costs seconds)."""
    problem = get_problem("logistic")
    results = {}
    for processes in (1, 2):
        options = make_options(problem, "bpinn", "quick",
                               {"pretrain_steps": 50, "finetune_steps": 50}, n_chains=2,
                               n_warmup=5, n_samples=5, n_leapfrog=3, processes=processes)
        results[processes] = fit(problem, logistic_data, "bpinn", tmp_path / str(processes),
                                 options, validate=False, log=None)
    one, two = results[1], results[2]
    with h5py.File(tmp_path / "1" / "posterior.h5") as a, \
            h5py.File(tmp_path / "2" / "posterior.h5") as b:
        assert np.array_equal(a["samples"][()], b["samples"][()])
    timeless = [{k: v for k, v in result.summary["posterior"]["a"].items() if k != "ess_per_s"}
                for result in (one, two)]
    assert timeless[0] == timeless[1]
    assert np.array_equal(one.u, two.u)
