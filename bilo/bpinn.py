"""B-PINN: HMC jointly over the network weights W and θ (Yang, Meng & Karniadakis 2021).

The baseline against which Bayesian BiLO is compared. The PINN's network u_NN(x; W) does not
take θ; the posterior of (θ, W) is

    U(θ, W) = scale·misfit(u_NN(W), d) + n_res·L_res(W, θ)/(2σ_r²) + |W|²/(2σ_W²) − log p(θ),

* scale·misfit: the data's negative log-likelihood as every sampler here has it
  (`bilo.posterior.likelihood_scale`: n/(2σ²)·mean((u − d)²) for Gaussian noise σ);
* L_res: PINN's residual loss (`Method.lower_losses`: mean(r²) over the n_res collocation
  points, plus mean(c²) of any declared constraint), so n_res·L_res = Σ_j r_j² is a Gaussian
  pseudo-likelihood of the residual at the collocation points with sd σ_r (each constraint
  counted as n_res pseudo-observations);
* |W|²/(2σ_W²): a N(0, σ_W²) prior on every network weight and bias;
* p(θ): the declared priors (`bilo.posterior.log_prior_and_gradient`; flat on the bounds where
  none is declared).

`BPINNTarget` is the sampler's target on the vector (θ, W), θ first; the sampler reflects θ at
its bounds (and its prior's support) and leaves W unbounded. It evaluates U in float64 on its
own copy of the network, so the leapfrog's energy error is not float32 rounding. The position
is the whole state (no hooks). `fit_bpinn` pre-trains a PINN (`bilo.train.Run` with
`bilo.methods.PINN`: pre-training and fine-tuning, as `bilo train --method pinn`), so that the
chains start near a mode of U (the usual practice: from a random W the warm-up would spend its
iterations descending), then runs the chains and reports the posterior of θ only.

B-PINN's posterior of θ is not the posterior of the PDE's inverse problem: the residual's
pseudo-likelihood lets u_NN leave the PDE by about σ_r and the weight prior pulls W toward
zero, so it is a baseline "as it comes" (docs/bayes.md, "B-PINN").
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch

from bilo import hmc
from bilo.methods import Batch, Method
from bilo.posterior import (
    chain_processes,
    chains_result,
    likelihood_scale,
    log_prior_and_gradient,
    network_against_solver,
    posterior_predictive,
    predictive_every,
    predictive_summary,
    reference_grid,
    write_posterior,
)
from bilo.results import Result, reference_points
from solvers.common import InputError

_INF = float("inf")


def _batch_as(batch: Batch, dtype: torch.dtype) -> Batch:
    """The batch's tensors in `dtype` (a copy)."""
    def cast(value):
        if isinstance(value, torch.Tensor):
            return value.detach().to(dtype)
        if isinstance(value, dict):
            return {k: cast(v) for k, v in value.items()}
        return value

    return Batch(**{f.name: cast(getattr(batch, f.name)) for f in dataclasses.fields(Batch)})


class BPINNTarget:
    """U(θ, W) of the module docstring and its gradient, on the float64 vector (θ, W): θ in the
    order of `problem.params`, then every trainable network tensor flattened in the order of
    `method.net_params`. `method` (a trained `bilo.methods.PINN`) is copied and cast to `dtype`;
    the original is left alone. With `data`, the observations come from the data file (else
    from the batch, which training holds in float32). `observe(x)` gives u_NN at
    `observe_points` at position x (posterior-predictive draws)."""

    def __init__(self, method: Method, batch: Batch, scale: float, *, sigma_r: float,
                 sigma_w: float = 1.0, dtype: torch.dtype = torch.float64,
                 observe_points: np.ndarray | None = None, data=None):
        problem = method.problem
        if method.takes_parameters:
            raise InputError("B-PINN samples a PINN's weights; the method given takes θ as a "
                             "network input")
        if problem.functions:
            raise InputError(f"problem '{problem.name}' infers unknown functions: B-PINN "
                             "samples scalar parameters and the network's weights only")
        if not problem.params:
            raise InputError(f"problem '{problem.name}' has no parameters to sample")
        for label, value in (("sigma_r", sigma_r), ("sigma_w", sigma_w)):
            if not (math.isfinite(value) and value > 0):
                raise InputError(f"--{label.replace('_', '-')} {value}: must be a finite "
                                 "number above 0")
        self.method = copy.deepcopy(method)
        surrogate = self.method.surrogate
        surrogate.network.to(dtype)
        with torch.no_grad():
            surrogate.theta.data = surrogate.theta.data.to(dtype)
        self.problem, self.dtype = problem, dtype
        self.batch = _batch_as(batch, dtype)
        if data is not None:  # the observations as written, not the training batch's float32
            obs = data.observations
            device = surrogate.theta.device
            self.batch.obs_points = torch.as_tensor(obs.points_in(problem.coords), dtype=dtype,
                                                    device=device)
            self.batch.obs_values = torch.as_tensor(obs.values, dtype=dtype, device=device)
        self.scale, self.sigma_r, self.sigma_w = float(scale), float(sigma_r), float(sigma_w)
        self.theta = surrogate.theta
        self.weights = list(self.method.net_params)
        self.n_theta = self.theta.numel()
        self.n_weights = sum(w.numel() for w in self.weights)
        self.n_collocation = len(self.batch.collocation)
        # Σ_j r_j² / (2σ_r²) = n_res·L_res / (2σ_r²)
        self.residual_weight = self.n_collocation / (2.0 * self.sigma_r ** 2)
        bounds = []
        for p in problem.parameters:
            support = p.prior.support if p.prior is not None else (-_INF, _INF)
            bounds.append((max(p.bounds[0], support[0]), min(p.bounds[1], support[1])))
        self.bounds = bounds + [(-_INF, _INF)] * self.n_weights
        self.names = tuple(problem.params) + tuple(f"W{j}" for j in range(self.n_weights))
        self.observe_points = (None if observe_points is None else torch.as_tensor(
            np.asarray(observe_points), dtype=dtype, device=self.theta.device))

    @property
    def size(self) -> int:
        return self.n_theta + self.n_weights

    def position(self) -> np.ndarray:
        """The current (θ, W) as one float64 vector."""
        parts = [self.theta.detach().reshape(-1)] + [w.detach().reshape(-1)
                                                    for w in self.weights]
        return torch.cat(parts).cpu().numpy().astype(np.float64)

    def set_position(self, x: np.ndarray) -> None:
        x = torch.as_tensor(np.asarray(x, dtype=np.float64).reshape(-1), dtype=self.dtype,
                            device=self.theta.device)
        if x.numel() != self.size:
            raise ValueError(f"B-PINN: a position of {x.numel()} numbers for {self.size}")
        with torch.no_grad():
            self.theta.copy_(x[:self.n_theta])
            offset = self.n_theta
            for w in self.weights:
                w.copy_(x[offset:offset + w.numel()].view_as(w))
                offset += w.numel()

    def terms(self) -> dict[str, torch.Tensor]:
        """At the current position: the data misfit (the likelihood's, as J), the residual
        loss L_res and |W|², as tensors in the graph of θ and W."""
        method = self.method
        _, residual, _ = method.lower_losses(self.batch)  # PINN: the residual loss only
        return {"misfit": method.data_loss(self.batch), "residual_loss": residual,
                "weights_norm2": sum(w.square().sum() for w in self.weights)}

    def potential(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        log_prior, grad_prior = log_prior_and_gradient(self.problem.parameters,
                                                       x[:self.n_theta])
        if not math.isfinite(log_prior):
            return _INF, np.zeros(x.size)
        self.set_position(x)
        terms = self.terms()
        U = (self.scale * terms["misfit"] + self.residual_weight * terms["residual_loss"]
             + terms["weights_norm2"] / (2.0 * self.sigma_w ** 2))
        grads = torch.autograd.grad(U, [self.theta, *self.weights])
        gradient = torch.cat([g.reshape(-1) for g in grads]).cpu().numpy().astype(np.float64)
        gradient[:self.n_theta] -= grad_prior
        value = float(U.detach()) - log_prior
        return (value if math.isfinite(value) else _INF), gradient

    def evaluate_terms(self, x: np.ndarray) -> dict[str, float]:
        """`terms` at position x as numbers (no gradient)."""
        self.set_position(x)
        with torch.no_grad():
            return {k: float(v) for k, v in self.terms().items()}

    def observe(self, x: np.ndarray, points: np.ndarray | None = None) -> np.ndarray:
        """u_NN at `points` (default `observe_points`) at position x (float64)."""
        self.set_position(x)
        at = self.observe_points if points is None else torch.as_tensor(
            np.asarray(points), dtype=self.dtype, device=self.theta.device)
        with torch.no_grad():
            u = self.method.surrogate.predict(at)
        return u.cpu().numpy().astype(np.float64)


def theta_only(chain: hmc.Chain, n_theta: int) -> hmc.Chain:
    """A copy of `chain` with the draws, the warm-up draws, the start and the mass matrix cut
    to the first `n_theta` columns (θ): what the posterior summary, `posterior.h5` and the
    diagnostics are of. U, H and the acceptance records stay those of the joint chain."""
    def cut(draws):
        return dataclasses.replace(draws, samples=draws.samples[:, :n_theta].copy())

    return dataclasses.replace(
        cut(chain), names=chain.names[:n_theta], warmup=cut(chain.warmup),
        theta0=chain.theta0[:n_theta].copy(), mass=chain.mass[:n_theta].copy())


def default_sigma_r(sigma: float) -> float:
    """σ_r when the option is not given: the data's noise σ. On the unit box every coordinate
    has range 1, so the residual has u's units (u_t − a·u(1 − u), −u_xx − f, ...), and the
    PDE is trusted as far as the data: to their noise level. A likelihood without a σ needs
    the option."""
    if not (math.isfinite(sigma) and sigma > 0):
        raise InputError("--sigma-r: needed for a likelihood without a noise level σ (the "
                         "default σ_r is the data's σ)")
    return float(sigma)


def bpinn_chain_target(method: Method, batch: Batch, scale: float, *,
                       threads: int | None = None, **options) -> BPINNTarget:
    """One chain's target (`bilo.hmc.run_chains` builds it in each process, or in turn in this
    one; `BPINNTarget` copies the method); `threads`: torch's per process."""
    if threads is not None:
        torch.set_num_threads(threads)
    return BPINNTarget(method, batch, scale, **options)


def fit_bpinn(problem, data, options, out, *, data_path=None, log=print,
              method: str = "bpinn") -> Result:
    """B-PINN: PINN's pre-training and fine-tuning (`bilo.train.Run` with `bilo.methods.PINN`,
    the options' settings and w_dat) put (θ, W) near a mode; then `options.n_chains` HMC chains
    of `BPINNTarget` (σ_r = `options.sigma_r`, default the data's σ; σ_W = `options.sigma_w`)
    from there, in `options.processes` processes (torch's threads shared among them). The
    answer is the posterior mean of θ and, as u, the mean of u_NN over every
    `predictive_every`-th draw; the posterior summary, `posterior.h5` and the diagnostics are
    of θ only (the weights' draws are not kept).
    `history["J"]` is the data misfit at every draw."""
    import bilo.methods
    from bilo.train import Run

    scale, sigma = likelihood_scale(problem, data, options.sigma)
    sigma_r = options.sigma_r if options.sigma_r is not None else default_sigma_r(sigma)
    run = Run(problem, data, method, bilo.methods.PINN, options, out, data_path)
    run.train()
    points = reference_points(problem, data)
    observe_points = np.concatenate([data.observations.points_in(problem.coords), points])
    target_options = dict(sigma_r=sigma_r, sigma_w=options.sigma_w,
                          observe_points=observe_points, data=data)
    # this process's own copy: the start, and every draw's terms and u_NN afterwards
    target = BPINNTarget(run.method, run.batch, scale, **target_options)
    start, k = target.position(), target.n_theta
    first = target.evaluate_terms(start)
    print(f"sampling θ and {target.n_weights} weights from θ = "
          f"{dict(zip(problem.params, start[:k].tolist(), strict=True))} after {run.step} "
          f"PINN steps (σ_r = {sigma_r:g}, σ_W = {options.sigma_w:g})")
    processes, threads = chain_processes(options, torch.get_num_threads())
    started = time.perf_counter()
    chains = hmc.run_chains(
        bpinn_chain_target, options.n_chains, [options.seed + c for c in
                                               range(options.n_chains)],
        theta0=start, args=(run.method, run.batch, scale),
        kwargs={**target_options, "threads": threads}, processes=processes, log=log,
        n_samples=options.n_samples, n_warmup=options.n_warmup,
        n_leapfrog=options.n_leapfrog, jitter=options.jitter,
        target_accept=options.target_accept, step_size=options.step_size,
        observe_every=predictive_every(options))
    elapsed = time.perf_counter() - started
    # at every draw the data misfit (history's J), L_res and |W|²
    terms = [target.evaluate_terms(x) for chain in chains for x in chain.samples]
    kept = [x.copy() for chain in chains for x in chain.samples[chain.observed_index]]
    theta_chains = [theta_only(chain, k) for chain in chains]
    predictive = posterior_predictive(problem, data, theta_chains, sigma, seed=options.seed)
    u_grid = predictive["u_grid"]
    # B-PINN's u_NN is not held to the PDE: how far from a solution it strays along the chain
    errors = network_against_solver(problem, data, predictive, options.sigma)
    if errors is not None:
        predictive["u_rel_l2_vs_solver"] = errors
    if out is not None:
        write_posterior(Path(out), theta_chains, reference_grid(problem, data, options.sigma),
                        predictive, (problem, data))

    def predict(at: np.ndarray) -> np.ndarray:
        """The mean of u_NN over the kept draws at numpy points."""
        return np.mean([target.observe(x, at) for x in kept], axis=0)

    result = chains_result(
        problem, data, theta_chains, options, method=method, data_path=data_path,
        scale=scale, elapsed=elapsed, device=str(run.device),
        u=u_grid.mean(axis=0).reshape(data.u.shape), predict=predict,
        extra={"posterior_of": "θ and the PINN's weights W jointly by HMC on U = "
                               "scale·misfit(u_NN(W)) + n_res·L_res(W, θ)/(2σ_r²) + "
                               "|W|²/(2σ_W²) − log p(θ), from a trained PINN; params are "
                               "the posterior mean of θ, u the mean of u_NN over the draws. "
                               "A baseline: the residual pseudo-likelihood and the weight "
                               "prior make it differ from the posterior of θ given the PDE",
               "sigma_used": sigma, "sigma_r": sigma_r,
               "sigma_r_from": "option" if options.sigma_r is not None else "the data's σ",
               "sigma_w": options.sigma_w, "n_weights": target.n_weights,
               "n_collocation": target.n_collocation,
               "accept_rate": [c.accept_rate for c in chains],
               "pinn_steps": run.step,
               "start": {"params": dict(zip(problem.params, start[:k].tolist(), strict=True)),
                         **first},
               "draws": {name: {"mean": float(np.mean([t[name] for t in terms])),
                                "max": float(np.max([t[name] for t in terms]))}
                         for name in ("misfit", "residual_loss", "weights_norm2")},
               "u_draws": len(kept),
               "predictive": predictive_summary(data, predictive, errors),
               "u_sd_mean": float(u_grid.std(axis=0).mean()),
               "sampler": "bilo.hmc with bilo.bpinn.BPINNTarget (float64)"})
    result.history["J"] = np.array([t["misfit"] for t in terms])
    return result
