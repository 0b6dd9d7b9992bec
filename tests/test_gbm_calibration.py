"""The GBM calibration pieces (apps/gbm/calibration.py) and the pipeline's network check,
against numbers computed independently: lattice counts, normal tail probabilities, and
log-normal prior draws."""

import math

import numpy as np
import pytest

from apps.gbm import calibration
from apps.gbm.pipeline import DICE_TOLERANCE, network_check
from apps.gbm.problem import BAYES_PARAMETERS


def _affine(dx: float, dy: float) -> np.ndarray:
    return np.array([[dx, 0.0, -50.0], [0.0, dy, -50.0], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize("dx, dy", [(1.0, 1.0), (1.0, 2.0)])
def test_standard_plan_is_the_margin_disc(dx, dy):
    """One tumour-core pixel at (50, 50) of a 101×101 brain with pixel sides dx, dy mm: the
    15 mm plan is exactly the lattice points with (i·dx)² + (j·dy)² <= 15² (709 at 1 mm, about
    π·15²/2 = 353 at 1×2 mm); a brain mask cuts it."""
    tc = np.zeros((101, 101), bool)
    tc[50, 50] = True
    brain = np.ones_like(tc)
    i, j = np.meshgrid(np.arange(101) - 50, np.arange(101) - 50, indexing="ij")
    expected = (i * dx) ** 2 + (j * dy) ** 2 <= 15.0**2
    plan = calibration.standard_plan(tc, brain, _affine(dx, dy))
    np.testing.assert_array_equal(plan, expected)
    if dx == dy:
        assert plan.sum() == 709
    brain[:, :50] = False
    assert calibration.standard_plan(tc, brain, _affine(dx, dy)).sum() == (
        expected & brain).sum()


def test_model_plan_takes_the_highest_density_and_coverage_counts():
    """Density decreasing with the distance from (20, 30), with no ties: the plan of k pixels is
    the k nearest ones; a recurrence of 10 pixels of which 4 lie in a plan is covered 0.4."""
    i, j = np.meshgrid(np.arange(60), np.arange(60), indexing="ij")
    r = np.hypot(i - 20.0, j - 30.3 + 0.001 * i)  # no two pixels at the same distance
    density = np.exp(-r / 5)
    brain = np.ones((60, 60), bool)
    plan = calibration.model_plan(density, brain, 100)
    assert plan.sum() == 100
    assert r[plan].max() < r[~plan].min()
    recurrence = np.zeros_like(brain)
    recurrence[0, :10] = True
    covering = np.zeros_like(brain)
    covering[0, 3:7] = True
    assert calibration.coverage(covering, recurrence) == pytest.approx(0.4)
    assert math.isnan(calibration.coverage(covering, np.zeros_like(brain)))


def test_infiltration_probability_matches_the_normal_tail():
    """u ~ N(0.1, 0.05²) at every pixel, 20000 draws: P(u > 0.05) = Φ(1) = 0.8413 within
    4 binomial sds (0.0026·4), mean 0.1 and sd 0.05 within 2 %."""
    rng = np.random.default_rng(0)
    u = 0.1 + 0.05 * rng.standard_normal((20000, 3))
    maps = calibration.infiltration_maps(u, level=0.05)
    phi1 = 0.5 * (1 + math.erf(1 / math.sqrt(2)))
    np.testing.assert_allclose(maps["probability"], phi1, atol=4 * math.sqrt(
        phi1 * (1 - phi1) / 20000))
    np.testing.assert_allclose(maps["mean"], 0.1, rtol=0.02)
    np.testing.assert_allclose(maps["sd"], 0.05, rtol=0.02)


def test_concentration_flags_what_the_data_do_not_determine():
    """Draws from the LogNormal(0, 1) priors of D and ρ: every ratio ≈ 1 (within 5 %), so all
    four are flagged. A ridge D = 2ρ·exp(0.01ε): D/ρ determined (ratio ≈ 0.01/√2), D, ρ and D·ρ
    not; the notes name exactly those three. The physical values are D·D̄, ρ·ρ̄; with τ and an
    interval of 100 days, ρ·ρ̄·τ/100 per day."""
    rng = np.random.default_rng(1)
    n = 20000
    thresholds = np.column_stack([np.full(n, 0.3), np.full(n, 0.7)])
    prior = np.column_stack([rng.lognormal(0, 1, n), rng.lognormal(0, 1, n), thresholds])
    names = [p.name for p in BAYES_PARAMETERS]
    ratios = calibration.concentration(prior, BAYES_PARAMETERS)
    for q in ("D", "rho", "D*rho", "D/rho"):
        assert ratios[q] == pytest.approx(1.0, rel=0.05)
    rho = rng.lognormal(0, 1, n)
    ridge = np.column_stack([2 * rho * np.exp(0.01 * rng.standard_normal(n)), rho, thresholds])
    ratios = calibration.concentration(ridge, BAYES_PARAMETERS)
    assert ratios["D/rho"] == pytest.approx(0.01 / math.sqrt(2), rel=0.05)
    intervals = calibration.posterior_intervals(ridge, names, D_bar=4.0, rho_bar=5.0)
    notes = calibration.concentration_notes(ratios, intervals)
    assert [n.split(" ")[0] for n in notes] == ["D", "rho", "D*rho"]
    assert intervals["D/rho"]["q50"] == pytest.approx(2.0, rel=0.01)
    assert intervals["D_mm2_per_age"]["q50"] == pytest.approx(4.0 * intervals["D"]["q50"])
    assert intervals["rho_per_age"]["q95"] == pytest.approx(5.0 * intervals["rho"]["q95"])


def test_unconverged_chains_are_said_to_be_no_posterior():
    """The B-BiLO run on p6 of docs/gbm.md (largest R-hat 2.27, smallest bulk ESS 2.8; and the
    one-scan run's 1.69 and 3.6) gets one note naming both; chains at R-hat 1.005 and ESS 400
    get none; either bound alone (R-hat 1.02, or ESS 60) is enough for the note."""
    def notes(rhat, ess):
        return calibration.convergence_notes({"rhat_max": rhat, "ess_bulk_min": ess})

    for rhat, ess in ((2.27, 2.8), (1.69, 3.6), (1.02, 400.0), (1.005, 60.0)):
        found = notes(rhat, ess)
        assert len(found) == 1 and f"R-hat {rhat:.3g}" in found[0]
        assert f"bulk ESS {ess:.3g}" in found[0] and "not the posterior's" in found[0]
    assert notes(1.005, 400.0) == []


def test_network_check_fails_on_distance_or_dice_gap():
    """u_NN 3 % from u_FEM (relative L2) with equal DICE passes at 5 %; 6 % fails; a DICE gap
    just above DICE_TOLERANCE fails with u exact. The warning line names the distance."""
    u_fem = np.linspace(0.0, 1.0, 101)
    scores = {"WT_NN": 0.95, "WT_FEM": 0.95, "TC_NN": 0.9, "TC_FEM": 0.9}
    direction = np.cos(np.arange(101.0))
    direction *= np.linalg.norm(u_fem) / np.linalg.norm(direction)
    check, warnings = network_check(u_fem + 0.03 * direction, u_fem, scores)
    assert check["passed"] and not warnings
    assert check["u_rel_l2_vs_fem"] == pytest.approx(0.03)
    check, warnings = network_check(u_fem + 0.06 * direction, u_fem, scores)
    assert not check["passed"] and "6.0% from the FEM solution" in warnings[0]
    gapped = {**scores, "TC_NN": 0.9 + DICE_TOLERANCE + 0.001}
    check, _ = network_check(u_fem, u_fem, gapped)
    assert not check["passed"] and check["dice_gap"] == pytest.approx(DICE_TOLERANCE + 0.001)


def test_intervals_in_days_with_a_follow_up():
    """Draws with τ = 0.25 fixed and an interval of 100 days: the age is 400 days and
    ρ·ρ̄/T = 5ρ/400 per day, D·D̄/T = 4D/400 mm²/day, draw by draw."""
    rng = np.random.default_rng(2)
    draws = np.column_stack([rng.lognormal(0, 0.1, 500), rng.lognormal(0, 0.1, 500),
                             np.full(500, 0.3), np.full(500, 0.7), np.full(500, 0.25)])
    names = ["D", "rho", "th_wt", "th_tc", "tau"]
    intervals = calibration.posterior_intervals(draws, names, D_bar=4.0, rho_bar=5.0,
                                                interval_days=100.0)
    assert intervals["T_days"]["q50"] == pytest.approx(400.0)
    assert intervals["rho_per_day"]["q05"] == pytest.approx(5 * np.quantile(draws[:, 1], 0.05)
                                                            / 400)
    assert intervals["D_mm2_per_day"]["mean"] == pytest.approx(4 * draws[:, 0].mean() / 400)
