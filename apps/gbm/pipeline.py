"""`bilo gbm run`: a patient folder in, fitted growth parameters and a report out.

Stages: patient (NIfTI) → brain mask and mesh (meshes/) → characteristic scales → FEM solve at
the initial guess (MPI, through HDF5) → BiLO (or PINN) pre-training and fine-tuning → FEM
solve at the inferred parameters (MPI) → DICE of WT and TC from u_NN and from u_FEM → OUT:
summary.json, report.png, density_nn.nii.gz / density_fem.nii.gz on the patient grid, the mesh
and the FEM solutions as XDMF for ParaView, the training run in OUT/train/.

With `method="hmc"` (B-BiLO, `bilo.bayes`) the fit is a posterior: credible intervals, the
posterior mean and sd of u at the scan and the probability of infiltration beyond the visible
tumour (`apps.gbm.calibration`), density_mean / density_sd / infiltration_probability NIfTI
volumes, and the corner plot in OUT/train/posterior.png; the FEM solve and the DICE scores are
at the posterior mean. Every method writes the standard 15 mm plan and the model-based plan of
the same area (plan_standard / plan_model NIfTI masks) and their coverage of the follow-up
scan's whole tumour when the patient has one.

In pieces (`stage`): "prepare" (mesh, scales, the FEM solves at the initial guess and the
anchors), "train" (the network, reading those solutions: no dolfinx, no MPI, so it runs on a
GPU machine) and "evaluate" (the FEM at the answer and everything after it), each continuing the
run that OUT holds with the same options (OUT/stages.json); "all" (the default) runs them in one
go. The sampler (hmc) runs in one go only.

Reliability: u_NN at the answer is compared with the FEM solution there; when it is further
than `u_tolerance` (relative L2 on the training region at the scan) or its DICE differs from
the FEM's by more than DICE_TOLERANCE, the report and summary.json say so and the command exits
with EXIT_NOT_A_SOLUTION.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from apps.gbm import calibration
from apps.gbm.patient import ImageField, Patient, brain_mask, load_patient, tissue_P
from apps.gbm.problem import (
    CONTOUR_SD_MM,
    MASK_LOSSES,
    GBMProblem,
    ImageSampler,
    MaskGrid,
    ModelChoices,
    network_time,
    time_map,
)
from apps.gbm.scales import Scales, patient_scales
from bilo.likelihoods import grid_neighbours
from solvers.common import Diverged, InputError, atomic_path, write_json_atomic
from solvers.exchange import (
    Mesh,
    Observations,
    SolutionFile,
    read_solution,
    write_solution,
)

# Tissue images are smoothed before the network samples P and ∇P from them (the piecewise
# pixel map has no useful gradient); the FEM uses the unsmoothed map on its mesh.
TISSUE_SMOOTHING_MM = 1.5
FEM_TIMES = 11
# with a follow-up the FEM writes a frame every 1/FOLLOWUP_FRAMES of the tumour age, so that
# the first scan (t = 1) is a frame and t = 1 + τ lies between two close ones
FOLLOWUP_FRAMES = 40
# The network is trained and compared on the brain pixels within this many L of the tumour-core
# centroid: the whole tumour lies well inside (its equivalent radius is L), and farther out
# u ≈ 0 is trivial and would only cost residual points.
REGION_RADIUS = 2.5
# u_NN must be the PDE's solution where it answers: within U_TOLERANCE (relative L2) of the FEM
# solution at the answer, and its masks' DICE within DICE_TOLERANCE of the FEM's (issue 17)
U_TOLERANCE = 0.05
DICE_TOLERANCE = 0.02
EXIT_NOT_A_SOLUTION = 4  # 2: bad input, 3: diverged (bilo/cli.py)
# `--stage`: the pipeline in one go, or its pieces in this order (module docstring); the record
# of a staged run's finished stages and options
STAGES = ("all", "prepare", "train", "evaluate")
STAGE_FILE = "stages.json"
# what says that an OUT holds a run, which `bilo gbm run` replaces only with --overwrite
RUN_MARKERS = ("summary.json", "train", STAGE_FILE)
# `--anchor-spread S`: BiLO's pre-training also fits the FEM solutions at θ0 with each growth
# parameter times e^±S, and their difference quotients as ∂u/∂θ (`bilo.train.Anchor`,
# `NetworkOptions.tangents`). From the residual's θ-derivative alone the network learnt ∂u/∂D
# and ∂u/∂τ 20-25 times too small on patient_cortex (the first upper step's gradient: 0.7-1.0
# of the FEM's with them), and on two of three patients at a ventricle, both scans fitted, D
# ran to its lower bound without them and stayed within 5-64 % of the truth with them
# (docs/gbm.md). Hence on by default, at DEFAULT_ANCHOR_SPREAD, for the methods that take θ
# when a follow-up is fitted; 0 turns them off.
GROWTH_PARAMETERS = ("D", "rho", "tau")
DEFAULT_ANCHOR_SPREAD = 0.3
ANCHORED_METHODS = ("bilo", "hmc")  # the methods whose network takes θ
# the GBM sampler's defaults: 2 chains × (200 + 200) draws, a few CPU-hours less than the
# library's 4 × (1000 + 1000) (measured cost in docs/gbm.md)
SAMPLER_DEFAULTS = {"n_chains": 2, "n_warmup": 200, "n_samples": 200, "n_leapfrog": 10}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """2|A∩B| / (|A| + |B|) of two boolean masks (1 when both are empty)."""
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


class Stages:
    """Progress output and wall time per stage."""

    def __init__(self, log=print):
        self.log, self.wall, self.t0 = log, {}, time.perf_counter()

    def __call__(self, name: str):
        stages = self

        class Stage:
            def __enter__(self):
                stages.log(f"== [{time.perf_counter() - stages.t0:6.1f} s] {name}")
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                stages.wall[name] = round(time.perf_counter() - self.start, 2)

        return Stage()


def _dimensionless(points_mm: np.ndarray, scales: Scales) -> np.ndarray:
    return (np.asarray(points_mm) - scales.centroid_mm) / scales.L_mm


def _fem_solve(mesh_path: Path, out: Path, scales: Scales, params: dict, n_ranks: int,
               ic: dict, reuse: bool = False) -> SolutionFile:
    """The FEM solution at `params` (dimensionless) in `out`; with `reuse`, the one an earlier
    stage wrote there, checked to be at the same parameters and times."""
    if "tau" in params:  # up to the follow-up at t = 1 + τ, on a grid holding t = 1
        frames = int(np.ceil(FOLLOWUP_FRAMES * (1.0 + params["tau"]) - 1e-9))
        end, n_times = frames / FOLLOWUP_FRAMES, frames + 1
    else:
        end, n_times = 1.0, FEM_TIMES
    physical = {"D": params["D"] * scales.D_bar_mm2, "rho": params["rho"] * scales.rho_bar,
                "T": end, "amp": ic["amplitude"],
                # the seed's centre: the core's centroid, shifted by an inferred (x0, y0)·L
                "x0": scales.centroid_mm[0] + params.get("x0", 0.0) * scales.L_mm,
                "y0": scales.centroid_mm[1] + params.get("y0", 0.0) * scales.L_mm,
                "sigma": ic["width_mm"]}
    if reuse:
        return _solved_earlier(out, physical, n_times)
    from solvers.fem.cli import run_fem_solve

    summary = run_fem_solve("fkpp2d", physical, str(mesh_path), str(out), n_ranks=n_ranks,
                            nt=n_times)
    print("   " + summary["line"])
    return read_solution(out)


def _solved_earlier(path: Path, physical: dict, n_times: int) -> SolutionFile:
    if not path.exists():
        raise InputError(f"{path}: missing; the FEM solutions come from --stage prepare (on a "
                         "machine with dolfinx), in the same OUT")
    solution = read_solution(path)
    same = len(solution.grid["t"]) == n_times and all(
        np.isclose(solution.params.get(name, np.nan), value, rtol=1e-12, atol=1e-14)
        for name, value in physical.items())
    if not same:
        raise InputError(f"{path}: solved at other parameters or times than this run's; run "
                         "--stage prepare --overwrite again")
    print(f"   {path.name}: the solution of --stage prepare")
    return solution


def _locator(solution: SolutionFile, scales: Scales):
    """Point location on the solution's mesh at dimensionless points, which answers again
    without searching when asked for the same points as last time (u0 and the anchors are
    evaluated at each step's residual points)."""
    from meshes.interpolation import P1Interpolator

    locate = P1Interpolator(_dimensionless(solution.mesh.vertices, scales),
                            solution.mesh.cells).locate
    last = {}

    def remembered(points: np.ndarray):
        if not ("points" in last and np.array_equal(last["points"], points)):
            last.update(points=np.array(points), found=locate(points))
        return last["found"]

    return remembered


def _interpolator(solution: SolutionFile, scales: Scales, tau: float | None = None,
                  locate=None):
    """u_FEM at dimensionless (x, y, t) points: P1 on the triangles (0 outside the mesh),
    linear in time between the two output times around t. With `tau` (a follow-up) the
    points' time is the network's s, at physical time time_map(s, tau). `locate`: a
    `_locator` of the same mesh to share."""
    locate = locate or _locator(solution, scales)
    times = solution.grid["t"]
    frames = np.asarray(solution.u)  # (times, vertices)

    def evaluate(points: np.ndarray) -> np.ndarray:
        inside, corners, weights = locate(points)
        t = points[inside, 2] if tau is None else time_map(points[inside, 2], tau)
        index = np.clip(np.searchsorted(times, t) - 1, 0, len(times) - 2)
        w_time = ((t - times[index]) / (times[index + 1] - times[index]))[:, None]
        at = (1 - w_time) * frames[index[:, None], corners] + w_time * frames[index[:, None] + 1,
                                                                            corners]
        values = np.zeros(len(points))
        values[inside] = (weights * at).sum(axis=1)
        return values

    return evaluate


def scans(patient: Patient, fit_followup: bool) -> list[tuple[str, float, np.ndarray,
                                                                 np.ndarray]]:
    """(suffix, network time s, WT, TC) of each fitted scan: the first at s = 1, a follow-up
    at s = 2 (apps.gbm.problem.time_map)."""
    found = [("", 1.0, patient.wt, patient.tc)]
    if fit_followup and patient.followup_wt is not None:
        found.append(("_followup", 2.0, patient.followup_wt, patient.followup_tc))
    return found


def observations(patient: Patient, brain: np.ndarray, scales: Scales,
                 model: ModelChoices | None = None) -> tuple[Observations, tuple[int, int]]:
    """Every pixel of `brain` at each fitted scan's time, coded 0 (outside WT), 1 (WT, not
    TC), 2 (TC), the first scan's rows first; then, with a PET map in the model, its values at
    the first scan's whole-tumour pixels of `brain`. Also the (segmentation, PET) row counts."""
    model = model or ModelChoices()
    points = _dimensionless(patient.pixel_centres_mm(brain), scales)
    rows, values = [], []
    for _, s, wt, tc in scans(patient, model.followup_days is not None):
        rows.append(np.column_stack([points, np.full(len(points), s)]))
        values.append((wt.astype(int) + tc.astype(int))[brain].astype(np.float64))
    n_seg = sum(len(v) for v in values)
    if model.pet_scale0 is not None:
        uptake = patient.wt & brain
        pet_points = _dimensionless(patient.pixel_centres_mm(uptake), scales)
        rows.append(np.column_stack([pet_points, np.ones(len(pet_points))]))
        values.append(patient.pet[uptake].astype(np.float64))
    return (Observations(points=np.concatenate(rows), values=np.concatenate(values),
                         columns=("x", "y", "t"), layout="segmentation"),
            (n_seg, sum(len(v) for v in values) - n_seg))


def segmentation_grid(patient: Patient, brain: np.ndarray, scales: Scales,
                      model: ModelChoices | None = None) -> MaskGrid:
    """Where the segmentation rows of :func:`observations` lie on the pixel grid: each fitted
    scan's rows are the pixels of `brain` in np.argwhere order, neighbours within a scan."""
    one_scan = grid_neighbours(np.argwhere(brain))
    n_pixels = len(one_scan)
    n_scans = len(scans(patient, (model or ModelChoices()).followup_days is not None))
    axis_mm = np.linalg.norm(np.asarray(patient.affine2d, dtype=np.float64)[:2, :2], axis=0)
    return MaskGrid(
        neighbours=np.concatenate([np.where(one_scan >= 0, one_scan + k * n_pixels, -1)
                                   for k in range(n_scans)]),
        spacing=(float(axis_mm[0]) / scales.L_mm, float(axis_mm[1]) / scales.L_mm),
        mm_per_unit=scales.L_mm)


def model_choices(patient: Patient, method: str, *, fit_followup: bool = True,
                  infer_origin: bool = False, use_pet: bool = False,
                  pet_noise: float = 0.05, contour_sd_mm: float = CONTOUR_SD_MM,
                  mask_loss: str = "eq36", theta0: dict | None = None) -> ModelChoices:
    """The patient's model: the sampler's with `--method hmc` (masks' contours placed with sd
    `contour_sd_mm`), τ with a fitted follow-up, the seed's centre, and with `use_pet` the PET
    map's scale when the patient has one; `theta0` replaces initial guesses."""
    pet_scale0 = None
    if use_pet and patient.pet is not None:
        core = patient.tc if patient.tc.any() else patient.wt
        pet_scale0 = float(np.percentile(patient.pet[core], 95))
        if not pet_scale0 > 0:
            raise InputError("pet: no uptake inside the tumour core; run without --fit-pet")
    return ModelChoices(bayesian=method == "hmc",
                        followup_days=patient.interval_days if fit_followup else None,
                        infer_origin=infer_origin, pet_scale0=pet_scale0, pet_noise=pet_noise,
                        contour_sd_mm=contour_sd_mm, mask_loss=mask_loss,
                        theta0=tuple(sorted((theta0 or {}).items())))


@dataclass
class Case:
    """A patient prepared for training: the slice, the region, the scales, the BiLO problem,
    the exchange data (observations and the FEM solution at the initial guess)."""

    patient: Patient
    brain: np.ndarray  # the training region: brain pixels within REGION_RADIUS L of the core
    whole_brain: np.ndarray  # the meshed brain mask of the slice
    scales: Scales
    problem: GBMProblem
    data: SolutionFile
    initial: SolutionFile
    ic: dict
    mesh_path: Path
    reuse: bool = False  # FEM solutions at θ0 and the anchors read from OUT (`_fem_solve`)
    anchorless: tuple = ()  # growth parameters whose anchor solves broke down (prepare)


def prepare(patient_dir, out: Path, timer: Stages, *, n_ranks: int = 1, seed: int = 0,
            slice: str | int = "auto", coarsen: int = 1, model: ModelChoices | None = None,
            patient: Patient | None = None, reuse: bool = False, log=print) -> Case:
    """Load the patient (unless given), mesh the brain, estimate the scales, solve at the
    initial guess; the problem is the patient's with the `model`'s choices. With `reuse` the
    mesh and the solution at the initial guess are an earlier stage's, in `out`."""
    from meshes import mesh_from_mask, write_mesh

    model = model or ModelChoices()
    with timer("load patient"):
        patient = patient or load_patient(patient_dir, slice=slice)
        log(f"   slice {patient.slice_index}, {patient.convention} labels, WT "
            f"{patient.wt_area_px} px, TC {patient.tc_area_px} px" + (
                f"; follow-up after {patient.interval_days:g} days, WT "
                f"{int(patient.followup_wt.sum())} px"
                + ("" if model.followup_days is not None else " (not fitted)")
                if patient.followup_wt is not None else "")
            + ("; PET fitted" if model.pet_scale0 is not None else ""))
    followup_days = model.followup_days
    whole_brain = brain_mask(patient)
    tissue = tissue_P(patient)
    if not reuse:
        with timer("mesh"):
            mesh = mesh_from_mask(whole_brain, patient.affine2d, coarsen=coarsen,
                                  vertex_images={"P": tissue})
            write_mesh(out / "mesh.xdmf", mesh)
            log(f"   {mesh.n_cells} cells, {mesh.n_vertices} vertices -> {out / 'mesh.xdmf'}")
    with timer("characteristic scales"):
        scales = patient_scales(patient)
        distance = np.linalg.norm(_dimensionless(patient.pixel_centres_mm(), scales), axis=-1)
        fitted = scans(patient, followup_days is not None)
        # the region reaches 1 L beyond the farthest fitted whole-tumour pixel
        radius = max(REGION_RADIUS, *(distance[wt].max() + 1.0 for _, _, wt, _ in fitted
                                      if wt.any()))
        brain = whole_brain & (distance < radius)
        for suffix, _, wt, _ in fitted:
            if (wt & ~brain).any():
                log(f"   warning: {int((wt & ~brain).sum())} WT{suffix} pixels lie outside "
                    "the brain mask")
        ic = {"width_mm": scales.ic_width_mm, "amplitude": scales.ic_amplitude}
        log(f"   L = {scales.L_mm:.2f} mm, D̄ = {scales.D_bar_mm2:.4g} mm²/time, "
            f"ρ̄ = {scales.rho_bar:.4g} /time, centroid {np.round(scales.centroid_mm, 1)} mm")
    observed, rows = observations(patient, brain, scales, model)
    problem = GBMProblem(
        ImageSampler(ImageField(tissue, patient.affine2d, sigma_mm=TISSUE_SMOOTHING_MM),
                     scales.centroid_mm, scales.L_mm),
        kappa=scales.D_bar_mm2 / scales.L_mm**2, rho_bar=scales.rho_bar,
        ic_width=ic["width_mm"] / scales.L_mm, ic_amplitude=ic["amplitude"],
        brain_points=_dimensionless(patient.pixel_centres_mm(brain), scales),
        pixel_size=float(np.sqrt(patient.pixel_area_mm2)) / scales.L_mm, seed=seed,
        model=model, rows=rows, mask_grid=segmentation_grid(patient, brain, scales, model))
    with timer("FEM solve at the initial guess"):
        initial = _fem_solve(out / "mesh.xdmf", out / "fem_initial.h5", scales,
                             problem.initial_guess, n_ranks, ic, reuse)
    grid, u = dict(initial.grid), np.asarray(initial.u)
    if followup_days is not None:  # the network's time s of each frame up to the follow-up
        tau0 = problem.initial_guess["tau"]
        keep = grid["t"] <= 1.0 + tau0 + 1e-9
        grid["t"] = network_time(grid["t"][keep], tau0)
        u = u[keep]
    data = SolutionFile(
        problem="gbm", params={}, axes=initial.axes, grid=grid, u=u,
        mesh=Mesh(_dimensionless(initial.mesh.vertices, scales), initial.mesh.cells,
                  units="dimensionless: (x - centroid) / L"),
        observations=observed,
        provenance={"patient": str(patient_dir), "u": "FEM solution at the initial guess",
                    "t": "the network's time s: first scan s = 1, follow-up s = 2"
                    if followup_days is not None else "tumour ages: the scan at t = 1"})
    write_solution(out / "observations.h5", data)
    return Case(patient, brain, whole_brain, scales, problem, data, initial, ic,
                out / "mesh.xdmf", reuse)


def add_run_arguments(parser):
    """The options of `bilo gbm run` (bilo/cli.py builds the parser)."""
    parser.add_argument("patient_dir", metavar="PATIENT_DIR")
    parser.add_argument("--out", required=True, metavar="OUT")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run that OUT holds (refused without it)")
    parser.add_argument("--stage", choices=STAGES, default="all",
                        help="all (default), or one piece of the run, in order: prepare (mesh "
                             "and FEM solves), train (the network; needs no dolfinx: a GPU "
                             "machine), evaluate (FEM at the answer, DICE, report); each later "
                             "piece continues OUT with the same options")
    parser.add_argument("--method", default="bilo",
                        help="bilo (default), pinn, or hmc (B-BiLO: the posterior)")
    parser.add_argument("--theta0", action="append", type=_initial_value, default=[],
                        metavar="NAME=VALUE",
                        help="initial guess of a parameter, dimensionless as summary.json's "
                             "params (e.g. D=2.5, tau=0.4; repeat for more); the FEM solves "
                             "and pre-training are at it (default: the model's)")
    parser.add_argument("--w-dat", type=float, default=None, help="PINN data weight (1)")
    parser.add_argument("--preset", default="quick", help="quick (default) or paper")
    parser.add_argument("--np", type=int, default=1, metavar="N", help="MPI ranks for FEM")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slice", default="auto", help="axial slice index or auto")
    parser.add_argument("--pretrain-steps", type=int, default=None,
                        help="pre-training steps (default: the preset's)")
    parser.add_argument("--steps", type=int, default=None,
                        help="fine-tuning steps (default: the preset's)")
    parser.add_argument("--first-scan-only", action="store_true",
                        help="fit the first scan only, even with a follow-up (whose coverage by "
                             "the plans is then a prediction)")
    parser.add_argument("--infer-origin", action="store_true",
                        help="infer the seed's centre (x0, y0) instead of placing it at the "
                             "tumour core's centroid")
    parser.add_argument("--fit-pet", action="store_true",
                        help="fit the patient's PET map too, as c·u inside the whole tumour "
                             "(c unknown; off by default: docs/gbm.md)")
    parser.add_argument("--pet-noise", type=float, default=0.05,
                        help="noise of the PET map relative to its scale (default 0.05)")
    parser.add_argument("--u-tolerance", type=float, default=U_TOLERANCE,
                        help="largest relative L2 distance of u_NN from the FEM solution at the "
                             f"answer before the run fails its check (default {U_TOLERANCE})")
    parser.add_argument("--detection-level", type=float, default=calibration.DETECTION_LEVEL,
                        help="density counted as infiltration in the probability map "
                             f"(default {calibration.DETECTION_LEVEL})")
    parser.add_argument("--mask-loss", choices=MASK_LOSSES, default="eq36",
                        help="data loss of the point estimate (bilo, pinn): the BiLO paper's "
                             "eq36 (default) or contours, the sampler's likelihood")
    parser.add_argument("--contour-sd", type=float, default=CONTOUR_SD_MM, metavar="MM",
                        help="sd of the segmentation contours' position error in the contour "
                             f"likelihood, in mm (default {CONTOUR_SD_MM:g})")
    parser.add_argument("--anchor-spread", type=float, default=None, metavar="S",
                        help="bilo, hmc: pre-train also on FEM solutions at θ0 with each "
                             "growth parameter times e^±S and on their difference quotients "
                             "as ∂u/∂θ (6 more FEM solves); 0: none (default: "
                             f"{DEFAULT_ANCHOR_SPREAD:g} when a follow-up is fitted, else 0; "
                             "docs/gbm.md)")
    sampler = parser.add_argument_group("sampler (--method hmc)")
    for flag, name, kind in (("--chains", "n_chains", int), ("--samples", "n_samples", int),
                             ("--warmup", "n_warmup", int), ("--leapfrog", "n_leapfrog", int),
                             ("--processes", "processes", int),
                             ("--predictive-every", "predictive_every", int),
                             ("--lora-rank", "lora_rank", int),
                             ("--lower-cap", "lower_cap", int),
                             ("--lower-tol", "lower_tol", float)):
        default = SAMPLER_DEFAULTS.get(name)
        sampler.add_argument(flag, dest=name, type=kind, default=None, help=(
            f"default {default}" if default is not None else "default: the library's"))
    return parser


_SAMPLER_FIELDS = ("n_chains", "n_samples", "n_warmup", "n_leapfrog", "processes",
                   "predictive_every", "lora_rank", "lower_cap", "lower_tol")


def _initial_value(text: str) -> tuple[str, float]:
    """NAME=VALUE of --theta0."""
    name, _, value = text.partition("=")
    try:
        if name.strip():
            return name.strip(), float(value)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected NAME=NUMBER, got '{text}'")


def _initial_guesses(pairs: list[tuple[str, float]]) -> dict[str, float]:
    names = [name for name, _ in pairs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InputError(f"--theta0: {', '.join(repeated)} given more than once")
    return dict(pairs)


def run_from_arguments(args) -> int:
    """`bilo gbm run` on parsed arguments; the exit status."""
    overrides = {"pretrain_steps": args.pretrain_steps, "finetune_steps": args.steps}
    sampler = {name: getattr(args, name) for name in _SAMPLER_FIELDS
               if getattr(args, name) is not None}
    summary = run_pipeline(
        args.patient_dir, args.out, method=args.method, preset=args.preset, n_ranks=args.np,
        device=args.device, w_dat=args.w_dat, seed=args.seed,
        slice=args.slice if args.slice == "auto" else int(args.slice), overrides=overrides,
        sampler=sampler, u_tolerance=args.u_tolerance, detection_level=args.detection_level,
        fit_followup=not args.first_scan_only, infer_origin=args.infer_origin,
        use_pet=args.fit_pet, pet_noise=args.pet_noise, contour_sd_mm=args.contour_sd,
        mask_loss=args.mask_loss, anchor_spread=args.anchor_spread, overwrite=args.overwrite,
        stage=args.stage, theta0=_initial_guesses(args.theta0))
    return 0 if summary is None or summary["check"]["passed"] else EXIT_NOT_A_SOLUTION


def run_pipeline(patient_dir, out, *, method: str = "bilo", preset: str = "quick",
                 n_ranks: int = 1, device: str = "auto", w_dat: float | None = None, seed: int = 0,
                 slice: str | int = "auto", coarsen: int = 1, overrides: dict | None = None,
                 sampler: dict | None = None, u_tolerance: float = U_TOLERANCE,
                 detection_level: float = calibration.DETECTION_LEVEL, fit_followup: bool = True,
                 infer_origin: bool = False, use_pet: bool = False, pet_noise: float = 0.05,
                 contour_sd_mm: float = CONTOUR_SD_MM, mask_loss: str = "eq36",
                 anchor_spread: float | None = None, overwrite: bool = False,
                 stage: str = "all", theta0: dict | None = None, log=print) -> dict | None:
    """Run every stage on a patient folder, or one `stage` of STAGES (module docstring);
    `overrides` replaces preset settings (steps, width, ...) of the training, `sampler` the
    sampler's options (method hmc: SAMPLER_DEFAULTS and `bilo.strategies.BayesBiLOOptions`),
    `theta0` initial guesses (dimensionless, as summary.json's params) that replace the
    model's. An `out` that holds a run is refused unless `overwrite` (or a later `stage`
    continues it). The summary, or None after "prepare" and "train"."""
    from bilo.strategies import fit, make_options

    # every option is checked before the first expensive stage (mesh, FEM); the patient is read
    # first (it says whether τ is a parameter)
    if not pet_noise > 0:
        raise InputError(f"--pet-noise must be > 0, got {pet_noise}")
    if not (np.isfinite(contour_sd_mm) and contour_sd_mm > 0):
        raise InputError(f"--contour-sd must be a finite number > 0, got {contour_sd_mm}")
    if anchor_spread is not None:
        if not (np.isfinite(anchor_spread) and anchor_spread >= 0):
            raise InputError(f"--anchor-spread must be a finite number >= 0 (0: no anchors), "
                             f"got {anchor_spread}")
        if anchor_spread > 0 and method not in ANCHORED_METHODS:
            raise InputError(f"--anchor-spread: method {method} does not take θ as a network "
                             f"input; only {' and '.join(ANCHORED_METHODS)} fit anchors")
    if mask_loss not in MASK_LOSSES:
        raise InputError(f"--mask-loss must be one of {', '.join(MASK_LOSSES)}, got {mask_loss}")
    if stage not in STAGES:
        raise InputError(f"--stage must be one of {', '.join(STAGES)}, got {stage}")
    if stage != "all" and method == "hmc":
        raise InputError("--stage: method hmc samples in one piece; run it with --stage all")
    patient = load_patient(patient_dir, slice=slice)
    model = model_choices(patient, method, fit_followup=fit_followup,
                          infer_origin=infer_origin, use_pet=use_pet, pet_noise=pet_noise,
                          contour_sd_mm=contour_sd_mm, mask_loss=mask_loss, theta0=theta0)
    bayesian = model.bayesian
    anchor_spread = anchor_spread_for(anchor_spread, method, model.followup_days is not None)
    sampler = ({**SAMPLER_DEFAULTS, **(sampler or {})} if bayesian else dict(sampler or {}))
    options = make_options(GBMProblem.declaration(model), method, preset, overrides,
                           seed=seed, device=device, w_dat=w_dat, **sampler)
    if int(n_ranks) != n_ranks or n_ranks < 1:
        raise InputError(f"--np must be an integer >= 1, got {n_ranks}")
    if not u_tolerance > 0:
        raise InputError(f"--u-tolerance must be > 0, got {u_tolerance}")
    if not 0 < detection_level < 1:
        raise InputError(f"--detection-level must lie in (0, 1), got {detection_level}")
    out = Path(out)
    reuse = stage in ("train", "evaluate")  # they continue the run that OUT holds
    if not reuse:
        held = [name for name in RUN_MARKERS if (out / name).exists()]
        if held and not overwrite:
            raise InputError(f"{out}: holds a run ({', '.join(held)}); --overwrite replaces "
                             "it, or choose another --out")
        # a new run: the old record and network must not be continued
        (out / STAGE_FILE).unlink(missing_ok=True)
        shutil.rmtree(out / "train", ignore_errors=True)
    if stage != "all":
        identity = run_identity(patient, method, coarsen, model, anchor_spread, options)
        record = (check_stage(out, stage, identity) if reuse else
                  {"done": [], "options": identity, "notes": [], "anchorless": [],
                   "wall_s_by_stage": {}})
    # replaced: a run that fails must not leave the old answer beside it
    (out / "summary.json").unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    timer = Stages(log)
    case = prepare(patient_dir, out, timer, n_ranks=n_ranks, seed=seed, slice=slice,
                   coarsen=coarsen, model=model, patient=patient, reuse=reuse, log=log)
    notes = []  # warnings of the stages, for summary.json and the report
    if reuse:  # the earlier stages': their anchors dropped and notes
        case.anchorless, notes = tuple(record["anchorless"]), list(record["notes"])
    locate = _locator(case.initial, case.scales)  # every FEM solution is on the same mesh
    if anchor_spread > 0:
        with timer("FEM solves around the initial guess (pre-training anchors)"):
            found, tangents, warnings = fem_anchors(case, anchor_spread, n_ranks, out, locate)
            options = replace(options, anchors=found, tangents=tangents)
        if not reuse:
            notes += warnings
            case.anchorless = tuple(name for name in GROWTH_PARAMETERS
                                    if name in case.problem.initial_guess
                                    and name not in tangents)
    if stage == "prepare":
        record_stage(out, stage, {**record, "notes": notes, "anchorless": case.anchorless},
                     timer)
        log(f"== prepared in {time.perf_counter() - timer.t0:.0f} s; go on with --stage train "
            f"(needs no dolfinx) and the same options, into {out}")
        return None
    if stage == "train":  # not done again until it ends: evaluate must not train on
        record_stage(out, "prepare", record)
    # evaluate loads the network that train finished (`check_stage`) from its checkpoint
    resume = stage == "evaluate" or (stage == "train" and not overwrite
                                     and (out / "train" / "checkpoint.pt").exists())
    with timer("the network of --stage train" if stage == "evaluate" else
               f"{method} pre-training and fine-tuning" + (" (resumed)" if resume else "")):
        options = replace(options, u0=_interpolator(case.initial, case.scales,
                                                    case.problem.initial_guess.get("tau"),
                                                    locate))
        trained = fit(case.problem, case.data, method, out / "train", options, validate=False,
                      overwrite=not resume, resume=resume)
    if stage == "train":
        record_stage(out, stage, {**record, "device": trained.device}, timer)
        log(f"== trained in {time.perf_counter() - timer.t0:.0f} s; go on with --stage "
            f"evaluate (needs dolfinx) and the same options, into {out}")
        return None
    inferred = trained.params
    with timer("FEM solve at the inferred parameters"):
        final = _fem_solve(case.mesh_path, out / "fem_inferred.h5", case.scales, inferred,
                           n_ranks, case.ic)
    with timer("DICE, plans and report"):
        posterior = _posterior(case, trained, out / "train", detection_level) if bayesian \
            else None
        result = _evaluate(case, out, trained, final, u_tolerance, posterior, notes)
    summary = _summary(patient_dir, case.patient, case.scales, method, preset, trained, result,
                       timer)
    if stage == "evaluate":  # the whole run's: training's device and every stage's wall time
        summary["device"] = record["device"]
        summary["wall_s_by_stage"] = {**timer.wall, **record["wall_s_by_stage"]}
        summary["wall_s"] = round(sum(summary["wall_s_by_stage"].values()), 2)
        record_stage(out, stage, record, timer)
    write_json_atomic(out / "summary.json", summary)
    for line in summary["warnings"]:
        log(f"warning: {line}")
    log(f"== done in {time.perf_counter() - timer.t0:.0f} s: " + ", ".join(
        f"{k} {v:.3f}" for k, v in summary["dice"].items()) + f" -> {out / 'summary.json'}")
    return summary


def run_identity(patient: Patient, method: str, coarsen: int, model: ModelChoices,
                 anchor_spread: float, options) -> dict:
    """What a staged run's stages must agree on: the patient (a digest of its images and their
    placement, the same on every machine), the method, the mesh, the model, the anchors and the
    method's options (step counts included: evaluate must find training finished); not the
    device or the MPI ranks."""
    digest = hashlib.sha256(np.ascontiguousarray(patient.affine2d, dtype=np.float64).tobytes())
    for image in (patient.wt, patient.tc, patient.followup_wt, patient.followup_tc,
                  patient.wm, patient.gm, patient.pet):
        if image is not None:
            digest.update(np.ascontiguousarray(image).tobytes())
    settings = {k: v for k, v in options.to_json().items() if k != "device"}
    return json.loads(json.dumps({
        "patient images": digest.hexdigest()[:16], "slice": patient.slice_index,
        "method": method, "coarsen": coarsen, "model": asdict(model),
        "anchor_spread": anchor_spread, "options": settings}, default=_plain))


def _plain(value):
    """numpy scalars (and anything else) for json.dumps."""
    return value.item() if hasattr(value, "item") else str(value)


def _flat(record: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} as {"a.b": 1}, so that a refusal names the field that differs."""
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def check_stage(out: Path, stage: str, identity: dict) -> dict:
    """The record of the staged run in `out` that `stage` continues: the stage before it done,
    with the same options (`run_identity`); else one line saying what differs."""
    path, before = out / STAGE_FILE, STAGES[STAGES.index(stage) - 1]
    if not path.exists():
        raise InputError(f"{path}: missing; --stage {stage} continues a run begun with --stage "
                         "prepare in the same OUT")
    try:
        record = json.loads(path.read_text())
        done, saved = list(record["done"]), _flat(record["options"])
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{path}: not a record of --stage prepare; run it again with "
                         "--overwrite") from None
    if before not in done:
        raise InputError(f"{path}: stage {before} is not done; run --stage {before} first")
    new = _flat(identity)
    changed = [f"{name} {saved.get(name)!r} -> {new.get(name)!r}"
               for name in sorted(set(saved) | set(new)) if saved.get(name) != new.get(name)]
    if changed:
        raise InputError(f"{path}: --stage {stage} with other options than the run's earlier "
                         f"stages ({'; '.join(changed)}); give the same options")
    return record


def record_stage(out: Path, stage: str, record: dict, timer: Stages | None = None) -> None:
    """Write OUT/stages.json: the stages up to `stage` done, with `timer`'s wall times of the
    steps not timed before (a later stage reads again what an earlier one solved)."""
    walls = {**(timer.wall if timer else {}), **record.get("wall_s_by_stage", {})}
    write_json_atomic(out / STAGE_FILE, {**record, "done": list(STAGES[1:STAGES.index(stage) + 1]),
                                         "wall_s_by_stage": walls})


def anchor_spread_for(given: float | None, method: str, followup_fitted: bool) -> float:
    """`--anchor-spread` as given, else DEFAULT_ANCHOR_SPREAD for the methods that take θ when
    a follow-up is fitted, and 0 (no anchors) otherwise."""
    if given is not None:
        return float(given)
    return DEFAULT_ANCHOR_SPREAD if method in ANCHORED_METHODS and followup_fitted else 0.0


def fem_anchors(case: Case, spread: float, n_ranks: int, out: Path, locate) -> tuple:
    """FEM solutions at θ0 with each growth parameter times e^±spread as pre-training anchors,
    interpolated with `locate` (`_locator`), and their difference quotients as the tangents
    ∂u/∂θ_p at θ0 (`--anchor-spread`); and a warning for each parameter whose solve broke
    down (`Diverged`: a coarse mesh at large ρ), which gets neither anchors nor a tangent.
    With `case.reuse` the solutions are read from `out` (`_fem_solve`), and the parameters in
    `case.anchorless`, whose solves broke down then, are left out again."""
    from bilo.train import Anchor

    theta0 = case.problem.initial_guess
    found, tangents, warnings = [], {}, []
    for name in GROWTH_PARAMETERS:
        if name not in theta0 or name in case.anchorless:
            continue
        pair, (lo, hi) = [], case.problem.bounds[name]
        for sign, label in ((1, "plus"), (-1, "minus")):
            theta = {**theta0, name: float(np.clip(theta0[name] * np.exp(sign * spread), lo,
                                                   hi))}
            try:
                solution = _fem_solve(case.mesh_path, out / f"fem_anchor_{name}_{label}.h5",
                                      case.scales, theta, n_ranks, case.ic, case.reuse)
            except Diverged as error:
                warnings.append(f"no anchors for {name}: the FEM at {name} = "
                                f"{theta[name]:.4g} broke down ({error})")
                print(f"   warning: {warnings[-1]}")
                break
            pair.append((theta[name], _interpolator(solution, case.scales, theta.get("tau"),
                                                    locate)))
        if len(pair) < 2:
            continue
        found += [Anchor({name: value}, solution) for value, solution in pair]
        (plus, u_plus), (minus, u_minus) = pair
        tangents[name] = (lambda points, a=u_plus, b=u_minus, h=plus - minus:
                          (a(points) - b(points)) / h)
    return tuple(found), tangents, warnings


def _posterior(case: Case, trained, train_dir: Path, level: float) -> dict:
    """The posterior's intervals and concentration, and u at the scan at the recorded draws
    (the observations are the region's pixels at t = 1, in the order of `case.brain`)."""
    import h5py

    names = list(case.problem.params)
    draws = np.asarray(trained.history["theta"])
    intervals = calibration.posterior_intervals(
        draws, names, D_bar=case.scales.D_bar_mm2, rho_bar=case.scales.rho_bar,
        interval_days=case.patient.interval_days if "tau" in names else None)
    ratios = calibration.concentration(draws, case.problem.parameters)
    with h5py.File(train_dir / "posterior.h5", "r") as h5:
        u_draws = np.asarray(h5["predictive/u_obs"])
    hmc, per_parameter = trained.extra["hmc"], trained.extra["posterior"].values()
    diagnostics = {"rhat_max": max(p["rhat"] for p in per_parameter),
                   "ess_bulk_min": min(p["ess_bulk"] for p in per_parameter),
                   "divergent": hmc["divergent"], "accept_rate": hmc["accept_rate"]}
    return {"intervals": intervals, "concentration": ratios,
            "notes": calibration.convergence_notes(diagnostics)
            + calibration.concentration_notes(ratios, intervals),
            # the observations' first int(brain.sum()) columns are the first scan's pixels
            "maps": calibration.infiltration_maps(u_draws[:, :int(case.brain.sum())], level),
            "detection_level": level,
            "n_draws_u": int(len(u_draws)),
            "diagnostics": diagnostics,
            "lower_steps_per_leapfrog": trained.extra.get("lower_steps_per_leapfrog")}


def network_check(u_nn: np.ndarray, u_fem: np.ndarray, scores: dict,
                  u_tolerance: float = U_TOLERANCE) -> tuple[dict, list[str]]:
    """Is u_NN the PDE's solution at the answer? Its relative L2 distance from u_FEM (same
    points) within `u_tolerance` and each region's (and scan's) DICE within DICE_TOLERANCE of
    the FEM's (`scores`: keys with "_NN" and their "_FEM" twins).
    The check's record and, when it fails, the warning line."""
    u_error = float(np.linalg.norm(u_nn - u_fem) / np.linalg.norm(u_fem))
    gap = max(abs(value - scores[key.replace("_NN", "_FEM")])
              for key, value in scores.items() if "_NN" in key)
    check = {"u_rel_l2_vs_fem": u_error, "u_tolerance": u_tolerance, "dice_gap": gap,
             "dice_tolerance": DICE_TOLERANCE,
             "passed": bool(u_error <= u_tolerance and gap <= DICE_TOLERANCE)}
    warnings = [] if check["passed"] else [
        f"u_NN is not the PDE's solution at the answer: {u_error:.1%} from the FEM solution "
        f"(tolerance {u_tolerance:.0%}), DICE NN - FEM differs by up to {gap:.3f} (tolerance "
        f"{DICE_TOLERANCE}); trust the FEM's DICE, and train longer or with more residual "
        "points"]
    return check, warnings


def _evaluate(case: Case, out, trained, final, u_tolerance: float = U_TOLERANCE,
              posterior: dict | None = None, notes: list[str] = ()) -> dict:
    """u_NN and u_FEM at each fitted scan on the region's pixels, their masks, DICE, the check
    that u_NN is the FEM solution, the plans and their coverage, the posterior's maps, and
    the outputs, with the earlier stages' `notes` among the warnings. Images (and the plans)
    are of the first scan; keys of a follow-up's scores end in "_followup"."""
    patient, brain, scales = case.patient, case.brain, case.scales
    params = trained.params
    fem = _interpolator(final, scales, params.get("tau"))
    pixels = _dimensionless(patient.pixel_centres_mm(brain), scales)
    images, masks, scores, u_nn, u_fem = {}, {}, {}, [], []
    for suffix, s, wt, tc in scans(patient, "tau" in params):
        points = np.column_stack([pixels, np.full(len(pixels), s)])
        u_nn.append(trained.predict(points))
        u_fem.append(fem(points))
        for source, values in (("nn", u_nn[-1]), ("fem", u_fem[-1])):
            image = np.zeros(patient.shape)
            image[brain] = values
            images[source + suffix] = image
            for region, observed in (("wt", wt), ("tc", tc)):
                masks[f"{source}_{region}{suffix}"] = image > params[f"th_{region}"]
                scores[f"{region.upper()}_{source.upper()}{suffix}"] = dice(
                    masks[f"{source}_{region}{suffix}"], observed)
    check, warnings = network_check(np.concatenate(u_nn), np.concatenate(u_fem), scores,
                                    u_tolerance)
    warnings = [*warnings, *notes]  # the check first: the cohort table quotes it
    pet = None
    if "pet_scale" in params:  # the map over its scale against u_FEM, inside the whole tumour
        uptake = patient.wt & brain
        scaled = patient.pet[uptake] / params["pet_scale"]
        pet = {"scale": params["pet_scale"],
               "rel_l2_vs_fem": float(np.linalg.norm(scaled - images["fem"][uptake])
                                      / np.linalg.norm(scaled))}
    u_error = check["u_rel_l2_vs_fem"]
    volumes = dict(images)
    if posterior is not None:
        for name, values in posterior["maps"].items():
            image = np.zeros(patient.shape)
            image[brain] = values
            volumes[name] = image
        warnings += posterior["notes"]
    # the plan ranks pixels by u_FEM at the answer (the posterior mean with hmc): a 15 mm
    # margin's area reaches where u is ~1e-3, and there u_NN's noise, not the model, would rank
    whole_brain = case.whole_brain
    plans = {"standard": calibration.standard_plan(patient.tc, whole_brain, patient.affine2d)}
    plans["model"] = calibration.model_plan(images["fem"], whole_brain,
                                            int(plans["standard"].sum()))
    plan_summary = {"margin_mm": calibration.MARGIN_MM,
                    "area_mm2": float(plans["standard"].sum() * patient.pixel_area_mm2),
                    "density": "u_FEM at the first scan at the answer"
                               + (" (the posterior mean)" if posterior is not None else "")}
    if patient.followup_wt is not None:
        plan_summary["coverage"] = {name: calibration.coverage(plan, patient.followup_wt)
                                    for name, plan in plans.items()}
        plan_summary["coverage_is"] = ("in-sample: the follow-up was fitted" if "tau" in params
                                       else "a prediction: the follow-up was not fitted")
    _write_volumes(patient, {**volumes, **{f"plan_{k}": v for k, v in plans.items()}}, out)
    _plot_report(patient, images, masks, scores, params, out / "report.png", plans=plans,
                 warnings=warnings, posterior=posterior, volumes=volumes,
                 draws=np.asarray(trained.history["theta"]) if posterior else None,
                 names=list(case.problem.params))
    return {"dice": scores, "u_rel_l2_vs_reference": u_error, "check": check,
            "warnings": warnings, "plans": plan_summary, "posterior": posterior, "pet": pet}


# NIfTI file of each image on the patient grid
VOLUME_FILES = {"nn": "density_nn", "fem": "density_fem", "nn_followup": "density_nn_followup",
                "fem_followup": "density_fem_followup", "mean": "density_mean",
                "sd": "density_sd", "probability": "infiltration_probability",
                "plan_standard": "plan_standard", "plan_model": "plan_model"}


def _write_volumes(patient: Patient, images: dict, out: Path) -> None:
    """Images of the slice (densities at t = 1, the posterior's maps, the plans' masks) as NIfTI
    volumes on the patient grid, the slice filled."""
    import nibabel as nib

    for name, image in images.items():
        volume = np.zeros(patient.shape3d, dtype=np.uint8 if image.dtype == bool else np.float32)
        volume[:, :, patient.slice_index] = image
        with atomic_path(out / f"{VOLUME_FILES[name]}.nii.gz") as tmp:
            nib.save(nib.Nifti1Image(volume, patient.affine), str(tmp))


def _plot_report(patient, images, masks, scores, params, path: Path, *, plans: dict,
                 warnings: list[str], posterior: dict | None = None, volumes: dict | None = None,
                 draws: np.ndarray | None = None, names=()) -> None:
    """Row 1: the observed masks, u_NN and u_FEM with their masks, the two plans. Row 2 (a
    posterior): u's posterior mean and sd, the infiltration probability beyond the visible
    tumour, and the draws of (D, ρ). The warnings under the title, in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = np.nonzero(plans["standard"] | patient.wt)
    pad = 10
    window = (slice(max(rows.min() - pad, 0), rows.max() + pad),
              slice(max(cols.min() - pad, 0), cols.max() + pad))
    background = (patient.wm + 0.5 * patient.gm)[window]
    n_rows = 2 if posterior is not None else 1
    fig, axes = plt.subplots(n_rows, 4, figsize=(18, 4.9 * n_rows + 0.4 * len(warnings)),
                             squeeze=False)

    def show(ax, image=None, cmap="inferno", vmax=1.0, floor=0.02, label=None):
        ax.imshow(background.T, cmap="gray", origin="lower")
        if image is not None:
            shown = np.ma.masked_less(image[window], floor)
            im = ax.imshow(shown.T, cmap=cmap, origin="lower", alpha=0.7, vmin=0, vmax=vmax)
            fig.colorbar(im, ax=ax, fraction=0.04, label=label)
        ax.contour(patient.wt[window].T, [0.5], colors="cyan", linewidths=1.0)
        ax.contour(patient.tc[window].T, [0.5], colors="lime", linewidths=1.0)
        ax.set_axis_off()

    titles = ("observed WT / TC", "u_NN at t = 1", "u_FEM at t = 1 (at the answer)")
    for ax, title, image in zip(axes[0][:3], titles, (None, images["nn"], images["fem"]),
                                strict=True):
        show(ax, image)
        source = "nn" if "NN" in title else "fem" if "FEM" in title else None
        if source:
            ax.contour(masks[f"{source}_wt"][window].T, [0.5], colors="cyan",
                       linestyles="--", linewidths=1.2)
            ax.contour(masks[f"{source}_tc"][window].T, [0.5], colors="lime",
                       linestyles="--", linewidths=1.2)
            title += (f"\nDICE WT {scores['WT_' + source.upper()]:.3f}, "
                      f"TC {scores['TC_' + source.upper()]:.3f}")
            key = f"_{source.upper()}_followup"
            if "WT" + key in scores:
                title += f"; follow-up WT {scores['WT' + key]:.3f}, TC {scores['TC' + key]:.3f}"
        ax.set_title(title, fontsize=10)
    ax = axes[0][3]
    show(ax)
    ax.contour(plans["standard"][window].T, [0.5], colors="white", linewidths=1.4)
    ax.contour(plans["model"][window].T, [0.5], colors="orange", linewidths=1.4)
    title = f"plans: {calibration.MARGIN_MM:g} mm margin (white), model (orange)"
    recurrence = patient.followup_wt
    if recurrence is not None:
        ax.contour(recurrence[window].T, [0.5], colors="magenta", linewidths=1.0)
        title += "\nfollow-up WT (magenta)"
    ax.set_title(title, fontsize=10)
    if posterior is not None:
        level = posterior["detection_level"]
        outside = np.where(patient.wt, 0.0, volumes["probability"])
        show(axes[1][0], volumes["mean"], label="u")
        axes[1][0].set_title(f"posterior mean of u at t = 1 ({posterior['n_draws_u']} draws)",
                             fontsize=10)
        show(axes[1][1], volumes["sd"], cmap="viridis", vmax=max(volumes["sd"].max(), 1e-6),
             floor=1e-3, label="sd")
        axes[1][1].set_title("posterior sd of u at t = 1", fontsize=10)
        show(axes[1][2], outside, cmap="magma", floor=0.01, label="probability")
        axes[1][2].set_title(f"P(u > {level:g}) beyond the visible whole tumour", fontsize=10)
        ax = axes[1][3]
        j_d, j_r = list(names).index("D"), list(names).index("rho")
        ax.plot(draws[:, j_d], draws[:, j_r], ".", ms=2, alpha=0.4)
        ax.ticklabel_format(useOffset=False)
        ax.set(xlabel="D", ylabel="ρ", title="posterior draws of (D, ρ)")
    title = (f"slice {patient.slice_index}: D = {params['D']:.3f}, ρ = {params['rho']:.3f}, "
             f"u_c WT {params['th_wt']:.3f}, TC {params['th_tc']:.3f}"
             + (" (posterior mean)" if posterior is not None else "")
             + " (solid: observed, dashed: predicted)")
    fig.suptitle(title, fontsize=11)
    for i, line in enumerate(warnings):
        fig.text(0.5, 0.965 - (0.035 + 0.025 * i) / n_rows, "warning: " + line, ha="center",
                 fontsize=8.5, color="red")
    fig.tight_layout(rect=(0, 0, 1, 0.93 - 0.025 * len(warnings) / n_rows))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def physical_values(params: dict, scales: Scales, interval_days: float | None) -> dict:
    """D·D̄ (mm² per tumour age) and ρ·ρ̄ (per tumour age); with τ from a follow-up after
    `interval_days` days the age is interval_days/τ days, and D, ρ come in mm²/day and /day."""
    values = {"D_mm2_per_age": params["D"] * scales.D_bar_mm2,
              "rho_per_age": params["rho"] * scales.rho_bar}
    if "tau" in params and interval_days:
        age = interval_days / params["tau"]
        values.update({"T_days": age, "D_mm2_per_day": values["D_mm2_per_age"] / age,
                       "rho_per_day": values["rho_per_age"] / age})
    return values


def _summary(patient_dir, patient, scales, method, preset, trained, result, timer) -> dict:
    truth_path = Path(patient_dir) / "truth.json"
    truth = json.loads(truth_path.read_text()) if truth_path.exists() else {}
    # the truth as this pipeline sees it: D rescaled to the scales estimated from the masks
    names = {"D": "D_as_estimated", "rho": "rho_as_estimated", "th_wt": "u_c_wt",
             "th_tc": "u_c_tc"}
    params_true = {k: truth[v] for k, v in names.items() if v in truth}
    params = trained.params
    physical = physical_values(params, scales, patient.interval_days)
    physical_true = {}
    if "tau" in params and truth.get("T_days") and truth.get("interval_days"):
        params_true["tau"] = truth["interval_days"] / truth["T_days"]
        physical_true = {k: truth[k] for k in ("D_mm2_per_day", "rho_per_day", "T_days")
                         if k in truth}
    if "pet_scale" in params and truth.get("pet_scale"):
        params_true["pet_scale"] = truth["pet_scale"]
    if "x0" in params and "centre_mm" in truth:  # the seed's centre in L from the centroid
        offset = (np.asarray(truth["centre_mm"]) - scales.centroid_mm) / scales.L_mm
        params_true.update(x0=float(offset[0]), y0=float(offset[1]))
    rel_err = {k: abs(params[k] - v) / abs(v) for k, v in params_true.items()
               if k in params and k not in ("x0", "y0")}
    if "x0" in params_true:  # an offset has no relative error: its distance in mm
        rel_err["origin_error_mm"] = float(np.hypot(params["x0"] - params_true["x0"],
                                                    params["y0"] - params_true["y0"])
                                           * scales.L_mm)
    rel_err.update({k: abs(physical[k] - v) / abs(v) for k, v in physical_true.items()
                    if k in physical})
    if {"D", "rho"} <= params_true.keys():
        for name, f in (("sqrt(D*rho)", lambda p: np.sqrt(p["D"] * p["rho"])),
                        ("sqrt(D/rho)", lambda p: np.sqrt(p["D"] / p["rho"]))):
            rel_err[name] = float(abs(f(params) - f(params_true)) / f(params_true))
    posterior = result["posterior"]
    if posterior is not None:
        intervals = posterior["intervals"]
        rel_err["truth_in_90_interval"] = {
            k: bool(intervals[k]["q05"] <= v <= intervals[k]["q95"])
            for k, v in {**params_true, **physical_true}.items() if k in intervals}
    return {
        "method": method, "problem": "gbm", "patient": str(patient_dir), "preset": preset,
        "slice": patient.slice_index, "params": params, "params_true": params_true,
        "physical": physical, "physical_true": physical_true,
        "rel_err": rel_err, "dice": result["dice"],
        "u_rel_l2_vs_reference": result["u_rel_l2_vs_reference"], "check": result["check"],
        "warnings": result["warnings"], "plans": result["plans"],
        **({"pet": result["pet"]} if result["pet"] is not None else {}),
        **({"posterior": {k: v for k, v in result["posterior"].items() if k != "maps"}}
           if result["posterior"] is not None else {}),
        "scales": {"L_mm": scales.L_mm, "D_bar_mm2": scales.D_bar_mm2,
                   "rho_bar": scales.rho_bar, "centroid_mm": list(scales.centroid_mm)},
        "steps": trained.summary["steps"], "steps_by_phase": trained.summary["steps_by_phase"],
        "wall_s": round(sum(timer.wall.values()), 2), "wall_s_by_stage": timer.wall,
        "device": trained.device,
    }
