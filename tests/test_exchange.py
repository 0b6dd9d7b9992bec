"""The HDF5 exchange format: round trips, atomic writes, and one-line errors on bad files."""

import h5py
import numpy as np
import pytest

from bilo.synthetic import run_reference
from solvers.exchange import (
    ExchangeError,
    Mesh,
    Observations,
    SolutionFile,
    read_solution,
    write_solution,
)


def small_solution() -> SolutionFile:
    x = np.linspace(0, 1, 5)
    t = np.linspace(0, 1, 3)
    u = np.outer(np.exp(-t), np.sin(np.pi * x))
    obs = Observations(points=np.array([[0.5, 1.0], [0.25, 1.0]]), values=np.array([0.3, 0.2]),
                       columns=("x", "t"), sigma=0.01, seed=3, clean=np.array([0.31, 0.21]),
                       layout="final")
    return SolutionFile(problem="heat", params={"D": 0.01}, axes=("t", "x"),
                        grid={"x": x, "t": t}, u=u, inputs={"f": np.sin(np.pi * x)},
                        observations=obs, provenance={"solver": "test", "nx": 5})


def test_round_trip_preserves_every_field(tmp_path):
    """Write then read a heat solution (5 x 3 grid): every array is bit-identical."""
    data = small_solution()
    path = write_solution(tmp_path / "a.h5", data)
    back = read_solution(path)
    assert back.problem == "heat" and back.params == {"D": 0.01} and back.axes == ("t", "x")
    np.testing.assert_array_equal(back.u, data.u)
    np.testing.assert_array_equal(back.grid["x"], data.grid["x"])
    np.testing.assert_array_equal(back.inputs["f"], data.inputs["f"])
    np.testing.assert_array_equal(back.observations.points, data.observations.points)
    np.testing.assert_array_equal(back.observations.clean, data.observations.clean)
    assert back.observations.seed == 3 and back.observations.sigma == 0.01
    assert back.provenance == {"solver": "test", "nx": 5}


def test_mesh_round_trip(tmp_path):
    """A 2-triangle mesh with a vertex-valued snapshot series survives a round trip."""
    mesh = Mesh(vertices=np.array([[0, 0], [1, 0], [1, 1], [0, 1.0]]),
                cells=np.array([[0, 1, 2], [0, 2, 3]]), units="mm")
    data = SolutionFile(problem="fkpp2d", params={"D": 1.0}, axes=("t", "vertex"),
                        grid={"t": np.array([0.0, 1.0])}, u=np.ones((2, 4)), mesh=mesh)
    back = read_solution(write_solution(tmp_path / "m.h5", data))
    np.testing.assert_array_equal(back.mesh.cells, mesh.cells)
    assert back.mesh.units == "mm" and back.u.shape == (2, 4)


def test_failed_write_keeps_the_previous_file(tmp_path):
    """A write that fails validation (NaN in u) leaves the old file intact and no temp file."""
    path = tmp_path / "keep.h5"
    write_solution(path, small_solution())
    bad = small_solution()
    bad.u[1, 2] = np.nan
    with pytest.raises(ExchangeError, match="solution/u"):
        write_solution(path, bad)
    assert read_solution(path).u[1, 2] == small_solution().u[1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.h5"]


def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    """An exception in the middle of writing (simulated) leaves neither target nor temp file."""
    path = tmp_path / "new.h5"
    data = small_solution()
    monkeypatch.setattr("solvers.exchange._write_observations",
                        lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        write_solution(path, data)
    assert list(tmp_path.iterdir()) == []


def _corrupt(path, edit):
    with h5py.File(path, "r+") as h5:
        edit(h5)


@pytest.mark.parametrize("edit, field", [
    (lambda h5: h5["observations/values"].__setitem__(0, np.nan), "observations/values"),
    (lambda h5: h5.__delitem__("solution/u"), "solution/u"),
    (lambda h5: h5.__delitem__("grid/t"), "solution/u@axes"),
    (lambda h5: (h5.__delitem__("inputs/f"),
                 h5.create_dataset("inputs/f", data=np.ones(4))), "inputs/f"),
    (lambda h5: (h5.__delitem__("observations/values"),
                 h5.create_dataset("observations/values", data=np.ones(3))),
     "observations/values"),
    (lambda h5: h5.attrs.__setitem__("format", "something-else"), "/@format"),
    (lambda h5: h5["params"].attrs.__setitem__("D", np.inf), "params/@D"),
])
def test_bad_file_errors_name_file_and_field(tmp_path, edit, field):
    """NaN, missing datasets, mismatched shapes, foreign files: ExchangeError naming both."""
    path = write_solution(tmp_path / "bad.h5", small_solution())
    _corrupt(path, edit)
    with pytest.raises(ExchangeError) as info:
        read_solution(path)
    message = str(info.value)
    assert str(path) in message and f"'{field}'" in message and "\n" not in message


def test_truncated_and_missing_files(tmp_path):
    """A file cut to half its size, and a path that does not exist, give one-line errors."""
    path = write_solution(tmp_path / "cut.h5", small_solution())
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ExchangeError, match="cut.h5.*not a readable HDF5 file"):
        read_solution(path)
    with pytest.raises(ExchangeError, match="does not exist"):
        read_solution(tmp_path / "nope.h5")


def test_observations_are_the_reference_at_the_points():
    """fkpp at (D, rho) = (2, 2), 11 points at t = 1: noise-free observations equal u(x, 1) on
    the solver grid exactly (the points are grid nodes); with sigma = 0.01 the residual has
    std within 50% of 0.01 and the same seed gives the same noise."""
    clean = run_reference("fkpp", {"D": 2, "rho": 2}, layout="final", n_obs=11)
    obs = clean.observations
    node = np.abs(clean.grid["x"][None, :] - obs.points[:, :1]).argmin(axis=1)
    np.testing.assert_allclose(obs.values, clean.u[-1, node], rtol=0, atol=1e-14)
    noisy = run_reference("fkpp", {"D": 2, "rho": 2}, noise=0.01, seed=7)
    again = run_reference("fkpp", {"D": 2, "rho": 2}, noise=0.01, seed=7)
    residual = noisy.observations.values - noisy.observations.clean
    assert noisy.observations.points.shape == (51 * 51, 2)
    assert 0.005 < residual.std() < 0.015
    np.testing.assert_array_equal(noisy.observations.values, again.observations.values)
