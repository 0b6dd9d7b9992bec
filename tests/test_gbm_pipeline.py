"""`bilo gbm run` end to end on the embedded patient (a smoke run: few training steps)."""

import json

import nibabel as nib
import numpy as np
import pytest

from apps.gbm.pipeline import dice, run_pipeline


def test_dice_of_known_masks():
    """Two 4-pixel masks sharing 2 pixels: DICE = 2·2/(4+4) = 0.5; identical masks: 1."""
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[0, :] = True
    b[0, :2] = b[1, :2] = True
    assert dice(a, b) == 0.5 and dice(a, a) == 1.0


@pytest.mark.slow
def test_pipeline_stages_and_outputs(tmp_path):
    """data/patient_default, 2 mm mesh, 20 + 20 BiLO steps: every stage runs (FEM at the initial
    guess and at the inferred parameters, DICE from u_NN and u_FEM) and leaves summary.json with
    the documented fields, report.png, density NIfTI volumes on the patient grid and XDMF files.
    With so few steps the parameters barely move: the check is of the plumbing, not accuracy."""
    summary = run_pipeline("data/patient_default", tmp_path, coarsen=2,
                           overrides={"pretrain_steps": 20, "finetune_steps": 20})
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["params_true"]["D"] == pytest.approx(1.7712624950742677)
    for field in ("method", "problem", "params", "params_true", "rel_err", "dice",
                  "u_rel_l2_vs_reference", "steps", "wall_s", "device", "check", "plans",
                  "warnings"):
        assert field in saved
    # 40 steps leave u_NN far from the FEM solution: the check fails and says so
    assert not saved["check"]["passed"] and "not the PDE's solution" in saved["warnings"][0]
    standard = nib.load(tmp_path / "plan_standard.nii.gz").get_fdata()
    model = nib.load(tmp_path / "plan_model.nii.gz").get_fdata()
    assert standard.sum() == model.sum() > 0  # the model's plan has the margin plan's area
    assert set(summary["dice"]) == {"WT_NN", "TC_NN", "WT_FEM", "TC_FEM"}
    assert all(0.0 <= v <= 1.0 for v in summary["dice"].values())
    seg = nib.load("data/patient_default/seg.nii.gz")
    density = nib.load(tmp_path / "density_fem.nii.gz")
    assert density.shape == seg.shape and np.allclose(density.affine, seg.affine)
    for name in ("report.png", "mesh.xdmf", "fem_initial_paraview.xdmf",
                 "fem_inferred_paraview.xdmf", "train/result.h5"):
        assert (tmp_path / name).exists(), name


def test_fem_interpolator_is_exact_for_linear_fields():
    """u(x, y, t) = 1 + 2x − 3y + 4t (mm, unit-time) on a 4×4-square triangulated mesh, stored at
    t = 0, 0.5, 1: the P1-in-space, linear-in-time interpolator used for the pre-training target
    reproduces it to rounding (≤ 1e-12) at random interior points given in dimensionless
    coordinates (x − c)/L, and gives 0 off the mesh."""
    from apps.gbm.pipeline import _interpolator, _locator
    from apps.gbm.scales import Scales
    from solvers.exchange import Mesh, SolutionFile

    n = 4
    xs, ys = np.meshgrid(np.linspace(0, 8, n + 1), np.linspace(0, 8, n + 1), indexing="ij")
    vertices = np.column_stack([xs.ravel(), ys.ravel()])
    index = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    cells = np.array([c for i in range(n) for j in range(n) for c in (
        (index[i, j], index[i + 1, j], index[i + 1, j + 1]),
        (index[i, j], index[i + 1, j + 1], index[i, j + 1]))])
    times = np.array([0.0, 0.5, 1.0])
    exact = lambda x, y, t: 1 + 2 * x - 3 * y + 4 * t  # noqa: E731
    u = np.stack([exact(vertices[:, 0], vertices[:, 1], t) for t in times])
    solution = SolutionFile(problem="gbm", params={}, axes=("t", "vertex"), grid={"t": times},
                            u=u, mesh=Mesh(vertices, cells))
    scales = Scales(L_mm=2.0, D_bar_mm2=0.2, rho_bar=5.0, centroid_mm=(4.0, 4.0))
    rng = np.random.default_rng(0)
    mm = rng.uniform(0.1, 7.9, (200, 2))
    t = rng.random(200)
    points = np.column_stack([(mm - 4.0) / 2.0, t])
    values = _interpolator(solution, scales)(points)
    assert np.abs(values - exact(mm[:, 0], mm[:, 1], t)).max() < 1e-12
    outside = _interpolator(solution, scales)(np.array([[10.0, 10.0, 0.5]]))
    assert outside[0] == 0.0
    # a shared locator (u0 and the anchors at one step's points) answers as a fresh one
    shared = _locator(solution, scales)
    for where in (points, points[::-1], points[::-1]):
        np.testing.assert_array_equal(_interpolator(solution, scales, locate=shared)(where),
                                      _interpolator(solution, scales)(where))


def _scaled_points(rng, n, centre, length, spread):
    """n random points around `centre` (mm) and their dimensionless coordinates."""
    mm = np.asarray(centre) + rng.uniform(-spread, spread, (n, 2))
    return mm, (mm - np.asarray(centre)) / length


def test_network_initial_condition_is_the_reference_gaussian():
    """GBMProblem.initial (jet arithmetic, in x̂ = (x − c)/L with width w/L) equals the numpy
    reference solvers.fem.reaction_diffusion.gaussian_initial_condition in mm (through
    apps.gbm.scales, as the FEM solves and the synthetic generator use it) to 1e-6 relative
    (float32 jets) at 200 points within 3 widths, and ∂u0/∂x̂ to 1e-5 of L·(−(x − c)/w²)·u0."""
    import torch

    from apps.gbm.problem import GBMProblem
    from apps.gbm.scales import scales_from_length
    from bilo.jet import Jet

    scales = scales_from_length(12.0, (30.0, -8.0))
    problem = GBMProblem(tissue=None, kappa=scales.diffusion_hat, rho_bar=scales.rho_bar,
                         ic_width=scales.ic_width_mm / scales.L_mm,
                         ic_amplitude=scales.ic_amplitude, brain_points=np.zeros((1, 2)),
                         pixel_size=0.1)
    mm, hat = _scaled_points(np.random.default_rng(2), 200, scales.centroid_mm, scales.L_mm,
                             3 * scales.ic_width_mm)
    x = Jet.variable("x", torch.as_tensor(hat[:, 0], dtype=torch.float32), ["x", "y"])
    y = Jet.variable("y", torch.as_tensor(hat[:, 1], dtype=torch.float32), ["x", "y"])
    u0 = problem.initial(x, y)
    reference = scales.initial_condition(mm)
    np.testing.assert_allclose(u0.value.numpy(), reference, rtol=1e-6, atol=1e-12)
    slope = -scales.L_mm * (mm[:, 0] - scales.centroid_mm[0]) / scales.ic_width_mm**2
    np.testing.assert_allclose(u0["x"].numpy(), slope * reference, rtol=1e-5, atol=1e-7)


def test_tissue_sampler_is_the_image_field_in_torch():
    """ImageSampler (torch grid_sample, what the residual reads) equals its numpy reference
    apps.gbm.patient.ImageField: P at x̂ is field(x_mm) and ∂P/∂x̂ is L·field.gradient(x_mm),
    to 1e-5 (float32) at 300 points inside a smoothed, rotated, anisotropic image."""
    import torch

    from apps.gbm.patient import ImageField
    from apps.gbm.problem import ImageSampler

    angle = 0.3
    affine = np.eye(3)
    affine[:2, :2] = np.array([[np.cos(angle), -np.sin(angle)],
                               [np.sin(angle), np.cos(angle)]]) @ np.diag([0.8, 1.3])
    affine[:2, 2] = [-20.0, 7.0]
    i, j = np.indices((60, 70)).astype(float)
    field = ImageField(0.5 + 0.4 * np.sin(i / 5) * np.cos(j / 7), affine, sigma_mm=1.5)
    centre, length = affine[:2, :2] @ [30.0, 35.0] + affine[:2, 2], 10.0
    sampler = ImageSampler(field, centre, length)
    mm, hat = _scaled_points(np.random.default_rng(4), 300, centre, length, 15.0)
    p, p_x, p_y = sampler(torch.as_tensor(hat[:, 0], dtype=torch.float32),
                          torch.as_tensor(hat[:, 1], dtype=torch.float32)).numpy()
    np.testing.assert_allclose(p, field(mm), atol=1e-5)
    np.testing.assert_allclose(np.column_stack([p_x, p_y]), length * field.gradient(mm),
                               atol=1e-5 * length)


@pytest.mark.parametrize("options, fragment", [
    ({"method": "bayes"}, "unknown method"), ({"preset": "fast"}, "presets"),
    ({"overrides": {"width": 0}}, "--width 0"), ({"n_ranks": 0}, "--np"),
    ({"method": "hmc", "contour_sd_mm": 0.0}, "--contour-sd"),
    ({"mask_loss": "dice"}, "--mask-loss"),
    ({"anchor_spread": -0.1}, "--anchor-spread must be a finite number >= 0"),
    ({"method": "pinn", "anchor_spread": 0.3}, "--anchor-spread: method pinn"),
    ({"theta0": {"D": -1.0}}, r"--theta0 D=-1.0: must be finite and in \[0.01, 100.0\]"),
    ({"theta0": {"tau": 0.3}}, "--theta0: tau: not a parameter of this run's model"),
    ({"stage": "fit"}, "--stage must be one of"),
])
def test_options_are_checked_before_any_stage(tmp_path, options, fragment):
    """`bilo gbm run` with an unknown method, preset, mask loss or stage, a zero width, --np 0,
    --contour-sd 0, --anchor-spread -0.1, anchors for PINN, an initial guess outside its
    bounds or of a parameter the model lacks (τ without a follow-up): InputError before the
    patient is meshed (nothing written in OUT)."""
    from solvers.common import InputError

    with pytest.raises(InputError, match=fragment):
        run_pipeline("data/patient_default", tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_pipeline_posterior_outputs(tmp_path):
    """`--method hmc` on data/patient_default, 2 mm mesh, 20 + 20 BiLO steps, one chain of
    4 + 6 draws: the posterior's intervals (q05 <= q50 <= q95 for every parameter, D·ρ, D/ρ
    and the physical values), the infiltration maps as NIfTI (probabilities in [0, 1]), and the
    exit status of the check (u_NN after 40 steps is no solution: EXIT_NOT_A_SOLUTION)."""
    from apps.gbm.pipeline import EXIT_NOT_A_SOLUTION
    from bilo.cli import main

    status = main(["gbm", "run", "data/patient_default", "--out", str(tmp_path),
                   "--method", "hmc", "--pretrain-steps", "20", "--steps", "20", "--chains",
                   "1", "--warmup", "4", "--samples", "6", "--leapfrog", "3"])
    assert status == EXIT_NOT_A_SOLUTION
    saved = json.loads((tmp_path / "summary.json").read_text())
    intervals = saved["posterior"]["intervals"]
    assert set(intervals) == {"D", "rho", "th_wt", "th_tc", "D*rho", "D/rho", "D_mm2_per_age",
                              "rho_per_age"}
    assert all(i["q05"] <= i["q50"] <= i["q95"] for i in intervals.values())
    probability = nib.load(tmp_path / "infiltration_probability.nii.gz").get_fdata()
    assert 0.0 <= probability.min() and probability.max() <= 1.0
    for name in ("density_mean.nii.gz", "density_sd.nii.gz", "train/posterior.h5",
                 "train/posterior.png"):
        assert (tmp_path / name).exists(), name


@pytest.mark.parametrize("tau", [0.1, 0.5, 0.9995, 1.0, 2.5])
def test_time_map_puts_the_scans_at_one_and_two(tau):
    """t(s) = (τ^s − 1)/(τ − 1): t(0) = 0, t(1) = 1, t(2) = 1 + τ exactly (to 1e-12), and the
    residual's dt/ds (torch, float64, with the series near τ = 1) equals the central difference
    of t(s) (step 1e-5) to 1e-8; `network_time` is its inverse (to 1e-12), at τ = 1 too."""
    import torch

    from apps.gbm.problem import network_time, time_map, time_rate

    assert time_map(np.array([0.0, 1.0, 2.0]), tau) == pytest.approx([0.0, 1.0, 1.0 + tau],
                                                                      abs=1e-12)
    s = np.linspace(0.0, 2.0, 9)
    h = 1e-5
    expected = (time_map(s + h, tau) - time_map(s - h, tau)) / (2 * h)
    rate = time_rate(torch.tensor(s, dtype=torch.float64), torch.tensor(tau, dtype=torch.float64))
    np.testing.assert_allclose(rate.numpy(), expected, atol=1e-8)
    np.testing.assert_allclose(network_time(time_map(s, tau), tau), s, atol=1e-12)


def test_inferred_origin_moves_the_seed_and_joins_the_network_inputs():
    """--infer-origin: parameters x0, y0 (in L, bounds ±0.5) join θ as PDE parameters (network
    inputs); at t = 0 the transformed output is the reference Gaussian centred at
    c + (x0, y0)·L in mm (to 1e-5 relative, float32), whatever the network's raw output."""
    import torch

    from apps.gbm.problem import ORIGIN_BOUND, GBMProblem, ModelChoices
    from apps.gbm.scales import scales_from_length
    from solvers.fem.reaction_diffusion import gaussian_initial_condition

    scales = scales_from_length(12.0, (30.0, -8.0))
    problem = GBMProblem(tissue=None, kappa=scales.diffusion_hat, rho_bar=scales.rho_bar,
                         ic_width=scales.ic_width_mm / scales.L_mm,
                         ic_amplitude=scales.ic_amplitude, brain_points=np.zeros((1, 2)),
                         pixel_size=0.1, model=ModelChoices(infer_origin=True))
    assert problem.params[-2:] == ("x0", "y0") and {"x0", "y0"} <= set(problem.pde_params)
    assert problem.bounds["x0"] == (-ORIGIN_BOUND, ORIGIN_BOUND)
    mm, hat = _scaled_points(np.random.default_rng(3), 200, scales.centroid_mm, scales.L_mm,
                             3 * scales.ic_width_mm)
    as_tensor = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    coords = {"x": as_tensor(hat[:, 0]), "y": as_tensor(hat[:, 1]), "t": torch.zeros(200)}
    theta = {"x0": torch.tensor(0.2), "y0": torch.tensor(-0.1)}
    u0 = problem.output(torch.randn(200), coords, theta, {})
    centre = np.asarray(scales.centroid_mm) + np.array([0.2, -0.1]) * scales.L_mm
    reference = gaussian_initial_condition(mm, centre, scales.ic_width_mm, scales.ic_amplitude)
    np.testing.assert_allclose(u0.numpy(), reference, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_pipeline_with_follow_up_and_pet(tmp_path):
    """data/patient_cortex (a follow-up after 145 days and a PET map, fitted), 2 mm mesh,
    20 + 20 BiLO steps: τ and the PET scale join θ; DICE for both scans; D and ρ per day with
    their truth (D_mm2_per_day = D·D̄/T and T = interval/τ, to 1e-9); the plans' coverage of
    the follow-up in [0, 1] and said to be in-sample. With --anchor-spread 0.1 pre-training
    records its fit to the 6 anchors (D, ρ, τ times e^±0.1) and to their tangents. (On this
    2 mm mesh the FEM at ρ·e^0.3 breaks down: docs/gbm.md.)"""
    import h5py

    summary = run_pipeline("data/patient_cortex", tmp_path, coarsen=2, use_pet=True,
                           overrides={"pretrain_steps": 20, "finetune_steps": 20},
                           anchor_spread=0.1)
    with h5py.File(tmp_path / "train" / "result.h5") as h5:
        for name in ("anchors", "tangents"):
            assert np.isfinite(h5["history"][name][:2]).all()
    assert sorted(p.name for p in tmp_path.glob("fem_anchor_*s.h5")) == sorted(
        f"fem_anchor_{name}_{side}.h5" for name in ("D", "rho", "tau")
        for side in ("plus", "minus"))
    params, physical = summary["params"], summary["physical"]
    assert {"tau", "pet_scale"} <= set(params)
    assert {"WT_FEM_followup", "TC_NN_followup"} <= set(summary["dice"])
    age = 145.22493897469067 / params["tau"]
    assert physical["T_days"] == pytest.approx(age, rel=1e-9)
    assert physical["D_mm2_per_day"] == pytest.approx(
        params["D"] * summary["scales"]["D_bar_mm2"] / age, rel=1e-9)
    assert {"D_mm2_per_day", "rho_per_day", "T_days"} <= set(summary["physical_true"])
    coverage = summary["plans"]["coverage"]
    assert all(0.0 <= v <= 1.0 for v in coverage.values())
    assert summary["plans"]["coverage_is"].startswith("in-sample")
    assert 0.0 < summary["pet"]["rel_l2_vs_fem"] and summary["params_true"]["pet_scale"] > 0


def test_observations_of_two_scans_and_pet():
    """data/patient_cortex: the observations are the brain's pixels at s = 1 (first scan's
    codes 0/1/2), the same pixels at s = 2 (the follow-up's codes), then the PET map at the
    first scan's whole-tumour pixels (s = 1): row counts (n, n, |WT ∩ region|), the codes
    summing to |WT| + |TC| per scan inside the region, and PET values equal to the map's. The
    model's PET scale guess is the map's 95th percentile over the core; without --fit-pet the
    map is not in the model."""
    from apps.gbm.patient import brain_mask, load_patient
    from apps.gbm.pipeline import model_choices, observations
    from apps.gbm.scales import patient_scales

    patient = load_patient("data/patient_cortex")
    scales = patient_scales(patient)
    region = brain_mask(patient)
    model = model_choices(patient, "bilo", use_pet=True)
    assert model.followup_days == pytest.approx(145.22493897469067)
    assert model.pet_scale0 == pytest.approx(np.percentile(patient.pet[patient.tc], 95))
    obs, (n_seg, n_pet) = observations(patient, region, scales, model)
    n = int(region.sum())
    assert n_seg == 2 * n and n_pet == int((patient.wt & region).sum())
    t = obs.points[:, 2]
    assert (t[:n] == 1.0).all() and (t[n:2 * n] == 2.0).all() and (t[2 * n:] == 1.0).all()
    for first, (wt, tc) in ((0, (patient.wt, patient.tc)),
                            (n, (patient.followup_wt, patient.followup_tc))):
        assert obs.values[first:first + n].sum() == (wt & region).sum() + (tc & region).sum()
    np.testing.assert_array_equal(obs.values[2 * n:], patient.pet[patient.wt & region])
    assert model_choices(patient, "bilo").pet_scale0 is None  # PET only when asked


def test_segmentation_grid_matches_the_observation_points():
    """data/patient_cortex with its follow-up, `--method hmc`: the sampler's likelihood is
    MaskContours over both scans' rows. Every neighbour it lists is an observation point of the
    same scan one pixel away along the listed axis (the dimensionless points of
    `observations`, spacing 1 mm / L), and the contour sd is --contour-sd / L."""
    from apps.gbm.patient import brain_mask, load_patient
    from apps.gbm.pipeline import model_choices, observations, segmentation_grid
    from apps.gbm.problem import GBMProblem
    from apps.gbm.scales import patient_scales
    from bilo.likelihoods import MaskContours

    patient = load_patient("data/patient_cortex")
    scales = patient_scales(patient)
    region = brain_mask(patient)
    model = model_choices(patient, "hmc", contour_sd_mm=1.5)
    obs, (n_seg, _) = observations(patient, region, scales, model)
    grid = segmentation_grid(patient, region, scales, model)
    assert grid.neighbours.shape == (n_seg, 4) and n_seg == 2 * int(region.sum())
    rows, sides = np.nonzero(grid.neighbours >= 0)
    step = obs.points[grid.neighbours[rows, sides]] - obs.points[rows]
    assert (step[:, 2] == 0.0).all()  # the same scan
    axis = sides // 2
    distance = np.abs(step[:, 0]) + np.abs(step[:, 1])
    np.testing.assert_allclose(distance, np.asarray(grid.spacing)[axis], rtol=1e-12)
    np.testing.assert_allclose(grid.spacing, [1.0 / scales.L_mm] * 2, rtol=1e-12)
    problem = GBMProblem.__new__(GBMProblem)
    problem._declare(model, (n_seg, 0), grid)
    assert isinstance(problem.likelihood, MaskContours)
    assert problem.likelihood.sd == pytest.approx(1.5 / scales.L_mm)
    # the point estimate takes eq. 36 unless --mask-loss contours
    point = model_choices(patient, "bilo")
    assert not isinstance(GBMProblem.declaration(point).likelihood, MaskContours)
    problem._declare(model_choices(patient, "bilo", mask_loss="contours"), (n_seg, 0), grid)
    assert isinstance(problem.likelihood, MaskContours)


def test_a_folder_holding_a_run_is_refused(tmp_path, capsys):
    """`bilo gbm run` into an OUT holding a run (its summary.json, or a train/ folder left by
    an interrupted run) exits 2 with one line naming OUT and what it holds, before the patient
    is meshed, and leaves every file as it was; --overwrite is how to replace it."""
    from bilo.cli import main

    for marker in ("summary.json", "train"):
        out = tmp_path / marker.split(".")[0]
        out.mkdir()
        if marker == "train":
            (out / marker).mkdir()
        else:
            (out / marker).write_text("{}")
        before = sorted(p.name for p in out.iterdir())
        assert main(["gbm", "run", "data/patient_default", "--out", str(out)]) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and f"{out}: holds a run ({marker})" in error[0]
        assert "--overwrite" in error[0]
        assert sorted(p.name for p in out.iterdir()) == before
    assert (tmp_path / "summary" / "summary.json").read_text() == "{}"


def test_anchors_by_default_with_a_follow_up_and_without_a_breakdown(monkeypatch, tmp_path):
    """--anchor-spread: by default 0.3 for bilo and hmc when a follow-up is fitted, else 0
    (none; also for PINN); a value given is kept, 0 included. `fem_anchors` (FEM solves
    replaced by stand-ins) gives each growth parameter its two anchors at θ0·e^±S in the order
    plus, minus and the tangent (u+ − u−)/(θ+ − θ−); a parameter whose solve raises Diverged
    gets neither, and one warning naming it."""
    from types import SimpleNamespace

    import apps.gbm.pipeline as pipeline
    from solvers.common import Diverged

    assert pipeline.anchor_spread_for(None, "bilo", True) == 0.3
    assert pipeline.anchor_spread_for(None, "hmc", True) == 0.3
    assert pipeline.anchor_spread_for(None, "bilo", False) == 0.0
    assert pipeline.anchor_spread_for(None, "pinn", True) == 0.0
    assert pipeline.anchor_spread_for(0.0, "bilo", True) == 0.0
    assert pipeline.anchor_spread_for(0.1, "bilo", False) == 0.1

    def solve(mesh_path, out, scales, theta, n_ranks, ic, reuse=False):
        if theta["rho"] > 1.2:
            raise Diverged("Newton's iteration did not converge")
        return theta

    monkeypatch.setattr(pipeline, "_fem_solve", solve)
    monkeypatch.setattr(pipeline, "_interpolator", lambda theta, scales, tau, locate: (
        lambda points: points[:, 0] * theta["D"] + theta["tau"]))
    problem = SimpleNamespace(initial_guess={"D": 1.0, "rho": 1.0, "tau": 0.5},
                              bounds={"D": (0.01, 100.0), "rho": (0.01, 100.0),
                                      "tau": (0.01, 10.0)})
    case = SimpleNamespace(problem=problem, mesh_path=None, scales=None, ic=None, reuse=False,
                           anchorless=())
    anchors, tangents, lines = pipeline.fem_anchors(case, 0.3, 1, tmp_path, None)
    assert [a.theta for a in anchors] == [{"D": np.exp(0.3)}, {"D": np.exp(-0.3)},
                                          {"tau": 0.5 * np.exp(0.3)}, {"tau": 0.5 * np.exp(-0.3)}]
    assert sorted(tangents) == ["D", "tau"]
    points = np.array([[2.0, 0.0, 0.0]])
    assert float(tangents["D"](points)[0]) == pytest.approx(2.0)
    assert float(tangents["tau"](points)[0]) == pytest.approx(1.0)
    assert len(lines) == 1 and lines[0].startswith("no anchors for rho: the FEM at rho = 1.35")


def test_an_earlier_stages_fem_solution_is_read_only_at_the_same_parameters(tmp_path):
    """`_fem_solve(..., reuse=True)` (the train and evaluate stages) reads OUT/NAME.h5 instead
    of solving: the file's physical parameters (D·D̄, ρ·ρ̄, the seed's place and shape) and
    output times must be this run's (to 1e-12 relative), else one line naming the file; a
    missing file names --stage prepare. No solver is called (none is importable where the
    train stage runs)."""
    from apps.gbm.pipeline import FEM_TIMES, _fem_solve
    from apps.gbm.scales import Scales
    from solvers.common import InputError
    from solvers.exchange import Mesh, SolutionFile, write_solution

    scales = Scales(L_mm=2.0, D_bar_mm2=0.2, rho_bar=5.0, centroid_mm=(4.0, 4.0))
    ic = {"amplitude": 0.5, "width_mm": 2.5}
    theta = {"D": 1.5, "rho": 0.8}
    physical = {"D": 0.3, "rho": 4.0, "T": 1.0, "amp": 0.5, "x0": 4.0, "y0": 4.0, "sigma": 2.5}
    vertices = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]])
    times = np.linspace(0.0, 1.0, FEM_TIMES)
    path = tmp_path / "fem_initial.h5"
    write_solution(path, SolutionFile(problem="fkpp2d", params=physical, axes=("t", "vertex"),
                                      grid={"t": times}, u=np.ones((FEM_TIMES, 3)),
                                      mesh=Mesh(vertices, np.array([[0, 1, 2]]))))
    read = _fem_solve(None, path, scales, theta, 1, ic, reuse=True)
    np.testing.assert_array_equal(read.u, np.ones((FEM_TIMES, 3)))
    with pytest.raises(InputError, match=r"fem_initial.h5: solved at other parameters"):
        _fem_solve(None, path, scales, {**theta, "rho": 0.8 * (1 + 1e-9)}, 1, ic, reuse=True)
    with pytest.raises(InputError, match=r"fem_other.h5: missing; .* --stage prepare"):
        _fem_solve(None, tmp_path / "fem_other.h5", scales, theta, 1, ic, reuse=True)


def test_a_stage_continues_only_its_own_run(tmp_path, capsys):
    """`bilo gbm run --stage train|evaluate` continues the run in OUT: without its record
    (stages.json), before the stage it follows, or with other options than the earlier stages
    it exits 2 with one line saying which (the option, by its dotted name), before any mesh or
    FEM file is written; so does a record that is not one. The sampler (hmc) runs in one go
    only; --theta0 takes each name once."""
    from bilo.cli import main

    out = tmp_path / "run"
    patient = ["gbm", "run", "data/patient_default", "--out", str(out)]
    assert main([*patient, "--stage", "train"]) == 2
    assert "stages.json: missing; --stage train continues" in capsys.readouterr().err
    out.mkdir()
    (out / "stages.json").write_text(json.dumps({
        "done": ["prepare"], "options": {"method": "pinn"}, "notes": [], "dropped": []}))
    assert main([*patient, "--stage", "evaluate"]) == 2
    assert "stage train is not done; run --stage train first" in capsys.readouterr().err
    assert main([*patient, "--stage", "train"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "method 'pinn' -> 'bilo'" in error[0]
    assert "model.mask_loss None -> 'eq36'" in error[0]
    assert main([*patient, "--stage", "prepare"]) == 2  # a new run is refused over it
    assert "holds a run (stages.json)" in capsys.readouterr().err
    assert main([*patient, "--stage", "train", "--method", "hmc"]) == 2
    assert "method hmc samples in one piece" in capsys.readouterr().err
    assert main([*patient, "--theta0", "D=1", "--theta0", "D=2"]) == 2
    assert "--theta0: D given more than once" in capsys.readouterr().err
    (out / "stages.json").write_text("{not json")
    assert main([*patient, "--stage", "train"]) == 2
    assert "stages.json: not a record of --stage prepare" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["stages.json"]


@pytest.mark.slow
def test_a_staged_run_is_the_run_in_one_go(tmp_path, monkeypatch):
    """data/patient_cortex (both scans, anchors by default), 2 mm mesh, 20 + 20 BiLO steps: run
    as --stage prepare, train and evaluate into one OUT, with the FEM solver unavailable during
    train (as on a GPU machine without dolfinx), it gives the parameters and every DICE of the
    run in one go exactly (same seed, same CPU arithmetic), and the same warnings: on this
    mesh the anchor at ρ·e^0.3 breaks down in prepare, and train and evaluate drop it too. The
    summary's wall times are the whole run's. A new prepare (--overwrite) removes the network,
    so that no later train resumes it."""
    import sys

    import solvers.fem.cli

    kwargs = {"coarsen": 2, "overrides": {"pretrain_steps": 20, "finetune_steps": 20}}
    whole = run_pipeline("data/patient_cortex", tmp_path / "all", **kwargs)
    staged = tmp_path / "staged"
    assert run_pipeline("data/patient_cortex", staged, stage="prepare", **kwargs) is None
    with monkeypatch.context() as patch:
        patch.setattr(solvers.fem.cli, "run_fem_solve", lambda *a, **k: pytest.fail("solved"))
        patch.setitem(sys.modules, "dolfinx", None)  # importing it raises ImportError
        assert run_pipeline("data/patient_cortex", staged, stage="train", **kwargs) is None
    assert json.loads((staged / "stages.json").read_text())["done"] == ["prepare", "train"]
    summary = run_pipeline("data/patient_cortex", staged, stage="evaluate", **kwargs)
    assert summary["params"] == whole["params"] and summary["dice"] == whole["dice"]
    assert summary["warnings"] == whole["warnings"]
    assert any(line.startswith("no anchors for rho") for line in summary["warnings"])
    assert set(whole["wall_s_by_stage"]) <= set(summary["wall_s_by_stage"])
    assert run_pipeline("data/patient_cortex", staged, stage="prepare", overwrite=True,
                        **kwargs) is None
    assert not (staged / "train").exists() and not (staged / "summary.json").exists()


def test_an_initial_guess_replaces_the_models():
    """--theta0 (`ModelChoices.theta0`): the declared initial values of the parameters named
    become the given ones, the others stay, and the follow-up's τ (declared from the interval)
    takes one too; the options' θ0, the FEM solves' and pre-training's, is that guess."""
    from apps.gbm.problem import GBMProblem, ModelChoices
    from bilo.strategies import make_options

    declared = GBMProblem.declaration(ModelChoices(followup_days=146.0)).initial_guess
    model = ModelChoices(followup_days=146.0, theta0=(("D", 2.5), ("tau", 0.3)))
    problem = GBMProblem.declaration(model)
    assert problem.initial_guess == {**declared, "D": 2.5, "tau": 0.3}
    assert make_options(problem, "bilo").theta0 == problem.initial_guess
