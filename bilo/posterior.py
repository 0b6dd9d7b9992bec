"""Reference posteriors of a problem's scalar parameters from its solver and discrete adjoint.

For Gaussian noise with σ and n observations, the negative log-posterior of θ is

    U(θ) = scale·J(θ) − log p(θ),   scale = n/(2σ²),   J(θ) = mean((u(θ) − d)²),

J the problem's objective (`bilo.model.objective`, the adjoint's `objective(m)`), p(θ) the
product of the declared priors (`bilo.model.log_prior`; a parameter without one is flat on its
bounds). σ is the data file's (`observations/@sigma`), or the one given.

* `SolverTarget(problem, data)`: U and ∇U = scale·∇J − ∇log p, ∇J by the discrete adjoint (one
  forward and one backward solve) and ∇log p by torch autograd through the priors (central
  differences for a prior that does not take tensors): the target of `bilo.hmc` for the
  `hmc-solver` reference.
* `grid_posterior(problem, data, grid)`: for one or two parameters, exp(−U) on a grid of solver
  evaluations, normalised by the trapezoidal rule: the marginals' means and sds, the
  correlation and the density, exact up to the grid's discretisation.
* `fit_hmc_solver(problem, data, options, out)`: chains of `SolverTarget` by `bilo.hmc` as a
  method's `bilo.results.Result` (posterior mean as the answer, the diagnostics in `extra`,
  every draw in `posterior.h5`, `posterior.png`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bilo import hmc
from bilo.likelihoods import Gaussian
from bilo.model import Parameter, Problem, log_prior
from bilo.results import FUNCTION_POINTS, Result, reference_points, relative_l2
from solvers.common import InputError

_INF = float("inf")
# what a failed forward solve may raise (a step with no real root, a singular system, ...):
# the position gets U = inf and its proposal is rejected
_SOLVER_FAILURES = (RuntimeError, ArithmeticError, np.linalg.LinAlgError)


def log_prior_and_gradient(parameters: tuple[Parameter, ...],
                           theta: np.ndarray) -> tuple[float, np.ndarray]:
    """Σ log p(θ_k) (as `bilo.model.log_prior`) and its gradient: torch autograd through each
    prior's tensor path, central differences for a prior that returns no tensor. Outside the
    support (or the bounds of a parameter without a prior): (−inf, zeros)."""
    theta = np.asarray(theta, dtype=np.float64).reshape(-1)
    total, gradient = 0.0, np.zeros(theta.size)
    for j, (param, value) in enumerate(zip(parameters, theta, strict=True)):
        if param.prior is None:
            if not param.bounds[0] <= value <= param.bounds[1]:
                return -_INF, np.zeros(theta.size)
            continue
        lp, dlp = _prior_term(param.prior, float(value))
        if not math.isfinite(lp):
            return -_INF, np.zeros(theta.size)
        total += lp
        gradient[j] = dlp
    return total, gradient


def _prior_term(prior, value: float) -> tuple[float, float]:
    import torch

    x = torch.tensor(value, dtype=torch.float64, requires_grad=True)
    try:
        lp = prior.log_prob(x)
    except (TypeError, AttributeError, RuntimeError):  # no torch path
        lp = None
    if isinstance(lp, torch.Tensor) and lp.requires_grad:
        (grad,) = torch.autograd.grad(lp, x)
        return float(lp.detach()), float(grad)
    lp = float(prior.log_prob(value))
    if not math.isfinite(lp):
        return lp, 0.0
    h = 1e-6 * max(1.0, abs(value))
    lo, hi = prior.support
    up = float(prior.log_prob(value + h)) if value + h <= hi else math.nan
    down = float(prior.log_prob(value - h)) if value - h >= lo else math.nan
    if math.isfinite(up) and math.isfinite(down):
        return lp, (up - down) / (2 * h)
    if math.isfinite(up):
        return lp, (up - lp) / h
    return lp, (lp - down) / h if math.isfinite(down) else 0.0


def predictive_points(problem: Problem, data) -> np.ndarray:
    """Where the posterior predictive records u: the observation points or, for events (whose
    values are no values of u), 101 even points of x, the intensity's credible band."""
    if problem.likelihood.data == "events":
        return np.linspace(0.0, 1.0, 101)[:, None]
    return data.observations.points_in(problem.coords)


def noise_sigma(data, sigma: float | None = None) -> float:
    """σ of the Gaussian noise: `sigma` if given, else the data file's observations/@sigma; a
    posterior needs it (InputError when it is 0: noise-free synthetic data has no posterior
    width)."""
    value = data.observations.sigma if sigma is None else sigma
    if value is None or not (math.isfinite(value) and value > 0):
        raise InputError(f"field 'observations/@sigma': the noise level is {value}; a posterior "
                         "needs σ > 0 (make the data with `bilo solve ... --noise SIGMA`, or "
                         "give --sigma)")
    return float(value)


def likelihood_scale(problem: Problem, data, sigma: float | None = None) -> tuple[float, float]:
    """(scale, σ) with −log L = scale·J + const: n/(2σ²) for the Gaussian likelihood (σ from
    `noise_sigma`), the likelihood's own `scale(n)` otherwise (σ NaN), n the number of
    observations or, for events, of snapshots."""
    n = (data.events.n_snapshots if problem.likelihood.data == "events"
         else len(data.observations.values))
    likelihood = problem.likelihood
    if isinstance(likelihood, Gaussian):
        used = noise_sigma(data, sigma)
        return dataclasses.replace(likelihood, sigma=used).scale(n), used
    return float(likelihood.scale(n)), math.nan


class SolverTarget:
    """U(θ) = scale·J(θ) − log p(θ) and its gradient from the problem's declared adjoint
    (`problem.adjoint(data, w_reg={})`), θ in the order of `problem.params`.

    `bounds` are the intersection of the parameters' bounds, their priors' supports and the
    adjoint's L-BFGS-B bounds; the sampler reflects at them. A forward solve that fails gives
    U = inf (counted in `n_failed`). Picklable: `bilo.hmc.run_chains(SolverTarget, args=(problem,
    data))` builds it in each process."""

    def __init__(self, problem: Problem, data, *, sigma: float | None = None,
                 nx: int | None = None, observe_points=None):
        needed = problem.likelihood.data
        if getattr(data, needed) is None:
            raise InputError(f"field '{needed}': missing; a posterior needs data")
        model = problem.adjoint(data, w_reg={}, nx=nx)
        if model is None:
            raise InputError(f"problem '{problem.name}' declares no adjoint: the solver "
                             "posterior needs one")
        if problem.functions or model.function is not None or not model.names:
            raise InputError(f"problem '{problem.name}' infers unknown functions: the solver "
                             "posterior samples scalar parameters only")
        if set(model.names) != set(problem.params):
            raise InputError(f"problem '{problem.name}': its adjoint infers {model.names}, the "
                             f"declaration {problem.params}")
        self.problem, self.model = problem, model
        self.names = problem.params
        self.parameters = problem.parameters
        # m (the adjoint's order) from θ (the declaration's), and back
        self._to_m = [problem.params.index(k) for k in model.names]
        self.scale, self.sigma = likelihood_scale(problem, data, sigma)
        self.bounds = _bounds(problem, model)
        self.n_failed = 0
        self.observe_points = observe_points

    def observe(self, theta) -> np.ndarray:
        """u of the solver at `observe_points` (posterior-predictive draws; the sampler calls
        this at every k-th draw)."""
        return self.model.predict(self.to_m(theta), self.observe_points)

    def to_m(self, theta) -> np.ndarray:
        return np.asarray(theta, dtype=np.float64).reshape(-1)[self._to_m]

    def _gradient_to_theta(self, g_m: np.ndarray) -> np.ndarray:
        g = np.zeros(len(self.names))
        g[self._to_m] = g_m
        return g

    def objective(self, theta) -> float:
        """J(θ) (one forward solve; inf where the solve fails)."""
        try:
            return float(self.model.objective(self.to_m(theta)))
        except _SOLVER_FAILURES:
            self.n_failed += 1
            return _INF

    def potential_value(self, theta) -> float:
        """U(θ) without its gradient (no adjoint solve)."""
        lp = log_prior(self.problem, dict(zip(self.names, np.asarray(theta, dtype=float).tolist(),
                                              strict=True)))
        if not math.isfinite(lp) or not self._inside(theta):
            return _INF
        return self.scale * self.objective(theta) - lp

    def potential(self, theta) -> tuple[float, np.ndarray]:
        theta = np.asarray(theta, dtype=np.float64).reshape(-1)
        lp, dlp = log_prior_and_gradient(self.parameters, theta)
        if not math.isfinite(lp) or not self._inside(theta):
            return _INF, np.zeros(theta.size)
        try:
            m = self.to_m(theta)
            J, g_m = self.model.objective(m), self.model.gradient(m)
        except _SOLVER_FAILURES:
            self.n_failed += 1
            return _INF, np.zeros(theta.size)
        return self.scale * J - lp, self.scale * self._gradient_to_theta(g_m) - dlp

    def log_posterior(self, theta) -> float:
        return -self.potential_value(theta)

    def _inside(self, theta) -> bool:
        return all(lo <= v <= hi for v, (lo, hi) in zip(np.asarray(theta).reshape(-1),
                                                         self.bounds, strict=True))

    def map_estimate(self, theta0=None) -> np.ndarray:
        """The posterior mode by L-BFGS-B on U inside `bounds` (from the declared initial
        guess by default)."""
        from scipy.optimize import minimize

        start = np.array([self.problem.initial_guess[k] for k in self.names]
                         if theta0 is None else theta0, dtype=np.float64)
        start = np.clip(start, [lo for lo, _ in self.bounds], [hi for _, hi in self.bounds])
        found = minimize(self.potential, start, jac=True, method="L-BFGS-B",
                         bounds=[(None if not math.isfinite(lo) else lo,
                                  None if not math.isfinite(hi) else hi)
                                 for lo, hi in self.bounds],
                         options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 1000})
        return np.asarray(found.x, dtype=np.float64)

    def laplace_sd(self, theta: np.ndarray) -> np.ndarray:
        """sd of the Laplace approximation at θ: sqrt of the inverse Hessian's diagonal, the
        Hessian by central differences of the adjoint gradient."""
        theta = np.asarray(theta, dtype=np.float64)
        p = theta.size
        hessian = np.zeros((p, p))
        for j in range(p):
            h = 1e-5 * max(1.0, abs(theta[j]))
            up, down = theta.copy(), theta.copy()
            up[j] += h
            down[j] -= h
            hessian[:, j] = (self.potential(up)[1] - self.potential(down)[1]) / (2 * h)
        hessian = 0.5 * (hessian + hessian.T)
        return np.sqrt(np.diag(np.linalg.inv(hessian)))


def _bounds(problem: Problem, model) -> list[tuple[float, float]]:
    solver = model.bounds() or [(None, None)] * len(model.names)
    by_name = {name: (-_INF if lo is None else lo, _INF if hi is None else hi)
               for name, (lo, hi) in zip(model.names, solver, strict=True)}
    bounds = []
    for p in problem.parameters:
        support = p.prior.support if p.prior is not None else (-_INF, _INF)
        lo = max(p.bounds[0], support[0], by_name[p.name][0])
        hi = min(p.bounds[1], support[1], by_name[p.name][1])
        if not lo < hi:
            raise InputError(f"parameter {p.name}: its bounds {p.bounds}, prior support "
                             f"{support} and solver bounds {by_name[p.name]} leave nothing")
        bounds.append((float(lo), float(hi)))
    return bounds


# -- the grid posterior --------------------------------------------------------------------

@dataclass
class GridPosterior:
    """A posterior density on a tensor grid (1 or 2 axes), normalised by the trapezoidal rule;
    `density[i, j]` at (axes[0][i], axes[1][j])."""

    names: tuple[str, ...]
    axes: tuple[np.ndarray, ...]
    density: np.ndarray
    log_density: np.ndarray      # unnormalised log π at the nodes (−inf where U is not finite)
    marginals: dict[str, np.ndarray]
    mean: dict[str, float]
    sd: dict[str, float]
    corr: float | None
    mode: dict[str, float]       # the grid node of highest density
    n_evaluations: int


def _trapezoid(values: np.ndarray, x: np.ndarray, axis: int = -1) -> np.ndarray:
    values = np.moveaxis(values, axis, -1)
    return np.sum(0.5 * (values[..., 1:] + values[..., :-1]) * np.diff(x), axis=-1)


def grid_density(log_density, axes, names, *, progress: bool = False) -> GridPosterior:
    """Evaluate `log_density(theta)` (θ a (p,) array, p = 1 or 2) at every node of the tensor
    grid `axes`, normalise exp(log π) to integrate to one (trapezoidal rule) and take the
    marginals' moments and the correlation the same way (`progress`: a tqdm bar)."""
    axes = tuple(np.asarray(a, dtype=np.float64) for a in axes)
    names = tuple(names)
    if len(axes) not in (1, 2) or len(axes) != len(names):
        raise InputError(f"grid posterior: 1 or 2 parameters, got {len(axes)} axes for "
                         f"{names}")
    for name, a in zip(names, axes, strict=True):
        if a.ndim != 1 or a.size < 3 or not np.all(np.diff(a) > 0):
            raise InputError(f"grid posterior: the axis of {name} must be at least 3 "
                             "increasing nodes")
    shape = tuple(a.size for a in axes)
    log_pi = np.full(shape, -_INF)
    nodes = np.ndindex(*shape)
    if progress:
        from tqdm import tqdm

        nodes = tqdm(nodes, total=int(np.prod(shape)), desc="grid posterior", leave=False)
    for index in nodes:
        theta = np.array([a[i] for a, i in zip(axes, index, strict=True)])
        value = float(log_density(theta))
        log_pi[index] = value if not math.isnan(value) else -_INF
    if not np.isfinite(log_pi).any():
        raise InputError("grid posterior: the density is zero at every node")
    weights = np.exp(log_pi - np.max(log_pi))
    if len(axes) == 1:
        density = weights / _trapezoid(weights, axes[0])
        marginals = {names[0]: density}
    else:
        density = weights / _trapezoid(_trapezoid(weights, axes[1]), axes[0])
        marginals = {names[0]: _trapezoid(density, axes[1], axis=1),
                     names[1]: _trapezoid(density, axes[0], axis=0)}
    mean, sd = {}, {}
    for name, a in zip(names, axes, strict=True):
        f = marginals[name]
        mean[name] = float(_trapezoid(a * f, a))
        sd[name] = math.sqrt(max(float(_trapezoid((a - mean[name]) ** 2 * f, a)), 0.0))
    corr = None
    if len(axes) == 2:
        dx = axes[0][:, None] - mean[names[0]]
        dy = axes[1][None, :] - mean[names[1]]
        cov = float(_trapezoid(_trapezoid(dx * dy * density, axes[1]), axes[0]))
        corr = cov / (sd[names[0]] * sd[names[1]])
    top = np.unravel_index(int(np.argmax(log_pi)), shape)
    mode = {name: float(a[i]) for name, a, i in zip(names, axes, top, strict=True)}
    return GridPosterior(names, axes, density, log_pi, marginals, mean, sd, corr, mode,
                         int(np.prod(shape)))


def grid_posterior(problem: Problem, data, grid, *, sigma: float | None = None,
                   nx: int | None = None, width: float = 8.0,
                   progress: bool = False) -> GridPosterior:
    """The posterior of a problem's 1 or 2 parameters on a grid, from a solver evaluation
    (J by the adjoint's forward model) at every node: π ∝ exp(−scale·J(θ)) p(θ).

    `grid`: a dict name → 1-D nodes, a sequence of node arrays in `problem.params` order, or an
    int n: n nodes per axis over the mode ± `width` Laplace sds (clipped to the bounds)."""
    target = SolverTarget(problem, data, sigma=sigma, nx=nx)
    names = target.names
    if isinstance(grid, (int, np.integer)):
        mode = target.map_estimate()
        spread = width * target.laplace_sd(mode)
        axes = [np.linspace(max(m - s, lo), min(m + s, hi), int(grid))
                for m, s, (lo, hi) in zip(mode, spread, target.bounds, strict=True)]
    elif isinstance(grid, dict):
        missing = set(names) - set(grid)
        if missing:
            raise InputError(f"grid posterior: no nodes for {', '.join(sorted(missing))}")
        axes = [grid[k] for k in names]
    else:
        axes = list(grid)
    return grid_density(target.log_posterior, axes, names, progress=progress)


def grid_summary(grid: GridPosterior) -> dict:
    """The grid posterior's numbers, for JSON."""
    return {"names": list(grid.names), "mean": grid.mean, "sd": grid.sd, "corr": grid.corr,
            "mode": grid.mode, "n_solves": grid.n_evaluations,
            "axes": {k: [float(a[0]), float(a[-1]), int(a.size)]
                     for k, a in zip(grid.names, grid.axes, strict=True)}}


def write_grid_posterior(out: Path, grid: GridPosterior, summary: dict) -> None:
    """`grid_posterior.h5` (kind `grid_posterior`: the axes, the normalised density, the
    unnormalised log density, the marginals), `grid_summary.json` and `grid_posterior.png`
    (the density or its contours, with the marginals), each written whole or not at all."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from solvers.common import atomic_path, write_json_atomic
    from solvers.exchange import atomic_h5

    out = Path(out)
    with atomic_h5(out / "grid_posterior.h5", kind="grid_posterior") as h5:
        h5.attrs["names"] = ",".join(grid.names)
        for name, axis in zip(grid.names, grid.axes, strict=True):
            h5[f"axes/{name}"] = axis
            h5[f"marginals/{name}"] = grid.marginals[name]
        h5["density"] = grid.density
        h5["log_density"] = grid.log_density
    write_json_atomic(out / "grid_summary.json", summary)
    names = grid.names
    fig, axes = plt.subplots(1, len(names) + (len(names) == 2), squeeze=False,
                             figsize=(4.2 * (len(names) + (len(names) == 2)), 3.6))
    for ax, name, axis in zip(axes[0], names, grid.axes, strict=False):
        ax.plot(axis, grid.marginals[name], "k")
        ax.axvline(grid.mean[name], color="C0", lw=1,
                   label=f"mean {grid.mean[name]:.4g}, sd {grid.sd[name]:.3g}")
        ax.set(xlabel=name, ylabel="density", title=f"marginal of {name}")
        ax.legend(fontsize=7)
    if len(names) == 2:
        ax = axes[0][2]
        ax.contourf(grid.axes[0], grid.axes[1], grid.density.T, levels=12, cmap="Blues")
        ax.plot(grid.mean[names[0]], grid.mean[names[1]], "r+", ms=10, label="mean")
        ax.set(xlabel=names[0], ylabel=names[1], title=f"joint density (ρ = {grid.corr:.3f})")
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out / "grid_posterior.png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


# -- the hmc-solver method -----------------------------------------------------------------

def fit_hmc_solver(problem: Problem, data, options, out: Path | None, *,
                   data_path: str | None = None, log=print,
                   method: str = "hmc-solver") -> Result:
    """HMC chains of `SolverTarget` as a `Result`: the posterior mean as the answer, u of the
    solver at it, every sampling draw in `history` (step: the draw's index over all chains,
    wall: the chains' seconds one after the other, theta, J), the posterior and the sampler's
    diagnostics in `extra`, and (when `out` is given) all draws, warm-up included, in
    `out/posterior.h5` (and `posterior.png`). `options` has `theta0`, `seed`, `n_chains`,
    `n_samples`, `n_warmup`, `n_leapfrog`, `jitter`, `target_accept`, `step_size`,
    `processes`, `nx`, `sigma`."""
    get = lambda name, default=None: getattr(options, name, default)  # noqa: E731
    target = SolverTarget(problem, data, sigma=get("sigma"), nx=get("nx"))
    theta0 = np.array([get("theta0", {}).get(k, problem.initial_guess[k]) for k in problem.params],
                      dtype=np.float64)
    for name, value, (lo, hi) in zip(problem.params, theta0, target.bounds, strict=True):
        if not lo <= value <= hi:
            raise InputError(f"--theta0 {name}={value}: outside the posterior's support "
                             f"[{lo}, {hi}] (bounds and prior)")
    n_chains, seed = int(get("n_chains", 4)), int(get("seed", 0))
    started = time.perf_counter()
    chains = hmc.run_chains(
        SolverTarget, n_chains, [seed + c for c in range(n_chains)], theta0=theta0,
        args=(problem, data), kwargs={"sigma": get("sigma"), "nx": get("nx"),
                                      "observe_points": predictive_points(problem, data)},
        processes=int(get("processes", 1)), log=log,
        n_samples=int(get("n_samples", 1000)), n_warmup=int(get("n_warmup", 1000)),
        n_leapfrog=int(get("n_leapfrog", 10)), jitter=float(get("jitter", 0.2)),
        target_accept=float(get("target_accept", 0.75)), step_size=get("step_size"),
        observe_every=predictive_every(options))
    elapsed = time.perf_counter() - started
    predictive = posterior_predictive(problem, data, chains, target.sigma, seed=seed)
    if out is not None:
        write_posterior(Path(out), chains, reference_grid(problem, data, get("sigma")),
                        predictive, (problem, data))
    mean = posterior_mean(chains, problem)
    m = target.to_m(mean)
    obs = data.observations
    misfit = (None if obs is None else
              relative_l2(target.model.predict(m, obs.points_in(problem.coords)), obs.values))
    return chains_result(
        problem, data, chains, options, method=method, data_path=data_path,
        scale=target.scale, elapsed=elapsed,
        u=target.model.predict(m, reference_points(problem, data)).reshape(data.u.shape),
        predict=lambda points: target.model.predict(m, points),
        extra={"posterior_of": "θ by HMC on U = scale·J − log p(θ) with the solver and its "
                               "adjoint; params are the posterior mean",
               "sigma_used": target.sigma,
               "bounds": {k: list(b) for k, b in zip(problem.params, target.bounds,
                                                     strict=True)},
               "model_rel_l2_vs_data": misfit,
               "predictive": predictive_summary(data, predictive),
               "sampler": "bilo.hmc: leapfrog with reflection at the bounds, dual averaging "
                          "and a diagonal mass matrix in warm-up"})


def posterior_mean(chains: list[hmc.Chain], problem: Problem) -> np.ndarray:
    draws = np.concatenate([c.samples for c in chains])
    return draws.mean(axis=0)


def chains_result(problem: Problem, data, chains: list[hmc.Chain], options, *, method: str,
                  data_path: str | None, scale: float, elapsed: float, u: np.ndarray,
                  predict, extra: dict, device: str = "cpu") -> Result:
    """HMC chains as a `Result` (any target): the posterior mean as the answer, every sampling
    draw in `history` (step: the draw's index over all chains, wall: the chains' seconds one
    after the other, theta, J = (U + log p(θ))/scale), the posterior and the diagnostics in
    `extra`."""
    summary = hmc.diagnostics(chains)
    posterior = summary.pop("params")
    mean = posterior_mean(chains, problem)
    draws = np.concatenate([c.samples for c in chains])
    potential = np.concatenate([c.potential for c in chains])
    log_p = np.array([log_prior(problem, dict(zip(problem.params, row.tolist(), strict=True)))
                      for row in draws])
    offsets = np.cumsum([0.0] + [c.wall_s for c in chains[:-1]])
    history = {"step": np.arange(len(draws), dtype=np.float64),
               "wall": np.concatenate([c.wall + off for c, off in zip(chains, offsets,
                                                                       strict=True)]),
               "theta": draws, "J": (potential + log_p) / scale}
    n_warmup = sum(len(c.warmup) for c in chains)
    n_draws = sum(len(c) for c in chains)
    return Result(
        method=method, problem=problem, data=data, data_path=data_path,
        params={k: float(v) for k, v in zip(problem.params, mean, strict=True)},
        functions={}, function_x=FUNCTION_POINTS, u=u, history=history,
        steps={"warmup": n_warmup, "sampling": n_draws},
        wall_s={"warmup": summary["warmup_s"], "sampling": summary["sampling_s"]},
        device=device, w_reg={},
        constants={k: v for k, v in data.params.items() if k not in problem.params},
        options=options.to_json() if hasattr(options, "to_json") else {},
        predict=predict,
        extra={"posterior": posterior, "likelihood_scale": scale,
               "priors": {p.name: p.prior.describe() if p.prior is not None else "flat"
                          for p in problem.parameters},
               "hmc": summary, "elapsed_s": round(elapsed, 4),
               "n_potential": summary["n_potential"], **extra})


# -- the posterior predictive ------------------------------------------------------------

def chain_processes(options, threads: int) -> tuple[int, int | None]:
    """The processes the chains run in (option `processes`, at most one per chain) and the
    torch threads each gets of this process's `threads` (None: one process, left as it is)."""
    processes = min(int(options.processes), int(options.n_chains))
    return processes, max(1, threads // processes) if processes > 1 else None


def predictive_every(options) -> int:
    """The draws between two recordings of u (option `predictive_every`; default: about 100
    recordings per chain)."""
    every = getattr(options, "predictive_every", None)
    return int(every) if every else max(1, int(getattr(options, "n_samples", 1000)) // 100)


def posterior_predictive(problem: Problem, data, chains: list[hmc.Chain], sigma: float, *,
                         seed: int = 0) -> dict[str, np.ndarray]:
    """The posterior-predictive draws recorded by the chains (`Chain.observed`, u at the
    `predictive_points` first, then for a network target u at the reference grid's points):
    θ and u at the observations per recorded draw, the 2.5/50/97.5 % quantiles of u there
    (its credible band) and, for Gaussian data (σ finite), the 2.5/97.5 % quantiles of new data
    u + σ·ε (the predictive band, one noise draw per recorded u, seeded)."""
    recorded = [c for c in chains if c.observed is not None and len(c.observed)]
    if not recorded:
        return {}
    n_obs = len(predictive_points(problem, data))
    theta = np.concatenate([c.samples[c.observed_index] for c in recorded])
    u = np.concatenate([c.observed for c in recorded])
    u_obs = u[:, :n_obs]
    arrays = {"theta": theta, "u_obs": u_obs,
              "u_quantiles": np.quantile(u_obs, [0.025, 0.5, 0.975], axis=0)}
    if math.isfinite(sigma):  # Gaussian data: the band of new data too
        noisy = u_obs + sigma * np.random.default_rng(seed).standard_normal(u_obs.shape)
        arrays["data_quantiles"] = np.quantile(noisy, [0.025, 0.975], axis=0)
    if u.shape[1] > n_obs:
        arrays["u_grid"] = u[:, n_obs:]
    return arrays


def network_against_solver(problem: Problem, data, arrays: dict[str, np.ndarray],
                           sigma: float | None = None) -> np.ndarray | None:
    """Relative L2 distance, on the reference grid, between the network's u at each recorded
    draw's θ (`arrays["u_grid"]`) and the solver's u at that θ (the adjoint's forward model):
    whether u_NN stayed a solution of the PDE along the chain. None without an adjoint."""
    if "u_grid" not in arrays or type(problem).adjoint is Problem.adjoint:
        return None
    target = SolverTarget(problem, data, sigma=sigma)
    points = reference_points(problem, data)
    return np.array([relative_l2(u, target.model.predict(target.to_m(theta), points))
                     for theta, u in zip(arrays["theta"], arrays["u_grid"], strict=True)])


def predictive_summary(data, arrays: dict[str, np.ndarray],
                       errors: np.ndarray | None = None) -> dict:
    """What `summary.json` says of the posterior predictive: the recorded draws, the mean width
    of u's 95 % band, the fraction of observations inside the 95 % predictive band, and the
    network-against-solver distances along the chain."""
    if not arrays:
        return {}
    summary = {"n_draws": int(len(arrays["theta"])),
               "u_band95_mean_width": float(np.mean(arrays["u_quantiles"][2]
                                                    - arrays["u_quantiles"][0]))}
    if "data_quantiles" in arrays:
        low, high = arrays["data_quantiles"]
        observed = data.observations.values
        summary["data_in_band95"] = float(np.mean((observed >= low) & (observed <= high)))
    if errors is not None:
        summary["u_rel_l2_vs_solver"] = {"mean": float(errors.mean()),
                                         "max": float(errors.max()),
                                         "n": int(errors.size)}
    return summary


def plot_predictive(path: Path, problem: Problem, data, arrays: dict[str, np.ndarray]) -> None:
    """u's 95 % credible band and median and the 95 % predictive band for new data, with the
    data, along the observation coordinate that varies most (one panel per value of the other
    coordinates, up to four; otherwise against the observation's index)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = data.observations.points_in(problem.coords)
    observed = data.observations.values
    spread = [len(np.unique(points[:, j])) for j in range(points.shape[1])]
    axis = int(np.argmax(spread))
    rest = np.delete(points, axis, axis=1)
    groups = np.unique(rest, axis=0) if rest.shape[1] else np.zeros((1, 0))
    by_index = len(groups) > 4
    if by_index:
        panels = [np.arange(len(observed))]
        labels, xs = ["all observations"], [np.arange(len(observed), dtype=float)]
    else:
        panels = [np.flatnonzero(np.all(rest == g, axis=1)) for g in groups]
        labels = [", ".join(f"{c} = {v:.3g}" for c, v in zip(
            [c for j, c in enumerate(problem.coords) if j != axis], g, strict=True))
            for g in groups]
        xs = [points[idx, axis] for idx in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 3.6), squeeze=False)
    for ax, idx, x, label in zip(axes[0], panels, xs, labels, strict=True):
        order = np.argsort(x)
        idx, x = idx[order], x[order]
        q, d = arrays["u_quantiles"][:, idx], arrays["data_quantiles"][:, idx]
        ax.fill_between(x, d[0], d[1], color="C1", alpha=0.2, label="95 % predictive (new data)")
        ax.fill_between(x, q[0], q[2], color="C0", alpha=0.4, label="95 % credible band of u")
        ax.plot(x, q[1], "C0", lw=1.2, label="posterior median of u")
        ax.plot(x, observed[idx], "k.", ms=5, label="data")
        ax.set(xlabel="observation" if by_index else problem.coords[axis], ylabel="u",
               title=label if label else "")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def reference_grid(problem: Problem, data, sigma: float | None = None) -> GridPosterior | None:
    """The solver's grid posterior (201 nodes) of a one-parameter problem with an adjoint, to
    draw beside the chains; None otherwise (a 2-D grid costs thousands of solves)."""
    if len(problem.params) != 1 or type(problem).adjoint is Problem.adjoint:
        return None
    return grid_posterior(problem, data, 201, sigma=sigma)


def write_posterior(out: Path, chains: list[hmc.Chain], grid: GridPosterior | None = None,
                    predictive: dict[str, np.ndarray] | None = None,
                    plot_predictive_with: tuple | None = None) -> None:
    """`posterior.h5` (kind `posterior`): every draw, one row per chain — samples (chains, n,
    p), the per-iteration records (accepted, accept_prob, step_size, n_leapfrog, potential,
    energy, divergent, wall), the warm-up's under `warmup/`, the hook counts per leapfrog
    (B-BiLO: lower-level steps) per chain, the posterior-predictive arrays under
    `predictive/` — and `posterior.png` (`plot_posterior`); `predictive.png` when
    `plot_predictive_with` = (problem, data) is given with the predictive arrays of Gaussian
    data."""
    from solvers.exchange import atomic_h5

    out = Path(out)
    with atomic_h5(out / "posterior.h5", kind="posterior") as h5:
        h5.attrs["names"] = ",".join(chains[0].names)
        h5["seeds"] = np.array([c.seed for c in chains])
        h5["step_size_final"] = np.array([c.final_step_size for c in chains])
        h5["mass"] = np.stack([c.mass for c in chains])
        h5["wall_s"] = np.array([c.wall_s for c in chains])
        for prefix, parts in (("", chains), ("warmup/", [c.warmup for c in chains])):
            for key in ("samples", "accepted", "accept_prob", "step_size", "n_leapfrog",
                        "potential", "energy", "divergent", "wall"):
                h5[prefix + key] = np.stack([getattr(c, key) for c in parts])
        for c, chain in enumerate(chains):
            h5[f"hook_counts/chain{c}"] = np.asarray(chain.hook_counts)
        for key, value in (predictive or {}).items():
            if key != "u_grid":  # u_NN on the whole reference grid per draw: not kept
                h5[f"predictive/{key}"] = value
    plot_posterior(out / "posterior.png", chains, grid)
    if predictive and "data_quantiles" in predictive and plot_predictive_with is not None:
        plot_predictive(out / "predictive.png", *plot_predictive_with, predictive)


def plot_posterior(path: Path, chains: list[hmc.Chain], grid: GridPosterior | None = None
                   ) -> None:
    """Corner plot of θ (histograms on the diagonal, draws below it; the grid posterior's
    marginals and contours when given) and one trace per chain and parameter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = chains[0].names
    p = len(names)
    draws = np.concatenate([c.samples for c in chains])
    fig, axes = plt.subplots(p, p + 1, figsize=(3.2 * (p + 1), 3.0 * p), squeeze=False)
    for i in range(p):
        for j in range(p):
            ax = axes[i][j]
            if j > i:
                ax.set_axis_off()
            elif i == j:
                ax.hist(draws[:, i], bins=40, density=True, color="C0", alpha=0.6)
                if grid is not None:
                    ax.plot(grid.axes[i], grid.marginals[names[i]], "k", lw=1.2,
                            label="grid posterior")
                    ax.legend(fontsize=7)
                ax.set(xlabel=names[i], yticks=[])
            else:
                ax.plot(draws[:, j], draws[:, i], ".", ms=1.5, alpha=0.3)
                if grid is not None and grid.density.ndim == 2:
                    ax.contour(grid.axes[j], grid.axes[i], grid.density.T, levels=4, colors="k",
                               linewidths=0.8)
                ax.set(xlabel=names[j], ylabel=names[i])
        trace = axes[i][p]
        for c, chain in enumerate(chains):
            trace.plot(chain.samples[:, i], lw=0.6, label=f"chain {c}")
        trace.set(xlabel="draw", ylabel=names[i], title="traces" if i == 0 else "")
    axes[0][p].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
