"""A GBM patient: a BraTS-style tumour segmentation and tissue probability maps on one axial slice.

Patient folder layout: one NIfTI file (``.nii.gz`` or ``.nii``) per role, found by
:func:`find_roles` under any of these names (``X`` any prefix, letters in any case):

======  ======  ================================  ============================================
role    needed  file names                        content
======  ======  ================================  ============================================
seg     yes     ``seg``, ``tumorseg``, ``X_seg``  BraTS label map (integers), see below
wm      yes     ``wm``, ``X_wm``                  white-matter probability in [0, 1], same grid
gm      yes     ``gm``, ``X_gm``                  grey-matter probability in [0, 1], same grid
csf     no      ``csf``, ``X_csf``                CSF probability in [0, 1], same grid
pet     no      ``pet``, ``X_pet``                PET-like map (e.g. FET-PET), >= 0, same grid
======  ======  ================================  ============================================

Two optional entries add a second time point (both or neither):

* ``followup/``: a folder with the follow-up scan's segmentation, found by the seg names above
  (``followup/seg.nii.gz``, ``followup/BraTS2021_00000_seg.nii.gz``, ...; other files there are
  ignored), on the same grid as the first scan's seg (shape and affine) and read on the same
  slice;
* ``patient.json``: a JSON object whose field ``interval_days`` (a number > 0) is the time from
  the first scan to the follow-up in days. Other fields are ignored.

A follow-up whose whole tumour on the slice is smaller than the first scan's is loaded with a
warning (the growth model assumes an untreated, growing tumour).

The names cover this project's own layout (``seg.nii.gz``, ``wm.nii.gz``, ... as ``bilo gbm
synth`` writes), BraTS releases (``BraTS2021_00000_seg.nii.gz``; the ``_t1``, ``_t1ce``,
``_t2`` and ``_flair`` images match no role and are ignored) and PredictGBM's fixed names
(``tumorseg``, ``wm``, ``gm``, ``csf``, ``pet``). Other files and hidden files (a leading
``.``) are ignored. Two files for one role (``seg.nii.gz`` and ``X_seg.nii.gz``, two prefixes,
or ``seg.nii`` next to ``seg.nii.gz``) are an error, as is a missing required role.

"Same grid" means the shape and the voxel-to-mm affine of seg (to 1e-3 mm). Probability maps
must lie in [0, 1] (a tolerance of 1e-3 is allowed and clipped away); maps stored as 0-255
(like nilearn's ICBM152 files) must be rescaled first.

Label conventions, detected from the whole volume:

* BraTS <= 2021 (``"brats2021"``): 1 necrotic / non-enhancing core, 2 edema, 4 enhancing tumour;
  chosen when label 4 occurs. Also chosen when neither 3 nor 4 occurs (labels 1 and 2 mean the
  same in both conventions, so the masks do not depend on it).
* BraTS 2023 (``"brats2023"``): 1 necrotic core (NCR), 2 edema (ED), 3 enhancing tumour (ET);
  chosen when label 3 occurs and 4 does not.

Whole tumour WT = every label > 0; tumour core TC = necrotic + enhancing (1 and 4, or 1 and 3).
Any other label (3 together with 4, 5, negative or non-integer values) is an error.

The 2-D problem lives on one axial slice, taken as the last voxel axis (the images are not
reoriented: a RAS/LPS-like storage, as BraTS and MNI templates use, is assumed). 2-D arrays are
indexed like the volume, ``array[i, j]`` for voxel ``(i, j, slice_index)``, and
:attr:`Patient.affine2d` maps homogeneous voxel coordinates ``(i, j, 1)`` to in-plane mm — the
3×3 affine that :func:`meshes.mesh_from_mask` accepts.

Every problem with the input raises :class:`solvers.common.InputError` with a one-line message
that names the file (the folder and the role for a missing or ambiguous file).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from meshes.image_mesh import affine_2d
from solvers.common import InputError

# role: the file stems that name it, exactly or after a prefix ending in "_" (any case)
ROLE_NAMES = {
    "seg": ("seg", "tumorseg"),
    "wm": ("wm",),
    "gm": ("gm",),
    "csf": ("csf",),
    "pet": ("pet",),
}
ROLE_CONTENT = {
    "seg": "tumour segmentation",
    "wm": "white-matter map",
    "gm": "grey-matter map",
    "csf": "CSF map",
    "pet": "PET image",
}
REQUIRED = ("seg", "wm", "gm")
FOLLOWUP_DIR = "followup"
PATIENT_JSON = "patient.json"
NIFTI_SUFFIXES = (".nii.gz", ".nii")
PROBABILITY_TOLERANCE = 1e-3
AFFINE_TOLERANCE_MM = 1e-3
CONVENTIONS = {
    # name: (necrotic label, edema label, enhancing label)
    "brats2021": (1, 2, 4),
    "brats2023": (1, 2, 3),
}
DEFAULT_GM_RATIO = 0.1
DEFAULT_BRAIN_THRESHOLD = 0.1


@dataclass
class Patient:
    """One axial slice of a patient (see the module docstring for the conventions).

    Attributes:
        wm, gm: white/grey-matter probabilities on the slice (float64, in [0, 1]).
        csf: CSF probability on the slice, or None when the folder has no csf file.
        wt, tc: whole-tumour and tumour-core masks (bool) on the slice.
        labels: the label map of the slice (int16, values of `convention`).
        slice_index: index k of the slice along the last voxel axis.
        affine: the 4×4 voxel-to-mm affine of the volumes.
        affine2d: 3×3 in-plane voxel-to-mm affine of the slice (``meshes`` convention).
        spacing: in-plane voxel size (mm) along voxel axes 0 and 1.
        slice_thickness: voxel size (mm) along the last axis.
        convention: "brats2021" or "brats2023".
        paths: file paths by role ("seg", "wm", "gm" and possibly "csf", "pet", and
            "followup_seg", "patient_json" with a follow-up).
        shape3d: shape of the volumes.
        pet: the PET-like map on the slice (float64, >= 0), or None without a pet file.
        followup_wt, followup_tc: the follow-up scan's masks on the same slice, or None
            without a follow-up.
        followup_labels: the follow-up's label map of the slice (int16), or None.
        followup_convention: the follow-up's label convention, or None.
        interval_days: days from the first scan to the follow-up (from patient.json), or None.
    """

    wm: np.ndarray
    gm: np.ndarray
    csf: np.ndarray | None
    wt: np.ndarray
    tc: np.ndarray
    labels: np.ndarray
    slice_index: int
    affine: np.ndarray
    affine2d: np.ndarray
    spacing: tuple[float, float]
    slice_thickness: float
    convention: str
    paths: dict[str, Path] = field(default_factory=dict)
    shape3d: tuple[int, int, int] = (0, 0, 0)
    pet: np.ndarray | None = None
    followup_wt: np.ndarray | None = None
    followup_tc: np.ndarray | None = None
    followup_labels: np.ndarray | None = None
    followup_convention: str | None = None
    interval_days: float | None = None

    @property
    def has_followup(self) -> bool:
        return self.followup_wt is not None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.wt.shape)

    @property
    def pixel_area_mm2(self) -> float:
        return float(abs(np.linalg.det(self.affine2d[:2, :2])))

    @property
    def wt_area_px(self) -> int:
        return int(self.wt.sum())

    @property
    def tc_area_px(self) -> int:
        return int(self.tc.sum())

    def voxel_to_mm(self, ij) -> np.ndarray:
        """In-plane mm coordinates (N, 2) of voxel coordinates (N, 2) (fractional allowed)."""
        ij = np.asarray(ij, dtype=np.float64).reshape(-1, 2)
        return ij @ self.affine2d[:2, :2].T + self.affine2d[:2, 2]

    def mm_to_voxel(self, points_mm) -> np.ndarray:
        """Voxel coordinates (N, 2) of in-plane mm points (N, 2)."""
        return _mm_to_voxel(self.affine2d, points_mm)

    def pixel_centres_mm(self, mask=None) -> np.ndarray:
        """mm coordinates of the pixel centres, (nx, ny, 2); or (n, 2) for the pixels of `mask`
        (in ``np.argwhere`` order)."""
        if mask is not None:
            return self.voxel_to_mm(np.argwhere(np.asarray(mask, dtype=bool)))
        i, j = np.indices(self.shape)
        return self.voxel_to_mm(np.column_stack([i.ravel(), j.ravel()])).reshape(
            *self.shape, 2)


def _mm_to_voxel(affine2d: np.ndarray, points_mm) -> np.ndarray:
    points = np.asarray(points_mm, dtype=np.float64)
    points = points.reshape(-1, points.shape[-1])[:, :2]
    inverse = np.linalg.inv(affine2d[:2, :2])
    return (points - affine2d[:2, 2]) @ inverse.T


def _nifti_stem(name: str) -> str | None:
    """The lower-case name without ``.nii.gz`` / ``.nii`` (any case); None for other files."""
    lower = name.lower()
    for suffix in NIFTI_SUFFIXES:
        if lower.endswith(suffix) and len(lower) > len(suffix):
            return lower[: -len(suffix)]
    return None


def _role_of(stem: str) -> str | None:
    """The role a NIfTI stem names (``seg``, ``x_seg``, ``tumorseg``, ...), or None."""
    for role, names in ROLE_NAMES.items():
        if any(stem == name or stem.endswith("_" + name) for name in names):
            return role
    return None


def _name_list(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def find_roles(folder, required=REQUIRED) -> dict[str, Path]:
    """Paths of the patient files by role: ``seg``, ``wm``, ``gm`` and, when present, ``csf``
    and ``pet`` (the names are in the module docstring). `required`: the roles that must be
    present (a follow-up folder needs only ``("seg",)``).

    Raises:
        InputError: one line naming the folder, if it does not exist or is not a directory;
            naming the role and listing the NIfTI files found, if a required role has no
            file; naming the role and listing the candidates, if a role has several files.
    """
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"{folder}: patient folder does not exist")
    if not folder.is_dir():
        raise InputError(f"{folder}: patient folder is not a directory")
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        raise InputError(f"{folder}: cannot list the patient folder ({exc.strerror or exc})"
                         ) from None
    niftis = []
    candidates = {role: [] for role in ROLE_NAMES}
    for path in entries:
        stem = _nifti_stem(path.name)
        if stem is None or path.name.startswith(".") or not path.is_file():
            continue
        niftis.append(path.name)
        role = _role_of(stem)
        if role is not None:
            candidates[role].append(path)
    paths = {}
    for role, found in candidates.items():
        names = ROLE_NAMES[role]
        if len(found) > 1:
            raise InputError(f"{folder}: {len(found)} files for the {role} role "
                             f"({ROLE_CONTENT[role]}): "
                             f"{_name_list([p.name for p in found])}; keep one (see "
                             "apps.gbm.patient)")
        if found:
            paths[role] = found[0]
        elif role in required:
            accepted = ", ".join([*names, *(f"*_{name}" for name in names)])
            present = (f"NIfTI files found: {_name_list(niftis)}" if niftis
                       else "no NIfTI files found")
            raise InputError(f"{folder}: missing the {role} role ({ROLE_CONTENT[role]}): no "
                             f"file named {accepted} "
                             f"(.nii.gz or .nii, any case); {present} (see apps.gbm.patient)")
    return paths


def _load_nifti_image(nib, path: Path):
    """nibabel's image of `path`. nib.load rewrites a mixed-case suffix (``Gm.Nii.Gz`` becomes
    ``Gm.nii.Gz``, a file that does not exist), so such names are read through a file map."""
    stem = _nifti_stem(path.name)
    suffix = path.name[len(stem):] if stem is not None else ""
    if suffix in (suffix.lower(), suffix.upper()):
        return nib.load(str(path))
    with nib.openers.Opener(str(path)) as stream:  # gzip'd or not, any case
        first = stream.read(4)
    # sizeof_hdr, the first field of the header: 540 for NIfTI-2, 348 for NIfTI-1
    nifti2 = 540 in (int.from_bytes(first, "little"), int.from_bytes(first, "big"))
    holder = nib.FileHolder(filename=str(path))
    klass = nib.Nifti2Image if nifti2 else nib.Nifti1Image
    return klass.from_file_map({"header": holder, "image": holder})


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(data as float64, 4×4 affine) of a NIfTI file; InputError naming the file otherwise."""
    import nibabel as nib

    try:
        image = _load_nifti_image(nib, path)
        data = np.asarray(image.dataobj, dtype=np.float64)
        affine = np.asarray(image.affine, dtype=np.float64)
    except Exception as exc:  # nibabel, gzip, zlib and OS errors alike
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(f"{path}: unreadable NIfTI file ({type(exc).__name__}: "
                         f"{detail[:200]})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise InputError(f"{path}: expected a 3-D volume, got shape {data.shape}")
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)) \
            or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(f"{path}: the voxel-to-mm affine is not finite and invertible")
    return data, affine


def _check_same_grid(path: Path, data: np.ndarray, affine: np.ndarray, seg_path: Path,
                     seg_shape: tuple, seg_affine: np.ndarray) -> None:
    if data.shape != seg_shape:
        raise InputError(f"{path}: grid shape {data.shape} does not match {seg_path} "
                         f"{seg_shape}")
    difference = float(np.max(np.abs(affine - seg_affine)))
    if difference > AFFINE_TOLERANCE_MM:
        raise InputError(f"{path}: affine does not match the affine of {seg_path} (max "
                         f"difference {difference:.4g}); resample onto the segmentation grid")


def _check_finite(path: Path, data: np.ndarray, kind: str) -> None:
    """InputError naming the file and counting its NaN (or else infinite) values."""
    finite = np.isfinite(data)
    if not finite.all():
        n_nan = int(np.isnan(data).sum())
        what = f"{n_nan} NaN value(s)" if n_nan else f"{int((~finite).sum())} infinite value(s)"
        raise InputError(f"{path}: {kind} has {what}")


def _check_probability(path: Path, data: np.ndarray) -> np.ndarray:
    _check_finite(path, data, "probability map")
    low, high = float(data.min()), float(data.max())
    if low < -PROBABILITY_TOLERANCE or high > 1.0 + PROBABILITY_TOLERANCE:
        hint = " (a 0-255 map must be divided by 255)" if high > 1.5 else ""
        raise InputError(f"{path}: probability values out of [0, 1] (min {low:.4g}, max "
                         f"{high:.4g}){hint}")
    return np.clip(data, 0.0, 1.0)


def detect_convention(labels: np.ndarray, path="seg") -> str:
    """The BraTS convention of a label array (see the module docstring); InputError naming
    `path` for labels that fit neither."""
    values = np.asarray(labels)
    if not np.all(np.isfinite(values)):
        raise InputError(f"{path}: label map has {int(np.isnan(values).sum())} NaN value(s)")
    if np.any(values != np.round(values)):
        raise InputError(f"{path}: label map has non-integer values; expected BraTS labels")
    present = set(np.unique(values).astype(np.int64).tolist()) - {0}
    unknown = sorted(present - {1, 2, 3, 4})
    if unknown:
        raise InputError(f"{path}: unknown label(s) {', '.join(map(str, unknown))}; expected "
                         "0, 1, 2, 4 (BraTS <= 2021) or 0, 1, 2, 3 (BraTS 2023)")
    if 3 in present and 4 in present:
        raise InputError(f"{path}: labels 3 and 4 both present: neither BraTS <= 2021 "
                         "(0, 1, 2, 4) nor BraTS 2023 (0, 1, 2, 3)")
    return "brats2023" if 3 in present else "brats2021"


def tumour_masks(labels: np.ndarray, convention: str) -> tuple[np.ndarray, np.ndarray]:
    """(WT, TC) boolean masks of a label array: WT = label > 0, TC = necrotic + enhancing."""
    necrotic, _, enhancing = CONVENTIONS[convention]
    labels = np.asarray(labels)
    return labels > 0, (labels == necrotic) | (labels == enhancing)


def load_patient(folder, slice: str | int = "auto") -> Patient:
    """Read a patient folder (see the module docstring) and return one axial slice.

    Args:
        folder: folder with seg/wm/gm (and optionally csf, pet) NIfTI files, found by
            :func:`find_roles`, and optionally ``followup/`` with ``patient.json``.
        slice: "auto" (the slice along the last voxel axis with the largest WT area; the lowest
            index on ties) or a slice index (negative counts from the end; a string of digits
            is read as an index).

    Raises:
        InputError: naming the file, for a missing folder, a missing or ambiguous file (see
            :func:`find_roles`), an unreadable NIfTI, grids
            or affines that differ from seg's, NaN values, probabilities out of [0, 1],
            unknown labels, no tumour (no label > 0) or no tumour core (in the volume or on
            the chosen slice); a PET map with NaN or negative values; a follow-up folder
            without ``interval_days`` or an ``interval_days`` without follow-up folder, a bad
            ``patient.json`` (naming the field), a follow-up seg missing or on another grid.
    """
    paths = find_roles(folder)
    seg_path = paths["seg"]
    seg, affine = _read_nifti(seg_path)
    convention = detect_convention(seg, seg_path)
    wt3, tc3 = tumour_masks(seg, convention)
    if not wt3.any():
        raise InputError(f"{seg_path}: empty tumour: no voxel with a label > 0")
    necrotic, _, enhancing = CONVENTIONS[convention]
    if not tc3.any():
        raise InputError(f"{seg_path}: no tumour-core voxels (labels {necrotic} and "
                         f"{enhancing}, {convention}); the tumour core is needed")

    n_slices = seg.shape[2]
    if isinstance(slice, str) and slice.strip().lstrip("+-").isdigit():
        slice = int(slice)  # e.g. from a command line
    if isinstance(slice, str) or isinstance(slice, bool):
        if slice != "auto":
            raise InputError(f"slice must be 'auto' or an integer, got {slice!r}")
        k = int(np.argmax(wt3.sum(axis=(0, 1))))
    else:
        try:
            k = int(slice)
        except (TypeError, ValueError):
            k = None
        if k is None or k != slice:
            raise InputError(f"slice must be 'auto' or an integer, got {slice!r}")
        if not -n_slices <= k < n_slices:
            raise InputError(f"{seg_path}: slice {k} out of range (the volume has {n_slices} "
                             "slices along its last axis)")
        k %= n_slices
        if not wt3[:, :, k].any():
            raise InputError(f"{seg_path}: slice {k} has no tumour (no label > 0)")
    if not tc3[:, :, k].any():
        raise InputError(f"{seg_path}: slice {k} has no tumour-core voxels (labels {necrotic} "
                         f"and {enhancing}, {convention})")

    maps = {}
    for role in ("wm", "gm", "csf"):
        if role not in paths:
            continue
        data, map_affine = _read_nifti(paths[role])
        _check_same_grid(paths[role], data, map_affine, seg_path, seg.shape, affine)
        maps[role] = _check_probability(paths[role], data)[:, :, k].copy()

    _check_anatomy(paths, maps, wt3[:, :, k], k)
    pet = None
    if "pet" in paths:
        data, pet_affine = _read_nifti(paths["pet"])
        _check_same_grid(paths["pet"], data, pet_affine, seg_path, seg.shape, affine)
        pet = _check_pet(paths["pet"], data)[:, :, k].copy()
    followup = _read_followup(Path(folder), seg_path, seg.shape, affine, k)
    if followup is not None:
        paths = {**paths, "followup_seg": followup["path"],
                 "patient_json": followup["json_path"]}
        if followup["wt"].sum() < wt3[:, :, k].sum():
            print(f"warning: {followup['path']}: the follow-up's whole tumour on slice {k} "
                  f"({int(followup['wt'].sum())} px) is smaller than the first scan's "
                  f"({int(wt3[:, :, k].sum())} px); the growth model assumes an untreated, "
                  "growing tumour")
    affine2d = affine_2d(affine, slice_axis=2, slice_index=k)
    sizes = np.linalg.norm(affine[:3, :3], axis=0)
    return Patient(
        wm=maps["wm"], gm=maps["gm"], csf=maps.get("csf"),
        wt=wt3[:, :, k].copy(), tc=tc3[:, :, k].copy(),
        labels=seg[:, :, k].astype(np.int16), slice_index=k, affine=affine,
        affine2d=affine2d, spacing=(float(sizes[0]), float(sizes[1])),
        slice_thickness=float(sizes[2]), convention=convention, paths=paths,
        shape3d=tuple(int(n) for n in seg.shape), pet=pet,
        **({} if followup is None else {
            "followup_wt": followup["wt"], "followup_tc": followup["tc"],
            "followup_labels": followup["labels"],
            "followup_convention": followup["convention"],
            "interval_days": followup["interval_days"]}))


def _check_pet(path: Path, data: np.ndarray) -> np.ndarray:
    """A PET-like map: finite and >= 0; InputError naming the file otherwise."""
    _check_finite(path, data, "PET map")
    if data.min() < 0:
        raise InputError(f"{path}: PET map has negative values (min {data.min():.4g}, "
                         f"{int((data < 0).sum())} voxel(s)); expected uptake >= 0")
    return data


def read_interval_days(path: Path) -> float | None:
    """The field ``interval_days`` of a patient.json (None when the field is absent);
    InputError naming the file and the field for an unreadable file, invalid JSON, a value
    that is not an object, or an interval that is not a finite number > 0."""
    import json

    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the file ({exc.__class__.__name__}: "
                         f"{getattr(exc, 'strerror', None) or exc})") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno} column "
                         f"{exc.colno})") from None
    if not isinstance(record, dict):
        raise InputError(f"{path}: expected a JSON object such as {{\"interval_days\": 90}}, "
                         f"got {type(record).__name__}")
    if "interval_days" not in record:
        return None
    value = record["interval_days"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not np.isfinite(value) or value <= 0:
        raise InputError(f"{path}: field 'interval_days': expected a number of days > 0, "
                         f"got {json.dumps(value)[:40]}")
    return float(value)


def _read_followup(folder: Path, seg_path: Path, shape: tuple, affine: np.ndarray,
                   k: int) -> dict | None:
    """The follow-up of a patient folder (see the module docstring) on slice `k`, or None
    when it has neither a follow-up folder nor an interval."""
    json_path = folder / PATIENT_JSON
    interval = read_interval_days(json_path) if json_path.is_file() else None
    followup_dir = folder / FOLLOWUP_DIR
    if followup_dir.exists() and not followup_dir.is_dir():
        raise InputError(f"{followup_dir}: expected a folder with the follow-up scan's "
                         "segmentation, found a file")
    if not followup_dir.is_dir():
        if interval is not None:
            raise InputError(f"{json_path}: field 'interval_days' is given but there is no "
                             f"follow-up scan: no folder {followup_dir}")
        return None
    if interval is None:
        where = ("has no field 'interval_days'" if json_path.is_file()
                 else "is missing")
        raise InputError(f"{followup_dir}: a follow-up scan needs its interval in days, but "
                         f"{json_path} {where} (write {{\"interval_days\": DAYS}})")
    path = find_roles(followup_dir, required=("seg",))["seg"]
    data, followup_affine = _read_nifti(path)
    _check_same_grid(path, data, followup_affine, seg_path, shape, affine)
    convention = detect_convention(data, path)
    wt3, tc3 = tumour_masks(data, convention)
    return {"path": path, "json_path": json_path, "interval_days": interval,
            "convention": convention, "wt": wt3[:, :, k].copy(), "tc": tc3[:, :, k].copy(),
            "labels": data[:, :, k].astype(np.int16)}


# anatomy checks: the brain (wm + gm above the brain threshold) must cover this many pixels
# of the slice, and the tumour outside the brain (holes filled: tissue maps often leave the
# tumour out) may be at most this fraction of the tumour; fewer tumour pixels than
# SMALL_TUMOUR_PX leave the growth parameters to the prior (a warning)
MIN_BRAIN_PX = 100
MAX_OUTSIDE_FRACTION = 0.5
SMALL_TUMOUR_PX = 10


def _check_anatomy(paths: dict, maps: dict, wt: np.ndarray, k: int, log=print) -> None:
    """One line for tissue maps that are (nearly) zero, a tumour mostly outside the brain, and
    (a warning) a tumour of a few pixels."""
    brain = maps["wm"] + maps["gm"] > DEFAULT_BRAIN_THRESHOLD
    if brain.sum() < MIN_BRAIN_PX:
        raise InputError(f"{paths['wm']}, {paths['gm']}: wm + gm exceeds "
                         f"{DEFAULT_BRAIN_THRESHOLD} on only {int(brain.sum())} pixels of slice "
                         f"{k}: the tissue maps are (nearly) zero there")
    outside = wt & ~ndimage.binary_fill_holes(brain)
    if outside.sum() > MAX_OUTSIDE_FRACTION * wt.sum():
        raise InputError(f"{paths['seg']}: {outside.sum() / wt.sum():.0%} of the tumour on slice "
                         f"{k} lies outside the brain of the tissue maps (are seg and wm/gm "
                         "registered to each other?)")
    if wt.sum() < SMALL_TUMOUR_PX:
        log(f"warning: {paths['seg']}: the tumour covers {int(wt.sum())} pixels of slice {k}; "
            "so few pixels barely constrain the growth parameters")


def brain_mask(patient: Patient, threshold: float = DEFAULT_BRAIN_THRESHOLD) -> np.ndarray:
    """Pixels of the slice where wm + gm > `threshold`, plus the whole tumour (tissue maps of a
    patient are often unreliable inside the tumour, which is brain all the same)."""
    return (patient.wm + patient.gm > threshold) | patient.wt


def tissue_P(patient: Patient, gm_ratio: float = DEFAULT_GM_RATIO) -> np.ndarray:
    """The diffusion map P = wm + gm_ratio·gm on the slice, clipped to [0, 1]."""
    if not (np.isfinite(gm_ratio) and gm_ratio >= 0):
        raise InputError(f"gm_ratio must be finite and >= 0, got {gm_ratio}")
    return np.clip(patient.wm + gm_ratio * patient.gm, 0.0, 1.0)


def smooth_field(array2d, sigma_mm: float, spacing) -> np.ndarray:
    """Gaussian blur of a 2-D image with standard deviation `sigma_mm` (mm), the pixel size
    being `spacing` (mm, a number or one per axis); edges are extended ('nearest').
    sigma_mm = 0 returns a float64 copy."""
    image = np.asarray(array2d, dtype=np.float64)
    if image.ndim != 2:
        raise InputError(f"smooth_field: expected a 2-D array, got shape {image.shape}")
    if not (np.isfinite(sigma_mm) and sigma_mm >= 0):
        raise InputError(f"smooth_field: sigma_mm must be finite and >= 0, got {sigma_mm}")
    spacing = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (2,))
    if np.any(spacing <= 0) or not np.all(np.isfinite(spacing)):
        raise InputError(f"smooth_field: spacing must be > 0, got {tuple(spacing)}")
    if sigma_mm == 0:
        return image.copy()
    return ndimage.gaussian_filter(image, sigma=sigma_mm / spacing, mode="nearest")


class ImageField:
    """A 2-D image as a function of in-plane mm coordinates: values and gradients at any points.

    ``field(points_mm)`` interpolates the (optionally Gaussian-smoothed) image bilinearly at the
    points (N, 2) (extra columns are ignored); ``field.gradient(points_mm)`` returns (N, 2)
    d/dx, d/dy in 1/mm: the central-difference gradient of the image in voxel index space
    (one-sided at the image edge), mapped to mm through the inverse of the in-plane affine
    (:attr:`gradient_mm`, two images) and interpolated bilinearly. The gradient is exact for a
    linear image; for a smooth image it is second-order accurate in the pixel size. Points
    outside the image take the value of the nearest edge pixel.

    The tissue map P of the GBM model: the pipeline smooths it here and the network's sampler
    (``apps.gbm.problem.ImageSampler``, the same bilinear sampling in torch) reads `values` and
    `gradient_mm`; this numpy evaluation is its reference.

    Args:
        image: 2-D array (e.g. :func:`tissue_P` of a patient).
        affine2d: 3×3 in-plane voxel-to-mm affine (e.g. ``patient.affine2d``).
        sigma_mm: Gaussian smoothing (mm) applied first; 0 for none.
    """

    def __init__(self, image, affine2d, *, sigma_mm: float = 0.0):
        affine2d = np.asarray(affine2d, dtype=np.float64)
        if affine2d.shape != (3, 3):
            raise InputError(f"ImageField: affine2d must be 3x3, got shape {affine2d.shape}")
        if abs(np.linalg.det(affine2d[:2, :2])) < 1e-12:
            raise InputError("ImageField: the affine is not invertible")
        spacing = np.linalg.norm(affine2d[:2, :2], axis=0)
        self.affine2d = affine2d
        self.sigma_mm = float(sigma_mm)
        self.values = smooth_field(image, sigma_mm, spacing)
        if not np.all(np.isfinite(self.values)):
            raise InputError("ImageField: the image has non-finite values")
        if min(self.values.shape) >= 2:
            grad_ij = np.stack(np.gradient(self.values))
        else:
            grad_ij = np.zeros((2, *self.values.shape))
        # chain rule: ∇_mm f = A⁻ᵀ ∇_ij f, A the in-plane linear part of the affine
        self.gradient_mm = np.einsum("ji,jrc->irc", np.linalg.inv(affine2d[:2, :2]), grad_ij)

    def _sample(self, image: np.ndarray, voxel: np.ndarray) -> np.ndarray:
        return ndimage.map_coordinates(image, voxel.T, order=1, mode="nearest")

    def __call__(self, points_mm) -> np.ndarray:
        voxel = _mm_to_voxel(self.affine2d, points_mm)
        return self._sample(self.values, voxel)

    def gradient(self, points_mm) -> np.ndarray:
        voxel = _mm_to_voxel(self.affine2d, points_mm)
        return np.column_stack([self._sample(g, voxel) for g in self.gradient_mm])


__all__ = [
    "CONVENTIONS",
    "ImageField",
    "Patient",
    "brain_mask",
    "detect_convention",
    "find_roles",
    "load_patient",
    "read_interval_days",
    "smooth_field",
    "tissue_P",
    "tumour_masks",
]
