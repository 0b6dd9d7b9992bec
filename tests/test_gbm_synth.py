"""Synthetic GBM patients (apps.gbm.synth) and the characteristic scales (apps.gbm.scales).

The synthetic runs use fast settings (mesh coarsened by 2, 25 time steps: ~3 s per forward
solve); the embedded default patient is regenerated once with the default settings (~15 s)."""

import json
from pathlib import Path

import numpy as np
import pytest

from apps.gbm.scales import (
    IC_AMPLITUDE,
    IC_WIDTH_MM,
    RHO_BAR,
    estimate_scales,
    initial_condition,
    patient_scales,
    scales_from_length,
)
from solvers.exchange import InputError

nib = pytest.importorskip("nibabel")
pytest.importorskip("nilearn")

EMBEDDED = Path(__file__).resolve().parents[1] / "data" / "patient_default"
CORTEX = EMBEDDED.parent / "patient_cortex"
FAST = {"coarsen": 2, "n_steps": 25}
SEED = 7


def test_scales_rule():
    """The rule of apps.gbm.scales on a disc of radius 12 px with 0.5 mm pixels: L = the
    equivalent radius (6 mm within 2%), rho_bar = 5, D_bar = L^2/20 so that the front speed
    2 sqrt(D_bar rho_bar) = L per unit time; centre = the TC centroid in mm; the initial
    condition is 0.5 exp(-r^2/(2 (2.5 mm)^2)) there."""
    affine2d = np.array([[0.5, 0.0, -10.0], [0.0, 0.5, 4.0], [0.0, 0.0, 1.0]])
    i, j = np.indices((60, 60))
    wt = (i - 30) ** 2 + (j - 20) ** 2 <= 12**2
    tc = (i - 32) ** 2 + (j - 20) ** 2 <= 4**2
    scales = estimate_scales(wt, tc, affine2d)
    assert scales.L_mm == pytest.approx(np.sqrt(wt.sum() * 0.25 / np.pi))
    assert scales.L_mm == pytest.approx(6.0, rel=0.02)
    assert scales.rho_bar == RHO_BAR == 5.0
    assert scales.D_bar_mm2 == pytest.approx(scales.L_mm**2 / 20)
    assert scales.front_speed_mm == pytest.approx(scales.L_mm)
    assert scales.diffusion_hat == pytest.approx(1 / (4 * RHO_BAR))
    assert scales.centroid_mm == pytest.approx((32 * 0.5 - 10.0, 20 * 0.5 + 4.0))
    points = np.array([scales.centroid_mm, np.add(scales.centroid_mm, [IC_WIDTH_MM, 0.0])])
    np.testing.assert_allclose(scales.initial_condition(points),
                               [IC_AMPLITUDE, IC_AMPLITUDE * np.exp(-0.5)])
    np.testing.assert_allclose(initial_condition(points, (0.0, 0.0), 1.0, 1.0),
                               np.exp(-0.5 * np.sum(points**2, axis=1)))
    assert scales_from_length(20.0, (0, 0)).D_bar_mm2 == pytest.approx(20.0)
    with pytest.raises(InputError, match="tumour-core mask is empty"):
        estimate_scales(wt, np.zeros_like(tc), affine2d)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Seed 7 with fast settings, twice (for determinism)."""
    from apps.gbm.synth import synthesize_patient

    first = tmp_path_factory.mktemp("synth_a")
    second = tmp_path_factory.mktemp("synth_b")
    truth = synthesize_patient(SEED, first, **FAST)
    again = synthesize_patient(SEED, second, **FAST)
    return first, truth, second, again


def test_synthetic_patient_loads_and_is_consistent(synthetic, report):
    """Seed 7, coarsen 2, 25 steps: the folder loads with load_patient (slice "auto" = the
    tumour slice of truth.json), BraTS <= 2021 labels {0, 1, 2, 4} on that slice only,
    TC inside WT, WT >= 100 px and TC >= 30 px, areas equal to truth.json's; tissue maps in
    [0, 1]; the cropped affine puts the slice at the template's z; truth.json has the draws
    inside their ranges, the generation and estimated scales (the estimated ones reproduced
    from the loaded masks) and D, rho as the inference sees them."""
    from apps.gbm.patient import load_patient
    from apps.gbm.synth import MIN_TC_PX, MIN_WT_PX, RANGES

    folder, truth, _, _ = synthetic
    patient = load_patient(folder)
    report(f"seed {SEED} (coarsen 2, 25 steps): attempt {truth['attempt']}, WT "
           f"{patient.wt_area_px} px, TC {patient.tc_area_px} px, D {truth['D']:.3f}, rho "
           f"{truth['rho']:.3f}, u_c {truth['u_c_wt']:.3f}/{truth['u_c_tc']:.3f}, "
           f"L_gen {truth['scales_generation']['L_mm']:.1f} mm, L_est "
           f"{truth['scales_estimated']['L_mm']:.1f} mm, {truth['wall_s']:.1f} s")
    assert patient.convention == "brats2021"
    assert patient.slice_index == truth["slice_index"]
    assert patient.wt_area_px == truth["areas_px"]["wt"] >= MIN_WT_PX
    assert patient.tc_area_px == truth["areas_px"]["tc"] >= MIN_TC_PX
    assert not (patient.tc & ~patient.wt).any()
    seg = np.asarray(nib.load(folder / "seg.nii.gz").dataobj)
    assert set(np.unique(seg)) == {0, 1, 2, 4}
    assert np.flatnonzero(seg.any(axis=(0, 1))).tolist() == [truth["slice_index"]]
    for role in ("wm", "gm"):
        image = nib.load(folder / f"{role}.nii.gz")
        assert image.get_data_dtype() == np.float32
        data = np.asarray(image.dataobj)
        assert data.min() >= 0.0 and data.max() <= 1.0
    z = (patient.affine @ [0.0, 0.0, patient.slice_index, 1.0])[2]
    assert z == pytest.approx(truth["slice_z_mm"])

    for name in ("seed", "slice_index", "centre_mm", "D", "rho", "u_c_wt", "u_c_tc",
                 "scales_generation", "scales_estimated", "areas_px", "model",
                 "generator_version", "D_times_D_bar_mm2", "rho_times_rho_bar",
                 "D_as_estimated", "rho_as_estimated"):
        assert name in truth, name
    assert truth["seed"] == SEED
    for name, (low, high) in RANGES.items():
        value = truth["scales_generation"]["L_mm"] if name == "L_mm" else truth[name]
        assert low <= value <= high, name
    gen, est = truth["scales_generation"], truth["scales_estimated"]
    loaded = patient_scales(patient)
    assert loaded.L_mm == pytest.approx(est["L_mm"])
    assert loaded.centroid_mm == pytest.approx(tuple(est["centroid_mm"]))
    assert gen["D_bar_mm2"] == pytest.approx(gen["L_mm"] ** 2 / 20)
    assert truth["D_as_estimated"] == pytest.approx(
        truth["D"] * (gen["L_mm"] / est["L_mm"]) ** 2)
    assert truth["D_times_D_bar_mm2"] == pytest.approx(truth["D"] * gen["D_bar_mm2"])
    assert truth["rho_as_estimated"] == pytest.approx(truth["rho"])
    assert json.loads((folder / "truth.json").read_text())["D"] == truth["D"]
    # the tumour grew around the drawn centre: it is inside WT
    centre_ij = np.rint(patient.mm_to_voxel(truth["centre_mm"])[0]).astype(int)
    assert patient.wt[tuple(centre_ij)]


def test_same_seed_same_patient(synthetic):
    """Determinism: a second run with the same seed and settings writes the same labels and
    the same draws."""
    first, truth, second, again = synthetic
    seg_a = np.asarray(nib.load(first / "seg.nii.gz").dataobj)
    seg_b = np.asarray(nib.load(second / "seg.nii.gz").dataobj)
    np.testing.assert_array_equal(seg_a, seg_b)
    for name in ("D", "rho", "u_c_wt", "u_c_tc", "centre_mm", "attempt"):
        assert truth[name] == again[name]


def test_embedded_patient_is_seed_0(tmp_path, report):
    """Regenerating seed 0 with the default settings (coarsen 1, 50 steps; no follow-up, to
    save its solve) reproduces data/patient_default, which was made before the follow-up and
    PET draws were added after the first scan's: the same draws and the same label map (up to
    0.5% of the tumour pixels, for round-off differences of the solver between machines;
    measured 0)."""
    from apps.gbm.synth import synthesize_patient

    truth = synthesize_patient(0, tmp_path, followup=False)
    stored = json.loads((EMBEDDED / "truth.json").read_text())
    seg_new = np.asarray(nib.load(tmp_path / "seg.nii.gz").dataobj)
    seg_old = np.asarray(nib.load(EMBEDDED / "seg.nii.gz").dataobj)
    differing = int((seg_new != seg_old).sum())
    report(f"seed 0 regenerated in {truth['wall_s']:.1f} s: {differing} label(s) differ from "
           "data/patient_default")
    for name in ("D", "rho", "u_c_wt", "u_c_tc", "centre_mm", "slice_index"):
        assert truth[name] == pytest.approx(stored[name]), name
    assert differing <= 0.005 * (seg_old > 0).sum()


def test_fixed_quantities_reproduce_a_patient(synthetic, tmp_path, capsys, report):
    """`bilo gbm synth` with every drawn quantity fixed to seed 7's accepted ones (--centre,
    --L, --D, --rho, --thresholds, --T-days, --interval-days, --pet-scale) and another seed
    (123) writes seed 7's label maps exactly, the first scan's and the follow-up's: nothing
    is left to the seed but the PET noise, truth.json lists the fixed quantities, and the
    one-line summary names them."""
    from bilo.cli import main

    folder, truth, _, _ = synthetic
    x, y = truth["centre_mm"]
    out = tmp_path / "fixed"
    code = main(["gbm", "synth", "--seed", "123", "--out", str(out), "--coarsen", "2",
                 "--n-steps", "25", f"--centre={x!r},{y!r}",
                 "--L", repr(truth["scales_generation"]["L_mm"]), "--D", repr(truth["D"]),
                 "--rho", repr(truth["rho"]),
                 "--thresholds", f"{truth['u_c_wt']!r},{truth['u_c_tc']!r}",
                 "--T-days", repr(truth["T_days"]),
                 "--interval-days", repr(truth["interval_days"]),
                 "--pet-scale", repr(truth["pet_scale"])])
    line = capsys.readouterr().out.strip()
    assert code == 0
    fixed = json.loads((out / "truth.json").read_text())
    report(f"all fixed, seed 123: {line}")
    assert fixed["fixed"] == sorted(["centre_mm", "L_mm", "D", "rho", "thresholds", "T_days",
                                     "interval_days", "pet_scale"])
    assert "fixed: " in line and fixed["attempt"] == 0
    for name in ("centre_mm", "D", "rho", "u_c_wt", "u_c_tc", "T_days", "interval_days",
                 "pet_scale", "D_mm2_per_day", "rho_per_day"):
        assert fixed[name] == truth[name], name
    for name in ("seg.nii.gz", "followup/seg.nii.gz"):
        np.testing.assert_array_equal(np.asarray(nib.load(out / name).dataobj),
                                      np.asarray(nib.load(folder / name).dataobj))


def test_fixing_one_quantity_keeps_the_other_draws(synthetic, tmp_path):
    """Seed 7 with D fixed to 1.0 (drawn: 1.465): the draws are made all the same, so the
    centre, L, rho and thresholds are seed 7's (both accepted at attempt 0; with D = 1 the
    tumour is smaller: WT 779 px against 939, measured)."""
    from apps.gbm.synth import synthesize_patient

    _, truth, _, _ = synthetic
    partial = synthesize_patient(SEED, tmp_path, **FAST, fixed={"D": 1.0})
    assert partial["fixed"] == ["D"] and partial["D"] == 1.0
    assert truth["attempt"] == partial["attempt"] == 0
    for name in ("centre_mm", "rho", "u_c_wt", "u_c_tc", "scales_generation"):
        assert partial[name] == truth[name], name
    assert partial["areas_px"]["wt"] < truth["areas_px"]["wt"]


@pytest.mark.parametrize("args, fragment", [
    (["--D", "-1"], "--D must be a finite number > 0"),
    (["--rho", "abc"], "--rho: expected a number"),
    (["--thresholds", "0.7,0.3"], "0 < u_c_wt < u_c_tc < 1"),
    (["--thresholds", "0.3"], "--thresholds: expected two"),
    (["--centre", "1,2,3"], "--centre: expected two"),
    (["--seed", "1.5"], "--seed: expected an integer"),
    (["--coarsen", "0"], "--coarsen must be an integer >= 1"),
    (["--slice", "3", "--slice-mm", "20"], "give one of them"),
    (["--slice", "999"], "slice 999: outside the template"),
    (["--centre=-200,0"], "not on the brain mesh"),
    (["--T-days", "0"], "--T-days must be a finite number > 0"),
    (["--interval-days", "nan"], "--interval-days must be a finite number > 0"),
    (["--interval-days", "ninety"], "--interval-days: expected a number"),
    (["--pet-scale", "-2"], "--pet-scale must be a finite number > 0"),
    (["--pet-noise", "-0.1"], "--pet-noise must be >= 0"),
    (["--pet-noise", "inf"], "--pet-noise must be finite"),
    (["--interval-days", "90", "--no-followup"], "--interval-days and --no-followup"),
])
def test_synth_rejects_bad_values(tmp_path, capsys, args, fragment):
    """Bad `bilo gbm synth` values: exit code 2, one line on stderr naming the flag, no
    traceback and no patient folder."""
    from bilo.cli import main

    out = tmp_path / "patient"
    assert main(["gbm", "synth", "--out", str(out), *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], lines
    assert not out.exists()


def test_time_scale_followup_and_pet(synthetic, report):
    """Seed 7 (coarsen 2, 25 steps): T_days lies in the range of T that puts the physical
    parameters in PHYSICAL_RANGES, and they are D*D_bar_gen/T (mm^2/day), rho*rho_bar/T
    (/day) and 2 sqrt(D rho) (mm/day), each inside its range; the interval lies in
    INTERVAL_DAYS and equals patient.json's; t2 = 1 + interval/T. The loaded follow-up's WT
    strictly contains the first scan's WT (a Fisher-KPP front advances), and its TC contains
    the first TC; the PET map is 0 outside WT, positive inside, and its mean over WT divided by
    the scale lies between u_c^WT and 1 (u > u_c^WT there), its maximum below the scale times
    (u_max + 5 noise sds)."""
    from apps.gbm.patient import load_patient
    from apps.gbm.synth import INTERVAL_DAYS, PHYSICAL_RANGES, time_scale_range

    folder, truth, _, _ = synthetic
    patient = load_patient(folder)
    gen = truth["scales_generation"]
    D_mm2, rho = truth["D"] * gen["D_bar_mm2"], truth["rho"] * gen["rho_bar"]
    T, interval = truth["T_days"], truth["interval_days"]
    low, high = time_scale_range(D_mm2, rho)
    assert [low, high] == truth["T_days_range"] and low <= T <= high
    assert truth["D_mm2_per_day"] == pytest.approx(D_mm2 / T, rel=1e-12)
    assert truth["rho_per_day"] == pytest.approx(rho / T, rel=1e-12)
    assert truth["front_speed_mm_per_day"] == pytest.approx(
        2 * np.sqrt(D_mm2 * rho) / T, rel=1e-12)
    for name, (lo, hi) in PHYSICAL_RANGES.items():
        assert lo <= truth[name] <= hi, name
    assert INTERVAL_DAYS[0] <= interval <= INTERVAL_DAYS[1]
    assert json.loads((folder / "patient.json").read_text()) == {"interval_days": interval}
    assert patient.interval_days == interval
    assert truth["followup"]["t2"] == pytest.approx(1 + interval / T)

    first, later = patient.wt, patient.followup_wt
    grown = int(later.sum() - first.sum())
    report(f"seed {SEED}: T {T:.0f} days (range {low:.0f}-{high:.0f}), D "
           f"{truth['D_mm2_per_day']:.4f} mm^2/day, rho {truth['rho_per_day']:.4f} /day, speed "
           f"{truth['front_speed_mm_per_day']:.3f} mm/day; follow-up after {interval:.0f} days "
           f"(t2 = {truth['followup']['t2']:.3f}): WT {first.sum()} -> {later.sum()} px, TC "
           f"{patient.tc.sum()} -> {patient.followup_tc.sum()} px; PET scale "
           f"{truth['pet_scale']:.3f}")
    assert not (first & ~later).any() and grown > 0
    assert not (patient.tc & ~patient.followup_tc).any()
    assert truth["followup"]["areas_px"] == {"wt": int(later.sum()),
                                             "tc": int(patient.followup_tc.sum())}

    pet, scale = patient.pet, truth["pet_scale"]
    assert not pet[~first].any() and (pet[first] > 0).all()
    assert truth["u_c_wt"] < pet[first].mean() / scale < 1.0
    assert pet.max() < scale * (truth["solver"]["u_max"] + 5 * truth["pet_noise"])


def test_pet_noise_and_no_followup(synthetic, tmp_path):
    """Seed 7 again with --no-followup and PET noise 0: the same first scan and draws (the
    follow-up and PET draws come after it, and are made all the same), no followup/ and no
    patient.json, truth's interval None. The noise-free PET divided by the scale is u(1): above
    u_c^WT on all of WT and above u_c^TC exactly on TC. The noisy PET of the first run minus the
    noise-free one, over scale times the noise level, is the standard normal noise: mean
    within 4 standard errors of 0 and sd within 10 % of 1 (no pixel clipped)."""
    from apps.gbm.patient import load_patient
    from apps.gbm.synth import synthesize_patient

    folder, truth, _, _ = synthetic
    clean = synthesize_patient(SEED, tmp_path, **FAST, followup=False, pet_noise=0.0)
    for name in ("D", "rho", "u_c_wt", "u_c_tc", "centre_mm", "T_days", "pet_scale"):
        assert clean[name] == truth[name], name
    assert clean["interval_days"] is None and clean["followup"] is None
    assert not (tmp_path / "followup").exists() and not (tmp_path / "patient.json").exists()
    patient = load_patient(tmp_path)
    assert not patient.has_followup
    noisy = load_patient(folder)
    np.testing.assert_array_equal(patient.labels, noisy.labels)
    scale = truth["pet_scale"]
    u = patient.pet / scale
    wt, tc = patient.wt, patient.tc
    assert (u[wt] > truth["u_c_wt"]).all()
    np.testing.assert_array_equal((u > truth["u_c_tc"]) & wt, tc)
    assert (noisy.pet[wt] > 0).all()
    eps = (noisy.pet[wt] - patient.pet[wt]) / (scale * truth["pet_noise"])
    assert abs(eps.mean()) < 4 / np.sqrt(eps.size)
    assert eps.std() == pytest.approx(1.0, rel=0.1)


@pytest.mark.slow
def test_cortex_patient_regenerates(tmp_path, report):
    """The command of data/patient_cortex/README.md (seed 4, centre (30, -25) mm, defaults;
    about 25 s on one core) reproduces the folder: the same draws, T, interval and PET scale,
    the first scan's and the follow-up's labels up to 0.5 % of the tumour pixels (round-off
    of the solver between machines; measured 0), and the PET map to 1e-4."""
    from apps.gbm.synth import synthesize_patient

    truth = synthesize_patient(4, tmp_path, fixed={"centre_mm": (30, -25)})
    stored = json.loads((CORTEX / "truth.json").read_text())
    for name in ("D", "rho", "u_c_wt", "u_c_tc", "centre_mm", "T_days", "interval_days",
                 "pet_scale"):
        assert truth[name] == pytest.approx(stored[name]), name
    differing = []
    for name in ("seg.nii.gz", "followup/seg.nii.gz"):
        new = np.asarray(nib.load(tmp_path / name).dataobj)
        old = np.asarray(nib.load(CORTEX / name).dataobj)
        differing.append(int((new != old).sum()))
        assert differing[-1] <= 0.005 * (old > 0).sum(), name
    pet_new = np.asarray(nib.load(tmp_path / "pet.nii.gz").dataobj)
    pet_old = np.asarray(nib.load(CORTEX / "pet.nii.gz").dataobj)
    report(f"patient_cortex regenerated in {truth['wall_s']:.1f} s: {differing} labels "
           f"differ (first scan, follow-up), PET max difference "
           f"{np.abs(pet_new - pet_old).max():.2g}")
    np.testing.assert_allclose(pet_new, pet_old, atol=1e-4)
