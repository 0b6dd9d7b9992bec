"""BiLO's upper-level gradient against the FEM's on a patient (docs/gbm.md, "The network's
θ-gradient"): the gradient of the data loss (eq. 36) w.r.t. θ at the initial guess θ0, from
the network after pre-training (the first fine-tuning step's gradient) and from central
differences of the same loss on FEM solutions at θ0 ± 5 % of each PDE parameter.

    python docs/scripts/gbm_gradient_check.py data/patient_cortex --out runs/grad
    python docs/scripts/gbm_gradient_check.py data/patient_cortex --out runs/grad_causal \
        --causal 1
    python docs/scripts/gbm_gradient_check.py data/patient_cortex --out runs/grad_anchored \
        --anchor-spread 0.3

Prints both gradients and their ratio per parameter.
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

STEP = 0.05  # central differences at θ0 ± STEP·θ0


def network_gradient(patient_dir, out: Path, pretrain_steps: int | None,
                     anchor_spread: float | None) -> dict[str, float]:
    """The data loss's θ-gradient at the first fine-tuning step (θ still θ0)."""
    captured = {}
    step = bilo.methods.BiLO.finetune_step

    def first_step(method, batch):
        losses = step(method, batch)
        if not captured:
            captured.update(zip(method.problem.params, method.theta.grad.tolist(), strict=True))
        return losses

    bilo.methods.BiLO.finetune_step = first_step
    try:
        run_pipeline(patient_dir, out, overrides={"finetune_steps": 1,
                                                  "pretrain_steps": pretrain_steps},
                     anchor_spread=anchor_spread)
    finally:
        bilo.methods.BiLO.finetune_step = step
    return captured


def fem_gradient(patient_dir, out: Path) -> dict[str, float]:
    patient = load_patient(patient_dir)
    case = prepare(patient_dir, out, Stages(), model=model_choices(patient, "bilo"),
                   patient=patient)
    problem, observations = case.problem, case.data.observations
    points = observations.points_in(problem.coords, "the observations")

    def loss(theta: dict, name: str) -> float:
        solution = _fem_solve(case.mesh_path, out / f"{name}.h5", case.scales, theta, 1,
                              case.ic)
        u = _interpolator(solution, case.scales, theta.get("tau"))(points)
        return float(problem.likelihood.value(
            torch.as_tensor(u), torch.as_tensor(observations.values),
            {k: torch.tensor(v) for k, v in theta.items()}))

    theta0 = problem.initial_guess
    gradient = {}
    for name in problem.pde_params:
        h = STEP * theta0[name]
        gradient[name] = (loss({**theta0, name: theta0[name] + h}, f"{name}_plus")
                          - loss({**theta0, name: theta0[name] - h}, f"{name}_minus")) / (2 * h)
    return gradient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("patient_dir")
    parser.add_argument("--out", required=True)
    parser.add_argument("--causal", type=float, default=None, help="(the preset's)")
    parser.add_argument("--pretrain-steps", type=int, default=None, help="(the preset's)")
    parser.add_argument("--anchor-spread", type=float, default=None,
                        help="`bilo gbm run --anchor-spread` (default: off)")
    args = parser.parse_args()
    out = Path(args.out)
    quick = gbm_problem.GBMProblem.presets["quick"]
    gbm_problem.GBMProblem.presets["quick"] = dataclasses.replace(quick, causal=args.causal)
    network = network_gradient(args.patient_dir, out / "network", args.pretrain_steps,
                               args.anchor_spread)
    fem = fem_gradient(args.patient_dir, out / "fem")
    for name, value in fem.items():
        print(f"dJ/d{name}: network {network[name]:+.4g}, FEM {value:+.4g}, "
              f"ratio {network[name] / value:.3g}")


if __name__ == "__main__":
    main()
