"""Benchmark: what B-BiLO's fine-tuning costs per effective sample, full against LoRA.

Problem: `poisson_constant`, D·u″ = −π² sin(πx) on [0, 1], u(0) = u(1) = 0, with a Gamma(2, 1)
prior on D and the tutorial's data (truth D = 1, 11 points, σ = 0.2, seed 0). For each network
width (default 128 and 512; 2 hidden tanh layers) BiLO is trained once (the quick preset's
steps), then one HMC chain per variant starts from that network at the trained θ:

  full    every weight fine-tuned at each leapfrog position (lora_rank 0)
  r2, r4, r8
          only rank-r increments W0 + B·A of the hidden layers (`bilo.lora`)

with the same lower-level tolerance for all (B-BiLO's default, 1.1 × the loss training reached,
or --lower-tol),
the same cap, seed, warm-up and draws. Reported per variant: the sampling wall time, the bulk
ESS of D (`bilo.hmc.diagnostics`; one chain, so an estimate with its own noise: run longer
chains with --samples for tighter figures), seconds per effective sample, its ratio to full
fine-tuning of the same width (the Part II claim: about 0.6× at 256 neurons), the lower-level
steps per leapfrog step and the posterior mean and sd of D.

Usage: `python bench/hmc_cost.py [--widths 128 512] [--ranks 0 2 4 8] [--warmup 100]
[--samples 300] [--leapfrog 5] [--threads N] [--device cpu|cuda]`.
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from bilo import hmc
from bilo.bayes import LOWER_TOL_FACTOR, chain_target, lower_lr
from bilo.methods import BiLO
from bilo.posterior import likelihood_scale
from bilo.problems import get_problem
from bilo.strategies import make_options
from bilo.synthetic import run_reference
from bilo.train import Run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--ranks", type=int, nargs="+", default=[0, 2, 4, 8])
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--leapfrog", type=int, default=5)
    parser.add_argument("--lower-tol", type=float, default=None)
    parser.add_argument("--lower-cap", type=int, default=300)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    problem = get_problem("poisson_constant")
    data = run_reference(problem, {"D": 1.0}, n_obs=11, noise=0.2, seed=0)
    scale, _ = likelihood_scale(problem, data)
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, one chain of "
          f"{args.warmup} warm-up + {args.samples} draws, L = {args.leapfrog} per variant")
    print(f"{'width':>5} {'variant':>7} {'sampling s':>10} {'ESS':>6} {'s/ESS':>8} "
          f"{'ratio':>6} {'lower/leapfrog':>14} {'mean D':>8} {'sd D':>7}")
    for width in args.widths:
        options = make_options(problem, "hmc", "quick", {"width": width}, device=args.device,
                               seed=0)
        run = Run(problem, data, "hmc", BiLO, options, tempfile.mkdtemp(prefix=f"w{width}_"))
        run.train()
        start = run.method.theta.detach().cpu().double().numpy()
        trained = float(run.method.lower_losses(run.batch)[1].detach())
        tol = args.lower_tol if args.lower_tol is not None else LOWER_TOL_FACTOR * trained
        baseline = None
        for rank in args.ranks:
            target = chain_target(run.method, run.batch, scale, lower_tol=tol,
                                  lower_cap=args.lower_cap,
                                  lr=lower_lr(options.settings.lr_net, rank),
                                  lora_rank=rank, seed=0)
            chain = hmc.sample(target, start, n_samples=args.samples, n_warmup=args.warmup,
                               n_leapfrog=args.leapfrog, jitter=0.2, seed=0)
            summary = hmc.diagnostics([chain])
            stats = summary["params"]["D"]
            per_ess = chain.sampling_s / stats["ess_bulk"]
            baseline = per_ess if rank == 0 or baseline is None else baseline
            label = "full" if rank == 0 else f"r{rank}"
            print(f"{width:>5} {label:>7} {chain.sampling_s:>10.2f} {stats['ess_bulk']:>6.0f} "
                  f"{per_ess:>8.4f} {per_ess / baseline:>6.2f} "
                  f"{chain.hook_counts.mean():>14.2f} {stats['mean']:>8.4f} "
                  f"{stats['sd']:>7.4f}", flush=True)
        print(f"{width:>5} lower-level tolerance {tol:.3g} (trained loss {trained:.3g})")


if __name__ == "__main__":
    main()
