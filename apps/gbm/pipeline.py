"""`bilo gbm run`: a patient folder in, fitted growth parameters and a report out.

Stages: patient (NIfTI) → brain mask and mesh (meshes/) → characteristic scales → FEM solve at
the initial guess (MPI, through HDF5) → BiLO (or PINN) pre-training and fine-tuning → FEM
solve at the inferred parameters (MPI) → DICE of WT and TC from u_NN and from u_FEM → OUT:
summary.json, report.png, density_nn.nii.gz / density_fem.nii.gz on the patient grid, the mesh
and the FEM solutions as XDMF for ParaView, the training run in OUT/train/.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from apps.gbm.patient import ImageField, Patient, brain_mask, load_patient, tissue_P
from apps.gbm.problem import GBMProblem, ImageSampler
from apps.gbm.scales import Scales, patient_scales
from solvers.common import InputError, atomic_path, write_json_atomic
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
# The network is trained and compared on the brain pixels within this many L of the tumour-core
# centroid: the whole tumour lies well inside (its equivalent radius is L), and farther out
# u ≈ 0 is trivial and would only cost residual points.
REGION_RADIUS = 2.5


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
               ic: dict) -> SolutionFile:
    from solvers.fem.cli import run_fem_solve

    physical = {"D": params["D"] * scales.D_bar_mm2, "rho": params["rho"] * scales.rho_bar,
                "T": 1.0, "amp": ic["amplitude"], "x0": scales.centroid_mm[0],
                "y0": scales.centroid_mm[1], "sigma": ic["width_mm"]}
    summary = run_fem_solve("fkpp2d", physical, str(mesh_path), str(out), n_ranks=n_ranks,
                            nt=FEM_TIMES)
    print("   " + summary["line"])
    return read_solution(out)


def _interpolator(solution: SolutionFile, scales: Scales):
    """u_FEM at dimensionless (x, y, t) points: P1 on the triangles (0 outside the mesh),
    linear in time between the two output times around t."""
    from meshes.interpolation import P1Interpolator

    locate = P1Interpolator(_dimensionless(solution.mesh.vertices, scales),
                            solution.mesh.cells).locate
    times = solution.grid["t"]
    frames = np.asarray(solution.u)  # (times, vertices)

    def evaluate(points: np.ndarray) -> np.ndarray:
        inside, corners, weights = locate(points)
        t = points[inside, 2]
        index = np.clip(np.searchsorted(times, t) - 1, 0, len(times) - 2)
        w_time = ((t - times[index]) / (times[index + 1] - times[index]))[:, None]
        at = (1 - w_time) * frames[index[:, None], corners] + w_time * frames[index[:, None] + 1,
                                                                            corners]
        values = np.zeros(len(points))
        values[inside] = (weights * at).sum(axis=1)
        return values

    return evaluate


def observations(patient: Patient, brain: np.ndarray, scales: Scales) -> Observations:
    """Every pixel of `brain` at t = 1, coded 0 (outside WT), 1 (WT, not TC), 2 (TC)."""
    points = _dimensionless(patient.pixel_centres_mm(brain), scales)
    code = patient.wt.astype(int) + patient.tc.astype(int)
    values = code[brain].astype(np.float64)
    return Observations(points=np.column_stack([points, np.ones(len(points))]), values=values,
                        columns=("x", "y", "t"), layout="segmentation")


@dataclass
class Case:
    """A patient prepared for training: the slice, the region, the scales, the BiLO problem,
    the exchange data (observations and the FEM solution at the initial guess)."""

    patient: Patient
    brain: np.ndarray  # the training region: brain pixels within REGION_RADIUS L of the core
    scales: Scales
    problem: GBMProblem
    data: SolutionFile
    initial: SolutionFile
    ic: dict
    mesh_path: Path


def prepare(patient_dir, out: Path, stage: Stages, *, n_ranks: int = 1, seed: int = 0,
            slice: str | int = "auto", coarsen: int = 1, log=print) -> Case:
    """Load the patient, mesh the brain, estimate the scales, solve at the initial guess."""
    from meshes import mesh_from_mask, write_mesh

    with stage("load patient"):
        patient = load_patient(patient_dir, slice=slice)
        log(f"   slice {patient.slice_index}, {patient.convention} labels, WT "
            f"{patient.wt_area_px} px, TC {patient.tc_area_px} px")
    with stage("mesh"):
        whole_brain = brain_mask(patient)
        tissue = tissue_P(patient)
        mesh = mesh_from_mask(whole_brain, patient.affine2d, coarsen=coarsen,
                              vertex_images={"P": tissue})
        write_mesh(out / "mesh.xdmf", mesh)
        log(f"   {mesh.n_cells} cells, {mesh.n_vertices} vertices -> {out / 'mesh.xdmf'}")
    with stage("characteristic scales"):
        scales = patient_scales(patient)
        distance = np.linalg.norm(_dimensionless(patient.pixel_centres_mm(), scales), axis=-1)
        brain = whole_brain & (distance < REGION_RADIUS)
        if (patient.wt & ~brain).any():
            log(f"   warning: {int((patient.wt & ~brain).sum())} WT pixels lie outside the "
                f"region of {REGION_RADIUS} L around the tumour core or outside the brain mask")
        ic = {"width_mm": scales.ic_width_mm, "amplitude": scales.ic_amplitude}
        log(f"   L = {scales.L_mm:.2f} mm, D̄ = {scales.D_bar_mm2:.4g} mm²/time, "
            f"ρ̄ = {scales.rho_bar:.4g} /time, centroid {np.round(scales.centroid_mm, 1)} mm")
    problem = GBMProblem(
        ImageSampler(ImageField(tissue, patient.affine2d, sigma_mm=TISSUE_SMOOTHING_MM),
                     scales.centroid_mm, scales.L_mm),
        kappa=scales.D_bar_mm2 / scales.L_mm**2, rho_bar=scales.rho_bar,
        ic_width=ic["width_mm"] / scales.L_mm, ic_amplitude=ic["amplitude"],
        brain_points=_dimensionless(patient.pixel_centres_mm(brain), scales),
        pixel_size=float(np.sqrt(patient.pixel_area_mm2)) / scales.L_mm, seed=seed)
    with stage("FEM solve at the initial guess"):
        initial = _fem_solve(out / "mesh.xdmf", out / "fem_initial.h5", scales,
                             problem.initial_guess, n_ranks, ic)
    data = SolutionFile(
        problem="gbm", params={}, axes=initial.axes, grid=initial.grid, u=initial.u,
        mesh=Mesh(_dimensionless(initial.mesh.vertices, scales), initial.mesh.cells,
                  units="dimensionless: (x - centroid) / L"),
        observations=observations(patient, brain, scales),
        provenance={"patient": str(patient_dir), "u": "FEM solution at the initial guess"})
    write_solution(out / "observations.h5", data)
    return Case(patient, brain, scales, problem, data, initial, ic, out / "mesh.xdmf")


def add_run_arguments(parser):
    """The options of `bilo gbm run` (bilo/cli.py builds the parser)."""
    parser.add_argument("patient_dir", metavar="PATIENT_DIR")
    parser.add_argument("--out", required=True, metavar="OUT")
    parser.add_argument("--method", default="bilo", help="bilo (default) or pinn")
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
    return parser


def run_from_arguments(args) -> int:
    """`bilo gbm run` on parsed arguments; the exit status."""
    overrides = {"pretrain_steps": args.pretrain_steps, "finetune_steps": args.steps}
    run_pipeline(args.patient_dir, args.out, method=args.method, preset=args.preset,
                 n_ranks=args.np, device=args.device, w_dat=args.w_dat, seed=args.seed,
                 slice=args.slice if args.slice == "auto" else int(args.slice),
                 overrides=overrides)
    return 0


def run_pipeline(patient_dir, out, *, method: str = "bilo", preset: str = "quick",
                 n_ranks: int = 1, device: str = "auto", w_dat: float | None = None, seed: int = 0,
                 slice: str | int = "auto", coarsen: int = 1, overrides: dict | None = None,
                 log=print) -> dict:
    """Run every stage on a patient folder; `overrides` replaces preset settings (steps, width,
    ...) of the training."""
    from bilo.strategies import fit, make_options

    # every option is checked before the first expensive stage (mesh, FEM)
    options = make_options(GBMProblem.declaration(), method, preset, overrides, seed=seed,
                           device=device, w_dat=w_dat)
    if int(n_ranks) != n_ranks or n_ranks < 1:
        raise InputError(f"--np must be an integer >= 1, got {n_ranks}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stage = Stages(log)
    case = prepare(patient_dir, out, stage, n_ranks=n_ranks, seed=seed, slice=slice,
                   coarsen=coarsen, log=log)
    with stage(f"{method} pre-training and fine-tuning"):
        options = replace(options, u0=_interpolator(case.initial, case.scales))
        trained = fit(case.problem, case.data, method, out / "train", options, validate=False,
                      overwrite=True)
    inferred = trained.params
    with stage("FEM solve at the inferred parameters"):
        final = _fem_solve(case.mesh_path, out / "fem_inferred.h5", case.scales, inferred,
                           n_ranks, case.ic)
    with stage("DICE and report"):
        result = _evaluate(case, out, trained, final)
    summary = _summary(patient_dir, case.patient, case.scales, method, preset, trained, result,
                       stage)
    write_json_atomic(out / "summary.json", summary)
    log(f"== done in {time.perf_counter() - stage.t0:.0f} s: " + ", ".join(
        f"{k} {v:.3f}" for k, v in summary["dice"].items()) + f" -> {out / 'summary.json'}")
    return summary


def _evaluate(case: Case, out, trained, final) -> dict:
    """u_NN and u_FEM at t = 1 on the brain pixels, their masks, DICE, and the outputs."""
    patient, brain, scales = case.patient, case.brain, case.scales
    points = np.column_stack([_dimensionless(patient.pixel_centres_mm(brain), scales),
                              np.ones(int(brain.sum()))])
    u_nn = trained.predict(points)
    u_fem = _interpolator(final, scales)(points)
    params = trained.params
    images = {}
    for name, values in (("nn", u_nn), ("fem", u_fem)):
        image = np.zeros(patient.shape)
        image[brain] = values
        images[name] = image
    masks = {f"{source}_{region}": images[source] > params[f"th_{region}"]
             for source in ("nn", "fem") for region in ("wt", "tc")}
    observed = {"wt": patient.wt, "tc": patient.tc}
    scores = {f"{region.upper()}_{source.upper()}": dice(masks[f"{source}_{region}"],
                                                         observed[region])
              for source in ("nn", "fem") for region in ("wt", "tc")}
    _write_density(patient, images, out)
    _plot_report(patient, images, masks, scores, params, out / "report.png")
    u_error = float(np.linalg.norm(u_nn - u_fem) / np.linalg.norm(u_fem))
    return {"dice": scores, "u_rel_l2_vs_reference": u_error}


def _write_density(patient: Patient, images: dict, out: Path) -> None:
    """The inferred densities at t = 1 as NIfTI volumes on the patient grid (slice filled)."""
    import nibabel as nib

    for name, image in images.items():
        volume = np.zeros(patient.shape3d, dtype=np.float32)
        volume[:, :, patient.slice_index] = image
        with atomic_path(out / f"density_{name}.nii.gz") as tmp:
            nib.save(nib.Nifti1Image(volume, patient.affine), str(tmp))


def _plot_report(patient, images, masks, scores, params, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = np.nonzero(patient.wt)
    pad = 25
    window = (slice(max(rows.min() - pad, 0), rows.max() + pad),
              slice(max(cols.min() - pad, 0), cols.max() + pad))
    background = (patient.wm + 0.5 * patient.gm)[window]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.8))
    titles = ("observed WT / TC", "u_NN at t = 1", "u_FEM at t = 1 (inferred θ)")
    for ax, title, image in zip(axes, titles, (None, images["nn"], images["fem"]), strict=True):
        ax.imshow(background.T, cmap="gray", origin="lower")
        if image is not None:
            shown = np.ma.masked_less(image[window], 0.02)
            ax.imshow(shown.T, cmap="inferno", origin="lower", alpha=0.6, vmin=0, vmax=1)
        ax.contour(patient.wt[window].T, [0.5], colors="cyan", linewidths=1.2)
        ax.contour(patient.tc[window].T, [0.5], colors="lime", linewidths=1.2)
        source = "nn" if "NN" in title else "fem" if "FEM" in title else None
        if source:
            ax.contour(masks[f"{source}_wt"][window].T, [0.5], colors="cyan",
                       linestyles="--", linewidths=1.2)
            ax.contour(masks[f"{source}_tc"][window].T, [0.5], colors="lime",
                       linestyles="--", linewidths=1.2)
            title += (f"\nDICE WT {scores['WT_' + source.upper()]:.3f}, "
                      f"TC {scores['TC_' + source.upper()]:.3f}")
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    fig.suptitle(f"slice {patient.slice_index}: D = {params['D']:.3f}, ρ = {params['rho']:.3f}, "
                 f"u_c WT {params['th_wt']:.3f}, TC {params['th_tc']:.3f} "
                 "(solid: observed, dashed: predicted)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.93))  # room for the suptitle
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _summary(patient_dir, patient, scales, method, preset, trained, result, stage) -> dict:
    truth_path = Path(patient_dir) / "truth.json"
    truth = json.loads(truth_path.read_text()) if truth_path.exists() else {}
    # the truth as this pipeline sees it: D rescaled to the scales estimated from the masks
    names = {"D": "D_as_estimated", "rho": "rho_as_estimated", "th_wt": "u_c_wt",
             "th_tc": "u_c_tc"}
    params_true = {k: truth[v] for k, v in names.items() if v in truth}
    params = trained.params
    rel_err = {k: abs(params[k] - v) / abs(v) for k, v in params_true.items() if k in params}
    if {"D", "rho"} <= params_true.keys():
        for name, f in (("sqrt(D*rho)", lambda p: np.sqrt(p["D"] * p["rho"])),
                        ("sqrt(D/rho)", lambda p: np.sqrt(p["D"] / p["rho"]))):
            rel_err[name] = float(abs(f(params) - f(params_true)) / f(params_true))
    return {
        "method": method, "problem": "gbm", "patient": str(patient_dir), "preset": preset,
        "slice": patient.slice_index, "params": params, "params_true": params_true,
        "rel_err": rel_err, "dice": result["dice"],
        "u_rel_l2_vs_reference": result["u_rel_l2_vs_reference"],
        "scales": {"L_mm": scales.L_mm, "D_bar_mm2": scales.D_bar_mm2,
                   "rho_bar": scales.rho_bar, "centroid_mm": list(scales.centroid_mm)},
        "steps": trained.summary["steps"], "steps_by_phase": trained.summary["steps_by_phase"],
        "wall_s": round(sum(stage.wall.values()), 2), "wall_s_by_stage": stage.wall,
        "device": trained.device,
    }
