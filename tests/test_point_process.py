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
from bilo.likelihoods import PoissonProcess
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


# -- the likelihood ---------------------------------------------------------------------------
def test_integral_of_the_closed_form_is_the_analytic_one():
    """The analytic ∫u used below agrees with scipy's adaptive quadrature split at z (49.524 at
    the truth) to 1e-12."""
    from scipy.integrate import quad

    lam, mu = TRUTH["lam"], TRUTH["mu"]
    adaptive = sum(quad(lambda t: float(singular_forcing_exact(t, lam, mu)), a, b,
                        epsabs=1e-13)[0] for a, b in ((0.0, 0.5), (0.5, 1.0)))
    assert abs(exact_integral(lam, mu) - adaptive) < 1e-12 * adaptive


@pytest.mark.parametrize("offset", [1, 15], ids=["even_per_side", "odd_per_side"])
def test_grid_quadrature_is_fourth_order_across_the_cusp(report, offset):
    """`PoissonProcess.grid_weights`: composite Simpson on [0, z] and [z, 1] (3/8 rule for the
    last three intervals when a side has an odd count) on the closed form's nodal values at the
    truth converges at order 4: nx − 1 = 2·(10, 20, 40, 80) and 2·(7, 15, 31, 63) intervals.
    Measured orders ≥ 3.9."""
    lam, mu = TRUTH["lam"], TRUTH["mu"]
    exact = exact_integral(lam, mu)
    likelihood = PoissonProcess(cusp=0.5)
    sizes = [21, 41, 81, 161] if offset == 1 else [15, 31, 63, 127]
    errors = []
    for nx in sizes:
        x = np.linspace(0.0, 1.0, nx)
        errors.append(abs(likelihood.grid_weights(x) @ singular_forcing_exact(x, lam, mu)
                          - exact))
    h = 1.0 / (np.array(sizes) - 1.0)
    orders = np.log(np.array(errors[:-1]) / errors[1:]) / np.log(h[:-1] / h[1:])
    report(f"nx {sizes}: errors {', '.join(f'{e:.2e}' for e in errors)}, "
           f"orders {np.round(orders, 2).tolist()}")
    assert np.all(orders > 3.9)


def test_gauss_legendre_split_at_the_cusp_is_exact_to_round_off(report):
    """`PoissonProcess.quadrature` (for u at any points: a network): Gauss–Legendre on each side
    of z; with 8 nodes per side ∫u of the closed form is exact to 1e-12 relative, without the
    split (cusp=None, 16 nodes on [0, 1]) the kink leaves an error above 1e-3."""
    lam, mu = TRUTH["lam"], TRUTH["mu"]
    exact = exact_integral(lam, mu)
    errors = {}
    for n in (2, 4, 8):
        nodes, weights = PoissonProcess(n_gauss=n).quadrature()
        errors[n] = abs(weights @ singular_forcing_exact(nodes, lam, mu) - exact) / exact
    nodes, weights = PoissonProcess(cusp=None, n_gauss=16).quadrature()
    unsplit = abs(weights @ singular_forcing_exact(nodes, lam, mu) - exact) / exact
    report(f"relative errors split n=2,4,8: {', '.join(f'{e:.1e}' for e in errors.values())}; "
           f"unsplit n=16: {unsplit:.1e}")
    assert errors[8] < 1e-12 and unsplit > 1e-3


def test_likelihood_at_points_and_on_the_grid_agree_and_differentiate():
    """At the truth on 100 snapshots (seed 0): −log L/M from u at `points()` (closed form,
    Gauss–Legendre) and from the FDM nodal values (`grid_value`, Simpson + linear
    interpolation at the events, nx = 1001) agree to 1e-6 relative; `gradient` and
    `grid_value`'s gradient match central differences; torch gives the same value and
    autograd the same gradient."""
    data = events_file()
    likelihood = PoissonProcess()
    u = singular_forcing_exact(likelihood.points(data.events.positions)[:, 0], **TRUTH)
    value = likelihood.value(u, data.events)
    on_grid, grid_gradient = likelihood.grid_value(data.grid["x"], data.u, data.events)
    assert abs(on_grid - value) < 1e-6 * abs(value)
    assert likelihood.negative_log(u, data.events) == pytest.approx(100 * value, rel=1e-14)
    du = np.random.default_rng(0).standard_normal(data.u.size)
    eps = 1e-4
    central = (likelihood.grid_value(data.grid["x"], data.u + eps * du, data.events)[0]
               - likelihood.grid_value(data.grid["x"], data.u - eps * du, data.events)[0])
    assert central / (2 * eps) == pytest.approx(grid_gradient @ du, rel=1e-6)
    dv = np.random.default_rng(1).standard_normal(u.size)
    central = (likelihood.value(u + eps * dv, data.events)
               - likelihood.value(u - eps * dv, data.events))
    assert central / (2 * eps) == pytest.approx(likelihood.gradient(u, data.events) @ dv,
                                                rel=1e-6)
    # u <= 0 at an event: log u undefined, the misfit is +inf
    assert likelihood.value(np.where(np.arange(u.size) == u.size - 1, 0.0, u),
                            data.events) == np.inf
    torch = pytest.importorskip("torch")
    tensor = torch.tensor(u, requires_grad=True)
    loss = likelihood.value(tensor, data.events)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(value, rel=1e-12)
    np.testing.assert_allclose(tensor.grad.numpy(), likelihood.gradient(u, data.events),
                               rtol=1e-10, atol=1e-15)


# -- the adjoint and the maximum-likelihood estimate ------------------------------------------
def singular_problem(seed: int = 0):
    from bilo.problems import get_problem

    return get_problem("singular").adjoint(events_file(seed), w_reg={})


@pytest.mark.parametrize("m0, dm", [((250.0, 5.0), (25.0, 0.5)), ((500.0, 2.5), (10.0, 0.3))],
                         ids=["initial_guess", "truth"])
def test_adjoint_gradient_passes_the_taylor_test(report, m0, dm):
    """J(λ, μ) = −log L/M of the FDM solution (nx = 1001) on 100 snapshots (seed 0): the
    gradient-corrected remainder falls at rate 2 (≥ 1.9) at the initial guess and at the
    truth along (Δλ, Δμ) = 10 % of (λ, μ), and the λ-component equals gᵀu/λ (u is linear in
    λ) to 1e-10."""
    from adjoint import taylor_test

    problem = singular_problem()
    result = taylor_test(problem.objective, problem.gradient, list(m0), dm=list(dm), eps0=0.1)
    report(f"at {m0}: rates {np.round(result.rates_second, 3).tolist()}")
    assert result.passed(), str(result)
    x, u = problem.solution(m0)
    _, source = problem.misfit.grid_value(x, u, problem.events)
    assert problem.gradient(m0)[0] == pytest.approx(source @ u / m0[0], rel=1e-10)


def test_maximum_likelihood_estimate_on_fixed_data(report):
    """L-BFGS-B with the adjoint gradient from (250, 5) on 100 snapshots drawn at the truth
    (500, 2.5) with seed 0 (4909 events) converges to the MLE (λ̂, μ̂) = (563.167, 4.1257)
    (measured; |∇J| < 1e-6), also from three other starts. At the MLE the likelihood exceeds
    the truth's (J lower by 1.0e-2 per snapshot) and ∫u = N/M = 49.09 (the λ-stationarity of
    u = λ·G_μ). The distance from the truth is statistical: the Fisher information at the
    truth gives standard deviations (52, 1.23) with correlation 0.99 (docs/point_process.md)."""
    from adjoint import minimize

    problem = singular_problem()
    found = minimize(problem, log=None)
    report(f"MLE lam={found.m[0]:.4f}, mu={found.m[1]:.5f} in {found.iterations} iterations, "
           f"J={found.objective:.6f}, J(truth)={problem.objective([500.0, 2.5]):.6f}")
    assert found.converged and found.gradient_norm < 1e-6
    np.testing.assert_allclose(found.m, [563.167, 4.1257], rtol=2e-4)
    for m0 in ((500.0, 2.5), (400.0, 0.5), (700.0, 8.0)):
        np.testing.assert_allclose(minimize(problem, m0, log=None).m, found.m, rtol=1e-5)
    assert found.objective < problem.objective([500.0, 2.5]) - 5e-3
    x, u = problem.solution(found.m)
    events = problem.events
    assert problem.misfit.grid_weights(x) @ u == pytest.approx(
        len(events.positions) / events.n_snapshots, rel=1e-7)
    # the FDM solve at the MLE has a larger likelihood than at the truth, also through the
    # likelihood's other path (u at its Gauss–Legendre points and the events, interpolated)
    likelihood = PoissonProcess()
    points = likelihood.points(events.positions)[:, 0]
    at = {name: likelihood.negative_log(np.interp(points, *solve_singular_forcing(*m)), events)
          for name, m in (("mle", found.m), ("truth", (500.0, 2.5)))}
    assert at["mle"] < at["truth"]


def test_mle_over_five_data_seeds(report):
    """MLE on 100 snapshots for data seeds 0..4: every estimate within 3 Fisher standard
    deviations (λ: 52, μ: 1.23) of the truth; measured numbers reported."""
    from adjoint import minimize

    rows = []
    for seed in range(5):
        m = minimize(singular_problem(seed), log=None).m
        rows.append(m)
        report(f"seed {seed}: lam={m[0]:.2f}, mu={m[1]:.4f} (rel. err "
               f"{abs(m[0] / 500 - 1):.3f}, {abs(m[1] / 2.5 - 1):.3f})")
    rows = np.array(rows)
    assert np.all(np.abs(rows[:, 0] - 500.0) < 3 * 52)
    assert np.all(np.abs(rows[:, 1] - 2.5) < 3 * 1.23)


def test_cli_train_adjoint_on_events(tmp_path, capsys):
    """`bilo train singular --data F.h5 --method adjoint` on events only: the MLE of seed 0,
    validated (∫u of the reference at θ̂ equals the events per snapshot seen); a file with
    observations only is refused with one line naming the missing field."""
    import json

    data = tmp_path / "s.h5"
    write_solution(data, events_file())
    assert main(["train", "singular", "--data", str(data), "--method", "adjoint",
                 "--out", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["params"]["lam"] == pytest.approx(563.167, rel=2e-4)
    assert summary["n_events"] == 4909 and summary["n_snapshots"] == 100
    assert summary["reference_objective"] == pytest.approx(summary["objective"], rel=1e-6)
    assert summary["reference_events_per_snapshot"] == pytest.approx(49.09, rel=1e-6)
    capsys.readouterr()
    observed = tmp_path / "o.h5"
    write_solution(observed, run_reference("singular", TRUTH))
    assert main(["train", "singular", "--data", str(observed), "--method", "adjoint",
                 "--out", str(tmp_path / "run2")]) == 2
    err = capsys.readouterr().err
    assert "field 'events': missing" in err and "--snapshots" in err


@pytest.mark.slow
def test_solver_posterior_on_events_matches_the_grid_posterior(report):
    """Posterior of (λ, μ) on 100 snapshots (seed 0) with the declared priors (λ ~ Gamma(2,
    rate 1/250), μ ~ Uniform(0, 20)): π ∝ exp(−M·J(θ)) p(θ), −M·J the Poisson-process
    log-likelihood. HMC with the FDM solver (nx = 201) and its adjoint (`hmc-solver`: two
    chains of 150 warm-up and 250 draws of 20 leapfrog steps from the grid's mode: the ridge
    needs long trajectories) against the same density on a 61 × 61 grid (mode ± 8 Laplace
    sds, trapezoidal rule, the same solver; with nx = 1001 measured to agree with 241 × 241
    nodes to 1e-5): means within 4 Monte Carlo standard errors, sds within 15 %. Measured
    grid (nx = 1001): λ 563.70 ± 53.07, μ 4.136 ± 1.258, correlation 0.988 (the ridge along
    which λ follows μ)."""
    from bilo.posterior import fit_hmc_solver, grid_posterior
    from bilo.problems import get_problem
    from bilo.strategies import make_options

    problem = get_problem("singular")
    data = events_file()
    grid = grid_posterior(problem, data, 61, nx=201)
    options = make_options(problem, "hmc-solver", n_chains=2, n_warmup=150, n_samples=250,
                           n_leapfrog=20, theta0=grid.mode, nx=201)
    posterior = fit_hmc_solver(problem, data, options, None, log=None).extra["posterior"]
    for name in ("lam", "mu"):
        got = posterior[name]
        report(f"{name}: HMC {got['mean']:.4g} ± {got['sd']:.4g} (MCSE {got['mcse_mean']:.3g}, "
               f"ESS {got['ess_bulk']:.0f}); grid {grid.mean[name]:.4g} ± {grid.sd[name]:.4g}")
        assert abs(got["mean"] - grid.mean[name]) < 4 * got["mcse_mean"]
        assert abs(got["sd"] / grid.sd[name] - 1) < 0.15
    assert grid.corr > 0.98
