"""GBM patient input (apps.gbm.patient): loading a BraTS-style patient folder, the one-line
errors for bad input, label conventions, slice choice, tissue maps and image fields, and the
embedded default patient (data/patient_default)."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from apps.gbm.patient import (
    ImageField,
    brain_mask,
    find_roles,
    load_patient,
    smooth_field,
    tissue_P,
)
from solvers.exchange import InputError

nib = pytest.importorskip("nibabel")

EMBEDDED = Path(__file__).resolve().parents[1] / "data" / "patient_default"
CORTEX = EMBEDDED.parent / "patient_cortex"
SHAPE = (20, 24, 6)
AFFINE = np.array([[-1.5, 0.0, 0.0, 30.0],
                   [0.0, 1.5, 0.0, -40.0],
                   [0.0, 0.0, 3.0, -9.0],
                   [0.0, 0.0, 0.0, 1.0]])


def disc(radius, centre=(10, 12)):
    i, j = np.indices(SHAPE[:2])
    return (i - centre[0]) ** 2 + (j - centre[1]) ** 2 <= radius**2


def brats_labels(enhancing=4):
    """Tumour on slices 2 (WT radius 4) and 3 (WT radius 6, the largest), core radius 2/3."""
    seg = np.zeros(SHAPE, dtype=np.uint8)
    for k, (r_wt, r_tc, r_nec) in ((2, (4, 2.5, 1)), (3, (6, 3, 1.5))):
        seg[:, :, k][disc(r_wt)] = 2
        seg[:, :, k][disc(r_tc)] = enhancing
        seg[:, :, k][disc(r_nec)] = 1
    return seg


def tissue():
    i, _, _ = np.indices(SHAPE)
    wm = np.clip(i / (SHAPE[0] - 1), 0, 1)
    gm = np.clip(1.0 - wm, 0, 1) * 0.8
    return wm.astype(np.float32), gm.astype(np.float32)


def save(path, data, affine=AFFINE):
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return path


def make_patient(folder, seg=None, wm=None, gm=None, csf=None, suffix=".nii.gz"):
    folder.mkdir(parents=True, exist_ok=True)
    wm_default, gm_default = tissue()
    save(folder / f"seg{suffix}", brats_labels() if seg is None else seg)
    save(folder / f"wm{suffix}", wm_default if wm is None else wm)
    save(folder / f"gm{suffix}", gm_default if gm is None else gm)
    if csf is not None:
        save(folder / f"csf{suffix}", csf)
    return folder


def test_load_brats2021_auto_slice_and_geometry(tmp_path):
    """Labels 1/2/4 -> "brats2021"; slice="auto" picks slice 3 (WT disc radius 6, 113 px)
    over slice 2 (radius 4); WT = labels > 0, TC = labels 1 and 4; the 2-D affine maps voxel
    (i, j) to the mm of the 4x4 affine at (i, j, 3); spacing 1.5 mm, thickness 3 mm; the tissue
    maps come back on that slice; no csf file -> csf is None; .nii works like .nii.gz; an
    explicit slice may be negative or a string of digits."""
    patient = load_patient(make_patient(tmp_path / "p"))
    assert patient.convention == "brats2021" and patient.slice_index == 3
    assert patient.wt_area_px == disc(6).sum() == 113
    np.testing.assert_array_equal(patient.tc, disc(3))
    np.testing.assert_array_equal(patient.wt, disc(6))
    assert set(np.unique(patient.labels)) == {0, 1, 2, 4}
    assert patient.spacing == (1.5, 1.5) and patient.slice_thickness == 3.0
    assert patient.pixel_area_mm2 == pytest.approx(2.25)
    ij = np.array([[0.0, 0.0], [5.0, 7.0], [19.0, 23.0]])
    expected = (AFFINE @ np.column_stack([ij, np.full(3, 3.0), np.ones(3)]).T).T[:, :2]
    np.testing.assert_allclose(patient.voxel_to_mm(ij), expected)
    np.testing.assert_allclose(patient.mm_to_voxel(expected), ij, atol=1e-12)
    np.testing.assert_allclose(patient.pixel_centres_mm()[5, 7], expected[1])
    wm, gm = tissue()
    np.testing.assert_allclose(patient.wm, wm[:, :, 3], atol=1e-7)
    np.testing.assert_allclose(patient.gm, gm[:, :, 3], atol=1e-7)
    assert patient.csf is None and set(patient.paths) == {"seg", "wm", "gm"}
    assert patient.shape3d == SHAPE

    plain = load_patient(make_patient(tmp_path / "q", csf=np.zeros(SHAPE, np.float32),
                                      suffix=".nii"), slice=2)
    assert plain.slice_index == 2 and plain.wt_area_px == disc(4).sum()
    assert plain.csf is not None and plain.paths["seg"].name == "seg.nii"
    assert load_patient(tmp_path / "p", slice=-4).slice_index == 2
    assert load_patient(tmp_path / "p", slice="2").slice_index == 2
    with pytest.raises(InputError, match="slice must be 'auto' or an integer"):
        load_patient(tmp_path / "p", slice="middle")


def test_label_conventions(tmp_path):
    """Labels 1/2/3 without 4 -> "brats2023" with TC = 1 and 3; only labels 1 and 2 ->
    "brats2021" (both conventions agree on them), TC = label 1."""
    p2023 = load_patient(make_patient(tmp_path / "a", seg=brats_labels(enhancing=3)))
    assert p2023.convention == "brats2023"
    np.testing.assert_array_equal(p2023.tc, disc(3))
    only_12 = load_patient(make_patient(tmp_path / "b", seg=brats_labels(enhancing=1)))
    assert only_12.convention == "brats2021"
    np.testing.assert_array_equal(only_12.tc, disc(3))


@pytest.mark.parametrize("role", ["seg", "wm", "gm"])
def test_missing_file(tmp_path, role):
    """A missing seg, wm or gm file: one line naming the folder and the role, the accepted
    names, and the NIfTI files that were found (the other two, not the text file)."""
    folder = make_patient(tmp_path / "p")
    (folder / f"{role}.nii.gz").unlink()
    (folder / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=rf"p: missing the {role} role .*no file named "
                                         rf"{role}, .*\*_{role}") as info:
        load_patient(folder)
    message = str(info.value)
    others = [f"{name}.nii.gz" for name in ("gm", "seg", "wm") if name != role]
    assert f"NIfTI files found: {', '.join(others)} (" in message
    assert "notes.txt" not in message and "\n" not in message
    for path in folder.iterdir():
        path.unlink()
    with pytest.raises(InputError, match=r"missing the seg role .*no NIfTI files found"):
        find_roles(folder)


BRATS_IMAGES = ("t1", "t1ce", "t2", "flair")


def write_roles(folder, names):
    """A patient with the role files under the given names ({role: file name}): the default
    seg, wm and gm, zeros for csf and 3.5 everywhere for pet. Written under a lower-case
    suffix and renamed (nibabel.save rewrites mixed-case suffixes)."""
    folder.mkdir(parents=True, exist_ok=True)
    wm, gm = tissue()
    content = {"seg": brats_labels(), "wm": wm, "gm": gm, "csf": np.zeros(SHAPE, np.float32),
               "pet": np.full(SHAPE, 3.5, np.float32)}
    for role, name in names.items():
        gz = name.lower().endswith(".gz")
        written = save(folder / f"tmp_{role}.nii{'.gz' if gz else ''}", content[role])
        written.rename(folder / name)
    return folder


def test_find_roles_exact_names(tmp_path):
    """This project's own names (seg/wm/gm/csf/pet.nii.gz, as synth writes them) and .nii
    ones: each role maps to its file; no csf/pet file -> no such key; truth.json and other
    files are ignored."""
    folder = make_patient(tmp_path / "p")
    (folder / "truth.json").write_text("{}")
    assert find_roles(folder) == {role: folder / f"{role}.nii.gz" for role in ("seg", "wm", "gm")}
    plain = write_roles(tmp_path / "q", {role: f"{role}.nii" for role in
                                         ("seg", "wm", "gm", "csf", "pet")})
    roles = find_roles(plain)
    assert {role: path.name for role, path in roles.items()} == {
        "seg": "seg.nii", "wm": "wm.nii", "gm": "gm.nii", "csf": "csf.nii", "pet": "pet.nii"}


def test_brats_prefixed_names(tmp_path):
    """A BraTS release folder: BraTS2021_00000_seg/_wm/_gm.nii.gz next to the _t1, _t1ce, _t2
    and _flair images, which match no role; the patient loads as with the exact names."""
    prefix = "BraTS2021_00000"
    folder = write_roles(tmp_path / prefix, {role: f"{prefix}_{role}.nii.gz"
                                             for role in ("seg", "wm", "gm")})
    for image in BRATS_IMAGES:
        save(folder / f"{prefix}_{image}.nii.gz", np.ones(SHAPE, np.float32))
    roles = find_roles(folder)
    assert {role: path.name for role, path in roles.items()} == {
        role: f"{prefix}_{role}.nii.gz" for role in ("seg", "wm", "gm")}
    patient = load_patient(folder)
    assert patient.paths == roles and patient.slice_index == 3 and patient.csf is None
    np.testing.assert_array_equal(patient.wt, disc(6))


def test_predictgbm_names(tmp_path):
    """PredictGBM's fixed layout: tumorseg is the segmentation, csf and pet are found too; csf
    is loaded as a probability map, pet as a non-negative map (its values, 3.5, are not
    checked as probabilities) on the chosen slice."""
    folder = write_roles(tmp_path / "p", {"seg": "tumorseg.nii.gz", "wm": "wm.nii.gz",
                                          "gm": "gm.nii.gz", "csf": "csf.nii.gz",
                                          "pet": "pet.nii.gz"})
    roles = find_roles(folder)
    assert {role: path.name for role, path in roles.items()} == {
        "seg": "tumorseg.nii.gz", "wm": "wm.nii.gz", "gm": "gm.nii.gz", "csf": "csf.nii.gz",
        "pet": "pet.nii.gz"}
    patient = load_patient(folder)
    assert patient.paths == roles and patient.paths["pet"].name == "pet.nii.gz"
    np.testing.assert_array_equal(patient.csf, np.zeros(SHAPE[:2]))
    np.testing.assert_array_equal(patient.pet, np.full(SHAPE[:2], 3.5))
    assert not patient.has_followup and patient.interval_days is None
    np.testing.assert_array_equal(patient.tc, disc(3))


def test_role_names_any_case(tmp_path):
    """Upper and mixed case in the role, the prefix and the suffix (SEG.NII.GZ,
    BraTS_X_WM.nii, Gm.Nii.Gz, PET.NII, P01_TumorSeg.nii.gz) find their roles, and the patient
    loads (nibabel's own loader would look for Gm.nii.Gz)."""
    folder = write_roles(tmp_path / "p", {"seg": "SEG.NII.GZ", "wm": "BraTS_X_WM.nii",
                                          "gm": "Gm.Nii.Gz", "pet": "PET.NII"})
    roles = find_roles(folder)
    assert {role: path.name for role, path in roles.items()} == {
        "seg": "SEG.NII.GZ", "wm": "BraTS_X_WM.nii", "gm": "Gm.Nii.Gz", "pet": "PET.NII"}
    assert load_patient(folder).slice_index == 3
    other = write_roles(tmp_path / "q", {"seg": "P01_TumorSeg.nii.gz", "wm": "WM.nii.gz",
                                         "gm": "gm.nii.gz"})
    assert find_roles(other)["seg"].name == "P01_TumorSeg.nii.gz"


@pytest.mark.parametrize("names, candidates", [
    (("seg.nii.gz", "X_seg.nii.gz"), "X_seg.nii.gz, seg.nii.gz"),
    (("A_seg.nii.gz", "B_seg.nii.gz"), "A_seg.nii.gz, B_seg.nii.gz"),
    (("seg.nii.gz", "tumorseg.nii.gz"), "seg.nii.gz, tumorseg.nii.gz"),
    (("seg.nii", "seg.nii.gz"), "seg.nii, seg.nii.gz"),
])
def test_ambiguous_role(tmp_path, names, candidates):
    """Two files for the seg role (an exact and a prefixed name, two prefixes, seg and
    tumorseg, or .nii next to .nii.gz): one line naming the folder, the role and both
    candidates; loading fails the same way."""
    folder = write_roles(tmp_path / "p", {"wm": "wm.nii.gz", "gm": "gm.nii.gz"})
    for name in names:
        save(folder / name, brats_labels())
    with pytest.raises(InputError, match=r"p: 2 files for the seg role") as info:
        find_roles(folder)
    assert f": {candidates}; keep one" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(InputError, match=r"2 files for the seg role"):
        load_patient(folder)


def test_ambiguous_optional_and_ignored_files(tmp_path):
    """An optional role is checked too (csf.nii.gz and csf.nii: ambiguous, naming csf); hidden
    files (._seg.nii.gz, as macOS leaves them), folders named like a role, names that only end
    in a role without the underscore (myseg.nii.gz) and other suffixes (seg.nii.gz.bak) are
    ignored."""
    folder = make_patient(tmp_path / "p", csf=np.zeros(SHAPE, np.float32))
    save(folder / "csf.nii", np.zeros(SHAPE, np.float32))
    with pytest.raises(InputError, match=r"2 files for the csf role .*: csf\.nii, "
                                         r"csf\.nii\.gz;"):
        find_roles(folder)
    (folder / "csf.nii").unlink()
    (folder / "._seg.nii.gz").write_bytes(b"\0" * 10)
    (folder / "wm.nii").mkdir()
    save(folder / "myseg.nii.gz", brats_labels())
    (folder / "seg.nii.gz.bak").write_bytes(b"x")
    assert {role: path.name for role, path in find_roles(folder).items()} == {
        "seg": "seg.nii.gz", "wm": "wm.nii.gz", "gm": "gm.nii.gz", "csf": "csf.nii.gz"}


def test_missing_or_bad_folder(tmp_path):
    """A folder that does not exist, or a file given as folder."""
    with pytest.raises(InputError, match=r"nowhere: patient folder does not exist"):
        load_patient(tmp_path / "nowhere")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        load_patient(tmp_path / "afile")


def test_unreadable_nifti(tmp_path):
    """A truncated seg.nii.gz and a text file named wm.nii.gz: "unreadable NIfTI" naming it.
    Every message is one line."""
    folder = make_patient(tmp_path / "p")
    packed = (folder / "seg.nii.gz").read_bytes()
    assert len(gzip.decompress(packed)) > 352  # a header and data
    (folder / "seg.nii.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(InputError, match=r"seg\.nii\.gz: unreadable NIfTI") as info:
        load_patient(folder)
    assert "\n" not in str(info.value)

    folder = make_patient(tmp_path / "q")
    (folder / "wm.nii.gz").write_text("this is not an image\n")
    with pytest.raises(InputError, match=r"wm\.nii\.gz: unreadable NIfTI") as info:
        load_patient(folder)
    assert "\n" not in str(info.value)


def test_grid_mismatch(tmp_path):
    """gm of another shape, or wm with a shifted affine: the message names both files."""
    wm, gm = tissue()
    folder = make_patient(tmp_path / "p", gm=gm[:, :-1])
    with pytest.raises(InputError, match=r"gm\.nii\.gz: grid shape .* does not match .*"
                                         r"seg\.nii\.gz"):
        load_patient(folder)
    folder = make_patient(tmp_path / "q")
    shifted = AFFINE.copy()
    shifted[0, 3] += 0.5
    save(folder / "wm.nii.gz", wm, shifted)
    with pytest.raises(InputError, match=r"wm\.nii\.gz: affine does not match .*seg\.nii\.gz"):
        load_patient(folder)


def test_empty_tumour_and_no_core(tmp_path):
    """No label > 0 anywhere: "empty tumour"; edema only: "no tumour-core voxels"; an explicit
    slice without tumour or without core: named too."""
    with pytest.raises(InputError, match=r"seg\.nii\.gz: empty tumour"):
        load_patient(make_patient(tmp_path / "a", seg=np.zeros(SHAPE, np.uint8)))
    edema = (brats_labels() > 0).astype(np.uint8) * 2
    with pytest.raises(InputError, match=r"seg\.nii\.gz: no tumour-core voxels"):
        load_patient(make_patient(tmp_path / "b", seg=edema))
    folder = make_patient(tmp_path / "c")
    with pytest.raises(InputError, match=r"seg\.nii\.gz: slice 0 has no tumour"):
        load_patient(folder, slice=0)
    with pytest.raises(InputError, match=r"slice 6 out of range"):
        load_patient(folder, slice=6)
    seg = brats_labels()
    seg[:, :, 2][seg[:, :, 2] > 0] = 2
    with pytest.raises(InputError, match=r"slice 2 has no tumour-core"):
        load_patient(make_patient(tmp_path / "d", seg=seg), slice=2)


def test_probability_range(tmp_path):
    """wm as 0-255: "out of [0, 1]" with the divide-by-255 hint; gm slightly below 0 (-0.01):
    out of range; within the 1e-3 tolerance (1.0005): accepted and clipped to 1."""
    wm, gm = tissue()
    with pytest.raises(InputError, match=r"wm\.nii\.gz: probability values out of \[0, 1\].*"
                                         r"255"):
        load_patient(make_patient(tmp_path / "a", wm=wm * 255))
    low = gm.copy()
    low[0, 0, 0] = -0.01
    with pytest.raises(InputError, match=r"gm\.nii\.gz: probability values out of"):
        load_patient(make_patient(tmp_path / "b", gm=low))
    high = wm.copy()
    high[-1, 0, 3] = 1.0005
    assert load_patient(make_patient(tmp_path / "c", wm=high)).wm.max() == 1.0


def test_bad_labels(tmp_path):
    """Label 5: "unknown label(s) 5"; labels 3 and 4 together; a non-integer label."""
    seg = brats_labels()
    seg[0, 0, 0] = 5
    with pytest.raises(InputError, match=r"seg\.nii\.gz: unknown label\(s\) 5"):
        load_patient(make_patient(tmp_path / "a", seg=seg))
    seg = brats_labels()
    seg[0, 0, 0] = 3
    with pytest.raises(InputError, match=r"seg\.nii\.gz: labels 3 and 4 both present"):
        load_patient(make_patient(tmp_path / "b", seg=seg))
    seg = brats_labels().astype(np.float32)
    seg[0, 0, 0] = 1.5
    with pytest.raises(InputError, match=r"seg\.nii\.gz: label map has non-integer"):
        load_patient(make_patient(tmp_path / "c", seg=seg))


def test_nan_values(tmp_path):
    """NaN in the label map or in a probability map: named with the count."""
    seg = brats_labels().astype(np.float32)
    seg[1, 1, 1] = np.nan
    with pytest.raises(InputError, match=r"seg\.nii\.gz: label map has 1 NaN"):
        load_patient(make_patient(tmp_path / "a", seg=seg))
    _, gm = tissue()
    gm[2, 2, 2] = gm[3, 3, 3] = np.nan
    with pytest.raises(InputError, match=r"gm\.nii\.gz: probability map has 2 NaN"):
        load_patient(make_patient(tmp_path / "b", gm=gm))


def test_brain_mask_and_tissue_P(tmp_path):
    """brain_mask: wm + gm > threshold, plus the tumour; tissue_P = wm + ratio*gm in [0, 1]."""
    wm, gm = tissue()
    wm[:3] = gm[:3] = 0.0  # no tissue in rows 0-2 ...
    seg = brats_labels()
    seg[0:2, 10:12, 3] = 2  # ... except tumour there
    patient = load_patient(make_patient(tmp_path / "p", seg=seg, wm=wm, gm=gm))
    mask = brain_mask(patient)
    assert not mask[2].any() and mask[0:2, 10:12].all() and mask[3:].all()
    np.testing.assert_allclose(tissue_P(patient), patient.wm + 0.1 * patient.gm)
    np.testing.assert_allclose(tissue_P(patient, gm_ratio=0.5), patient.wm + 0.5 * patient.gm)
    assert tissue_P(patient, gm_ratio=10).max() == 1.0
    assert not brain_mask(patient, threshold=0.95)[3:15].all()


def test_smooth_field_and_image_field():
    """ImageField on a linear image f = 2i - 3j + 1 with a rotated, anisotropic affine:
    values and gradients (mapped to mm by the inverse affine) are exact to 1e-12 at arbitrary
    interior points; on sin(i/4)cos(j/5) the gradient is within 0.01 of the exact one;
    smooth_field keeps a constant and a linear image (away from the edges), sigma 0 is the
    identity, and sigma is in mm: sin(k x) is damped by exp(-(k sigma)^2/2)."""
    angle = 0.3
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    affine2d = np.eye(3)
    affine2d[:2, :2] = rotation @ np.diag([0.8, 1.3])
    affine2d[:2, 2] = [-20.0, 7.0]
    i, j = np.indices((40, 50)).astype(float)
    image = 2 * i - 3 * j + 1
    field = ImageField(image, affine2d)
    rng = np.random.default_rng(1)
    ij = rng.uniform([1, 1], [38, 48], size=(200, 2))
    points = ij @ affine2d[:2, :2].T + affine2d[:2, 2]
    np.testing.assert_allclose(field(points), 2 * ij[:, 0] - 3 * ij[:, 1] + 1, atol=1e-10)
    exact = np.array([2.0, -3.0]) @ np.linalg.inv(affine2d[:2, :2])
    np.testing.assert_allclose(field.gradient(points), np.tile(exact, (200, 1)), atol=1e-10)

    np.testing.assert_allclose(smooth_field(np.full((9, 9), 0.3), 2.0, 1.0), 0.3)
    np.testing.assert_array_equal(smooth_field(image, 0.0, (0.8, 1.3)), image)
    smoothed = smooth_field(image, 1.0, (0.8, 1.3))
    np.testing.assert_allclose(smoothed[10:30, 10:40], image[10:30, 10:40], atol=1e-9)

    # a smooth image: the interpolated central differences are second-order accurate
    bumpy = ImageField(np.sin(i / 4) * np.cos(j / 5), affine2d)
    g_ij = np.column_stack([np.cos(ij[:, 0] / 4) * np.cos(ij[:, 1] / 5) / 4,
                            -np.sin(ij[:, 0] / 4) * np.sin(ij[:, 1] / 5) / 5])
    np.testing.assert_allclose(bumpy.gradient(points), g_ij @ np.linalg.inv(affine2d[:2, :2]),
                               atol=0.01)
    # smoothing by sigma_mm along axis 0 (0.8 mm pixels) damps sin(k x) by exp(-(k sigma)^2/2)
    soft = ImageField(np.sin(i / 4), affine2d, sigma_mm=1.5)
    k = 1 / (4 * 0.8)
    np.testing.assert_allclose(soft.values[10:30, 25], np.exp(-0.5 * (k * 1.5) ** 2)
                               * np.sin(i[10:30, 25] / 4), atol=2e-3)
    with pytest.raises(InputError, match="sigma_mm"):
        smooth_field(image, -1.0, 1.0)


def test_embedded_patient_matches_truth(report):
    """data/patient_default (bilo gbm synth --seed 0): loads with slice="auto" on the tumour
    slice of truth.json, BraTS <= 2021 labels, WT/TC areas equal to truth.json's, TC inside WT,
    WT >= 100 and TC >= 30 pixels; the data folder stays under 3 MB."""
    truth = json.loads((EMBEDDED / "truth.json").read_text())
    patient = load_patient(EMBEDDED)
    size = sum(p.stat().st_size for p in EMBEDDED.iterdir())
    report(f"embedded patient: slice {patient.slice_index}, WT {patient.wt_area_px} px, "
           f"TC {patient.tc_area_px} px, {size / 1e6:.2f} MB")
    assert truth["seed"] == 0 and patient.slice_index == truth["slice_index"]
    assert patient.convention == "brats2021"
    assert patient.wt_area_px == truth["areas_px"]["wt"] >= 100
    assert patient.tc_area_px == truth["areas_px"]["tc"] >= 30
    assert not (patient.tc & ~patient.wt).any()
    assert size < 3e6


def test_anatomy_checks(tmp_path, capsys):
    """Tissue maps all zero: one line naming wm and gm. Tissue only in the columns j ≥ 19 (100
    pixels) while the tumour (disc of radius 6 at (10, 12)) lies left of them: one line saying
    how much of the tumour is outside the brain (100 %). A tumour of 5 pixels (radius 1, core
    1 pixel): loaded, with a warning."""
    zero = np.zeros(SHAPE, np.float32)
    with pytest.raises(InputError, match=r"wm\.nii\.gz.*gm\.nii\.gz.*nearly\) zero"):
        load_patient(make_patient(tmp_path / "zero", wm=zero, gm=zero))
    wm, gm = tissue()
    wm[:, :19], gm[:, :19] = 0.0, 0.0
    with pytest.raises(InputError, match=r"seg\.nii\.gz: 100% of the tumour on slice 3 lies "
                                         r"outside the brain"):
        load_patient(make_patient(tmp_path / "outside", wm=wm, gm=gm))
    small = np.zeros(SHAPE, np.int16)
    small[:, :, 3][disc(1)] = 2
    small[10, 12, 3] = 4
    patient = load_patient(make_patient(tmp_path / "small", seg=small))
    assert patient.wt_area_px == 5
    assert "warning" in capsys.readouterr().out


def followup_labels(grow=2):
    """brats_labels with every disc `grow` pixels larger (the follow-up of a growing tumour)."""
    seg = np.zeros(SHAPE, dtype=np.uint8)
    for k, (r_wt, r_tc, r_nec) in ((2, (4, 2.5, 1)), (3, (6, 3, 1.5))):
        seg[:, :, k][disc(r_wt + grow)] = 2
        seg[:, :, k][disc(r_tc + grow)] = 4
        seg[:, :, k][disc(r_nec + grow)] = 1
    return seg


def with_followup(folder, seg=None, interval=90, name="seg.nii.gz", affine=AFFINE):
    """A patient folder with followup/<name> and patient.json {"interval_days": interval}
    (interval None: no patient.json)."""
    make_patient(folder)
    (folder / "followup").mkdir()
    save(folder / "followup" / name, followup_labels() if seg is None else seg, affine)
    if interval is not None:
        (folder / "patient.json").write_text(json.dumps({"interval_days": interval}))
    return folder


def test_followup_and_pet_load(tmp_path, capsys):
    """followup/seg.nii.gz and patient.json {"interval_days": 90}: the follow-up's masks on
    the first scan's slice (3: WT disc radius 8, 197 px, against 113 at the first scan; TC
    radius 5), interval 90.0, both paths recorded, no warning; a BraTS-named follow-up seg
    (followup/BraTS2021_00000_seg.nii.gz, BraTS 2023 labels) and an integer-valued interval
    load the same; the PET map comes back on the slice."""
    folder = with_followup(tmp_path / "p")
    pet = np.zeros(SHAPE, np.float32)
    pet[:, :, 3][disc(6)] = 2.5
    save(folder / "pet.nii.gz", pet)
    patient = load_patient(folder)
    assert patient.has_followup and patient.interval_days == 90.0
    assert patient.slice_index == 3 and patient.followup_convention == "brats2021"
    np.testing.assert_array_equal(patient.followup_wt, disc(8))
    np.testing.assert_array_equal(patient.followup_tc, disc(5))
    assert patient.followup_wt.sum() == 197 > patient.wt_area_px == 113
    assert patient.paths["followup_seg"] == folder / "followup" / "seg.nii.gz"
    assert patient.paths["patient_json"] == folder / "patient.json"
    np.testing.assert_array_equal(patient.pet, pet[:, :, 3])
    assert "warning" not in capsys.readouterr().out

    labels = followup_labels()
    labels[labels == 4] = 3
    other = with_followup(tmp_path / "q", seg=labels, interval=120.5,
                          name="BraTS2021_00000_seg.nii.gz")
    (other / "followup" / "notes.txt").write_text("ignored")
    patient = load_patient(other, slice=2)
    assert patient.followup_convention == "brats2023" and patient.interval_days == 120.5
    np.testing.assert_array_equal(patient.followup_wt, disc(6))
    np.testing.assert_array_equal(patient.followup_tc, disc(4.5))


def test_followup_smaller_than_baseline_warns(tmp_path, capsys):
    """A follow-up whose tumour shrank (discs 2 px smaller: WT 49 px against 113) loads with
    a warning naming the follow-up file and both areas."""
    patient = load_patient(with_followup(tmp_path / "p", seg=followup_labels(grow=-2)))
    assert patient.followup_wt.sum() == disc(4).sum() == 49
    out = capsys.readouterr().out
    assert "warning" in out and "followup/seg.nii.gz" in out and "(49 px)" in out
    assert "(113 px)" in out


@pytest.mark.parametrize("content, fragment", [
    ('{"interval_days": -3}', "field 'interval_days': expected a number of days > 0, got -3"),
    ('{"interval_days": 0}', "field 'interval_days': expected a number of days > 0, got 0"),
    ('{"interval_days": "90"}', "field 'interval_days': expected a number of days > 0, "
                                'got "90"'),
    ('{"interval_days": true}', "field 'interval_days': expected a number"),
    ('{"interval_days": NaN}', "field 'interval_days': expected a number"),
    ('{"interval_days": 90', "not valid JSON"),
    ("[90]", "expected a JSON object"),
    ('{"days": 90}', "has no field 'interval_days'"),
])
def test_bad_patient_json(tmp_path, content, fragment):
    """A bad patient.json next to a follow-up: one line naming the file (and the field)."""
    folder = with_followup(tmp_path / "p", interval=None)
    (folder / "patient.json").write_text(content)
    with pytest.raises(InputError) as info:
        load_patient(folder)
    message = str(info.value)
    assert fragment in message and "patient.json" in message and "\n" not in message


def test_followup_and_interval_need_each_other(tmp_path):
    """A follow-up folder without patient.json, or patient.json's interval without a follow-up
    folder: one line naming what is missing; a file named followup, or a follow-up folder
    without a segmentation: named too."""
    folder = with_followup(tmp_path / "a", interval=None)
    with pytest.raises(InputError, match=r"a/followup: a follow-up scan needs its interval in "
                                         r"days, but .*a/patient\.json is missing"):
        load_patient(folder)
    folder = make_patient(tmp_path / "b")
    (folder / "patient.json").write_text('{"interval_days": 60}')
    with pytest.raises(InputError, match=r"b/patient\.json: field 'interval_days' is given but "
                                         r"there is no follow-up scan: no folder .*b/followup"):
        load_patient(folder)
    (folder / "patient.json").write_text('{"comment": "one scan"}')
    assert not load_patient(folder).has_followup  # no interval, no follow-up: fine
    (folder / "followup").write_text("x")
    with pytest.raises(InputError, match=r"b/followup: expected a folder"):
        load_patient(folder)
    folder = with_followup(tmp_path / "c", name="t1.nii.gz")
    with pytest.raises(InputError, match=r"c/followup: missing the seg role .*t1\.nii\.gz"):
        load_patient(folder)


def test_followup_and_pet_on_another_grid(tmp_path):
    """A follow-up seg or a PET map of another shape or with a shifted affine: one line naming
    the file and the first scan's seg."""
    seg = followup_labels()
    folder = with_followup(tmp_path / "a", seg=seg[:, :-1])
    with pytest.raises(InputError, match=r"followup/seg\.nii\.gz: grid shape .* does not match"
                                         r" .*a/seg\.nii\.gz"):
        load_patient(folder)
    shifted = AFFINE.copy()
    shifted[1, 3] += 1.0
    folder = with_followup(tmp_path / "b", affine=shifted)
    with pytest.raises(InputError, match=r"followup/seg\.nii\.gz: affine does not match"):
        load_patient(folder)
    folder = make_patient(tmp_path / "c")
    save(folder / "pet.nii.gz", np.ones(SHAPE, np.float32), shifted)
    with pytest.raises(InputError, match=r"pet\.nii\.gz: affine does not match"):
        load_patient(folder)
    save(folder / "pet.nii.gz", np.ones(SHAPE[:2] + (5,), np.float32))
    with pytest.raises(InputError, match=r"pet\.nii\.gz: grid shape"):
        load_patient(folder)


def test_bad_pet_values(tmp_path):
    """PET with NaN or negative values: one line naming the file with the count/minimum;
    a follow-up seg with an unknown label: named."""
    folder = make_patient(tmp_path / "a")
    pet = np.ones(SHAPE, np.float32)
    pet[1, 1, 1] = np.nan
    save(folder / "pet.nii.gz", pet)
    with pytest.raises(InputError, match=r"pet\.nii\.gz: PET map has 1 NaN value"):
        load_patient(folder)
    pet[1, 1, 1] = -0.25
    save(folder / "pet.nii.gz", pet)
    with pytest.raises(InputError, match=r"pet\.nii\.gz: PET map has negative values \(min "
                                         r"-0\.25, 1 voxel"):
        load_patient(folder)
    seg = followup_labels()
    seg[0, 0, 0] = 7
    with pytest.raises(InputError, match=r"followup/seg\.nii\.gz: unknown label\(s\) 7"):
        load_patient(with_followup(tmp_path / "b", seg=seg))


def test_embedded_cortex_patient(report):
    """data/patient_cortex (bilo gbm synth --seed 4 --centre 30,-25): loads with its
    follow-up, interval and PET; areas equal to truth.json's; the follow-up WT contains the
    first scan's and is larger; the tumour touches the lateral ventricle (WT pixels next to
    non-brain pixels inside the brain) and holds grey matter (P < 0.5 on more than 5 % of WT),
    unlike data/patient_default's; PET is 0 outside WT; the folder is under 1 MB."""
    from scipy import ndimage

    truth = json.loads((CORTEX / "truth.json").read_text())
    patient = load_patient(CORTEX)
    size = sum(p.stat().st_size for p in CORTEX.rglob("*") if p.is_file())
    assert truth["seed"] == 4 and truth["fixed"] == ["centre_mm"]
    assert patient.slice_index == truth["slice_index"] and patient.has_followup
    assert patient.interval_days == truth["interval_days"]
    assert patient.wt_area_px == truth["areas_px"]["wt"]
    assert patient.tc_area_px == truth["areas_px"]["tc"]
    assert int(patient.followup_wt.sum()) == truth["followup"]["areas_px"]["wt"]
    assert not (patient.wt & ~patient.followup_wt).any()
    assert patient.followup_wt.sum() > patient.wt_area_px
    lines = []
    for name, case in (("default", load_patient(EMBEDDED)), ("cortex", patient)):
        brain = brain_mask(case)
        ventricle = ndimage.binary_fill_holes(brain) & ~brain
        touching = int((ndimage.binary_dilation(case.wt) & ventricle).sum())
        grey = float((tissue_P(case)[case.wt] < 0.5).mean())
        lines.append(f"{name}: WT {case.wt_area_px} px, {touching} ventricle px adjacent, "
                     f"P < 0.5 on {grey:.0%} of WT")
        if name == "cortex":
            assert touching > 0 and grey > 0.05
        else:
            assert touching == 0 and grey == 0.0
    report("; ".join(lines) + f"; cortex folder {size / 1e6:.2f} MB")
    assert not patient.pet[~patient.wt].any() and (patient.pet[patient.wt] > 0).all()
    assert patient.pet[patient.wt].mean() == pytest.approx(truth["pet"]["mean_in_wt"], rel=1e-6)
    assert size < 1e6
