"""Settling with other settings (docs/darcy.md, "Settling: the lower level at the answer"):
copy a finished `bilo train darcy --method bilo` run, continue its settling phase (with the
run's own preset and settings) to `--settle-steps` in all at Adam's rate `--lr` (set after the
checkpoint, which holds the old one), and print u_NN against the FEM solution at the run's A
(its reference_at_inferred.h5). A is frozen throughout, so that solution stays the reference.

    bilo train darcy --data clean.h5 --method bilo --u0 auto --settle-steps 1000 --out runs/s
    python docs/scripts/darcy_settle.py runs/s clean.h5 --out runs/s2 --settle-steps 3000
"""

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from bilo.problems import get_problem
from bilo.strategies import METHODS, load_data, make_options
from solvers.exchange import read_solution


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a finished BiLO run on darcy, trained with --u0 auto")
    parser.add_argument("data", help="its data file")
    parser.add_argument("--out", required=True, help="the copy to continue (must not exist)")
    parser.add_argument("--settle-steps", type=int, required=True, help="settling steps in all")
    parser.add_argument("--lr", type=float, default=2e-3, help="the network's Adam rate (2e-3)")
    args = parser.parse_args()
    shutil.copytree(args.run, args.out)
    problem = get_problem("darcy")
    data, path = load_data(problem, args.data)
    # the run's own settings (its preset and any overrides), settling's length replaced
    config = json.loads((Path(args.run) / "config.json").read_text())
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in config["settings"].items()}
    options = make_options(problem, "bilo", config["preset"],
                           {**settings, "settle_steps": args.settle_steps},
                           u0=f"{args.out}/u0.h5")
    run = METHODS["bilo"].make_run(problem, data, path, options, args.out)
    run.load_checkpoint()
    for group in run.method.opt_net.param_groups:
        group["lr"] = args.lr
    run.train()
    result = run.result()
    reference = read_solution(f"{args.out}/reference_at_inferred.h5").u.reshape(-1)
    error = np.linalg.norm(result.u.reshape(-1) - reference) / np.linalg.norm(reference)
    print(f"steps {result.steps}: u_NN vs FEM at A {error:.3e}")


if __name__ == "__main__":
    main()
