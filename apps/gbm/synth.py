"""Synthetic GBM patients on the ICBM152 2009 template: ``bilo gbm synth --seed S --out DIR``.

Recipe of :func:`synthesize_patient` (all random draws from ``numpy.random.default_rng(seed)``):

1. Template: the ICBM152 2009a grey/white-matter probability maps shipped inside nilearn
   (``nilearn.datasets.GM_MNI152_FILE_PATH`` / ``WM_MNI152_FILE_PATH``; 1 mm, 197×233×189,
   stored as uint8 0–255 and rescaled to [0, 1]). No CSF map is written (it is optional).
2. Slice: by default the axial slice with the most white matter (pixels with wm > 0.5):
   index 97, z = +25 mm, just above the bodies of the lateral ventricles; or the slice nearest
   to ``slice_mm``, or the slice ``slice_index``.
3. Domain and tissue: ``brain_mask`` (wm + gm > 0.1) and ``tissue_P`` (P = wm + gm/10) of
   ``apps.gbm.patient`` on that slice — the same functions the inference uses — meshed by
   ``meshes.mesh_from_mask`` (largest component, ``coarsen``), P sampled at the vertices.
4. Draws, one attempt at a time: a tumour centre among the deep white-matter pixels (wm > 0.5,
   at least 15 mm from the outside of the brain mask, which includes the ventricles, and at
   least 5 mm from any pixel with P <= 0.5); the characteristic length L_gen uniform in
   [15, 25] mm; D log-uniform in [0.5, 2]; ρ log-uniform in [0.75, 1.5]; u_c^WT uniform in
   [0.2, 0.35]; u_c^TC uniform in [0.5, 0.7] (see :data:`RANGES`). A quantity given in
   ``fixed`` (``bilo gbm synth --centre/--L/--D/--rho/--thresholds``) replaces its draw; the
   draws are made all the same, so the other quantities are those of the seed without it.
5. Forward model: the scales of L_gen by the rule of ``apps.gbm.scales`` (ρ̄ = 5,
   D̄ = L_gen²/20), the initial Gaussian of that module (σ = 2.5 mm, amplitude 0.5) at the
   centre, and ``solvers.fem.solve_fkpp2d`` (P1, Crank–Nicolson, in-process on
   ``MPI.COMM_SELF``) of u_t = D·D̄ ∇·(P∇u) + ρ·ρ̄ u(1−u) up to t = 1.
6. Masks: u(1) interpolated linearly over the triangles to the pixel centres (0 off the mesh;
   ``meshes.interpolation.P1Interpolator``);
   WT = u > u_c^WT, TC = u > u_c^TC (so TC ⊆ WT).
7. Acceptance: WT >= 100 pixels, TC >= 30 pixels, WT <= 4000 pixels, the Newton solve
   converged, and min u(1) >= −0.05 (the P1 solver with a consistent mass matrix is not
   positivity-preserving: under-resolved fronts, in grey matter where P is small, undershoot,
   and the logistic term amplifies negative values). Otherwise the next attempt draws again
   (all quantities of step 4) from the same stream, so the result is a function of the seed;
   with every quantity fixed there is nothing to redraw and a rejection is an error.
8. Labels (BraTS <= 2021): TC = necrotic 1 ∪ enhancing 4, with the enhancing tumour the rim of
   TC (TC minus its erosion by :data:`ENHANCING_RIM_PX` = 2 pixels, 4-connected) and the
   necrotic core inside; edema 2 = WT minus TC. Tumour on the chosen slice only.
9. PET, time scale and follow-up, drawn after the accepted first scan from the same stream
   (so a seed's first scan is the one it had before these were added; a fixed quantity's draw
   is made all the same): the PET scale s log-uniform in :data:`PET_SCALE_RANGE`; a standard
   normal ε per pixel of the slice; PET = max(0, s·(u(1) + σ·ε)) inside the first scan's WT, 0
   outside (σ = ``pet_noise``, default 0.05). Then, one follow-up attempt at a time: T (days
   from onset, t = 0, to the first scan, t = 1) log-uniform in :func:`time_scale_range`, the T
   that put D·D̄/T (mm²/day), ρ·ρ̄/T (/day) and the front speed 2·sqrt(D·D̄·ρ·ρ̄)/T (mm/day) in
   :data:`PHYSICAL_RANGES`; the interval Δ uniform in :data:`INTERVAL_DAYS`; the solve
   continued from u(1) to t2 = 1 + Δ/T (a second ``solve_fkpp2d`` from the vertex values of
   u(1), with ceil(n_steps·Δ/T) steps, about the first solve's step size); accepted when it
   converges, min u(t2) >= −0.05 and the follow-up WT (within the brain slice) has at most
   :data:`MAX_FOLLOWUP_WT_PX` pixels, otherwise T and Δ are drawn again (an error when both
   are fixed). Without a follow-up (``followup=False``) T and Δ are drawn once and no second
   solve is made. The follow-up's labels are made as in step 8.
10. Output in ``out_dir``: ``seg.nii.gz`` (uint8), ``wm.nii.gz``, ``gm.nii.gz`` (float32 in
   [0, 1]), ``pet.nii.gz`` (float32) and ``followup/seg.nii.gz`` (uint8) on the template grid,
   cropped by default to ``crop_slices`` = 2 slices either side
   of the tumour slice (the affine is shifted accordingly, as nibabel's slicer does; pass
   ``crop_slices=None`` for the whole volume); ``patient.json`` ``{"interval_days": Δ}`` with
   the follow-up; and ``truth.json``: the draws, both the scales
   used for generation and those estimated from the generated masks, and the parameters as the
   inference would see them, D·D̄_gen/D̄_est and ρ·ρ̄_gen/ρ̄_est, next to the scale-free products
   D·D̄ (mm² per unit time) and ρ·ρ̄ (per unit time), T_days, interval_days, the physical
   D_mm2_per_day, rho_per_day, front_speed_mm_per_day, pet_scale and pet_noise, and the
   follow-up's t2, areas and solver figures.

The solve runs in-process on ``MPI.COMM_SELF`` (mpi4py initialises MPI on import when needed),
so a plain ``python`` process works; run it on one process only (under ``mpirun -n N`` every
rank would write the same files). Solve times and the effect of ``coarsen`` and ``n_steps``:
docs/gbm.md.

``bilo gbm synth`` (``bilo/cli.py``) and ``python -m apps.gbm.synth`` take the options of
:func:`add_synth_arguments` and run :func:`run_synth`; bad values are InputErrors (one line).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from apps.gbm.patient import (
    DEFAULT_BRAIN_THRESHOLD,
    DEFAULT_GM_RATIO,
    Patient,
    brain_mask,
    tissue_P,
)
from apps.gbm.scales import (
    IC_AMPLITUDE,
    IC_WIDTH_MM,
    RHO_BAR,
    THRESHOLD_RANGES,
    estimate_scales,
    scales_from_length,
)
from meshes.image_mesh import affine_2d
from meshes.interpolation import P1Interpolator
from solvers.common import InputError, atomic_path

GENERATOR_VERSION = 2
RANGES = {
    "L_mm": (15.0, 25.0),  # uniform
    "D": (0.5, 2.0),  # log-uniform
    "rho": (0.75, 1.5),  # log-uniform
    "u_c_wt": THRESHOLD_RANGES["th_wt"],  # uniform
    "u_c_tc": THRESHOLD_RANGES["th_tc"],  # uniform
}
MIN_WT_PX = 100
MIN_TC_PX = 30
MAX_WT_PX = 4000
MAX_UNDERSHOOT = 0.05
MAX_ATTEMPTS = 12
CENTRE_BOUNDARY_MM = 15.0
CENTRE_DEEP_WM_MM = 5.0
ENHANCING_RIM_PX = 2
DEFAULT_N_STEPS = 50
DEFAULT_CROP_SLICES = 2
FIRST_SCAN_FIXABLE = ("centre_mm", "L_mm", "D", "rho", "thresholds")
FIXABLE = (*FIRST_SCAN_FIXABLE, "T_days", "interval_days", "pet_scale")
# physical time scale (docs/gbm.md, "Time units, follow-up scans and PET"): T_days, the time
# from onset (t = 0) to the first scan (t = 1), is drawn log-uniformly among the T for which
# D*D_bar/T, rho*rho_bar/T and the nominal front speed 2*sqrt(D_phys*rho_phys) all lie in
# these ranges (the speed range from the literature, the D and rho ranges assumptions)
PHYSICAL_RANGES = {
    "D_mm2_per_day": (0.02, 1.5),
    "rho_per_day": (0.002, 0.2),
    "front_speed_mm_per_day": (0.029, 0.13),
}
INTERVAL_DAYS = (60.0, 180.0)  # uniform: the follow-up scan interval
PET_SCALE_RANGE = (0.5, 2.0)  # log-uniform: PET = scale * u(1) inside WT (arbitrary units)
DEFAULT_PET_NOISE = 0.05  # sd of the PET noise relative to the scale (PET of u = 1)
MAX_FOLLOWUP_WT_PX = 10000  # about half the brain of slice 97 (18,806 px)
MODEL_TEXT = ("u_t = D*D_bar*div(P(x) grad u) + rho*rho_bar*u*(1-u) on the brain slice, "
              "no flux on its boundary, t in [0, 1]; P = wm + gm_ratio*gm clipped to [0, 1]; "
              "u(x, 0) = A*exp(-|x - x0|^2/(2*w^2)); WT = u(x, 1) > u_c_wt, "
              "TC = u(x, 1) > u_c_tc")
FOLLOWUP_TEXT = ("the same solve continued to t2 = 1 + interval_days/T_days (t = days since "
                 "onset / T_days); followup/seg.nii.gz: WT = u(x, t2) > u_c_wt, "
                 "TC = u(x, t2) > u_c_tc")
PET_TEXT = ("pet = max(0, pet_scale*(u(x, 1) + pet_noise*eps(x))) inside WT of the first scan, "
            "0 outside; eps iid standard normal per pixel; tumour slice only")


def load_template() -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, str]]:
    """(wm, gm, affine, paths): the ICBM152 2009 probability maps of nilearn in [0, 1]."""
    import nibabel as nib
    from nilearn import datasets

    paths = {"wm": datasets.WM_MNI152_FILE_PATH, "gm": datasets.GM_MNI152_FILE_PATH}
    maps = {}
    affine = None
    for role, path in paths.items():
        image = nib.load(path)
        data = np.asarray(image.dataobj, dtype=np.float64)
        if data.max() > 1.5:  # stored as 0-255
            data /= 255.0
        maps[role] = np.clip(data, 0.0, 1.0)
        affine = np.asarray(image.affine, dtype=np.float64)
    return maps["wm"], maps["gm"], affine, {k: str(v) for k, v in paths.items()}


def default_slice(wm: np.ndarray) -> int:
    """The axial slice (last axis) with the most pixels of wm > 0.5 (lowest index on ties)."""
    return int(np.argmax((wm > 0.5).sum(axis=(0, 1))))


def slice_at_mm(affine: np.ndarray, z_mm: float, n_slices: int) -> int:
    """Index of the axial slice nearest to z = `z_mm` (mm)."""
    column, offset = affine[2, 2], affine[2, 3]
    if abs(column) < 1e-12:
        raise InputError("slice_mm: the template's last voxel axis is not axial")
    k = int(round((z_mm - offset) / column))
    if not 0 <= k < n_slices:
        raise InputError(f"slice_mm={z_mm}: outside the template (slices 0..{n_slices - 1})")
    return k


def _template_patient(wm2, gm2, affine, k) -> Patient:
    """A Patient for the template slice, without tumour (for brain_mask and tissue_P)."""
    empty = np.zeros(wm2.shape, dtype=bool)
    sizes = np.linalg.norm(affine[:3, :3], axis=0)
    return Patient(wm=wm2, gm=gm2, csf=None, wt=empty, tc=empty,
                   labels=np.zeros(wm2.shape, np.int16), slice_index=k, affine=affine,
                   affine2d=affine_2d(affine, slice_axis=2, slice_index=k),
                   spacing=(float(sizes[0]), float(sizes[1])), slice_thickness=float(sizes[2]),
                   convention="brats2021")


def centre_candidates(patient: Patient, P: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Pixel indices (n, 2) allowed as tumour centres (see the module docstring, step 4)."""
    spacing = patient.spacing
    to_boundary = ndimage.distance_transform_edt(mask, sampling=spacing)
    to_low_P = ndimage.distance_transform_edt(P > 0.5, sampling=spacing)
    allowed = ((patient.wm > 0.5) & (to_boundary >= CENTRE_BOUNDARY_MM)
               & (to_low_P >= CENTRE_DEEP_WM_MM))
    return np.argwhere(allowed)


def _draw(rng: np.random.Generator, candidates: np.ndarray, fixed: dict) -> dict:
    """One attempt's quantities (step 4); those in `fixed` (checked by :func:`check_fixed`,
    the centre as a voxel) replace their draws, which are made all the same."""
    def log_uniform(low, high):
        return float(np.exp(rng.uniform(np.log(low), np.log(high))))

    index = (candidates[int(rng.integers(len(candidates)))] if len(candidates)
             else fixed["centre_voxel"])
    params = {"centre_voxel": [int(index[0]), int(index[1])],
              "L_mm": float(rng.uniform(*RANGES["L_mm"])),
              "D": log_uniform(*RANGES["D"]), "rho": log_uniform(*RANGES["rho"]),
              "u_c_wt": float(rng.uniform(*RANGES["u_c_wt"])),
              "u_c_tc": float(rng.uniform(*RANGES["u_c_tc"]))}
    for name in ("centre_voxel", "L_mm", "D", "rho"):
        if name in fixed:
            params[name] = fixed[name]
    if "thresholds" in fixed:
        params["u_c_wt"], params["u_c_tc"] = fixed["thresholds"]
    return params


def _positive(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}: expected a number, got {value!r}") from None
    if not (np.isfinite(value) and value > 0):
        raise InputError(f"{name} must be a finite number > 0, got {value:g}")
    return value


def _pair(name: str, value) -> tuple[float, float]:
    """Two numbers, from a sequence or a string "a,b"."""
    parts = value.split(",") if isinstance(value, str) else list(np.ravel(value))
    try:
        pair = tuple(float(v) for v in parts)
    except (TypeError, ValueError):
        raise InputError(f"{name}: expected two numbers A,B, got {value!r}") from None
    if len(pair) != 2 or not all(np.isfinite(pair)):
        raise InputError(f"{name}: expected two finite numbers A,B, got {value!r}")
    return pair


def check_fixed(fixed: dict | None) -> dict:
    """The quantities that replace their draws, checked: ``centre_mm`` (x, y in mm, a pair),
    ``L_mm``, ``D``, ``rho``, ``T_days``, ``interval_days``, ``pet_scale`` (> 0) and
    ``thresholds`` (u_c^WT, u_c^TC with 0 < u_c^WT < u_c^TC < 1). None values are dropped;
    InputError (one line) otherwise."""
    fixed = {k: v for k, v in (fixed or {}).items() if v is not None}
    unknown = set(fixed) - set(FIXABLE)
    if unknown:
        raise InputError(f"unknown fixed quantity {', '.join(sorted(unknown))}; known: "
                         f"{', '.join(FIXABLE)}")
    checked = {}
    for name, flag in (("L_mm", "--L"), ("D", "--D"), ("rho", "--rho"),
                       ("T_days", "--T-days"), ("interval_days", "--interval-days"),
                       ("pet_scale", "--pet-scale")):
        if name in fixed:
            checked[name] = _positive(flag, fixed[name])
    if "centre_mm" in fixed:
        checked["centre_mm"] = _pair("--centre", fixed["centre_mm"])
    if "thresholds" in fixed:
        wt, tc = _pair("--thresholds", fixed["thresholds"])
        if not 0.0 < wt < tc < 1.0:
            raise InputError(f"--thresholds {wt:g},{tc:g}: need 0 < u_c_wt < u_c_tc < 1")
        checked["thresholds"] = (wt, tc)
    return checked


def _integer(name: str, value, minimum: int) -> int:
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise InputError(f"{name}: expected an integer, got {value!r}") from None
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def tumour_labels(wt: np.ndarray, tc: np.ndarray, rim_px: int = ENHANCING_RIM_PX) -> np.ndarray:
    """BraTS <= 2021 labels: 2 edema (WT \\ TC), 4 enhancing (rim of TC), 1 necrotic (TC
    eroded by `rim_px` pixels, 4-connected)."""
    core = ndimage.binary_erosion(tc, iterations=rim_px) if rim_px > 0 else tc.copy()
    labels = np.zeros(wt.shape, dtype=np.uint8)
    labels[wt] = 2
    labels[tc] = 4
    labels[core] = 1
    return labels


def _forward(mesh_data, P_vertex, scales, params, n_steps, u0=None, duration=1.0):
    """The FEM solve over [0, `duration`] from the initial Gaussian of `scales`, or from the
    vertex values `u0` (the equation is autonomous: a solve from u(1) over [0, d] continues the
    first one to t = 1 + d)."""
    from mpi4py import MPI

    from solvers.fem import solve_fkpp2d

    return solve_fkpp2d(mesh_data, P_vertex, params["D"] * scales.D_bar_mm2,
                        params["rho"] * scales.rho_bar,
                        scales.initial_condition if u0 is None else u0,
                        [0.0, duration], n_steps=n_steps, comm=MPI.COMM_SELF, P_at="vertex")


def time_scale_range(D_mm2: float, rho: float) -> tuple[float, float]:
    """(T_min, T_max) in days: the times from onset to the first scan for which the physical
    D_mm2/T (mm²/day), rho/T (/day) and the nominal front speed 2·sqrt(D_mm2·rho)/T (mm/day)
    all lie in :data:`PHYSICAL_RANGES`; `D_mm2` = D·D̄ (mm² per unit time), `rho` = ρ·ρ̄ (per
    unit time). T_min > T_max when no T fits."""
    (d_low, d_high) = PHYSICAL_RANGES["D_mm2_per_day"]
    (r_low, r_high) = PHYSICAL_RANGES["rho_per_day"]
    (v_low, v_high) = PHYSICAL_RANGES["front_speed_mm_per_day"]
    speed = 2.0 * np.sqrt(D_mm2 * rho)  # mm per unit time
    return (max(D_mm2 / d_high, rho / r_high, speed / v_high),
            min(D_mm2 / d_low, rho / r_low, speed / v_low))


def physical_parameters(D_mm2: float, rho: float, T_days: float) -> dict:
    """D (mm²/day), ρ (/day) and the nominal front speed 2·sqrt(Dρ) (mm/day) of the scale-free
    products D·D̄ (`D_mm2`) and ρ·ρ̄ (`rho`) with T_days days from onset to the first scan, and
    whether each lies in :data:`PHYSICAL_RANGES`."""
    values = {"D_mm2_per_day": D_mm2 / T_days, "rho_per_day": rho / T_days}
    values["front_speed_mm_per_day"] = 2.0 * np.sqrt(values["D_mm2_per_day"]
                                                     * values["rho_per_day"])
    inside = {name: bool(PHYSICAL_RANGES[name][0] <= value <= PHYSICAL_RANGES[name][1])
              for name, value in values.items()}
    return {**values, "in_ranges": inside}


def _log_uniform_from(unit: float, low: float, high: float) -> float:
    """The log-uniform value in [low, high] at quantile `unit` (a uniform draw in [0, 1))."""
    return float(np.exp(np.log(low) + unit * (np.log(high) - np.log(low))))


def _write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    import nibabel as nib

    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=4)  # MNI152 space
    image.set_sform(affine, code=4)
    image.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))


def synthesize_patient(seed: int, out_dir, *, slice_mm: float | None = None,
                       slice_index: int | None = None, coarsen: int = 1,
                       n_steps: int = DEFAULT_N_STEPS,
                       crop_slices: int | None = DEFAULT_CROP_SLICES,
                       gm_ratio: float = DEFAULT_GM_RATIO,
                       brain_threshold: float = DEFAULT_BRAIN_THRESHOLD,
                       max_attempts: int = MAX_ATTEMPTS, fixed: dict | None = None,
                       followup: bool = True, pet_noise: float = DEFAULT_PET_NOISE) -> dict:
    """Generate a synthetic patient folder (see the module docstring) and return its truth
    record (also written to ``out_dir/truth.json``), with ``paths`` added.

    Args:
        seed: integer seed of every random draw.
        out_dir: folder to write (created; existing files of the same names are replaced).
        slice_mm: z (mm) of the axial slice; default: the slice with the most white matter.
        slice_index: the axial slice by its index in the template instead (not with slice_mm).
        coarsen: mesh coarsening factor (1: one square per pixel; 2: a quarter of the cells,
            faster, but its fronts undershoot more often).
        n_steps: time steps of the forward solve over [0, 1].
        crop_slices: slices kept either side of the tumour slice (None: the whole volume).
        gm_ratio, brain_threshold: of ``tissue_P`` and ``brain_mask``.
        max_attempts: draws tried before giving up (InputError), for the first scan and
            again for the follow-up.
        fixed: quantities that replace their draws (see :func:`check_fixed`): ``centre_mm``
            (snapped to the nearest pixel, which must lie on the brain mesh), ``L_mm``, ``D``,
            ``rho``, ``thresholds`` (u_c^WT, u_c^TC), ``T_days``, ``interval_days``,
            ``pet_scale``.
        followup: write the follow-up scan (``followup/seg.nii.gz`` and ``patient.json``).
        pet_noise: sd of the PET noise relative to pet_scale, >= 0.
    """
    started = time.perf_counter()
    seed = _integer("seed", seed, 0)
    if crop_slices is not None:
        crop_slices = _integer("crop_slices", crop_slices, 0)
    coarsen = _integer("coarsen", coarsen, 1)
    n_steps = _integer("n_steps", n_steps, 1)
    max_attempts = _integer("max_attempts", max_attempts, 1)
    brain_threshold = float(brain_threshold)
    if not np.isfinite(brain_threshold):
        raise InputError(f"brain_threshold must be finite, got {brain_threshold}")
    if slice_mm is not None and slice_index is not None:
        raise InputError("give the slice by its z (slice_mm) or by its index, not both")
    fixed = check_fixed(fixed)
    pet_noise = _number("--pet-noise", pet_noise, DEFAULT_PET_NOISE)
    if pet_noise < 0:
        raise InputError(f"--pet-noise must be >= 0, got {pet_noise:g}")
    if not followup and "interval_days" in fixed:
        raise InputError("--interval-days and --no-followup: give one of them")
    from meshes.image_mesh import mesh_from_mask

    wm3, gm3, affine, template_paths = load_template()
    n_slices = wm3.shape[2]
    if slice_index is not None:
        k = _integer("slice index", slice_index, 0)
        if k >= n_slices:
            raise InputError(f"slice {k}: outside the template (slices 0..{n_slices - 1})")
    else:
        k = default_slice(wm3) if slice_mm is None else slice_at_mm(affine, slice_mm, n_slices)
    template = _template_patient(wm3[:, :, k].copy(), gm3[:, :, k].copy(), affine, k)
    mask = brain_mask(template, brain_threshold)
    P = tissue_P(template, gm_ratio)
    mesh_data = mesh_from_mask(mask, template.affine2d, coarsen=coarsen, vertex_images={"P": P})
    P_vertex = mesh_data.vertex_fields["P"]
    candidates = centre_candidates(template, P, mask)
    pixels = np.argwhere(mask)
    pixel_mm = template.voxel_to_mm(pixels)
    to_pixels = P1Interpolator(mesh_data.mesh.vertices, mesh_data.mesh.cells)
    if "centre_mm" in fixed:
        voxel = np.rint(template.mm_to_voxel(fixed["centre_mm"])[0]).astype(int)
        centre = template.voxel_to_mm(voxel)
        if (np.any(voxel < 0) or np.any(voxel >= mask.shape)
                or not to_pixels.locate(centre)[0][0]):
            x, y = fixed["centre_mm"]
            raise InputError(f"--centre {x:g},{y:g}: not on the brain mesh of slice {k}")
        fixed["centre_voxel"] = [int(voxel[0]), int(voxel[1])]
    elif len(candidates) == 0:
        raise InputError(f"slice {k}: no deep white matter to place a tumour centre in; give "
                         "the centre (--centre X,Y)")
    all_fixed = set(FIRST_SCAN_FIXABLE) <= set(fixed)

    def to_image(u_vertex):
        image = np.zeros(mask.shape)
        image[pixels[:, 0], pixels[:, 1]] = to_pixels(u_vertex, pixel_mm)
        return image

    rng = np.random.default_rng(seed)
    rejected = []
    for _ in range(max_attempts):
        params = _draw(rng, candidates, fixed)
        centre_mm = template.voxel_to_mm(params["centre_voxel"])[0]
        scales_gen = scales_from_length(params["L_mm"], centre_mm)
        solve_started = time.perf_counter()
        try:
            solution = _forward(mesh_data, P_vertex, scales_gen, params, n_steps)
        except RuntimeError as exc:  # Newton failure: blow-up of an undershoot
            rejected.append({**params, "reason": f"forward solve failed: {exc}"})
            if all_fixed:
                raise InputError(f"the fixed centre, L, D, rho and thresholds: forward solve "
                                 f"failed: {exc}") from None
            continue
        solve_wall = time.perf_counter() - solve_started
        u1 = solution.u[-1]
        u_image = to_image(u1)
        wt = (u_image > params["u_c_wt"]) & mask
        tc = (u_image > params["u_c_tc"]) & mask
        n_wt, n_tc = int(wt.sum()), int(tc.sum())
        reasons = []
        if u1.min() < -MAX_UNDERSHOOT:
            reasons.append(f"undershoot: min u(1) = {u1.min():.3g} < -{MAX_UNDERSHOOT}")
        if n_wt < MIN_WT_PX:
            reasons.append(f"WT area {n_wt} px < {MIN_WT_PX}")
        if n_wt > MAX_WT_PX:
            reasons.append(f"WT area {n_wt} px > {MAX_WT_PX}")
        if n_tc < MIN_TC_PX:
            reasons.append(f"TC area {n_tc} px < {MIN_TC_PX}")
        if not reasons:
            break
        rejected.append({**params, "reason": "; ".join(reasons)})
        if all_fixed:
            raise InputError(f"the fixed centre, L, D, rho and thresholds give no acceptable "
                             f"tumour: {rejected[-1]['reason']}")
    else:
        raise InputError(f"seed {seed}: no acceptable tumour in {max_attempts} attempts; "
                         f"last: {rejected[-1]['reason']}")

    # step 10: PET, time scale and follow-up, drawn after the accepted attempt (so a seed's
    # first scan is the same as without them)
    D_mm2 = params["D"] * scales_gen.D_bar_mm2
    rho_t = params["rho"] * scales_gen.rho_bar
    pet_scale = float(np.exp(rng.uniform(*np.log(PET_SCALE_RANGE))))
    pet_scale = fixed.get("pet_scale", pet_scale)
    pet_eps = rng.standard_normal(mask.shape)
    pet2d = np.where(wt, np.maximum(pet_scale * (u_image + pet_noise * pet_eps), 0.0), 0.0)
    T_low, T_high = time_scale_range(D_mm2, rho_t)
    if T_low > T_high and "T_days" not in fixed:
        raise InputError(f"no time scale T puts D*D_bar/T = {D_mm2:.4g}/T mm^2/day, "
                         f"rho*rho_bar/T = {rho_t:.4g}/T /day and the front speed in the "
                         "ranges of apps.gbm.synth.PHYSICAL_RANGES; give --T-days")
    both_fixed = {"T_days", "interval_days"} <= set(fixed)
    followup_rejected = []
    follow = None
    for _ in range(max_attempts):
        unit_T, unit_interval = rng.random(), rng.random()
        T_days = fixed.get("T_days") or _log_uniform_from(unit_T, T_low, T_high)
        interval = fixed.get("interval_days") or float(
            INTERVAL_DAYS[0] + unit_interval * (INTERVAL_DAYS[1] - INTERVAL_DAYS[0]))
        if not followup:
            break
        duration = interval / T_days
        steps2 = max(1, int(np.ceil(n_steps * duration)))
        draw = {"T_days": T_days, "interval_days": interval}
        solve_started = time.perf_counter()
        try:
            later = _forward(mesh_data, P_vertex, scales_gen, params, steps2, u0=u1,
                             duration=duration)
        except RuntimeError as exc:
            followup_rejected.append({**draw, "reason": f"forward solve failed: {exc}"})
        else:
            u2 = later.u[-1]
            u2_image = to_image(u2)
            wt2 = (u2_image > params["u_c_wt"]) & mask
            tc2 = (u2_image > params["u_c_tc"]) & mask
            reasons = []
            if u2.min() < -MAX_UNDERSHOOT:
                reasons.append(f"undershoot: min u(t2) = {u2.min():.3g} < -{MAX_UNDERSHOOT}")
            if wt2.sum() > MAX_FOLLOWUP_WT_PX:
                reasons.append(f"follow-up WT area {int(wt2.sum())} px > {MAX_FOLLOWUP_WT_PX}")
            if not reasons:
                follow = {"wt": wt2, "tc": tc2, "u_min": float(u2.min()),
                          "u_max": float(u2.max()), "n_steps": steps2,
                          "wall_s": time.perf_counter() - solve_started}
                break
            followup_rejected.append({**draw, "reason": "; ".join(reasons)})
        if both_fixed:
            raise InputError(f"the fixed --T-days and --interval-days give no acceptable "
                             f"follow-up: {followup_rejected[-1]['reason']}")
    else:
        raise InputError(f"seed {seed}: no acceptable follow-up in {max_attempts} attempts; "
                         f"last: {followup_rejected[-1]['reason']}")

    labels2d = tumour_labels(wt, tc)
    scales_est = estimate_scales(wt, tc, template.affine2d)
    k0 = 0 if crop_slices is None else max(0, k - crop_slices)
    k1 = n_slices if crop_slices is None else min(n_slices, k + crop_slices + 1)
    shift = np.eye(4)
    shift[2, 3] = k0
    out_affine = affine @ shift  # voxel k - k0 of the output is voxel k of the template
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seg = np.zeros((*mask.shape, k1 - k0), dtype=np.uint8)
    seg[:, :, k - k0] = labels2d
    paths = {"seg": out_dir / "seg.nii.gz", "wm": out_dir / "wm.nii.gz",
             "gm": out_dir / "gm.nii.gz"}
    _write_nifti(paths["seg"], seg, out_affine)
    _write_nifti(paths["wm"], wm3[:, :, k0:k1].astype(np.float32), out_affine)
    _write_nifti(paths["gm"], gm3[:, :, k0:k1].astype(np.float32), out_affine)
    paths["pet"] = out_dir / "pet.nii.gz"
    pet = np.zeros((*mask.shape, k1 - k0), dtype=np.float32)
    pet[:, :, k - k0] = pet2d
    _write_nifti(paths["pet"], pet, out_affine)
    if follow is not None:
        paths["followup_seg"] = out_dir / "followup" / "seg.nii.gz"
        paths["followup_seg"].parent.mkdir(exist_ok=True)
        seg2 = np.zeros_like(seg)
        seg2[:, :, k - k0] = tumour_labels(follow["wt"], follow["tc"])
        _write_nifti(paths["followup_seg"], seg2, out_affine)
        paths["patient_json"] = out_dir / "patient.json"
        with atomic_path(paths["patient_json"]) as tmp:
            Path(tmp).write_text(json.dumps({"interval_days": interval}, indent=2) + "\n")

    pixel_area = template.pixel_area_mm2
    counts = {name: int((labels2d == value).sum())
              for name, value in (("necrotic", 1), ("edema", 2), ("enhancing", 4))}
    physical = physical_parameters(D_mm2, rho_t, T_days)
    D_est = params["D"] * scales_gen.D_bar_mm2 / scales_est.D_bar_mm2
    rho_est = params["rho"] * scales_gen.rho_bar / scales_est.rho_bar
    truth = {
        "generator": "apps.gbm.synth (bilo-toolkit)",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "attempt": len(rejected),
        "model": MODEL_TEXT,
        "time_unit": "dimensionless: t = (days since onset)/T_days; t = 0 the seed, t = 1 "
                     "the first scan, t = 1 + interval_days/T_days the follow-up",
        "template": "ICBM152 2009a nonlinear symmetric GM/WM probability maps (nilearn)",
        "template_files": {k_: Path(v).name for k_, v in template_paths.items()},
        "template_slice_index": k,
        "slice_index": k - k0,
        "slice_z_mm": float((affine @ [0.0, 0.0, k, 1.0])[2]),
        "crop": {"first_template_slice": k0, "n_slices": k1 - k0,
                 "crop_slices": crop_slices},
        "labels": "BraTS<=2021: 1 necrotic (TC eroded by 2 px), 2 edema (WT minus TC), "
                  f"4 enhancing (rim of TC, {ENHANCING_RIM_PX} px)",
        "centre_mm": [float(c) for c in centre_mm],
        "centre_voxel": params["centre_voxel"],
        "D": params["D"],
        "rho": params["rho"],
        "u_c_wt": params["u_c_wt"],
        "u_c_tc": params["u_c_tc"],
        "fixed": sorted(name for name in fixed if name != "centre_voxel"),
        "gm_ratio": gm_ratio,
        "brain_threshold": brain_threshold,
        "scales_generation": scales_gen.to_dict(),
        "scales_estimated": scales_est.to_dict(),
        "D_times_D_bar_mm2": params["D"] * scales_gen.D_bar_mm2,
        "rho_times_rho_bar": params["rho"] * scales_gen.rho_bar,
        "D_as_estimated": D_est,
        "rho_as_estimated": rho_est,
        "areas_px": {"wt": n_wt, "tc": n_tc, **counts},
        "areas_mm2": {"wt": n_wt * pixel_area, "tc": n_tc * pixel_area},
        "T_days": T_days,
        "interval_days": interval if follow is not None else None,
        **{name: value for name, value in physical.items() if name != "in_ranges"},
        "physical_in_ranges": physical["in_ranges"],
        "T_days_range": [T_low, T_high],
        "pet_scale": pet_scale,
        "pet_noise": pet_noise,
        "pet": {"model": PET_TEXT, "max": float(pet2d.max()),
                "mean_in_wt": float(pet2d[wt].mean())},
        "followup": None if follow is None else {
            "model": FOLLOWUP_TEXT,
            "t2": 1.0 + interval / T_days,
            "areas_px": {"wt": int(follow["wt"].sum()), "tc": int(follow["tc"].sum())},
            "solver": {"n_steps": follow["n_steps"], "u_min": follow["u_min"],
                       "u_max": follow["u_max"], "wall_s": follow["wall_s"]},
        },
        "followup_rejected": followup_rejected,
        "ranges": {name: list(bounds) for name, bounds in RANGES.items()},
        "physical_ranges": {name: list(bounds) for name, bounds in PHYSICAL_RANGES.items()},
        "interval_days_range": list(INTERVAL_DAYS),
        "pet_scale_range": list(PET_SCALE_RANGE),
        "rho_bar": RHO_BAR,
        "ic": {"width_mm": IC_WIDTH_MM, "amplitude": IC_AMPLITUDE},
        "solver": {"name": solution.info["solver"], "scheme": solution.info["scheme"],
                   "coarsen": coarsen, "n_steps": n_steps, "n_cells": mesh_data.n_cells,
                   "n_vertices": mesh_data.n_vertices, "u_min": float(u1.min()),
                   "u_max": float(u1.max()), "wall_s": solve_wall},
        "rejected": rejected,
        "wall_s": time.perf_counter() - started,
    }
    (out_dir / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    return {**truth, "paths": {role: str(p) for role, p in
                               {**paths, "truth": out_dir / "truth.json"}.items()}}


def add_synth_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``bilo gbm synth`` and ``python -m apps.gbm.synth``. Values are read as
    text and checked by :func:`run_synth`, so a bad one is a one-line InputError."""
    parser.add_argument("--seed", default="0", help="random seed, an integer >= 0 (default 0)")
    parser.add_argument("--out", required=True, metavar="DIR", help="patient folder to write")
    parser.add_argument("--slice", metavar="K", default=None,
                        help="axial slice index in the template (default: the one with most "
                             "white matter, 97)")
    parser.add_argument("--slice-mm", metavar="Z", default=None,
                        help="the axial slice nearest to z = Z mm instead (97 is z = 25 mm)")
    fixed = parser.add_argument_group(
        "fixed quantities (each replaces its draw; the other draws stay those of the seed)")
    fixed.add_argument("--centre", metavar="X,Y", default=None,
                       help="tumour centre in mm, on the brain mesh; a negative X needs "
                            "--centre=X,Y (default: drawn in deep "
                            f"white matter, >= {CENTRE_BOUNDARY_MM:g} mm from the brain's "
                            f"outside, >= {CENTRE_DEEP_WM_MM:g} mm from P <= 0.5)")
    fixed.add_argument("--L", metavar="MM", default=None,
                       help="characteristic length L_gen in mm (sets D_bar = L^2/20; default: "
                            "uniform in [{:g}, {:g}])".format(*RANGES["L_mm"]))
    fixed.add_argument("--D", metavar="D", default=None,
                       help="dimensionless diffusion D > 0 (default: log-uniform in "
                            "[{:g}, {:g}])".format(*RANGES["D"]))
    fixed.add_argument("--rho", metavar="RHO", default=None,
                       help="dimensionless growth rate rho > 0 (default: log-uniform in "
                            "[{:g}, {:g}])".format(*RANGES["rho"]))
    fixed.add_argument("--thresholds", metavar="WT,TC", default=None,
                       help="mask thresholds u_c_wt,u_c_tc, 0 < WT < TC < 1 (default: uniform "
                            "in [{:g}, {:g}] and [{:g}, {:g}])".format(*RANGES["u_c_wt"],
                                                                     *RANGES["u_c_tc"]))
    fixed.add_argument("--T-days", metavar="T", default=None,
                       help="days from tumour onset (t = 0) to the first scan (t = 1) (default: "
                            "log-uniform among the T that put the physical D, rho and front "
                            "speed in their literature ranges, docs/gbm.md)")
    fixed.add_argument("--interval-days", metavar="DAYS", default=None,
                       help="days from the first scan to the follow-up (default: uniform in "
                            "[{:g}, {:g}])".format(*INTERVAL_DAYS))
    fixed.add_argument("--pet-scale", metavar="S", default=None,
                       help="PET = S*u(1) inside the whole tumour (default: log-uniform in "
                            "[{:g}, {:g}])".format(*PET_SCALE_RANGE))
    scans = parser.add_argument_group("follow-up scan and PET")
    scans.add_argument("--no-followup", action="store_true",
                       help="write no follow-up scan (followup/, patient.json)")
    scans.add_argument("--pet-noise", metavar="SIGMA", default=None,
                       help="sd of the PET noise relative to the PET scale, >= 0 (default "
                            f"{DEFAULT_PET_NOISE:g})")
    model = parser.add_argument_group("tissue, forward solve and output")
    model.add_argument("--gm-ratio", metavar="R", default=None,
                       help=f"P = wm + R*gm (default {DEFAULT_GM_RATIO:g})")
    model.add_argument("--brain-threshold", metavar="T", default=None,
                       help=f"brain = wm + gm > T (default {DEFAULT_BRAIN_THRESHOLD:g})")
    model.add_argument("--coarsen", metavar="C", default="1",
                       help="mesh coarsening, an integer >= 1 (default 1: one square per pixel)")
    model.add_argument("--n-steps", metavar="N", default=str(DEFAULT_N_STEPS),
                       help=f"time steps of the FEM solve (default {DEFAULT_N_STEPS})")
    model.add_argument("--max-attempts", metavar="N", default=str(MAX_ATTEMPTS),
                       help=f"draws tried before giving up (default {MAX_ATTEMPTS})")
    model.add_argument("--crop-slices", metavar="K", default=str(DEFAULT_CROP_SLICES),
                       help="slices kept either side of the tumour slice; -1: whole volume "
                            f"(default {DEFAULT_CROP_SLICES})")
    return parser


def _number(name: str, value, default: float) -> float:
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"{name}: expected a number, got {value!r}") from None
    if not np.isfinite(number):
        raise InputError(f"{name} must be finite, got {value}")
    return number


def run_synth(args: argparse.Namespace) -> str:
    """Run ``bilo gbm synth`` from parsed arguments; returns the one-line summary."""
    if args.slice is not None and args.slice_mm is not None:
        raise InputError("--slice and --slice-mm: give one of them")
    crop = _integer("--crop-slices", args.crop_slices, -1)
    gm_ratio = _number("--gm-ratio", args.gm_ratio, DEFAULT_GM_RATIO)
    if gm_ratio < 0:
        raise InputError(f"--gm-ratio must be >= 0, got {gm_ratio:g}")
    truth = synthesize_patient(
        _integer("--seed", args.seed, 0), args.out,
        slice_mm=None if args.slice_mm is None else _number("--slice-mm", args.slice_mm, 0.0),
        slice_index=None if args.slice is None else _integer("--slice", args.slice, 0),
        coarsen=_integer("--coarsen", args.coarsen, 1),
        n_steps=_integer("--n-steps", args.n_steps, 1),
        crop_slices=None if crop < 0 else crop, gm_ratio=gm_ratio,
        brain_threshold=_number("--brain-threshold", args.brain_threshold,
                                DEFAULT_BRAIN_THRESHOLD),
        max_attempts=_integer("--max-attempts", args.max_attempts, 1),
        fixed={"centre_mm": args.centre, "L_mm": args.L, "D": args.D, "rho": args.rho,
               "thresholds": args.thresholds, "T_days": args.T_days,
               "interval_days": args.interval_days, "pet_scale": args.pet_scale},
        followup=not args.no_followup,
        pet_noise=_number("--pet-noise", args.pet_noise, DEFAULT_PET_NOISE))
    fixed = f", fixed: {', '.join(truth['fixed'])}" if truth["fixed"] else ""
    follow = ("no follow-up" if truth["followup"] is None else
              f"follow-up after {truth['interval_days']:.0f} days: WT "
              f"{truth['followup']['areas_px']['wt']} px")
    return (f"gbm synth: seed {truth['seed']} -> {args.out}: slice {truth['slice_index']} "
            f"(z = {truth['slice_z_mm']:g} mm), WT {truth['areas_px']['wt']} px, "
            f"TC {truth['areas_px']['tc']} px, D = {truth['D']:.3f}, rho = {truth['rho']:.3f}, "
            f"u_c = {truth['u_c_wt']:.3f}/{truth['u_c_tc']:.3f}, T = {truth['T_days']:.0f} "
            f"days (D = {truth['D_mm2_per_day']:.3g} mm^2/day, rho = "
            f"{truth['rho_per_day']:.3g} /day), {follow}{fixed}, in {truth['wall_s']:.1f} s")


def main(argv: list[str] | None = None) -> int:
    import sys

    parser = add_synth_arguments(argparse.ArgumentParser(
        prog="python -m apps.gbm.synth", description="Write a synthetic GBM patient folder."))
    args = parser.parse_args(argv)
    try:
        print(run_synth(args))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
