"""BiLO's upper-level gradient against the FEM's on a patient (docs/gbm.md, "The network's
θ-gradient"): `bilo.gradient_check` at the initial guess θ0 after pre-training, the gradient
of the data loss (eq. 36) from the network against central differences of the same loss on FEM
solutions at θ0 ± 5 % of each PDE parameter.

    python docs/scripts/gbm_gradient_check.py data/patient_cortex --out runs/grad
    python docs/scripts/gbm_gradient_check.py data/patient_cortex --out runs/grad_causal \
        --causal 1
    python docs/scripts/gbm_gradient_check.py data/patient_cortex --out runs/grad_anchored \
        --anchor-spread 0.3

(Without anchors unless --anchor-spread is given, unlike `bilo gbm run`, whose default on a
patient with a follow-up is 0.3.)

Prints both gradients, their ratio per parameter and the cosine.
"""

import argparse
import dataclasses
from pathlib import Path

import torch

import apps.gbm.problem as gbm_problem
import bilo.methods
from apps.gbm.patient import load_patient
from apps.gbm.pipeline import (
    Stages,
    _fem_solve,
    _interpolator,
    model_choices,
    prepare,
    run_pipeline,
)
from bilo.gradient_check import GradientCheck, theta_gradient_check

STEP = 0.05  # central differences at θ0 ± STEP·θ0


def fem_misfit(patient_dir, out: Path):
    """Eq. 36 of the FEM solution at θ, on the patient's observations, as a function of θ."""
    patient = load_patient(patient_dir)
    case = prepare(patient_dir, out, Stages(), model=model_choices(patient, "bilo"),
                   patient=patient)
    problem, observations = case.problem, case.data.observations
    points = observations.points_in(problem.coords, "the observations")
    solves = iter(range(1 << 30))

    def misfit(theta: dict) -> float:
        solution = _fem_solve(case.mesh_path, out / f"solve_{next(solves)}.h5", case.scales,
                              theta, 1, case.ic)
        u = _interpolator(solution, case.scales, theta.get("tau"))(points)
        return float(problem.likelihood.value(
            torch.as_tensor(u), torch.as_tensor(observations.values),
            {k: torch.tensor(v) for k, v in theta.items()}))

    return misfit


def gradient_check(patient_dir, out: Path, pretrain_steps: int | None,
                   anchor_spread: float | None) -> GradientCheck:
    """`bilo.gradient_check` at the first fine-tuning step (θ still θ0), after the run's
    pre-training."""
    misfit = fem_misfit(patient_dir, out / "fem")
    captured = []
    step = bilo.methods.BiLO.finetune_step

    def first_step(method, batch):
        if not captured:
            captured.append(theta_gradient_check(method, batch, misfit, STEP))
        return step(method, batch)

    bilo.methods.BiLO.finetune_step = first_step
    try:
        run_pipeline(patient_dir, out / "network", overrides={
            "finetune_steps": 1, "pretrain_steps": pretrain_steps}, anchor_spread=anchor_spread,
            overwrite=True)
    finally:
        bilo.methods.BiLO.finetune_step = step
    return captured[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("patient_dir")
    parser.add_argument("--out", required=True)
    parser.add_argument("--causal", type=float, default=None, help="(the preset's)")
    parser.add_argument("--pretrain-steps", type=int, default=None, help="(the preset's)")
    parser.add_argument("--anchor-spread", type=float, default=0.0,
                        help="`bilo gbm run --anchor-spread` (default: 0, off)")
    args = parser.parse_args()
    quick = gbm_problem.GBMProblem.presets["quick"]
    gbm_problem.GBMProblem.presets["quick"] = dataclasses.replace(quick, causal=args.causal)
    print(gradient_check(args.patient_dir, Path(args.out), args.pretrain_steps,
                         args.anchor_spread).table())


if __name__ == "__main__":
    main()
