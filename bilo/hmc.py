"""Hamiltonian Monte Carlo over a low-dimensional parameter vector θ ∈ R^p with box bounds.

The target is an object with `potential(theta) -> (U, grad_U)`, U = −log π(θ) up to a constant
(numpy float64), and three optional hooks (see `Target`). One iteration:

* draw a momentum p ~ N(0, M), M = diag(mass); H(θ, p) = U(θ) + K(p), K(p) = ½ pᵀM⁻¹p;
* L leapfrog steps of size ε (L fixed, or jittered uniformly in [L(1 − j), L(1 + j)]):
  a half kick p ← p − ε/2 ∇U, then L drifts θ ← θ + ε M⁻¹p (each followed, where it leaves the
  box, by a reflection of θ back inside that also flips the momentum component) with a full
  kick between drifts, and one final half kick: the half kick is done exactly once at each end;
* accept (θ′, p′) with probability min(1, exp(H(θ, p) − H(θ′, p′))); a non-finite U or H, or an
  energy error above `max_energy_error`, is a divergence and is rejected. On a rejection the
  chain keeps θ, U and ∇U of the last accepted position and calls `restore(state)` with the
  state `snapshot()` returned at that position (not at the chain's start).

Reflection with the momentum flip is an isometry of phase space piecewise and its own reverse
(run the drift backwards from (θ′, −p′) and it unfolds to (θ, −p)), so the leapfrog map stays
volume-preserving and reversible and Metropolis–Hastings keeps the truncated target exact.

Warm-up (`n_warmup` iterations, discarded from the draws but kept in `Chain.warmup`): the step
size by dual averaging (Hoffman & Gelman 2014, Algorithm 5: γ = 0.05, t0 = 10, κ = 0.75, the
acceptance statistic driven to `target_accept`) and the diagonal of M⁻¹ from the variance of
the draws in windows (Stan's schedule: a 75-iteration initial buffer, slow windows of 25, 50,
100, … iterations; but a terminal buffer of max(50, n_warmup/5) iterations instead of Stan's
50, so that ε̄ has time to converge; 15 % / 65 % / 20 % for short warm-ups),
regularised as (n/(n + 5))·var + 1e-3·(5/(n + 5)). After each window the step size is
re-initialised by the doubling heuristic (Hoffman & Gelman, Algorithm 4) and dual averaging
restarts; after warm-up ε is the dual average ε̄ and both are fixed.

`run_chains` runs independent chains (different seeds; in processes when `processes > 1`),
`diagnostics` summarises them: mean, sd, MCSE, rank-normalised split R-hat and bulk/tail ESS
(Vehtari et al. 2021) with ArviZ when it is installed, with this module's own implementation of
the same estimators otherwise. numpy only (tqdm for the progress bar).
"""

from __future__ import annotations

import math
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from solvers.common import InputError

_INF = float("inf")

# dual averaging (Hoffman & Gelman 2014, section 3.2)
GAMMA, T0, KAPPA = 0.05, 10.0, 0.75
# Stan's windowed metric adaptation
INIT_BUFFER, TERM_BUFFER, BASE_WINDOW = 75, 50, 25


class Target(Protocol):
    """What the sampler needs: the potential U(θ) = −log π(θ) (+ const) and its gradient.

    Optional hooks, looked up by name (a target may have none of them):

    * `snapshot() -> state`: an independent copy of whatever the target carries along with θ
      (B-BiLO: the network weights and optimiser state). Called at the initial position and
      after every accepted proposal.
    * `restore(state)`: put that state back. Called after every rejected proposal (and after
      each trial of the step-size heuristic) with the state of the last accepted position.
    * `at_position(theta) -> int | None`: called at every leapfrog position before `potential`
      (B-BiLO fine-tunes the network to the new θ there); the number it returns (e.g.
      lower-level steps) is recorded per leapfrog step in `Draws.hook_counts`.
    * `observe(theta) -> array`: called after every `observe_every`-th sampling draw, with the
      target in the draw's state (B-BiLO: the network fine-tuned at θ); the arrays are kept in
      `Chain.observed` (posterior-predictive draws of u, for instance).

    A target may also carry `bounds` (a (lo, hi) pair per parameter) and `names`, which the
    sampler uses when they are not given.
    """

    def potential(self, theta: np.ndarray) -> tuple[float, np.ndarray]: ...


class GaussianTarget:
    """N(mean, cov), optionally restricted to a box (then the truncated normal): a target with a
    closed form, for tests and examples. Picklable, so `run_chains` can build it in processes."""

    def __init__(self, mean, cov, bounds=None, names=None):
        self.mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        self.cov = np.atleast_2d(np.asarray(cov, dtype=np.float64))
        self.precision = np.linalg.inv(self.cov)
        self.bounds = bounds
        self.names = names

    def potential(self, theta):
        r = np.asarray(theta, dtype=np.float64) - self.mean
        g = self.precision @ r
        return 0.5 * float(r @ g), g


# -- the integrator ------------------------------------------------------------------------

def reflect(theta: np.ndarray, momentum: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """Fold θ back into [lo, hi] by reflection at the bounds, flipping the momentum component
    once per reflection (a drift that crosses the box k times is reflected k times). Entries
    inside the box are untouched. Returns new arrays."""
    theta, momentum = theta.copy(), momentum.copy()
    for j in np.flatnonzero((theta < lo) | (theta > hi)):
        a, b = float(lo[j]), float(hi[j])
        if math.isfinite(a) and math.isfinite(b):
            width = b - a
            s = (theta[j] - a) / width
            k = math.floor(s)          # walls crossed: |k|; an odd count mirrors the position
            r = s - k
            theta[j] = b - r * width if k % 2 else a + r * width
            if k % 2:
                momentum[j] = -momentum[j]
            theta[j] = min(max(theta[j], a), b)  # rounding
        else:
            wall = a if theta[j] < a else b
            theta[j] = 2.0 * wall - theta[j]
            momentum[j] = -momentum[j]
    return theta, momentum


@dataclass
class Trajectory:
    """The end of a leapfrog trajectory; `ok` is False when U or ∇U stopped being finite (the
    trajectory is cut there and must be rejected)."""

    theta: np.ndarray
    momentum: np.ndarray
    potential: float
    gradient: np.ndarray
    counts: list[int]
    ok: bool


def leapfrog(evaluate: Callable[[np.ndarray], tuple[float, np.ndarray, int]],
             theta: np.ndarray, momentum: np.ndarray, gradient: np.ndarray, step_size: float,
             n_steps: int, inv_mass: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> Trajectory:
    """`n_steps` leapfrog steps from (θ, p) with ∇U(θ) = `gradient` given; `evaluate(θ)` returns
    (U, ∇U, hook count). Half kick, then n_steps × (drift with reflection, evaluate, kick), the
    last kick a half one: 2 half kicks and n_steps − 1 full kicks in all."""
    p = momentum - 0.5 * step_size * gradient
    counts: list[int] = []
    U, g = math.nan, gradient
    for i in range(n_steps):
        theta, p = reflect(theta + step_size * inv_mass * p, p, lo, hi)
        U, g, count = evaluate(theta)
        counts.append(count)
        if not (math.isfinite(U) and np.all(np.isfinite(g))):
            return Trajectory(theta, p, _INF, g, counts, False)
        p = p - (step_size if i < n_steps - 1 else 0.5 * step_size) * g
    return Trajectory(theta, p, U, g, counts, True)


def kinetic(momentum: np.ndarray, inv_mass: np.ndarray) -> float:
    return 0.5 * float(np.sum(momentum * momentum * inv_mass))


# -- adaptation ----------------------------------------------------------------------------

class DualAveraging:
    """Hoffman & Gelman (2014), Algorithm 5: after iteration t with acceptance statistic α_t,
    H̄_t = (1 − 1/(t + t0)) H̄_{t−1} + (δ − α_t)/(t + t0), log ε_t = μ − √t/γ · H̄_t,
    log ε̄_t = t^−κ log ε_t + (1 − t^−κ) log ε̄_{t−1}, with μ = log(10 ε_0)."""

    def __init__(self, step_size: float, target: float, max_step: float = _INF):
        self.target = target
        self.log_max = math.log(max_step) if math.isfinite(max_step) else _INF
        self.restart(step_size)

    def restart(self, step_size: float) -> None:
        self.mu = math.log(10.0 * step_size)
        self.t = 0
        self.h_bar = 0.0
        self.log_bar = 0.0
        self.current = step_size

    def update(self, accept_prob: float) -> float:
        self.t += 1
        eta = 1.0 / (self.t + T0)
        self.h_bar = (1.0 - eta) * self.h_bar + eta * (self.target - accept_prob)
        log_eps = min(self.mu - math.sqrt(self.t) / GAMMA * self.h_bar, self.log_max)
        weight = self.t ** -KAPPA
        self.log_bar = weight * log_eps + (1.0 - weight) * self.log_bar
        self.current = math.exp(log_eps)
        return self.current

    @property
    def final(self) -> float:
        """ε̄, the step size to sample with (the current ε before any update)."""
        return math.exp(self.log_bar) if self.t else self.current


def adaptation_windows(n_warmup: int) -> list[tuple[int, int]]:
    """[start, end) iterations of the slow windows that estimate M⁻¹ (Stan's schedule, with a
    longer terminal buffer): none for fewer than 20 warm-up iterations; a 75-iteration initial
    buffer, a terminal buffer of max(50, n_warmup/5) iterations (buffers of 15 % and 20 % when
    these and a 25-iteration window do not fit); each window twice the last, the last one
    stretched to the terminal buffer.

    The terminal buffer is where ε̄ of the final metric is averaged; Stan's 50 iterations leave
    ε̄ short of its limit (on a 10-D Gaussian the sampling acceptance was 0.87–0.92 for a
    target of 0.75, against 0.77–0.81 with 200 iterations or more)."""
    if n_warmup < 20:
        return []
    init, term, base = INIT_BUFFER, max(TERM_BUFFER, n_warmup // 5), BASE_WINDOW
    if init + base + term > n_warmup:
        init, term = int(0.15 * n_warmup), int(0.2 * n_warmup)
        base = n_warmup - init - term
    windows, start, size, stop = [], init, base, n_warmup - term
    while start < stop:
        end = start + size
        if end + 2 * size > stop:
            end = stop
        windows.append((start, end))
        start, size = end, 2 * size
    return windows


def regularised_variance(draws: np.ndarray) -> np.ndarray:
    """Stan's diagonal metric: (n/(n + 5))·var + 1e-3·(5/(n + 5)), shrunk toward 1e-3·I."""
    n = len(draws)
    variance = np.var(draws, axis=0, ddof=1)
    return (n / (n + 5.0)) * variance + 1e-3 * (5.0 / (n + 5.0))


# -- the chain -----------------------------------------------------------------------------

@dataclass
class Draws:
    """One row per iteration."""

    samples: np.ndarray      # (n, p) θ after the iteration
    accepted: np.ndarray     # (n,) bool
    accept_prob: np.ndarray  # (n,) min(1, exp(−ΔH)); 0 for a divergence
    step_size: np.ndarray    # (n,) ε the iteration used
    n_leapfrog: np.ndarray   # (n,) leapfrog steps taken (L; fewer where a trajectory was cut)
    potential: np.ndarray    # (n,) U at the draw
    energy: np.ndarray       # (n,) H = U + K at the draw (for E-BFMI)
    divergent: np.ndarray    # (n,) bool
    hook_counts: np.ndarray  # (Σ n_leapfrog,) what at_position returned at each leapfrog step
    wall: np.ndarray         # (n,) seconds since the chain started, at the iteration's end

    def __len__(self) -> int:
        return len(self.samples)

    def hook_counts_by_iteration(self) -> list[np.ndarray]:
        return np.split(self.hook_counts, np.cumsum(self.n_leapfrog)[:-1])

    @property
    def accept_rate(self) -> float:
        return float(np.mean(self.accepted)) if len(self) else math.nan

    @property
    def n_divergent(self) -> int:
        return int(np.sum(self.divergent))

    @property
    def ebfmi(self) -> float:
        """Energy Bayesian fraction of missing information, Σ(ΔE)² / Σ(E − Ē)² (below 0.3:
        the momentum resampling explores the energy distribution poorly)."""
        e = self.energy
        spread = float(np.sum((e - e.mean()) ** 2))
        return float(np.sum(np.diff(e) ** 2) / spread) if spread > 0 else math.nan


@dataclass
class Chain(Draws):
    """The sampling draws (the fields of `Draws`), the warm-up draws apart, and what the chain
    ended with: the fixed step size and mass-matrix diagonal M (M⁻¹ = 1/mass)."""

    names: tuple[str, ...] = ()
    seed: int | None = None
    theta0: np.ndarray | None = None
    warmup: Draws | None = None
    final_step_size: float = math.nan
    mass: np.ndarray | None = None
    wall_s: float = 0.0          # the whole chain
    warmup_s: float = 0.0        # of which warm-up
    n_potential: int = 0         # potential evaluations, heuristics included
    hook_total: int = 0          # sum of at_position counts, heuristics and start included
    observed: np.ndarray | None = None        # (m, q) what observe returned
    observed_index: np.ndarray | None = None  # (m,) the draws it was called at

    @property
    def sampling_s(self) -> float:
        return self.wall_s - self.warmup_s


def _draws(rows: dict, counts: list[int], t0: float, p: int) -> Draws:
    return Draws(samples=np.array(rows["samples"], dtype=np.float64).reshape(
                     len(rows["samples"]), p),
                 accepted=np.array(rows["accepted"], dtype=bool),
                 accept_prob=np.array(rows["accept_prob"], dtype=np.float64),
                 step_size=np.array(rows["step_size"], dtype=np.float64),
                 n_leapfrog=np.array(rows["n_leapfrog"], dtype=np.int64),
                 potential=np.array(rows["potential"], dtype=np.float64),
                 energy=np.array(rows["energy"], dtype=np.float64),
                 divergent=np.array(rows["divergent"], dtype=bool),
                 hook_counts=np.array(counts, dtype=np.int64),
                 wall=np.array(rows["wall"], dtype=np.float64) - t0)


class _Runner:
    """The target with its hooks, the box and the counters."""

    def __init__(self, target, bounds, p: int):
        self.target = target
        self.at_position = getattr(target, "at_position", None)
        self.snapshot = getattr(target, "snapshot", None)
        self.restore = getattr(target, "restore", None)
        bounds = bounds if bounds is not None else getattr(target, "bounds", None)
        if bounds is None:
            bounds = [(-_INF, _INF)] * p
        bounds = [(-_INF if lo is None else float(lo), _INF if hi is None else float(hi))
                  for lo, hi in bounds]
        if len(bounds) != p:
            raise InputError(f"hmc: {len(bounds)} bounds for {p} parameters")
        self.lo = np.array([b[0] for b in bounds])
        self.hi = np.array([b[1] for b in bounds])
        if np.any(~(self.lo < self.hi)):
            raise InputError(f"hmc: bounds need lo < hi, got {bounds}")
        self.p = p
        self.n_potential = 0
        self.hook_total = 0

    def evaluate(self, theta: np.ndarray) -> tuple[float, np.ndarray, int]:
        count = 0
        if self.at_position is not None:
            count = int(self.at_position(theta.copy()) or 0)
            self.hook_total += count
        U, g = self.target.potential(theta.copy())
        self.n_potential += 1
        g = np.asarray(g, dtype=np.float64).reshape(-1)
        if g.shape != (self.p,):
            raise ValueError(f"hmc: potential returned a gradient of shape {g.shape}, expected "
                             f"({self.p},)")
        U = float(U)
        return (U if not math.isnan(U) else _INF), g, count

    def save(self):
        return self.snapshot() if self.snapshot is not None else None

    def load(self, state) -> None:
        if self.restore is not None:
            self.restore(state)

    def max_step(self, inv_mass: np.ndarray) -> float:
        """A step that crosses the narrowest two-sided box in one drift is as large as any
        useful step; capping there keeps a flat target's step size finite."""
        both = np.isfinite(self.lo) & np.isfinite(self.hi)
        if not both.any():
            return _INF
        return float(np.min((self.hi - self.lo)[both] / np.sqrt(inv_mass[both])))


def sample(target: Target, theta0, *, n_samples: int = 1000, n_warmup: int = 1000,
           n_leapfrog: int = 10, jitter: float = 0.0, step_size: float | None = None,
           target_accept: float = 0.75, inv_mass=None, adapt_step: bool = True,
           adapt_mass: bool = True, bounds: Sequence[tuple[float, float]] | None = None,
           names: Sequence[str] | None = None, seed: int | None = None,
           max_energy_error: float = 1000.0, progress: bool = False,
           log: Callable[[str], None] | None = None, chain_id: int = 0,
           observe_every: int = 0) -> Chain:
    """One HMC chain of `n_samples` draws after `n_warmup` warm-up iterations.

    Args:
        target: `potential(theta) -> (U, grad_U)` and the optional hooks of `Target`.
        theta0: the starting point, inside the bounds, with finite U.
        n_leapfrog: leapfrog steps L per proposal; `jitter` j in [0, 1) draws L uniformly from
            the integers in [L(1 − j), L(1 + j)] each iteration (0: fixed L).
        step_size: initial ε (None: the doubling heuristic from 0.1); fixed if `n_warmup` is 0
            or `adapt_step` is False.
        target_accept: δ of dual averaging, the mean acceptance statistic aimed at.
        inv_mass: initial diagonal of M⁻¹ (default ones); adapted in warm-up if `adapt_mass`.
        bounds: (lo, hi) per parameter (±inf or None: open); default `target.bounds`.
        seed: seeds the chain's `numpy.random.Generator`.
        max_energy_error: H′ − H above this is a divergence.
        progress: a tqdm bar; `log`: a line at the end of warm-up and of sampling (and, without
            the bar, one per tenth of the iterations).
        observe_every: k > 0 calls `target.observe(θ)` after sampling draws 0, k, 2k, …
    """
    theta = np.array(theta0, dtype=np.float64).reshape(-1)
    p = theta.size
    names = tuple(names or getattr(target, "names", None) or [f"theta{j}" for j in range(p)])
    if len(names) != p:
        raise InputError(f"hmc: {len(names)} names for {p} parameters")
    for label, value, least in (("n_samples", n_samples, 1), ("n_warmup", n_warmup, 0),
                                ("n_leapfrog", n_leapfrog, 1),
                                ("observe_every", observe_every, 0)):
        if int(value) != value or value < least:
            raise InputError(f"hmc: {label} must be a whole number >= {least}, got {value}")
    if not 0.0 <= jitter < 1.0:
        raise InputError(f"hmc: jitter must be in [0, 1), got {jitter}")
    if not 0.0 < target_accept < 1.0:
        raise InputError(f"hmc: target_accept must be in (0, 1), got {target_accept}")
    if step_size is not None and not (math.isfinite(step_size) and step_size > 0):
        raise InputError(f"hmc: step_size must be a positive number, got {step_size}")
    runner = _Runner(target, bounds, p)
    observe = getattr(target, "observe", None) if observe_every else None
    observed: list[np.ndarray] = []
    observed_index: list[int] = []
    if not (np.all(np.isfinite(theta)) and np.all(theta >= runner.lo)
            and np.all(theta <= runner.hi)):
        raise InputError(f"hmc: theta0 = {theta.tolist()} is not finite and inside the bounds "
                         f"{list(zip(runner.lo.tolist(), runner.hi.tolist(), strict=True))}")
    inv_mass = (np.ones(p) if inv_mass is None
                else np.array(inv_mass, dtype=np.float64).reshape(-1).copy())
    if inv_mass.shape != (p,) or not np.all((inv_mass > 0) & np.isfinite(inv_mass)):
        raise InputError("hmc: inv_mass must be p positive numbers")
    rng = np.random.default_rng(seed)
    start = time.perf_counter()

    U, g, _ = runner.evaluate(theta)
    if not (math.isfinite(U) and np.all(np.isfinite(g))):
        raise InputError(f"hmc: the potential at theta0 = {theta.tolist()} is not finite "
                         f"(U = {U})")
    state = runner.save()
    low_L = max(1, int(round(n_leapfrog * (1.0 - jitter))))
    high_L = max(low_L, int(round(n_leapfrog * (1.0 + jitter))))

    def find_step(eps: float) -> float:
        """Hoffman & Gelman (2014), Algorithm 4: double or halve ε until the one-step
        acceptance ratio crosses ½ (at most 50 times; capped at the box)."""
        momentum = rng.standard_normal(p) / np.sqrt(inv_mass)
        h0 = U + kinetic(momentum, inv_mass)
        cap = runner.max_step(inv_mass)

        def log_ratio(e):
            end = leapfrog(runner.evaluate, theta, momentum, g, e, 1, inv_mass, runner.lo,
                           runner.hi)
            runner.load(state)
            value = h0 - (end.potential + kinetic(end.momentum, inv_mass)) if end.ok else -_INF
            return value if not math.isnan(value) else -_INF

        eps = min(eps, cap)
        direction = 1 if log_ratio(eps) > math.log(0.5) else -1
        for _ in range(50):
            new = eps * 2.0**direction
            if new > cap:
                break
            eps = new
            if direction * (log_ratio(eps) - math.log(0.5)) <= 0:
                break
        return eps

    eps = float(step_size) if step_size is not None else find_step(0.1)
    dual = DualAveraging(eps, target_accept, runner.max_step(inv_mass))
    windows = adaptation_windows(n_warmup) if adapt_mass else []
    window_ends = {end - 1: begin for begin, end in windows}
    in_window = np.zeros(max(n_warmup, 1), dtype=bool)
    for begin, end in windows:
        in_window[begin:end] = True
    buffer: list[np.ndarray] = []

    keys = ("samples", "accepted", "accept_prob", "step_size", "n_leapfrog", "potential",
            "energy", "divergent", "wall")
    rows = {k: [] for k in keys}
    counts: list[int] = []
    warm_rows: dict | None = None
    warm_counts: list[int] = []
    warmup_end = start
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_warmup + n_samples, desc=f"chain {chain_id}", leave=False)
    n_total = n_warmup + n_samples
    for it in range(n_total):
        warm = it < n_warmup
        L = int(rng.integers(low_L, high_L + 1)) if high_L > low_L else low_L
        momentum = rng.standard_normal(p) / np.sqrt(inv_mass)   # p ~ N(0, M)
        h0 = U + kinetic(momentum, inv_mass)
        end = leapfrog(runner.evaluate, theta, momentum, g, eps, L, inv_mass, runner.lo,
                       runner.hi)
        h1 = end.potential + kinetic(end.momentum, inv_mass) if end.ok else _INF
        delta = h1 - h0
        divergent = not (end.ok and math.isfinite(delta)) or delta > max_energy_error
        accept_prob = 0.0 if divergent else math.exp(min(0.0, -delta))
        u = rng.random()
        accepted = (not divergent) and (delta <= 0.0 or math.log(u) < -delta)
        if accepted:
            theta, U, g = end.theta, end.potential, end.gradient
            energy = h1
            state = runner.save()
        else:
            energy = h0
            runner.load(state)
        for key, value in zip(keys, (theta.copy(), accepted, accept_prob, eps, len(end.counts),
                                     U, energy,
                                     divergent, time.perf_counter()), strict=True):
            rows[key].append(value)
        counts.extend(end.counts)
        if observe is not None and not warm and (it - n_warmup) % observe_every == 0:
            observed.append(np.asarray(observe(theta.copy()), dtype=np.float64).reshape(-1))
            observed_index.append(it - n_warmup)

        if warm:
            if adapt_step:
                eps = dual.update(accept_prob)
            if in_window[it]:
                buffer.append(theta.copy())
            if it in window_ends:
                inv_mass = regularised_variance(np.array(buffer))
                buffer = []
                eps = find_step(eps)
                dual = DualAveraging(eps, target_accept, runner.max_step(inv_mass))
            if it == n_warmup - 1:
                if adapt_step:
                    eps = dual.final
                warm_rows, warm_counts, rows, counts = rows, counts, {k: [] for k in keys}, []
                warmup_end = time.perf_counter()
                if log is not None:
                    log(f"chain {chain_id}: warm-up done, step size {eps:.4g}, mass diagonal "
                        f"{np.array2string(1.0 / inv_mass, precision=4)}, acceptance "
                        f"{np.mean(warm_rows['accept_prob']):.3f}")
        if bar is None and log is not None and n_total >= 10 and (it + 1) % (n_total // 10) == 0:
            log(f"chain {chain_id}: {it + 1}/{n_total} iterations "
                f"({'warm-up' if warm else 'sampling'}), {time.perf_counter() - start:.0f} s")
        if bar is not None:
            bar.update(1)
            if it % 20 == 0:
                bar.set_postfix(eps=f"{eps:.3g}", acc=f"{np.mean(rows['accepted'] or [0]):.2f}")
    if bar is not None:
        bar.close()
    stop = time.perf_counter()
    if warm_rows is None:
        warm_rows, warm_counts = {k: [] for k in keys}, []
    draws = _draws(rows, counts, start, p)
    warmup = _draws(warm_rows, warm_counts, start, p)
    chain = Chain(**vars(draws), names=names, seed=seed,
                  theta0=np.array(theta0, dtype=np.float64).reshape(-1), warmup=warmup,
                  final_step_size=eps, mass=1.0 / inv_mass, wall_s=stop - start,
                  warmup_s=warmup_end - start, n_potential=runner.n_potential,
                  hook_total=runner.hook_total,
                  observed=np.array(observed) if observe is not None else None,
                  observed_index=(np.array(observed_index, dtype=np.int64)
                                  if observe is not None else None))
    if log is not None:
        log(f"chain {chain_id}: {n_samples} draws in {chain.sampling_s:.2f} s, acceptance "
            f"{chain.accept_rate:.3f}, {chain.n_divergent} divergent")
    return chain


# -- several chains ------------------------------------------------------------------------

def print_now(line: str) -> None:
    """print, flushed at once (a worker's output would otherwise wait in its buffer)."""
    print(line, flush=True)


def _run_chain(make_target, args, kwargs, theta0, seed, chain_id, options) -> Chain:
    target = make_target(*args, **kwargs)
    return sample(target, theta0, seed=seed, chain_id=chain_id, **options)


def run_chains(make_target: Callable[..., Target], n_chains: int = 4,
               seeds: Sequence[int] | None = None, *, theta0, args: tuple = (),
               kwargs: dict | None = None, seed_kwarg: str | None = None,
               processes: int = 1, context: str = "spawn",
               log: Callable[[str], None] | None = None, **options: Any) -> list[Chain]:
    """`n_chains` independent chains, chain c built by `make_target(*args, **kwargs)` and seeded
    with `seeds[c]` (default 0, 1, …); `theta0` is one point or one row per chain; `options`
    go to `sample`. With `processes > 1` the chains run in a multiprocessing pool of that
    many processes ("spawn" or "forkserver" context): `make_target` and its arguments must be
    picklable (a module-level function or class). `seed_kwarg`: also pass the chain's seed to
    `make_target` under that name (a target with randomness of its own). The chains come back
    in seed order, the same whatever `processes` is."""
    seeds = list(range(n_chains)) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != n_chains or len(set(seeds)) != n_chains:
        raise InputError(f"hmc: need {n_chains} different seeds, got {seeds}")
    starts = np.array(theta0, dtype=np.float64)
    starts = np.tile(starts.reshape(1, -1), (n_chains, 1)) if starts.ndim <= 1 else starts
    if starts.shape[0] != n_chains:
        raise InputError(f"hmc: theta0 has {starts.shape[0]} rows for {n_chains} chains")
    if context not in ("spawn", "forkserver"):
        raise InputError(f"hmc: context must be 'spawn' or 'forkserver', not '{context}'")
    kwargs = kwargs or {}
    jobs = []
    for c in range(n_chains):
        chain_options = dict(options)
        if processes > 1:
            chain_options["progress"] = False
            # the workers print their progress lines themselves
            chain_options["log"] = print_now if log is not None else None
        else:
            chain_options.setdefault("log", log)
        target_kwargs = kwargs if seed_kwarg is None else {**kwargs, seed_kwarg: seeds[c]}
        jobs.append((make_target, args, target_kwargs, starts[c], seeds[c], c, chain_options))
    if processes <= 1 or n_chains == 1:
        return [_run_chain(*job) for job in jobs]
    pool_size = min(processes, n_chains)
    with multiprocessing.get_context(context).Pool(pool_size) as pool:
        pending = [pool.apply_async(_run_chain, job) for job in jobs]
        chains = []
        for c, job in enumerate(pending):
            chain = job.get()
            if log is not None:
                log(f"chain {c}: {len(chain)} draws, acceptance {chain.accept_rate:.3f}, step "
                    f"size {chain.final_step_size:.4g}, {chain.n_divergent} divergent, "
                    f"{chain.wall_s:.2f} s")
            chains.append(chain)
    return chains


def stack(chains: Sequence[Chain]) -> np.ndarray:
    """The draws as one (n_chains, n_draws, p) array (chains cut to the shortest)."""
    n = min(len(c) for c in chains)
    return np.stack([c.samples[:n] for c in chains])


# -- diagnostics (Vehtari, Gelman, Simpson, Carpenter & Bürkner 2021) -----------------------

def _split(x: np.ndarray) -> np.ndarray:
    """(m, n) → (2m, n // 2): each chain's first and last halves (the middle draw of an odd
    chain dropped)."""
    half = x.shape[1] // 2
    return np.concatenate([x[:, :half], x[:, x.shape[1] - half:]], axis=0)


def _rank_normal(x: np.ndarray) -> np.ndarray:
    """Φ⁻¹((r − 3/8)/(S + 1/4)), r the average rank of each draw among all S (Blom)."""
    from scipy.special import ndtri
    from scipy.stats import rankdata

    ranks = rankdata(x, method="average").reshape(x.shape)
    return ndtri((ranks - 0.375) / (x.size + 0.25))


def _basic_rhat(x: np.ndarray) -> float:
    m, n = x.shape
    within = float(np.mean(np.var(x, axis=1, ddof=1)))
    between = n * float(np.var(np.mean(x, axis=1), ddof=1))
    if within <= 0:
        return math.nan
    return math.sqrt(((n - 1) / n * within + between / n) / within)


def _autocovariance(x: np.ndarray) -> np.ndarray:
    """Per row, the biased autocovariance at lags 0..n−1 (FFT, zero-padded)."""
    n = x.shape[1]
    centred = x - x.mean(axis=1, keepdims=True)
    size = 1 << (2 * n - 1).bit_length()
    spectrum = np.fft.rfft(centred, n=size, axis=1)
    return np.fft.irfft(spectrum * np.conj(spectrum), n=size, axis=1)[:, :n] / n


def _ess(x: np.ndarray) -> float:
    """ESS of (m, n) chains from the multi-chain autocorrelation ρ_t = 1 − (W − mean_c acov_c(t))
    / var⁺, summed by Geyer's initial positive and monotone sequences of pair sums
    ρ_{2k} + ρ_{2k+1}; τ = −1 + 2 Σ_{t ≤ T} ρ_t + ρ_{T+1} (the first negative pair's even term
    when positive), capped at τ ≥ 1/log10(mn)."""
    x = np.asarray(x, dtype=np.float64)
    m, n = x.shape
    if n < 4 or not np.all(np.isfinite(x)):
        return math.nan
    if np.ptp(x) < np.finfo(np.float64).resolution:
        return float(x.size)
    acov = _autocovariance(x)
    within = float(np.mean(acov[:, 0])) * n / (n - 1.0)
    var_plus = within * (n - 1.0) / n
    if m > 1:
        var_plus += float(np.var(np.mean(x, axis=1), ddof=1))
    rho = 1.0 - (within - np.mean(acov, axis=0)) / var_plus
    rho[0] = 1.0
    # pair sums P_k = ρ_2k + ρ_2k+1 while positive; the sum is of rho[: last + 1] and the
    # "improvement" term ρ_{last + 1}
    kept = np.zeros(n)
    kept[0], kept[1] = rho[0], rho[1]
    t = 1
    even, odd = rho[0], rho[1]
    while t < n - 3 and even + odd > 0.0:
        even, odd = rho[t + 1], rho[t + 2]
        if even + odd >= 0.0:
            kept[t + 1], kept[t + 2] = even, odd
        t += 2
    last = t - 2
    if even > 0.0:
        kept[last + 1] = even
    for t in range(1, last - 1, 2):  # monotone: no pair sum above the one before
        previous = kept[t - 1] + kept[t]
        if kept[t + 1] + kept[t + 2] > previous:
            kept[t + 1] = kept[t + 2] = previous / 2.0
    tau = -1.0 + 2.0 * float(np.sum(kept[: last + 1])) + float(kept[last + 1])
    tau = max(tau, 1.0 / math.log10(m * n))
    return m * n / tau


def rhat(x: np.ndarray) -> float:
    """Rank-normalised split R-hat of (m, n) draws: the larger of the R-hats of the
    rank-normalised split chains and of their folded |x − median| version."""
    x = np.asarray(x, dtype=np.float64)
    split = _split(x)
    bulk = _basic_rhat(_rank_normal(split))
    tail = _basic_rhat(_rank_normal(np.abs(split - np.median(x))))
    return max(bulk, tail)


def ess_bulk(x: np.ndarray) -> float:
    """ESS of the rank-normalised split chains."""
    return _ess(_rank_normal(_split(np.asarray(x, dtype=np.float64))))


def ess_tail(x: np.ndarray) -> float:
    """The smaller ESS of the indicators x ≤ q5 and x ≤ q95 (split chains)."""
    x = np.asarray(x, dtype=np.float64)
    split = _split(x)
    return min(_ess((split <= np.quantile(x, q)).astype(np.float64)) for q in (0.05, 0.95))


def ess_mean(x: np.ndarray) -> float:
    """ESS of the split chains themselves (the one for the MCSE of the mean)."""
    return _ess(_split(np.asarray(x, dtype=np.float64)))


def mcse_mean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(np.std(x, ddof=1)) / math.sqrt(ess_mean(x))


def _estimators(backend: str) -> tuple[str, dict[str, Callable[[np.ndarray], float]]]:
    own = {"rhat": rhat, "ess_bulk": ess_bulk, "ess_tail": ess_tail, "mcse_mean": mcse_mean}
    if backend == "own":
        return "bilo.hmc (Vehtari et al. 2021)", own
    try:
        import arviz
    except ImportError:
        if backend == "arviz":
            raise
        return "bilo.hmc (Vehtari et al. 2021)", own
    return f"arviz {arviz.__version__}", {
        "rhat": lambda x: float(arviz.rhat(x, method="rank")),
        "ess_bulk": lambda x: float(arviz.ess(x, method="bulk")),
        "ess_tail": lambda x: float(arviz.ess(x, method="tail")),
        "mcse_mean": lambda x: float(arviz.mcse(x, method="mean"))}


def diagnostics(chains: Sequence[Chain], backend: str = "auto") -> dict:
    """Per parameter: mean, sd, MCSE of the mean, rank-normalised split R-hat, bulk and tail
    ESS, bulk ESS per second of sampling (summed over chains: the CPU cost, whatever ran in
    parallel) and the 5/50/95 % quantiles; per chain: acceptance, divergences, step size,
    E-BFMI. `backend`: "auto" (ArviZ when installed), "arviz" or "own". JSON-ready."""
    if not chains:
        raise InputError("hmc: no chains to diagnose")
    used, estimate = _estimators(backend)
    draws = stack(chains)
    sampling_s = float(sum(c.sampling_s for c in chains))
    params = {}
    for j, name in enumerate(chains[0].names):
        x = draws[:, :, j]
        row = {"mean": float(np.mean(x)), "sd": float(np.std(x, ddof=1))}
        row.update({k: float(f(x)) for k, f in estimate.items()})
        row["ess_per_s"] = row["ess_bulk"] / sampling_s if sampling_s > 0 else math.nan
        row.update({f"q{int(q * 100):02d}": float(np.quantile(x, q)) for q in (0.05, 0.5, 0.95)})
        params[name] = row
    return {"backend": used, "n_chains": len(chains), "n_draws": int(draws.shape[1]),
            "params": params,
            "accept_rate": [c.accept_rate for c in chains],
            "mean_accept_prob": [float(np.mean(c.accept_prob)) for c in chains],
            "divergent": [c.n_divergent for c in chains],
            "step_size": [c.final_step_size for c in chains],
            "ebfmi": [c.ebfmi for c in chains],
            "n_potential": int(sum(c.n_potential for c in chains)),
            "hook_total": int(sum(c.hook_total for c in chains)),
            "warmup_s": float(sum(c.warmup_s for c in chains)), "sampling_s": sampling_s}


__all__ = ["Chain", "Draws", "DualAveraging", "GaussianTarget", "Target", "adaptation_windows",
           "diagnostics", "ess_bulk", "ess_mean", "ess_tail", "kinetic", "leapfrog",
           "mcse_mean", "reflect", "regularised_variance", "rhat", "run_chains", "sample",
           "stack"]
