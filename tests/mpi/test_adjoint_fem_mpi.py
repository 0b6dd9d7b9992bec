"""Discrete-adjoint gradients on dolfinx under MPI: Taylor tests on 2 ranks, and 2 ranks give
the same gradient as 1 rank.

Runs in a plain ``pytest tests``: the module launches ``python -m adjoint.fem darcy fkpp2d``
under ``mpirun --allow-run-as-root -n 1`` and ``-n 2`` (OMP_NUM_THREADS=1) once, and the tests
read the JSON that rank 0 writes (J, gradient, Taylor rates, cells per rank). The problems are
those of tests/test_adjoint_fem.py, with the CLI's data term ``adjoint.fem.MeanSquares`` (the
Gaussian likelihood's mean((u - d)^2)). Skipped where dolfinx or mpirun is missing.
"""

import json
import shutil
import subprocess

import numpy as np
import pytest

pytest.importorskip("dolfinx")
if shutil.which("mpirun") is None:
    pytest.skip("mpirun not found", allow_module_level=True)

TOLERANCE = 1e-10
PROBLEMS = ("darcy", "fkpp2d")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """{n_ranks: the JSON of `python -m adjoint.fem darcy fkpp2d` on n_ranks ranks}."""
    from solvers.fem.cli import mpi_command

    folder = tmp_path_factory.mktemp("adjoint_mpi")
    by_ranks = {}
    for n_ranks in (1, 2):
        out = folder / f"taylor{n_ranks}.json"
        command, env = mpi_command(n_ranks, [*PROBLEMS, "--json", str(out)],
                                   module="adjoint.fem")
        completed = subprocess.run(command, env=env, capture_output=True, text=True,
                                   timeout=300)
        assert completed.returncode == 0, (completed.stdout + completed.stderr)[-3000:]
        by_ranks[n_ranks] = json.loads(out.read_text())
    return by_ranks


@pytest.mark.parametrize("problem", PROBLEMS)
def test_taylor_on_two_ranks(results, problem, report):
    """On 2 ranks (the 16 x 16-square mesh split in two): darcy, -div(A grad u) = 1, u = 0 on
    the boundary, unknown P1 field A (289 values), J = mean((u(x_i) - d_i)^2) + 1e-5 int
    |grad A|^2 (the project's convention, no 1/2; the CLI's misfit adjoint.fem.MeanSquares);
    fkpp2d, u_t = div(D P grad u) + rho u(1-u), no flux, 20 Crank-Nicolson steps, unknown
    (D, rho). Reference: the Taylor test. Gradient-corrected remainder at rate >= 1.9 and the
    plain one at rate 1 +- 0.1 (measured as on one rank: 2.000 / 1.08 -> 1.01 for darcy,
    1.997..2.000 / 1.015 -> 1.002 for fkpp2d)."""
    result = results[2][problem]
    assert result["mpi_ranks"] == 2
    assert len(result["cells_per_rank"]) == 2 and min(result["cells_per_rank"]) > 0
    report(f"{problem} on 2 ranks (cells {result['cells_per_rank']}): plain rates "
           f"{np.round(result['rates_first'], 3)}, gradient-corrected "
           f"{np.round(result['rates_second'], 3)}")
    assert result["passed"] and result["min_rate"] >= 1.9
    np.testing.assert_allclose(result["rates_first"], 1.0, atol=0.1)


@pytest.mark.parametrize("problem", PROBLEMS)
def test_gradient_on_two_ranks_equals_one_rank(results, problem, report):
    """The same problems: J and the gradient (darcy: 289 vertex values in the mesh's input
    order; fkpp2d: dJ/dD, dJ/drho) on 2 ranks equal those on 1 rank to 1e-10 relative (the
    direct solver makes them agree to round-off; measured about 2e-14 and 3e-16)."""
    one, two = results[1][problem], results[2][problem]
    assert one["mpi_ranks"] == 1 and two["mpi_ranks"] == 2
    g1, g2 = np.array(one["gradient"]), np.array(two["gradient"])
    assert g1.shape == g2.shape and np.linalg.norm(g1) > 0
    difference = float(np.linalg.norm(g2 - g1) / np.linalg.norm(g1))
    report(f"{problem}: |g(2 ranks) - g(1 rank)| / |g(1 rank)| = {difference:.1e}, "
           f"J differs by {abs(two['objective'] - one['objective']):.1e}")
    assert difference < TOLERANCE
    assert two["objective"] == pytest.approx(one["objective"], rel=TOLERANCE)
