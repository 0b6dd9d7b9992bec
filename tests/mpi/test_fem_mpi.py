"""FEM solves under MPI: 2 ranks give the same result as 1 rank.

Runs in a plain ``pytest tests``: the test itself launches ``mpirun --allow-run-as-root -n N``
on ``python -m solvers.fem.cli`` (OMP_NUM_THREADS=1) and compares the exchange files written by
rank 0. Skipped where dolfinx or mpirun is missing.
"""

import shutil
import subprocess

import numpy as np
import pytest

from solvers.exchange import read_solution

pytest.importorskip("dolfinx")
if shutil.which("mpirun") is None:
    pytest.skip("mpirun not found", allow_module_level=True)

TOLERANCE = 1e-10


def run_cli(n_ranks: int, args: list[str]) -> None:
    from solvers.fem.cli import mpi_command

    command, env = mpi_command(n_ranks, args)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def tissue_mesh(tmp_path_factory):
    """An annulus-with-a-notch mask (pixels of 1.0 x 0.8 mm) with a heterogeneous per-cell
    P (1 on one side, 0.1 on the other: a white/grey-matter-like jump)."""
    from meshes import mesh_from_mask, write_mesh

    i, j = np.mgrid[:48, :48]
    r2 = (i - 23.5) ** 2 + (j - 23.5) ** 2
    mask = (r2 < 22**2) & (r2 > 6**2) & ~((i > 30) & (np.abs(j - 23.5) < 2))
    tissue = np.where(i + 0.5 * j > 35, 1.0, 0.1)
    data = mesh_from_mask(mask, np.diag([1.0, 0.8, 1.0]), cell_images={"P": tissue})
    return write_mesh(tmp_path_factory.mktemp("mesh") / "annulus.xdmf", data)


def compare(one_path, two_path, report, label) -> float:
    one, two = read_solution(one_path), read_solution(two_path)
    np.testing.assert_array_equal(one.mesh.vertices, two.mesh.vertices)
    np.testing.assert_array_equal(one.mesh.cells, two.mesh.cells)
    assert one.u.shape == two.u.shape
    assert one.provenance["mpi_ranks"] == 1 and two.provenance["mpi_ranks"] == 2
    cells = [int(c) for c in str(two.provenance["cells_per_rank"]).split(",")]
    assert len(cells) == 2 and min(cells) > 0  # the mesh really was split
    difference = float(np.abs(one.u - two.u).max() / np.abs(one.u).max())
    report(f"{label}: max |u(2 ranks) - u(1 rank)| / max|u| = {difference:.2e} "
           f"(u shape {one.u.shape}, cells per rank {cells})")
    return difference


def test_darcy_two_ranks_equal_one_rank(tmp_path, report):
    """-div(A grad u) = 1 on the unit square (32 x 32 squares), u = 0 on the boundary, A = 12/3
    from the GRF with seed 1: `mpirun -n 2` gives the same vertex values, in the same vertex
    order, as `mpirun -n 1` (max relative difference < 1e-10; round-off expected), with both
    the direct (MUMPS) and the iterative (CG + BoomerAMG, rtol 1e-12) solver."""
    for solver in ("lu", "cg"):
        for n in (1, 2):
            run_cli(n, ["darcy", "--param", "seed=1", "--n", "32", "--solver", solver,
                        "--no-xdmf", "--out", str(tmp_path / f"{solver}{n}.h5")])
        difference = compare(tmp_path / f"{solver}1.h5", tmp_path / f"{solver}2.h5", report,
                             f"darcy {solver}")
        assert difference < TOLERANCE


def test_fkpp2d_two_ranks_equal_one_rank(tissue_mesh, tmp_path, report):
    """u_t = div(D P grad u) + rho u(1-u), no flux, on an annulus-with-notch mesh with per-cell P
    (1 / 0.1), D = 2, rho = 1, Gaussian u0, 20 Crank-Nicolson steps to T = 2, 5 snapshots:
    `mpirun -n 2` equals `mpirun -n 1` (max relative difference over all snapshots < 1e-10);
    the same holds through run_fem_solve(n_ranks=2), which relaunches itself under mpirun."""
    from solvers.fem.cli import run_fem_solve

    args = ["fkpp2d", "--mesh", str(tissue_mesh), "--param", "D=2", "--param", "T=2",
            "--nt", "5", "--n-steps", "20"]
    for n in (1, 2):
        run_cli(n, [*args, "--out", str(tmp_path / f"fk{n}.h5")])
    assert compare(tmp_path / "fk1.h5", tmp_path / "fk2.h5", report, "fkpp2d") < TOLERANCE
    summary = run_fem_solve("fkpp2d", {"D": 2.0, "T": 2.0}, tissue_mesh, tmp_path / "np2.h5",
                            n_ranks=2, nt=5, n_steps=20)
    assert summary["mpi_ranks"] == 2 and (tmp_path / "np2_paraview.xdmf").exists()
    assert compare(tmp_path / "fk1.h5", tmp_path / "np2.h5", report, "--np 2") < TOLERANCE
