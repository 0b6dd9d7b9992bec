"""The lower level alone on a synthetic patient (docs/gbm.md, "The network at the true
parameters"): `bilo gbm run`'s stages with θ0 the generator's truth (truth.json), pre-training on
the FEM solution there, then fine-tuning with θ frozen (lr_theta 1e-30), so the run's network
check measures how close the quick preset's network comes to the PDE's solution when θ does
not move.

    python docs/scripts/gbm_fixed_theta.py data/patient_cortex --out runs/fixed --steps 5000
    python docs/scripts/gbm_fixed_theta.py data/patient_cortex --out runs/fit --steps 1 \
        --residual-scale 0.01                 # nearly a pure fit of u to the FEM solution
    python docs/scripts/gbm_fixed_theta.py data/patient_cortex --out runs/flat --steps 1 \
        --residual-decay 0 --time-power 1     # residual unweighted in time, times uniform

The check's numbers are in OUT/summary.json ("check"). --residual-decay and --time-power set
the constants RESIDUAL_DECAY and TIME_POWER of apps/gbm/problem.py for this run, --smoothing
TISSUE_SMOOTHING_MM of apps/gbm/pipeline.py.
"""

import argparse
import json
from pathlib import Path

import apps.gbm.pipeline as gbm_pipeline
import apps.gbm.problem as gbm_problem
from apps.gbm.pipeline import run_pipeline


def true_theta(truth: dict) -> dict:
    """θ0 = the generator's truth, in the pipeline's dimensionless parameters."""
    theta = {"D": truth["D_as_estimated"], "rho": truth["rho_as_estimated"],
             "th_wt": truth["u_c_wt"], "th_tc": truth["u_c_tc"]}
    if "interval_days" in truth:
        theta["tau"] = truth["interval_days"] / truth["T_days"]
    return theta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("patient_dir", help="a folder of `bilo gbm synth` (with truth.json)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=5000, help="fine-tuning steps at fixed θ")
    parser.add_argument("--pretrain-steps", type=int, default=None, help="(the preset's)")
    parser.add_argument("--width", type=int, default=None, help="network width (preset's)")
    parser.add_argument("--n-res", type=int, nargs=2, default=None, metavar=("A", "B"),
                        help="residual points per step A·B (the preset's)")
    parser.add_argument("--residual-scale", type=float, default=1.0,
                        help="multiplies the residual (its loss by the square)")
    parser.add_argument("--w-rgrad", type=float, default=None, help="(the preset's)")
    parser.add_argument("--causal", type=float, default=None, help="(the preset's)")
    parser.add_argument("--smoothing", type=float, default=None,
                        help="the tissue map's smoothing in mm (TISSUE_SMOOTHING_MM)")
    parser.add_argument("--residual-decay", type=float, default=None)
    parser.add_argument("--time-power", type=float, default=None)
    args = parser.parse_args()

    theta0 = true_theta(json.loads((Path(args.patient_dir) / "truth.json").read_text()))
    if args.residual_scale != 1.0:
        residual, scale = gbm_problem.GBMProblem.residual, args.residual_scale
        gbm_problem.GBMProblem.residual = lambda self, *a: residual(self, *a) * scale
    if args.residual_decay is not None:
        gbm_problem.RESIDUAL_DECAY = args.residual_decay
    if args.smoothing is not None:
        gbm_pipeline.TISSUE_SMOOTHING_MM = args.smoothing
    if args.time_power is not None:
        gbm_problem.TIME_POWER = args.time_power
    run_pipeline(args.patient_dir, args.out, overrides={
        "lr_theta": 1e-30, "finetune_steps": args.steps, "width": args.width,
        "pretrain_steps": args.pretrain_steps,
        "n_res": tuple(args.n_res) if args.n_res else None, "w_rgrad": args.w_rgrad,
        "causal": args.causal}, anchor_spread=0.0, overwrite=True,
        theta0=theta0)


if __name__ == "__main__":
    main()
