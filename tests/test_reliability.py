"""Bad input and misuse of run folders: one line naming the file or option, exit code 2,
nothing already written lost (the reliability issue's cases; the expression cases are in
tests/test_expressions.py and tests/test_cli.py)."""

import fcntl
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from bilo.cli import main
from bilo.synthetic import run_reference
from solvers.exchange import write_solution

TINY = ["--width", "8", "--n-res", "6", "--pretrain-steps", "3", "--steps", "3"]


@pytest.fixture(scope="module")
def logistic_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "logistic.h5"
    write_solution(path, run_reference("logistic", n_obs=21))
    return path


def _one_line(capsys, *fragments):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def _train(data, out, *extra):
    return main(["train", "logistic", "--data", str(data), "--out", str(out), *TINY,
                 "--no-validate", *extra])


def test_a_finished_run_is_not_overwritten_without_asking(logistic_data, tmp_path, capsys):
    """Training into a folder that holds a finished run: refused (one line naming the folder and
    the options), the run's summary.json unchanged; --overwrite replaces it; --resume with a
    changed learning rate or seed is refused, with the step count it may change."""
    out = tmp_path / "run"
    assert _train(logistic_data, out) == 0
    before = (out / "summary.json").read_bytes()
    capsys.readouterr()
    assert _train(logistic_data, out) == 2
    _one_line(capsys, str(out), "holds a run", "--resume", "--overwrite")
    assert (out / "summary.json").read_bytes() == before
    assert _train(logistic_data, out, "--resume", "--lr", "0.5") == 2
    _one_line(capsys, "--resume with changed settings", "lr_net")
    assert _train(logistic_data, out, "--resume", "--seed", "3") == 2
    _one_line(capsys, "seed 0 -> 3")
    assert (out / "summary.json").read_bytes() == before
    assert main(["train", "logistic", "--data", str(logistic_data), "--out", str(out),
                 *TINY[:-1], "6", "--no-validate", "--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 9
    assert _train(logistic_data, out, "--overwrite") == 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 6


def test_a_locked_folder_stops_a_second_run_at_once(logistic_data, tmp_path):
    """A run folder locked by another process (`fcntl.flock` on RUN/.lock, as a running
    `bilo train` holds it): a second `bilo train` into it exits 2 at once with one line, and
    writes nothing there."""
    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        env = {k: v for k, v in os.environ.items() if k != "BILO_DEBUG"}
        result = subprocess.run([sys.executable, "-m", "bilo.cli", "train", "logistic",
                                 "--data", str(logistic_data), "--out", str(out), *TINY],
                                capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "another run is using this folder" in lines[0]
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


def test_a_failed_start_leaves_no_folder(logistic_data, tmp_path, capsys):
    """`--u0` naming a file solved at other parameters fails inside the run: one line, and the
    new run folder is removed again."""
    other = tmp_path / "other.h5"
    write_solution(other, run_reference("logistic", {"a": 3.0}, n_obs=21))
    out = tmp_path / "new" / "run"
    assert _train(logistic_data, out, "--u0", str(other)) == 2
    _one_line(capsys, "other.h5", "params")
    assert not out.exists()


@pytest.mark.parametrize("args, fragment", [
    (["--width", "0"], "--width 0"),
    (["--steps", "-1"], "--steps -1"),
    (["--n-res", "0"], "--n-res 0"),
    (["--lr", "0"], "--lr 0"),
    (["--w-rgrad", "nan"], "--w-rgrad nan"),
    (["--theta0", "a=nan"], "--theta0 a=nan"),
    (["--theta0", "a=-1"], "--theta0 a=-1"),
    (["--method", "adjoint", "--nx", "0"], "--nx 0"),
    (["--method", "pinn", "--w-dat", "0"], "--w-dat 0"),
    (["--method", "adjoint", "--w-dat", "3"], "no option w_dat"),
])
def test_invalid_options_are_refused_before_any_work(logistic_data, tmp_path, capsys, args,
                                                     fragment):
    """Zero, negative and non-finite values of numeric options, and options the method does not
    take: one line naming the option, exit 2, no run folder."""
    out = tmp_path / "run"
    assert main(["train", "logistic", "--data", str(logistic_data), "--out", str(out),
                 *args]) == 2
    _one_line(capsys, fragment)
    assert not out.exists()


@pytest.mark.parametrize("args, fragment", [
    (["--n-obs", "0"], "--n-obs must be at least 2"),
    (["--nx", "0"], "--nx 0"),
    (["--nt", "0"], "--nt 0"),
])
def test_zero_is_never_the_default(tmp_path, capsys, args, fragment):
    """`bilo solve fkpp` with --n-obs 0, --nx 0 or --nt 0: refused (they meant "default"
    before), nothing written."""
    out = tmp_path / "x.h5"
    assert main(["solve", "fkpp", *args, "--out", str(out)]) == 2
    _one_line(capsys, fragment)
    assert not out.exists()


def test_observations_outside_the_domain_or_the_dtype_are_refused(logistic_data, tmp_path,
                                                                  capsys):
    """A data file with an observation at t = 1.5 (outside [0, 1]), and one with a value of
    1e300 (beyond float32, the networks' dtype): one line naming the file and the field."""
    for name, edit, fragment in (
            ("outside.h5", lambda h5: h5["observations/points"].__setitem__((3, 0), 1.5),
             "outside the domain"),
            ("huge.h5", lambda h5: h5["observations/values"].__setitem__(3, 1e300),
             "overflow float32")):
        path = tmp_path / name
        path.write_bytes(logistic_data.read_bytes())
        with h5py.File(path, "r+") as h5:
            edit(h5)
        assert main(["train", "logistic", "--data", str(path), "--out",
                     str(tmp_path / name / "run")]) == 2
        _one_line(capsys, name, "observations/", fragment)


def test_more_mpi_ranks_than_cores_needs_oversubscribe(tmp_path, capsys):
    """`bilo solve darcy --np N` with N above the core count: one line suggesting
    --oversubscribe, nothing written."""
    ranks = (os.cpu_count() or 1) + 1
    out = tmp_path / "d.h5"
    assert main(["solve", "darcy", "--np", str(ranks), "--out", str(out)]) == 2
    _one_line(capsys, f"--np {ranks}", "--oversubscribe")
    assert not out.exists() and np.isfinite(ranks)


def test_a_full_disk_is_one_line_and_keeps_the_old_file(tmp_path):
    """`bilo solve fkpp` under a file size limit (`ulimit -f 100`, 51 kB; the file needs about
    350 kB) over an existing x.h5: exit 2, one line naming the file, no crash at exit (HDF5
    writing into the full file used to segfault), x.h5 unchanged and no temporary file left."""
    target = tmp_path / "x.h5"
    target.write_bytes(b"earlier result")
    env = {k: v for k, v in os.environ.items() if k != "BILO_DEBUG"}
    result = subprocess.run(["bash", "-c", f"ulimit -f 100; exec {sys.executable} -m bilo.cli "
                             f"solve fkpp --out {target}"], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "x.h5" in lines[0] and "File too large" in lines[0]
    assert target.read_bytes() == b"earlier result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.h5"]


def _history(run_dir):
    with h5py.File(run_dir / "result.h5", "r") as h5:
        return {k: h5[f"history/{k}"][()] for k in h5["history"] if k != "wall"}


def test_same_seed_same_answer_and_a_killed_run_resumes_exactly(tmp_path):
    """Fisher–KPP (noise-free data at (2, 2)), BiLO on a small network (width 16, 11×11
    points, 30 + 1500 steps, a checkpoint every 100 steps), in separate processes: two
    uninterrupted runs with the same seed record identical θ and losses (==, not allclose); a
    third run killed (SIGKILL) after its first checkpoint and resumed with --resume ends with
    the same θ and loss history, bit for bit."""
    data = tmp_path / "gt.h5"
    write_solution(data, run_reference("fkpp", {"D": 2.0, "rho": 2.0}))
    args = ["train", "fkpp", "--data", str(data), "--width", "16", "--n-res", "11", "11",
            "--pretrain-steps", "30", "--steps", "1500", "--checkpoint-every", "100",
            "--no-validate"]
    env = {k: v for k, v in os.environ.items() if k != "BILO_DEBUG"}
    cli = [sys.executable, "-m", "bilo.cli"]
    for name in ("a", "b"):
        subprocess.run([*cli, *args, "--out", str(tmp_path / name)], check=True, env=env,
                       capture_output=True, timeout=600)
    first, second = _history(tmp_path / "a"), _history(tmp_path / "b")
    for key in first:
        assert np.array_equal(first[key], second[key], equal_nan=True), key
    killed = tmp_path / "killed"
    process = subprocess.Popen([*cli, *args, "--out", str(killed)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (killed / "checkpoint.pt").exists() and process.poll() is None:
        pass
    process.kill()
    process.wait()
    assert not (killed / "summary.json").exists(), "finished before the kill: make it longer"
    subprocess.run([*cli, *args, "--out", str(killed), "--resume"], check=True, env=env,
                   capture_output=True, timeout=600)
    resumed = _history(killed)
    for key in first:
        assert np.array_equal(first[key], resumed[key], equal_nan=True), key


def test_divergence_stops_with_the_last_finite_checkpoint(tmp_path):
    """Fisher–KPP with learning rates 1e30 and a checkpoint after every step: the first step
    makes the weights enormous (still finite, checkpointed), the second step's losses are NaN:
    exit 3 with one line naming step 1 and the loss, checkpoint.pt loads and holds only finite
    numbers, no summary.json or result.h5 (nothing NaN written)."""
    import torch

    data = tmp_path / "gt.h5"
    write_solution(data, run_reference("fkpp", {"D": 2.0, "rho": 2.0}))
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "BILO_DEBUG"}
    result = subprocess.run([sys.executable, "-m", "bilo.cli", "train", "fkpp", "--data",
                             str(data), "--out", str(out), "--lr", "1e30", "--lr-theta", "1e30",
                             "--width", "16", "--n-res", "11", "11", "--pretrain-steps", "20",
                             "--steps", "20", "--checkpoint-every", "1"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 3
    line = result.stderr.strip().splitlines()[-1]
    assert "step 1:" in line and "nan" in line and "diverged" in line and "step 1)" in line
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["step"] == 1
    tensors = [*state["method"]["network"].values(), state["method"]["theta"]]
    assert all(bool(torch.isfinite(t).all()) for t in tensors)
    assert not (out / "summary.json").exists() and not (out / "result.h5").exists()


@pytest.mark.parametrize("signum, code", [(2, 130), (15, 143)])
def test_a_signal_checkpoints_and_says_how_to_resume(logistic_data, tmp_path, signum, code):
    """SIGINT (Ctrl-C) or SIGTERM (a scheduler's pre-emption) during training: the run saves a
    checkpoint at the step it reached, prints one line with that step and --resume, and exits
    130 / 143; resumed (SIGTERM case), it finishes with the same θ as an uninterrupted run."""
    import signal
    import time

    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "BILO_DEBUG"}
    args = [sys.executable, "-m", "bilo.cli", "train", "logistic", "--data",
            str(logistic_data), "--width", "8", "--n-res", "6", "--pretrain-steps", "3000",
            "--steps", "10", "--checkpoint-every", "200", "--no-validate"]
    process = subprocess.Popen([*args, "--out", str(out)], env=env, text=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while not (out / "checkpoint.pt").exists() and process.poll() is None:
        time.sleep(0.02)  # the first checkpoint (step 200): the loop is running
    process.send_signal(signal.Signals(signum))
    _, err = process.communicate(timeout=120)
    assert process.returncode == code, err
    line = err.strip().splitlines()[-1]
    assert "stopped by" in line and "--resume" in line
    assert (out / "checkpoint.pt").exists() and not (out / "summary.json").exists()
    if signum == 2:
        return
    subprocess.run([*args, "--out", str(out), "--resume"], check=True, env=env,
                   capture_output=True, timeout=300)
    subprocess.run([*args, "--out", str(tmp_path / "whole")], check=True, env=env,
                   capture_output=True, timeout=300)
    resumed = json.loads((out / "summary.json").read_text())["params"]
    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())["params"]
    assert resumed == whole
