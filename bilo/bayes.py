"""Bayesian BiLO: HMC over θ only, the network following θ (paper Part II).

`NetworkTarget` is the sampler's target (`bilo.hmc.Target`) for a pre-trained BiLO method: at
every leapfrog position θ the lower level (residual + w_rgrad·residual-gradient loss) is
fine-tuned from the current weights until its loss is below `lower_tol` (the count of steps is
recorded per leapfrog step); where `lower_cap` steps do not get it there, u_NN is no solution
of the PDE and the position counts as a failed solve (U = ∞: the proposal is rejected, a
divergence in the sampler's records). The potential is

    U(θ) = −log p(d | u_NN(·, θ)) − log p(θ) = scale·misfit(u_NN(·, θ), d) − log p(θ),

with ∂U/∂θ through the network's θ-input (BiLO's local operator makes u_NN(·, θ) follow the
PDE near θ). `snapshot`/`restore` copy the fine-tuned weights and the optimiser state, so a
rejected proposal goes back to the weights of the last accepted position. With `lora_rank` r
the fine-tuning moves only rank-r increments of the hidden layers (`bilo.lora`). `observe`
gives u_NN at every k-th draw, for the posterior-predictive band and for the check that u_NN
stays the PDE's solution along the chain (`bilo.posterior.network_against_solver`).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bilo import hmc
from bilo.lora import add_low_rank
from bilo.methods import Batch, Method
from bilo.posterior import (
    chain_processes,
    chains_result,
    likelihood_scale,
    log_prior_and_gradient,
    network_against_solver,
    posterior_mean,
    posterior_predictive,
    predictive_every,
    predictive_points,
    predictive_summary,
    reference_grid,
    write_posterior,
)
from bilo.results import Result, reference_points
from solvers.common import InputError

# the default lower-level tolerance, relative to the loss training reached at the trained θ
LOWER_TOL_FACTOR = 1.1
# LoRA's default learning rate, relative to the network's: at 1× the rank-2 chains of
# poisson_constant disagreed (R-hat 1.12), at 10× they met the grid posterior (R-hat 1.003)
LORA_LR_FACTOR = 10.0


def lower_lr(lr_net: float, lora_rank: int) -> float:
    """The lower level's default learning rate: the network's, ×10 for LoRA increments."""
    return lr_net * (LORA_LR_FACTOR if lora_rank else 1.0)


class NetworkTarget:
    def __init__(self, method: Method, batch: Batch, scale: float, *, lower_tol: float,
                 lower_cap: int, lr: float, lora_rank: int = 0, seed: int = 0,
                 observe_points: np.ndarray | None = None):
        self.method, self.batch, self.scale = method, batch, float(scale)
        self.problem = method.problem
        self.lower_tol, self.lower_cap = float(lower_tol), int(lower_cap)
        network = method.surrogate.network
        # the increments' initial A from the chain's own seed, not the global generator
        trainable = (add_low_rank(network, lora_rank, torch.Generator().manual_seed(seed))
                     if lora_rank else [p for p in network.parameters() if p.requires_grad])
        self.trainable = trainable
        self.optimiser = torch.optim.Adam(trainable, lr=lr)
        self.bounds = [p.bounds for p in self.problem.parameters]
        self.names = self.problem.params
        self.lower_steps = 0
        self.unconverged = 0      # positions where the cap stopped the fine-tuning
        self.converged = True     # at the last position (the trained network's is)
        self.observe_points = observe_points

    def _set_theta(self, theta: np.ndarray) -> None:
        with torch.no_grad():
            self.method.theta.copy_(torch.as_tensor(theta, dtype=self.method.theta.dtype))

    def at_position(self, theta: np.ndarray) -> int:
        """Fine-tune the lower level at θ until its loss is below `lower_tol` (converged) or
        `lower_cap` steps are taken (not converged); the number of optimiser steps."""
        self._set_theta(theta)
        steps = 0
        while True:
            _, total, _ = self.method.lower_losses(self.batch)
            self.converged = float(total.detach()) < self.lower_tol
            if self.converged or steps == self.lower_cap:
                break
            self.optimiser.zero_grad(set_to_none=True)
            total.backward(inputs=self.trainable)
            self.optimiser.step()
            steps += 1
        self.lower_steps += steps
        self.unconverged += not self.converged
        return steps

    def potential(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        if not self.converged:
            # u_NN is no solution of the PDE here, so U(θ) is unknown: as a failed solve, the
            # position is rejected (a spuriously low U would otherwise trap the chain)
            return math.inf, np.zeros(len(self.names))
        self._set_theta(theta)
        method = self.method
        theta_dict = dict(zip(self.problem.params, method.theta, strict=True)) \
            | method.surrogate.constants
        misfit = self.problem.likelihood.value(method.surrogate.predict(self.batch.obs_points),
                                               self.batch.obs_values, theta_dict)
        (grad,) = torch.autograd.grad(misfit, method.theta)
        log_prior, grad_prior = log_prior_and_gradient(self.problem.parameters, theta)
        U = self.scale * float(misfit.detach()) - log_prior
        gradient = self.scale * grad.detach().cpu().numpy().astype(np.float64) - grad_prior
        return U, gradient

    def observe(self, theta: np.ndarray) -> np.ndarray:
        """u_NN at `observe_points`, the network in the state of the draw θ."""
        self._set_theta(theta)
        return self.method.surrogate.predict_numpy(self.observe_points)

    def snapshot(self):
        return (copy.deepcopy(self.method.surrogate.network.state_dict()),
                copy.deepcopy(self.optimiser.state_dict()), self.method.theta.detach().clone())

    def restore(self, state) -> None:
        weights, optimiser, theta = state
        self.method.surrogate.network.load_state_dict(weights)
        self.optimiser.load_state_dict(optimiser)
        with torch.no_grad():
            self.method.theta.copy_(theta)
        self.converged = True  # snapshots are taken at accepted, hence converged, positions


def chain_target(method: Method, batch: Batch, scale: float, *, threads: int | None = None,
                 **options) -> NetworkTarget:
    """One chain's target on its own copy of the trained method (`bilo.hmc.run_chains` builds
    it in each process, or in turn in this one); `threads`: torch's per process."""
    if threads is not None:
        torch.set_num_threads(threads)
    return NetworkTarget(copy.deepcopy(method), batch, scale, **options)


def stuck_chains(chains, lower_cap: int) -> list[str]:
    """One line per chain that the network could not carry: acceptance below 0.2, or more than
    5 % of its leapfrog positions stopped at the lower-level cap (failed fine-tunings)."""
    lines = []
    for c, chain in enumerate(chains):
        at_cap = float(np.mean(chain.hook_counts >= lower_cap)) if len(chain.hook_counts) else 0.0
        if chain.accept_rate < 0.2 or at_cap > 0.05:
            lines.append(f"chain {c}: acceptance {chain.accept_rate:.2f}, {at_cap:.1%} of the "
                         "leapfrog positions failed to fine-tune within --lower-cap: the "
                         "network does not follow θ at this tolerance and the chain barely "
                         "moves; raise --lower-tol or --lower-cap")
    return lines


def fit_bayes_bilo(problem, data, options, out, *, data_path=None, log=print,
                   method: str = "hmc") -> Result:
    """B-BiLO: BiLO's pre-training (and its fine-tuning, when the settings ask for steps: it
    brings θ near the posterior's mode), then `options.n_chains` HMC chains over θ, each from
    a copy of the trained network, with the lower level fine-tuned at every leapfrog position
    (`NetworkTarget`), in `options.processes` processes (torch's threads shared among them).
    u_NN is recorded at every `predictive_every`-th draw, at the `predictive_points` (the
    posterior-predictive band) and on the reference grid, where it is compared with the solver
    at the draw's θ."""
    import bilo.methods
    from bilo.train import Run

    scale, sigma = likelihood_scale(problem, data, options.sigma)
    if options.settings.settle_steps:
        # the chains need the network's θ-dependence, which settling would stop training
        print(f"settle_steps {options.settings.settle_steps}: not taken before sampling")
        options = replace(options, settings=replace(options.settings, settle_steps=0))
    run = Run(problem, data, method, bilo.methods.BiLO, options, out, data_path)
    run.train()
    start = run.method.theta.detach().cpu().numpy().astype(np.float64)
    trained = float(run.method.lower_losses(run.batch)[1].detach())
    # what the network has shown it can hold; twice that let Fisher-KPP's posterior drift
    lower_tol = options.lower_tol if options.lower_tol is not None else LOWER_TOL_FACTOR * trained
    print(f"sampling from θ = {dict(zip(problem.params, start.tolist(), strict=True))} after "
          f"{run.step} BiLO steps; lower-level loss {trained:.3g} there, fine-tuned below "
          f"{lower_tol:.3g} at every leapfrog position")
    target_options = dict(
        lower_tol=lower_tol, lower_cap=options.lower_cap,
        lr=options.lower_lr or lower_lr(options.settings.lr_net, options.lora_rank),
        lora_rank=options.lora_rank,
        observe_points=np.concatenate([predictive_points(problem, data)] + (
            [reference_points(problem, data)] if problem.predictive_on_grid else [])))
    probe = chain_target(run.method, run.batch, scale, **target_options, seed=options.seed)
    probe.at_position(start)
    if not probe.converged:
        raise InputError(f"--lower-tol {lower_tol:g}: the lower level does not get below it "
                         f"within --lower-cap {options.lower_cap} steps even at the trained θ "
                         f"(loss {trained:.3g} there); raise either")
    processes, threads = chain_processes(options, torch.get_num_threads())
    seeds = [options.seed + c for c in range(options.n_chains)]
    started = time.perf_counter()
    chains = hmc.run_chains(
        chain_target, options.n_chains, seeds, theta0=start,
        args=(run.method, run.batch, scale), kwargs={**target_options, "threads": threads},
        seed_kwarg="seed", processes=processes, log=log,
        n_samples=options.n_samples, n_warmup=options.n_warmup,
        n_leapfrog=options.n_leapfrog, jitter=options.jitter,
        target_accept=options.target_accept, step_size=options.step_size,
        observe_every=predictive_every(options))
    elapsed = time.perf_counter() - started
    warnings = stuck_chains(chains, options.lower_cap)
    for line in warnings:
        print(f"warning: {line}")
    predictive = posterior_predictive(problem, data, chains, sigma, seed=options.seed)
    errors = network_against_solver(problem, data, predictive, options.sigma)
    if errors is not None:
        predictive["u_rel_l2_vs_solver"] = errors
    if errors is not None and log is not None:
        log(f"u_NN against the solver at {errors.size} recorded draws: relative L2 mean "
            f"{errors.mean():.3g}, max {errors.max():.3g}")
    if out is not None:
        write_posterior(Path(out), chains, reference_grid(problem, data, options.sigma),
                        predictive, (problem, data))
    mean = posterior_mean(chains, problem)
    # the probe's copy of the trained network, fine-tuned at the posterior mean, gives u there
    probe.lower_cap = max(options.lower_cap, 1000)
    probe.at_position(mean)
    surrogate = probe.method.surrogate
    lower = np.concatenate([c.hook_counts for c in chains])
    return chains_result(
        problem, data, chains, options, method=method, data_path=data_path, scale=scale,
        elapsed=elapsed, device=str(run.device),
        u=surrogate.predict_numpy(reference_points(problem, data)).reshape(data.u.shape),
        predict=surrogate.predict_numpy,
        extra={"posterior_of": "θ by HMC on U = scale·misfit(u_NN(θ)) − log p(θ), the network "
                               "fine-tuned at every leapfrog position; params are the "
                               "posterior mean",
               "sigma_used": sigma, "lora_rank": options.lora_rank,
               "lower_tol_used": lower_tol, "lower_loss_trained": trained,
               "lower_steps_per_leapfrog": {"mean": float(lower.mean()),
                                            "max": int(lower.max()),
                                            "at_cap": float(np.mean(lower == options.lower_cap))},
               "predictive": predictive_summary(data, predictive, errors),
               "processes": processes, "warnings": warnings,
               "sampler": "bilo.hmc with bilo.bayes.NetworkTarget"})
