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
                  "u_rel_l2_vs_reference", "steps", "wall_s", "device"):
        assert field in saved
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
    from apps.gbm.pipeline import _interpolator
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
