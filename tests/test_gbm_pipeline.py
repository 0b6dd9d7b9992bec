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
