"""The `bilo` command line: solve/info round trip and one-line errors without tracebacks."""

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from bilo.cli import main
from bilo.problems import PROBLEMS

BILO = [sys.executable, "-m", "bilo.cli"]


def run_cli(*args, cwd=None):
    env = {k: v for k, v in os.environ.items() if k != "BILO_DEBUG"}
    return subprocess.run([*BILO, *args], capture_output=True, text=True, cwd=cwd, env=env)


def test_readme_solve_then_info(tmp_path):
    """The README's commands: `bilo solve fkpp --param D=2 --param rho=2 --out gt.h5` then
    `bilo info gt.h5`; info reports the problem, parameters and 2601 grid observations."""
    solved = run_cli("solve", "fkpp", "--param", "D=2", "--param", "rho=2", "--out", "gt.h5",
                     cwd=tmp_path)
    assert solved.returncode == 0, solved.stderr
    info = run_cli("info", "gt.h5", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    assert "problem    fkpp" in info.stdout and "D=2, rho=2" in info.stdout
    assert "2601 points" in info.stdout


@pytest.mark.parametrize("name", sorted(n for n, p in PROBLEMS.items()
                                         if not p.reference.on_mesh))
def test_every_problem_solves(tmp_path, name, capsys):
    """`bilo solve NAME` works for every registered problem with its defaults (coarse grid);
    the problems on a mesh (FEM) are tested in tests/test_fem.py."""
    out = tmp_path / f"{name}.h5"
    assert main(["solve", name, "--nx", "101", "--noise", "0.001", "--seed", "1",
                 "--out", str(out)]) == 0
    assert main(["info", str(out)]) == 0
    assert f"problem    {name}" in capsys.readouterr().out


def _assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_info_on_truncated_and_nan_files(tmp_path):
    """`bilo info` on a truncated file and on one with a NaN observation: exit code 2, one
    line naming the file and the field, no traceback."""
    good = tmp_path / "good.h5"
    assert main(["solve", "two_point", "--out", str(good)]) == 0
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[:3000])
    _assert_one_line_error(run_cli("info", str(truncated)), "truncated.h5", "not a readable")
    nan = tmp_path / "nan.h5"
    nan.write_bytes(good.read_bytes())
    with h5py.File(nan, "r+") as h5:
        h5["observations/values"][4] = np.nan
    _assert_one_line_error(run_cli("info", str(nan)), "nan.h5", "observations/values", "NaN")


@pytest.mark.parametrize("args, fragment", [
    (["--param", "D=-1"], "D"),
    (["--param", "kappa=1"], "no parameter kappa"),
    (["--param", "D=abc"], "not a number"),
    (["--noise", "-0.1"], "--noise"),
    (["--obs", "points"], "layout"),
])
def test_solve_rejects_impossible_input(tmp_path, args, fragment):
    """Impossible parameters and options: one-line error, nothing written."""
    out = tmp_path / "x.h5"
    result = run_cli("solve", "fkpp", *args, "--out", str(out))
    _assert_one_line_error(result, fragment)
    assert not Path(out).exists()


def test_function_expression_cannot_run_code(tmp_path):
    """The exploit of the reliability issue: an expression that reaches `os.system` through
    `().__class__.__base__.__subclasses__()` is refused with one line naming the option, runs
    nothing (no pwned.txt) and writes no output; `9**9**9` is refused as not finite at once."""
    exploit = ("f=(lambda: [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == "
               "'_wrap_close'][0].__init__.__globals__['system']('id > pwned.txt'))() * 0 "
               "+ sin(pi*x)")
    result = run_cli("solve", "heat", "--function", exploit, "--out", "x.h5", cwd=tmp_path)
    _assert_one_line_error(result, "--function f=")
    assert not (tmp_path / "pwned.txt").exists() and not (tmp_path / "x.h5").exists()
    result = run_cli("solve", "heat", "--function", "f=9**9**9", "--out", "x.h5", cwd=tmp_path)
    _assert_one_line_error(result, "--function f=", "not finite")
    assert not (tmp_path / "x.h5").exists()
