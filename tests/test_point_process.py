"""The point-process problem (paper Part I §3.2): mRNA positions from M snapshots form a spatial
Poisson process on [0, 1] whose intensity u solves u″ − μu + λδ(x − z) = 0, u(0) = u(1) = 0,
z = 0.5; truth (λ, μ) = (500, 2.5).

Events in the exchange format (round trip, one-line errors on bad data, `bilo solve/info`),
the thinning sampler against ∫u, the likelihood's cusp-respecting quadrature against the
closed form, the discrete adjoint's Taylor test and the maximum-likelihood estimate."""

import h5py
import numpy as np
import pytest

from bilo.cli import main
from bilo.synthetic import run_reference
from solvers.common import InputError
from solvers.exchange import Events, ExchangeError, SolutionFile, read_solution, write_solution
from solvers.fdm.singular import singular_forcing_exact, solve_singular_forcing
from solvers.reference import sample_events

TRUTH = {"lam": 500.0, "mu": 2.5}


def exact_integral(lam: float, mu: float, z: float = 0.5) -> float:
    """∫₀¹ u dx of the closed form: u = A sinh(kx) on [0, z], B sinh(k(1 − x)) on [z, 1], so
    ∫ = A (cosh(kz) − 1)/k + B (cosh(k(1 − z)) − 1)/k with A, B from u(z)."""
    k = np.sqrt(mu)
    uz = float(singular_forcing_exact(z, lam, mu, z))
    return (uz / np.sinh(k * z) * (np.cosh(k * z) - 1.0) / k
            + uz / np.sinh(k * (1 - z)) * (np.cosh(k * (1 - z)) - 1.0) / k)


def events_file(seed: int = 0, snapshots: int = 100) -> SolutionFile:
    return run_reference("singular", TRUTH, snapshots=snapshots, seed=seed)


# -- events in the exchange format -----------------------------------------------------------
def test_events_round_trip_through_hdf5(tmp_path):
    """`run_reference(singular, λ=500, μ=2.5, snapshots=100, seed=0)` writes events only (no
    observations); positions, snapshot indices, M, columns and seed come back bit-identical."""
    data = events_file()
    assert data.observations is None and data.events is not None
    back = read_solution(write_solution(tmp_path / "e.h5", data))
    assert back.observations is None
    np.testing.assert_array_equal(back.events.positions, data.events.positions)
    np.testing.assert_array_equal(back.events.snapshot, data.events.snapshot)
    assert back.events.snapshot.dtype == np.int64
    assert (back.events.n_snapshots, back.events.columns, back.events.seed) == (100, ("x",), 0)
    # the same seed draws the same events; another seed others
    np.testing.assert_array_equal(events_file().events.positions, data.events.positions)
    assert len(events_file(seed=1).events.positions) != len(data.events.positions)


def test_files_with_observations_are_unchanged(tmp_path):
    """A file without events reads back with events None and its observations as before."""
    data = run_reference("singular", TRUTH, n_obs=11)
    back = read_solution(write_solution(tmp_path / "o.h5", data))
    assert back.events is None and len(back.observations.values) == 11
    with h5py.File(tmp_path / "o.h5") as h5:
        assert "events" not in h5


def _with_events(**changes) -> SolutionFile:
    data = run_reference("singular", TRUTH, snapshots=3, seed=0)
    fields = {"positions": data.events.positions, "snapshot": data.events.snapshot,
              "n_snapshots": 3, **changes}
    data.events = Events(**fields)
    return data


@pytest.mark.parametrize("changes, field, fragment", [
    ({"positions": np.zeros((0, 1)), "snapshot": np.zeros(0, np.int64)}, "events/positions",
     "no events"),
    ({"positions": np.array([[0.2], [1.5]]), "snapshot": np.array([0, 1])}, "events/positions",
     "outside [0, 1]"),
    ({"positions": np.array([[-0.1]]), "snapshot": np.array([0])}, "events/positions",
     "outside [0, 1]"),
    ({"n_snapshots": 0}, "events/@n_snapshots", ">= 1"),
    ({"n_snapshots": -2}, "events/@n_snapshots", ">= 1"),
    ({"positions": np.array([[0.2], [0.3]]), "snapshot": np.array([0, 3])}, "events/snapshot",
     "outside 0..2"),
    ({"positions": np.array([[0.2], [np.nan]]), "snapshot": np.array([0, 1])},
     "events/positions", "non-finite"),
    ({"positions": np.array([[0.2], [0.3]]), "snapshot": np.array([0.0, np.nan])},
     "events/snapshot", "non-finite"),
])
def test_bad_events_are_one_line_errors_naming_the_field(tmp_path, changes, field, fragment):
    """Every bad event set is refused on write with an InputError naming file and field; no
    file is left behind."""
    path = tmp_path / "bad.h5"
    with pytest.raises(InputError) as info:
        write_solution(path, _with_events(**changes))
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert f"field '{field}'" in message and fragment in message
    assert not path.exists()


@pytest.mark.parametrize("edit, field, fragment", [
    (lambda h5: h5["events"].attrs.__setitem__("n_snapshots", 0), "events/@n_snapshots", ">= 1"),
    (lambda h5: h5["events"].attrs.__setitem__("n_snapshots", 2.5), "events/@n_snapshots",
     "whole number"),
    (lambda h5: h5["events/positions"].__setitem__((0, 0), np.nan), "events/positions",
     "non-finite"),
    (lambda h5: h5["events/positions"].__setitem__((0, 0), 1.25), "events/positions",
     "outside [0, 1]"),
    (lambda h5: h5["events/snapshot"].__setitem__(0, 7), "events/snapshot", "outside 0..2"),
    (lambda h5: h5["events"].__delitem__("snapshot"), "events/snapshot", "missing"),
])
def test_bad_event_files_are_one_line_errors_on_read(tmp_path, edit, field, fragment):
    """A file edited behind the writer's back: `read_solution` names the file and the field."""
    path = write_solution(tmp_path / "e.h5", _with_events())
    with h5py.File(path, "r+") as h5:
        edit(h5)
    with pytest.raises(ExchangeError) as info:
        read_solution(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert f"field '{field}'" in str(info.value) and fragment in str(info.value)


def test_cli_solve_snapshots_then_info(tmp_path, capsys):
    """`bilo solve singular --param lam=500 --param mu=2.5 --snapshots 100 --seed 0` then
    `bilo info`: the events, the snapshots and the mean per snapshot are shown."""
    out = tmp_path / "s.h5"
    assert main(["solve", "singular", "--param", "lam=500", "--param", "mu=2.5",
                 "--snapshots", "100", "--seed", "0", "--out", str(out)]) == 0
    n = len(read_solution(out).events.positions)
    assert f"{n} events in 100 snapshots" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    shown = capsys.readouterr().out
    assert f"events     {n} over (x) in 100 snapshots, {n / 100:.4g} per snapshot" in shown
    assert "seed 0" in shown


@pytest.mark.parametrize("args, fragment", [
    (["--snapshots", "0"], "--snapshots 0: must be at least 1"),
    (["--snapshots", "5", "--noise", "0.1"], "do not apply"),
])
def test_cli_solve_rejects_bad_snapshots(tmp_path, capsys, args, fragment):
    assert main(["solve", "singular", *args, "--out", str(tmp_path / "x.h5")]) == 2
    assert fragment in capsys.readouterr().err


# -- the thinning sampler --------------------------------------------------------------------
def test_thinning_mean_count_per_snapshot_is_the_integral(report):
    """Per snapshot the count is Poisson(∫u): over M = 2000 snapshots of u at the truth
    (FDM, nx = 1001) the mean count equals ∫u (trapezoid of the nodal values, exact for the
    interpolant the sampler thins against) within 4 standard errors √(∫u/M); the variance
    equals the mean within 10 %, and the positions' histogram follows u/∫u."""
    x, u = solve_singular_forcing(500.0, 2.5, nx=1001)
    integral = float(np.trapz(u, x))
    positions, snapshot = sample_events(x, u, 2000, np.random.default_rng(1))
    counts = np.bincount(snapshot, minlength=2000)
    error = np.sqrt(integral / 2000)
    report(f"mean events per snapshot {counts.mean():.3f}, ∫u = {integral:.3f} "
           f"(standard error {error:.3f}), variance {counts.var():.2f}")
    assert abs(counts.mean() - integral) < 4 * error
    assert abs(counts.var() / counts.mean() - 1.0) < 0.1
    edges = np.linspace(0, 1, 11)
    expected = np.array([np.trapz(u[(x >= a) & (x <= b)], x[(x >= a) & (x <= b)])
                         for a, b in zip(edges[:-1], edges[1:], strict=True)]) / integral
    observed = np.histogram(positions, edges)[0] / len(positions)
    assert np.max(np.abs(observed - expected)) < 0.01
