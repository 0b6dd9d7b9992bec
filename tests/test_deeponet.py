"""`bilo dataset` and the DeepONet baseline (`--method deeponet`), on tiny datasets and networks.

The measured numbers of the paper's settings are in docs/deeponet.md; these tests check the
machinery: the dataset file does not depend on the number of MPI ranks, bad --grid strings give
one line, a DeepONet learns a small Fisher-KPP dataset, and inference through a surrogate that
represents the solution operator exactly recovers θ.
"""

import math
import shutil

import numpy as np
import pytest

from bilo.cli import main
from bilo.model import Parameter, Problem, ReferenceSpec
from solvers.datasets import read_dataset
from solvers.reference import Reference


def _one_line(capsys, *fragments):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="mpirun not found")
def test_dataset_same_bytes_on_one_and_two_ranks(tmp_path, capsys):
    """Fisher-KPP (Crank-Nicolson FDM, nx = 21, 11 output times) on the 3 x 3 grid
    D, rho in {1, 1.5, 2}: `bilo dataset --np 2` (mpirun, two ranks solving alternate samples)
    writes the same bytes as `--np 1`; the file holds the 9 samples in product order, the first
    equal to a direct solve at (1, 1)."""
    from bilo.problems.fkpp import solve

    args = ["dataset", "fkpp", "--grid", "D=1:0.5:2", "--grid", "rho=1:0.5:2", "--nx", "21",
            "--nt", "11"]
    assert main([*args, "--out", str(tmp_path / "one.h5")]) == 0
    assert main([*args, "--np", "2", "--oversubscribe", "--out", str(tmp_path / "two.h5")]) == 0
    assert (tmp_path / "one.h5").read_bytes() == (tmp_path / "two.h5").read_bytes()
    data = read_dataset(tmp_path / "two.h5")
    assert data.u.shape == (9, 11, 21)
    assert data.theta[:3].tolist() == [[1.0, 1.0], [1.0, 1.5], [1.0, 2.0]]
    assert np.array_equal(data.u[0], solve({"D": 1.0, "rho": 1.0}, {}, 21, 11).u)
    assert data.provenance["parameters"] == "D=1:0.5:2; rho=1:0.5:2"


@pytest.mark.parametrize(("grid", "fragment"), [
    (["D=0.8:0.05"], "--grid D=0.8:0.05: expected NAME=START:STEP:STOP"),
    (["D=0.8:x:3", "rho=1"], "'x' is not a number"),
    (["D=0.8:0:3", "rho=1"], "STEP must be above 0"),
    (["D=3:0.1:1", "rho=1"], "STOP must not be below START"),
    (["D=0.8:0.07:3", "rho=1"], "is not a whole number of steps"),
    (["D=1:1:2"], "no values for parameter rho"),
    (["D=1", "rho=1", "k=1"], "has no parameter 'k'"),
    (["D=1", "D=2", "rho=1"], "parameter 'D' given twice"),
    (["D=nan", "rho=1"], "not a finite number"),
])
def test_dataset_bad_grid_one_line(tmp_path, capsys, grid, fragment):
    """A malformed or incomplete --grid for Fisher-KPP: exit code 2, one line naming --grid
    and what is wrong, and no file."""
    args = ["dataset", "fkpp", "--out", str(tmp_path / "ds.h5")]
    for text in grid:
        args += ["--grid", text]
    assert main(args) == 2
    _one_line(capsys, "--grid", fragment)
    assert not (tmp_path / "ds.h5").exists()


def test_dataset_function_options(tmp_path, capsys):
    """Poisson D(x): --samples without --function and a grf() with an unknown argument are one
    line each; 4 draws of grf(length_scale=0.3, variance=0.02, mean=1, left=1, right=1) on
    nx = 41 hold D = 1 at both ends and u = 0 there."""
    out = str(tmp_path / "p.h5")
    assert main(["dataset", "poisson", "--samples", "4", "--out", out]) == 2
    _one_line(capsys, "--function", "D=")
    assert main(["dataset", "poisson", "--samples", "4", "--function", "D=grf(scale=1)",
                 "--out", out]) == 2
    _one_line(capsys, "--function", "no argument 'scale'")
    assert main(["dataset", "poisson", "--samples", "4", "--nx", "41", "--function",
                 "D=grf(length_scale=0.3, variance=0.02, mean=1, left=1, right=1)",
                 "--out", out]) == 0
    data = read_dataset(out)
    assert data.functions["D"].shape == (4, 41) and data.u.shape == (4, 41)
    assert np.allclose(data.functions["D"][:, [0, -1]], 1.0)
    assert np.allclose(data.u[:, [0, -1]], 0.0)


def test_deeponet_fits_small_fisher_kpp_dataset(tmp_path, capsys, report):
    """Fisher-KPP on the 6 x 6 grid D, rho in 1:0.4:3 (36 FDM solves, nx = 21, 11 times):
    `bilo train --method deeponet` (branch and trunk 2 x 32 tanh, 32 basis functions, 800
    Adam steps) holds out 4 samples; their relative L2 error must be below 5 % (measured
    3.6 % with one thread). Inference from (1, 1) on the noise-free data of (2, 2) (21 x 21
    points) follows (300 steps); its θ is only reported: a surrogate this coarse misses D by
    25-65 %."""
    import json

    ds, data = str(tmp_path / "ds.h5"), str(tmp_path / "gt.h5")
    assert main(["dataset", "fkpp", "--grid", "D=1:0.4:3", "--grid", "rho=1:0.4:3",
                 "--nx", "21", "--nt", "11", "--out", ds]) == 0
    assert main(["solve", "fkpp", "--param", "D=2", "--param", "rho=2", "--nx", "41",
                 "--nt", "21", "--n-obs", "21", "--out", data]) == 0
    run = tmp_path / "run"
    assert main(["train", "fkpp", "--data", data, "--method", "deeponet", "--dataset", ds,
                 "--width", "32", "--depth", "2", "--pretrain-steps", "800", "--steps", "300",
                 "--lr-theta", "2e-2", "--device", "cpu", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "surrogate on the held-out 4 of 36 samples" in out
    summary = json.loads((run / "summary.json").read_text())
    heldout = summary["surrogate_heldout"]["rel_l2"]
    report(f"held-out relative L2 {heldout:.3e}; theta {summary['params']}; u vs solver "
           f"{summary['u_rel_l2_vs_reference']:.3e}")
    assert heldout < 0.05
    assert summary["steps_by_phase"] == {"pretrain": 800, "finetune": 300}
    assert summary["u_rel_l2_vs_reference"] is not None


# -- a surrogate that is exact -------------------------------------------------------------------
def _closed_form(params, functions, nx, nt) -> Reference:
    x = np.linspace(0.0, 1.0, nx)
    u = params["a"] * np.tanh(x) + params["b"] * np.tanh(2.0 * x)
    return Reference(("x",), {"x": x}, u, {}, "closed form a tanh(x) + b tanh(2x)", f"nx={nx}")


class TanhPair(Problem):
    """u(x) = a·tanh(x) + b·tanh(2x): a DeepONet with linear branch and trunk ends holds it."""

    name = "tanh_pair"
    coords = ("x",)
    parameters = (Parameter("a", 1.0), Parameter("b", 1.0))
    reference = ReferenceSpec(_closed_form, "u = a tanh(x) + b tanh(2x)",
                              defaults={"a": 0.5, "b": 1.5}, nx=101, n_obs=26)


def test_inference_through_exact_surrogate_recovers_theta(tmp_path, monkeypatch):
    """u = a·tanh(x) + b·tanh(2x), truth (a, b) = (0.5, 1.5), 26 noise-free points: the
    DeepONet with branch b(θ) = √2·θ (an affine layer undoing the input scaling) and trunk
    (tanh x, tanh 2x) equals the solution operator exactly (held-out error ~1e-7, float32).
    Gradient descent on θ from (1, 1) through it, 3000 Adam steps at lr 1e-2, recovers
    the truth to 1e-3 relative, and the validation's re-solve at that θ matches the surrogate's
    u to 1e-3."""
    import torch

    from bilo.dataset import assemble, make_plan, solve_samples
    from bilo.strategies import DeepONetOptions, fit
    from bilo.synthetic import run_reference
    from solvers.datasets import write_dataset
    from solvers.exchange import write_solution

    # depth 0 (one affine layer per net; the command line offers depth >= 1): the branch is
    # affine in θ, the trunk tanh of an affine map of x
    problem = TanhPair()
    plan = make_plan(problem, ["a=0:0.5:2", "b=0:0.5:2"], nx=21)
    solved, reference = solve_samples(plan, range(plan.n_samples))
    write_dataset(tmp_path / "ds.h5", assemble(plan, solved, reference))
    write_solution(tmp_path / "gt.h5", run_reference(problem))
    options = DeepONetOptions(theta0={"a": 1.0, "b": 1.0}, dataset=str(tmp_path / "ds.h5"),
                              depth=0, latent=2, width=1, pretrain_steps=0,
                              finetune_steps=3000, lr_theta=1e-2, device="cpu")

    from bilo.deeponet import DeepONetRun

    original = DeepONetRun.__init__

    def exact(self, *args, **kwargs):  # the hand-set weights, before training starts
        original(self, *args, **kwargs)
        net = self.operator.net
        with torch.no_grad():
            net.branch[0].weight.copy_(math.sqrt(2.0) * torch.diag(net.spread))
            net.branch[0].bias.copy_(math.sqrt(2.0) * net.centre)
            net.trunk[0].weight.copy_(torch.tensor([[1.0], [2.0]]))
            net.trunk[0].bias.zero_()
            net.bias.zero_()

    monkeypatch.setattr(DeepONetRun, "__init__", exact)
    summary = fit(problem, tmp_path / "gt.h5", "deeponet", tmp_path / "run", options,
                  log=None).summary
    assert summary["surrogate_heldout"]["rel_l2"] < 1e-5
    assert summary["rel_err"]["a"] < 1e-3 and summary["rel_err"]["b"] < 1e-3
    assert summary["u_rel_l2_vs_reference"] < 1e-3


def test_deeponet_resumes_bit_identical(tmp_path, monkeypatch):
    """u = a·tanh(x) + b·tanh(2x) on a 5 x 5 grid of (a, b): a DeepONet (1 x 8 tanh, 8 basis
    functions, 200 pre-training and 100 inference steps) stopped by SIGINT at step 150 and
    resumed with `resume=True` ends with the same θ, held-out error and loss history, to the
    bit, as the same run uninterrupted (one CPU thread)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _resume_check(tmp_path, monkeypatch)
    finally:
        torch.set_num_threads(threads)


def _resume_check(tmp_path, monkeypatch):
    import os
    import signal

    from bilo.dataset import assemble, make_plan, solve_samples
    from bilo.deeponet import DeepONetRun
    from bilo.strategies import fit, make_options
    from bilo.synthetic import run_reference
    from solvers.common import Interrupted
    from solvers.datasets import write_dataset
    from solvers.exchange import write_solution

    problem = TanhPair()
    plan = make_plan(problem, ["a=0:0.5:2", "b=0:0.5:2"], nx=21)
    write_dataset(tmp_path / "ds.h5", assemble(plan, *solve_samples(plan, range(25))))
    write_solution(tmp_path / "gt.h5", run_reference(problem))
    options = make_options(problem, "deeponet", dataset=str(tmp_path / "ds.h5"), width=8,
                           depth=1, latent=8, pretrain_steps=200, finetune_steps=100,
                           checkpoint_every=1000, device="cpu")
    whole = fit(problem, tmp_path / "gt.h5", "deeponet", tmp_path / "whole", options,
                validate=False, log=None)
    original = DeepONetRun.pretrain_step

    def interrupted(self):
        if self.step == 150:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self)

    monkeypatch.setattr(DeepONetRun, "pretrain_step", interrupted)
    with pytest.raises(Interrupted):
        fit(problem, tmp_path / "gt.h5", "deeponet", tmp_path / "split", options,
            validate=False, log=None)
    monkeypatch.setattr(DeepONetRun, "pretrain_step", original)
    resumed = fit(problem, tmp_path / "gt.h5", "deeponet", tmp_path / "split", options,
                  resume=True, validate=False, log=None)
    assert resumed.params == whole.params
    assert resumed.extra["surrogate_heldout"] == whole.extra["surrogate_heldout"]
    for key in ("step", "theta", "op", "dat"):
        assert np.array_equal(resumed.history[key], whole.history[key], equal_nan=True), key


def test_deeponet_in_compare_and_option_errors(tmp_path, capsys):
    """`bilo.compare` with the deeponet method on u = a·tanh(x) + b·tanh(2x) (5 x 5 grid of
    (a, b), truth (0.5, 1.5); 1 x 8 nets, 300 + 300 steps): its row carries the θ errors, the
    u error against the closed form at the inferred θ and the held-out error (finite numbers);
    `bilo info` describes the dataset; --method deeponet without --dataset, and --dataset with
    --method bilo, are one line each."""
    from bilo.compare import compare
    from bilo.dataset import assemble, make_plan, solve_samples
    from bilo.synthetic import run_reference
    from solvers.datasets import write_dataset
    from solvers.exchange import write_solution

    problem = TanhPair()
    plan = make_plan(problem, ["a=0:0.5:2", "b=0:0.5:2"], nx=21)
    write_dataset(tmp_path / "ds.h5", assemble(plan, *solve_samples(plan, range(25))))
    write_solution(tmp_path / "gt.h5", run_reference(problem))
    (row,) = compare(problem, str(tmp_path / "gt.h5"), ["deeponet"], tmp_path / "cmp",
                     overrides={"width": 8, "depth": 1, "pretrain_steps": 300,
                                "finetune_steps": 300},
                     method_options={"dataset": str(tmp_path / "ds.h5")})
    for key in ("rel_err_a", "rel_err_b", "u_rel_l2_vs_reference", "surrogate_heldout_rel_l2"):
        assert math.isfinite(row[key]), key
    assert row["steps"] == 600
    assert main(["info", str(tmp_path / "ds.h5")]) == 0
    assert "dataset of 25 solves" in capsys.readouterr().out
    gt = str(tmp_path / "fkpp.h5")
    assert main(["solve", "fkpp", "--nx", "21", "--nt", "11", "--n-obs", "5", "--out", gt]) == 0
    assert main(["train", "fkpp", "--data", gt, "--method", "deeponet", "--out",
                 str(tmp_path / "r1")]) == 2
    _one_line(capsys, "--dataset", "bilo dataset fkpp")
    assert main(["train", "fkpp", "--data", gt, "--method", "bilo", "--dataset", gt,
                 "--out", str(tmp_path / "r2")]) == 2
    _one_line(capsys, "has no option dataset")
