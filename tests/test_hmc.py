"""The HMC sampler over θ (`bilo.hmc`) and the solver's reference posterior (`bilo.posterior`).

Every statistical check compares with a closed form (or the grid posterior, exact up to its
discretisation) within 3 Monte Carlo standard errors, MCSE = sd(f)/√ESS(f), ESS the split-chain
ESS of Vehtari et al. (2021) of the quantity f averaged. Seeds are fixed, so each check is one
deterministic draw; the measured numbers are in the docstrings and in docs/bayes.md.
"""

import json
import math

import h5py
import numpy as np
import pytest
from scipy import stats

import bilo.hmc as hmc
from bilo.hmc import (
    GaussianTarget,
    adaptation_windows,
    diagnostics,
    ess_bulk,
    ess_mean,
    ess_tail,
    leapfrog,
    mcse_mean,
    rhat,
    run_chains,
    sample,
    stack,
)
from bilo.model import Parameter
from bilo.posterior import (
    SolverTarget,
    fit_hmc_solver,
    grid_density,
    grid_posterior,
    log_prior_and_gradient,
)
from bilo.priors import LogNormal, Normal, Uniform
from bilo.problems import get_problem
from bilo.results import write_result
from bilo.strategies import make_options
from bilo.synthetic import run_reference
from solvers.common import InputError


def z_score(values: np.ndarray, expected: float) -> float:
    """(mean − expected)/MCSE for draws of shape (chains, n)."""
    return (float(np.mean(values)) - expected) / (float(np.std(values, ddof=1))
                                                  / math.sqrt(ess_mean(values)))


def check_moments(draws: np.ndarray, mean: np.ndarray, cov: np.ndarray, report, label: str):
    """Means and every covariance entry E[(x_i − μ_i)(x_j − μ_j)] within 3 MCSE."""
    p = len(mean)
    worst = 0.0
    for i in range(p):
        worst = max(worst, abs(z_score(draws[:, :, i], mean[i])))
        for j in range(i, p):
            f = (draws[:, :, i] - mean[i]) * (draws[:, :, j] - mean[j])
            worst = max(worst, abs(z_score(f, cov[i, j])))
    report(f"{label}: largest |error|/MCSE over means and covariances {worst:.2f}")
    assert worst < 3.0


# -- the integrator ------------------------------------------------------------------------

def _evaluate(target):
    def evaluate(theta):
        U, g = target.potential(theta)
        return U, g, 0
    return evaluate


def test_leapfrog_with_reflection_is_reversible_and_volume_preserving(report):
    """A 2-D normal on the box [0, 1] × [0.5, ∞), 25 leapfrog steps of ε = 0.3 from a momentum
    large enough to reflect several times at each wall: running back from (θ′, −p′) returns to
    (θ, −p) to 1e-12, and the Jacobian of (θ, p) ↦ (θ′, p′) by central differences has
    determinant 1 (measured |det − 1| ≈ 1e-9). The momentum flip is what both need."""
    target = GaussianTarget([0.2, 1.0], [[1.0, 0.3], [0.3, 0.5]], bounds=[(0, 1), (0.5, None)])
    lo, hi = np.array([0.0, 0.5]), np.array([1.0, np.inf])
    inv_mass = np.array([1.0, 2.0])
    theta, p = np.array([0.3, 0.7]), np.array([4.0, -3.0])

    def flow(theta, p):
        g = target.potential(theta)[1]
        end = leapfrog(_evaluate(target), theta, p, g, 0.3, 25, inv_mass, lo, hi)
        assert end.ok
        return end

    end = flow(theta, p)
    back = flow(end.theta, -end.momentum)
    assert np.allclose(back.theta, theta, atol=1e-12, rtol=0)
    assert np.allclose(-back.momentum, p, atol=1e-12, rtol=0)
    z0, h = np.concatenate([theta, p]), 1e-6
    jacobian = np.zeros((4, 4))
    for k in range(4):
        up, down = z0.copy(), z0.copy()
        up[k] += h
        down[k] -= h
        a, b = flow(up[:2], up[2:]), flow(down[:2], down[2:])
        jacobian[:, k] = (np.concatenate([a.theta, a.momentum])
                          - np.concatenate([b.theta, b.momentum])) / (2 * h)
    det = np.linalg.det(jacobian)
    report(f"reflecting leapfrog: |det J − 1| = {abs(det - 1):.1e}")
    assert abs(det - 1.0) < 1e-6


def test_leapfrog_energy_error_is_second_order():
    """Standard normal, 1 → T = 2 of leapfrog: |ΔH| falls by 4 when ε halves (a missing or
    doubled final half kick makes the error first order)."""
    target = GaussianTarget([0.0], [[1.0]])
    errors = []
    for eps in (0.1, 0.05, 0.025):
        theta, p = np.array([0.5]), np.array([1.0])
        end = leapfrog(_evaluate(target), theta, p, target.potential(theta)[1], eps,
                       int(round(2 / eps)), np.ones(1), np.array([-np.inf]), np.array([np.inf]))
        errors.append(abs(end.potential + 0.5 * end.momentum[0] ** 2
                          - (target.potential(theta)[0] + 0.5)))
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    assert all(3.5 < r < 4.5 for r in ratios), ratios


# -- closed-form targets -------------------------------------------------------------------

def test_correlated_gaussian_moments(report):
    """N(μ, Σ) with μ = (1, −2), sds (1, 0.2), correlation 0.8; 2 chains × 2000 draws after 500
    warm-up, L = 8 jittered ±20 %: means and covariances within 3 MCSE (measured largest 0.83
    MCSE), R-hat < 1.01, and the adapted M⁻¹ near the variances (1, 0.04)."""
    sd = np.array([1.0, 0.2])
    cov = np.outer(sd, sd) * np.array([[1.0, 0.8], [0.8, 1.0]])
    mean = np.array([1.0, -2.0])
    chains = run_chains(GaussianTarget, 2, [11, 12], args=(mean, cov), theta0=[0.0, 0.0],
                        n_samples=2000, n_warmup=500, n_leapfrog=8, jitter=0.2)
    check_moments(stack(chains), mean, cov, report, "correlated Gaussian")
    summary = diagnostics(chains, backend="own")
    assert all(row["rhat"] < 1.01 for row in summary["params"].values())
    for chain in chains:
        assert np.allclose(1.0 / chain.mass, sd**2, rtol=0.5)
        assert chain.n_divergent == 0


class TwoPointTarget:
    """y(x) = θ0(1 − x) + θ1 x − x(1 − x) (the two-point problem y″ = 2, y(0) = θ0, y(1) = θ1)
    observed at 11 points with Gaussian noise σ = 0.1, priors θk ~ N(0, 1): U = ½‖Aθ + c −
    d‖²/σ² − log p(θ), ∇log p through `bilo.posterior.log_prior_and_gradient`."""

    x = np.linspace(0.0, 1.0, 11)
    sigma = 0.1
    parameters = (Parameter("theta0", 0.0, prior=Normal(0.0, 1.0)),
                  Parameter("theta1", 0.0, prior=Normal(0.0, 1.0)))

    def __init__(self, seed=3):
        self.A = np.column_stack([1.0 - self.x, self.x])
        self.c = -self.x * (1.0 - self.x)
        rng = np.random.default_rng(seed)
        self.d = self.A @ np.array([0.0, 1.0]) + self.c + self.sigma * rng.standard_normal(11)
        self.names = ("theta0", "theta1")

    def potential(self, theta):
        r = self.A @ theta + self.c - self.d
        lp, dlp = log_prior_and_gradient(self.parameters, theta)
        return 0.5 * float(r @ r) / self.sigma**2 - lp, self.A.T @ r / self.sigma**2 - dlp

    def closed_form(self):
        precision = self.A.T @ self.A / self.sigma**2 + np.eye(2)
        cov = np.linalg.inv(precision)
        return cov @ (self.A.T @ (self.d - self.c) / self.sigma**2), cov


def test_two_point_linear_gaussian_posterior(report):
    """The two-point problem's posterior (Gaussian: Σ = (AᵀA/σ² + I)⁻¹, μ = Σ Aᵀ(d − c)/σ²;
    sds 0.0563, correlation −0.427): 2 chains × 1500 draws within 3 MCSE of μ and Σ
    (measured largest 1.57); the grid posterior on 121 × 121 nodes over ±6 sd gives μ, the sds
    and the correlation to 1e-6, 1e-4 and 1e-3 (trapezoidal rule)."""
    target = TwoPointTarget()
    mean, cov = target.closed_form()
    chains = [sample(target, [0.5, 0.5], n_samples=1500, n_warmup=400, n_leapfrog=6,
                     jitter=0.2, seed=s) for s in (21, 22)]
    check_moments(stack(chains), mean, cov, report, "two-point posterior")
    sd = np.sqrt(np.diag(cov))
    axes = [np.linspace(m - 6 * s, m + 6 * s, 121) for m, s in zip(mean, sd, strict=True)]
    grid = grid_density(lambda t: -target.potential(t)[0], axes, target.names)
    corr = cov[0, 1] / (sd[0] * sd[1])
    assert np.allclose([grid.mean[k] for k in target.names], mean, atol=1e-6)
    assert np.allclose([grid.sd[k] for k in target.names], sd, rtol=1e-4)
    assert grid.corr == pytest.approx(corr, abs=1e-3)
    report(f"two-point: sds {sd.round(4).tolist()}, correlation {corr:.3f}; grid corr "
           f"{grid.corr:.4f}")


# -- bounds --------------------------------------------------------------------------------

def _truncated_chains(seeds=(0, 1)):
    target = GaussianTarget([0.0, 0.0], np.eye(2), bounds=[(0.0, 1.0), (0.5, None)])
    return [sample(target, [0.5, 1.0], n_samples=4000, n_warmup=500, n_leapfrog=5,
                   jitter=0.2, seed=s) for s in seeds]


def _truncated_z(chains) -> list[float]:
    draws = stack(chains)
    z = []
    for j, (a, b) in enumerate([(0.0, 1.0), (0.5, np.inf)]):
        exact = stats.truncnorm(a, b)
        z.append(z_score(draws[:, :, j], exact.mean()))
        z.append(z_score((draws[:, :, j] - exact.mean()) ** 2, exact.var()))
    return z


def test_reflection_samples_the_truncated_distribution(report):
    """x1 ~ N(0, 1) on [0, 1] (two walls), x2 ~ N(0, 1) on [0.5, ∞) (one wall), sampled with
    reflection: means and variances within 3 MCSE of scipy's truncnorm (measured largest 1.8),
    and a KS test on every 10th draw passes (p > 0.001). Reflecting without the momentum flip
    (the paper code's defect; monkeypatched) is detected: the mean of x2 is 17.7 MCSE off."""
    chains = _truncated_chains()
    z = _truncated_z(chains)
    report(f"truncated normal: |error|/MCSE {np.round(np.abs(z), 2).tolist()}")
    assert max(abs(v) for v in z) < 3.0
    draws = np.concatenate([c.samples[::10] for c in chains])
    for j, (a, b) in enumerate([(0.0, 1.0), (0.5, np.inf)]):
        assert stats.kstest(draws[:, j], stats.truncnorm(a, b).cdf).pvalue > 1e-3
        assert draws[:, j].min() >= a and draws[:, j].max() <= b


def test_reflection_without_the_flip_is_biased(monkeypatch, report):
    """Negative control for the check above: the same chains with a reflection that forgets to
    flip the momentum leave the truncated distribution (largest |error| > 10 MCSE)."""
    original = hmc.reflect

    def no_flip(theta, momentum, lo, hi):
        return original(theta, momentum, lo, hi)[0], momentum.copy()

    monkeypatch.setattr(hmc, "reflect", no_flip)
    z = _truncated_z(_truncated_chains())
    report(f"no momentum flip: |error|/MCSE {np.round(np.abs(z), 1).tolist()}")
    assert max(abs(v) for v in z) > 10.0


def test_uniform_on_the_unit_square(report):
    """U = 0 on [0, 1]²: every proposal is accepted, the step size stops at the box (a drift
    ε·sqrt(M⁻¹) of at most the width), and the draws are uniform: mean ½ and variance 1/12
    within 3 MCSE (measured largest 1.4), KS p > 0.001."""

    class Flat:
        bounds = [(0.0, 1.0), (0.0, 1.0)]

        def potential(self, theta):
            return 0.0, np.zeros(2)

    chain = sample(Flat(), [0.1, 0.9], n_samples=3000, n_warmup=300, n_leapfrog=3, seed=5)
    # the drift of a unit momentum, ε·sqrt(M⁻¹), is capped at the box's width
    assert chain.accepted.all()
    assert chain.final_step_size * np.min(np.sqrt(1.0 / chain.mass)) <= 1.0 + 1e-12
    x = chain.samples[None]
    z = [z_score(x[:, :, j], 0.5) for j in range(2)]
    z += [z_score((x[:, :, j] - 0.5) ** 2, 1 / 12) for j in range(2)]
    report(f"uniform square: |error|/MCSE {np.round(np.abs(z), 2).tolist()}")
    assert max(abs(v) for v in z) < 3.0
    for j in range(2):
        assert stats.kstest(chain.samples[::5, j], "uniform").pvalue > 1e-3


# -- hooks ---------------------------------------------------------------------------------

class StatefulTarget:
    """A standard normal whose "network weights" follow θ: `at_position` sets them to θ (and
    says it took 3 lower-level steps), `snapshot` and `restore` save and put them back. It logs
    every snapshot and restore."""

    def __init__(self):
        self.weights = np.zeros(1)
        self.n_snapshots = 0
        self.events = []      # ("snapshot", id, weights) or ("restore", id, weights after)

    def potential(self, theta):
        assert np.array_equal(self.weights, theta)  # the hook ran at this position first
        return 0.5 * float(theta @ theta), theta.copy()

    def at_position(self, theta):
        self.weights = theta.copy()
        return 3

    def snapshot(self):
        state = {"id": self.n_snapshots, "weights": self.weights.copy()}
        self.events.append(("snapshot", state["id"], state["weights"].copy()))
        self.n_snapshots += 1
        return state

    def restore(self, state):
        self.weights = state["weights"].copy()
        self.events.append(("restore", state["id"], self.weights.copy()))


def test_rejections_restore_the_last_accepted_state(report):
    """A step size well past the optimum (ε = 1.9 on N(0, 1), no warm-up) rejects about half of
    the proposals. After every rejection the target's state is the one saved at the LAST
    acceptance (not the start's): its id is the latest snapshot's and its weights are the
    chain's current θ; one snapshot per acceptance, one restore per rejection, the hook's
    counts recorded per leapfrog step."""
    target = StatefulTarget()
    chain = sample(target, [0.3], n_samples=300, n_warmup=0, step_size=1.9, n_leapfrog=4,
                   jitter=0.5, seed=2)
    events = target.events
    assert events[0][0] == "snapshot" and events[0][1] == 0  # the starting position
    per_iteration = events[1:]
    assert len(per_iteration) == len(chain)
    latest = 0
    restored_later = 0
    for i, (kind, ident, weights) in enumerate(per_iteration):
        assert (kind == "snapshot") == bool(chain.accepted[i])
        if kind == "snapshot":
            latest = ident
        else:
            assert ident == latest
            restored_later += ident > 0
        assert np.array_equal(weights, chain.samples[i])
    n_rejected = int((~chain.accepted).sum())
    report(f"{n_rejected} rejections of {len(chain)}, {restored_later} restored a state saved "
           "after the start")
    assert 50 < n_rejected < 250 and restored_later > 0.9 * n_rejected
    assert chain.hook_counts.sum() == 3 * chain.n_leapfrog.sum()
    assert len(set(chain.n_leapfrog.tolist())) > 1  # jittered L
    assert [len(c) for c in chain.hook_counts_by_iteration()] == chain.n_leapfrog.tolist()


# -- adaptation ----------------------------------------------------------------------------

def test_windows_follow_stans_schedule():
    assert adaptation_windows(10) == []
    assert adaptation_windows(1000) == [(75, 100), (100, 150), (150, 250), (250, 800)]
    assert adaptation_windows(100) == [(15, 80)]


@pytest.mark.parametrize("delta", [0.75, 0.6])
def test_dual_averaging_reaches_the_target_acceptance(delta, report):
    """10-D normal with sds from 0.1 to 10 (log-spaced), 2000 warm-up iterations, L = 10
    jittered: in the terminal buffer (the dual averaging of the final metric) the mean
    acceptance statistic is δ within 0.02, and sampling with ε̄ fixed gives δ within 0.1
    (measured over 5 seeds: 0.77–0.82 for 0.75, 0.64–0.70 for 0.6). On the 2-D ρ = 0.8
    Gaussian the sampling acceptance comes out 0.85–0.9: there it drops from 0.72 to 0.05
    between ε = 0.8 and 0.9 and ε̄, a geometric average of iterates on both sides, lands below
    the cliff (docs/bayes.md)."""
    sd = np.logspace(-1, 1, 10)
    target = GaussianTarget(np.arange(10.0), np.diag(sd**2))
    for seed in (0, 1):
        chain = sample(target, np.zeros(10), n_samples=1000, n_warmup=2000, n_leapfrog=10,
                       jitter=0.2, seed=seed, target_accept=delta)
        adapting = float(np.mean(chain.warmup.accept_prob[-400:]))
        sampling = float(np.mean(chain.accept_prob))
        report(f"δ = {delta}: seed {seed}: terminal buffer {adapting:.3f}, sampling "
               f"{sampling:.3f}, ε̄ = {chain.final_step_size:.3f}")
        assert abs(adapting - delta) < 0.02
        assert abs(sampling - delta) < 0.1
        # the step size is fixed after warm-up
        assert np.all(chain.step_size == chain.final_step_size)


# -- diagnostics ---------------------------------------------------------------------------

def _ar1(phi, chains=4, n=1000, seed=0, shift=0.0):
    rng = np.random.default_rng(seed)
    x = np.zeros((chains, n))
    x[:, 0] = rng.standard_normal(chains)
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + math.sqrt(1 - phi**2) * rng.standard_normal(chains)
    return x + shift * np.arange(chains)[:, None]


def test_own_diagnostics_against_theory_and_arviz():
    """AR(1) chains with φ = 0.7 (4 × 1000): ESS ≈ mn(1 − φ)/(1 + φ) = 706 within 20 %;
    chains with shifted means give R-hat > 1.1; and, where ArviZ is installed, this module's
    R-hat, bulk/tail ESS and MCSE equal ArviZ's to 1e-8."""
    x = _ar1(0.7)
    assert ess_mean(x) == pytest.approx(4000 * 0.3 / 1.7, rel=0.2)
    assert ess_bulk(x) == pytest.approx(4000 * 0.3 / 1.7, rel=0.2)
    assert rhat(x) < 1.01
    assert rhat(_ar1(0.7, shift=1.0)) > 1.1
    arviz = pytest.importorskip("arviz")
    for sample_ in (x, _ar1(0.3, chains=2, n=501, seed=4), _ar1(0.9, seed=5, shift=0.2)):
        assert rhat(sample_) == pytest.approx(float(arviz.rhat(sample_, method="rank")),
                                              rel=1e-8)
        assert ess_bulk(sample_) == pytest.approx(float(arviz.ess(sample_, method="bulk")),
                                                  rel=1e-8)
        assert ess_tail(sample_) == pytest.approx(float(arviz.ess(sample_, method="tail")),
                                                  rel=1e-8)
        assert mcse_mean(sample_) == pytest.approx(float(arviz.mcse(sample_, method="mean")),
                                                   rel=1e-8)


def test_chains_in_processes_equal_chains_in_one():
    """run_chains with 2 spawned processes returns the chains of the sequential run, bit for
    bit (each chain depends on its seed only)."""
    options = dict(args=([0.0, 1.0], [[1.0, 0.5], [0.5, 2.0]]), theta0=[[0.0, 0.0], [1.0, 1.0]],
                   n_samples=200, n_warmup=100, n_leapfrog=5, jitter=0.2)
    one = run_chains(GaussianTarget, 2, [5, 9], processes=1, **options)
    two = run_chains(GaussianTarget, 2, [5, 9], processes=2, **options)
    for a, b in zip(one, two, strict=True):
        assert np.array_equal(a.samples, b.samples) and np.array_equal(a.warmup.samples,
                                                                       b.warmup.samples)
        assert a.final_step_size == b.final_step_size and np.array_equal(a.mass, b.mass)
    with pytest.raises(InputError):
        run_chains(GaussianTarget, 2, [1, 1], **options)


# -- the solver posterior ------------------------------------------------------------------

@pytest.fixture(scope="module")
def logistic():
    """Logistic data (truth a = 2, 21 points, σ = 0.01, seed 0) and the problem with its own
    prior a ~ LogNormal(0, 1) on (1e-6, ∞)."""
    data = run_reference("logistic", {"a": 2.0}, n_obs=21, noise=0.01, seed=0)
    problem = get_problem("logistic")
    problem.parameters = (Parameter("a", 1.0, bounds=(1e-6, math.inf), prior=LogNormal(0, 1)),)
    return problem, data


def test_solver_target_gradient_and_prior_gradient(logistic):
    """∇U of SolverTarget (adjoint gradient + autograd prior gradient) against central
    differences of U to 1e-5; the prior's gradient by autograd equals the analytic one, and a
    prior without a torch path falls back to central differences."""
    problem, data = logistic
    target = SolverTarget(problem, data)
    assert target.bounds == [(1e-6, math.inf)] and target.scale == 21 / (2 * 0.01**2)
    for a in (1.9, 2.0, 2.1):
        h = 1e-6
        numeric = (target.potential_value([a + h]) - target.potential_value([a - h])) / (2 * h)
        assert target.potential([a])[1][0] == pytest.approx(numeric, rel=1e-5)
    lp, dlp = log_prior_and_gradient(problem.parameters, np.array([2.0]))
    assert dlp[0] == pytest.approx(-(math.log(2.0) + 1.0) / 2.0, rel=1e-12)

    class Plain:  # a prior written for floats only
        support = (0.0, 3.0)

        def log_prob(self, x):
            if not isinstance(x, float):
                raise TypeError("floats only")
            return -((x - 1.0) ** 2) if 0 <= x <= 3 else -math.inf

    lp, dlp = log_prior_and_gradient((Parameter("b", 1.0, prior=Plain()),), np.array([2.0]))
    assert dlp[0] == pytest.approx(-2.0, rel=1e-6)
    lp, _ = log_prior_and_gradient((Parameter("c", 0.5, prior=Uniform(0, 1)),), np.array([2.0]))
    assert lp == -math.inf


def test_solver_posterior_needs_the_noise_level():
    """Noise-free data (σ = 0) has no posterior width: InputError, one line."""
    problem = get_problem("logistic")
    data = run_reference("logistic", {"a": 2.0}, n_obs=21, noise=0.0, seed=0)
    with pytest.raises(InputError, match="sigma"):
        SolverTarget(problem, data)
    assert SolverTarget(problem, data, sigma=0.02).sigma == 0.02
    with pytest.raises(InputError, match="declares no adjoint"):
        SolverTarget(get_problem("two_point"), run_reference("two_point", n_obs=11,
                                                             noise=0.1, seed=0))


def test_hmc_solver_against_the_grid_posterior(logistic, tmp_path, report):
    """hmc-solver on the logistic data (2 chains in 2 processes, 500 warm-up + 1000 draws, L = 5
    ± 20 %, from a = 1) against the grid posterior (401 solver evaluations over the mode ± 8
    Laplace sds): mean 1.98388, sd 0.01688 on the grid; the chains' mean within 3 MCSE (measured
    0.5 MCSE) and sd within 10 % (measured 1 %). The Result writes through bilo.results, with
    the posterior in summary.json and every draw in posterior.h5 (posterior.png beside it).
    The posterior predictive records u at every 10th draw (200 of them): since u(t; a) is
    increasing in a, its 2.5/50/97.5 % bands equal the solver's u at those quantiles of a
    (to 1e-6: np.quantile interpolates linearly between order statistics)."""
    problem, data = logistic
    grid = grid_posterior(problem, data, 401)
    options = make_options(problem, "hmc-solver", theta0={"a": 1.0}, n_chains=2,
                           n_samples=1000, n_warmup=500, n_leapfrog=5, processes=2)
    result = fit_hmc_solver(problem, data, options, tmp_path, log=None)
    post = result.extra["posterior"]["a"]
    z = (post["mean"] - grid.mean["a"]) / post["mcse_mean"]
    report(f"grid: mean {grid.mean['a']:.5f}, sd {grid.sd['a']:.5f}; hmc-solver: mean "
           f"{post['mean']:.5f} ({z:+.2f} MCSE), sd {post['sd']:.5f} "
           f"({post['sd'] / grid.sd['a'] - 1:+.1%}), bulk ESS {post['ess_bulk']:.0f}, "
           f"R-hat {post['rhat']:.4f}, ESS/s {post['ess_per_s']:.0f}")
    assert abs(z) < 3.0
    assert post["sd"] == pytest.approx(grid.sd["a"], rel=0.1)
    assert post["rhat"] < 1.05
    assert result.params["a"] == post["mean"]
    summary = write_result(tmp_path, result)
    assert json.loads((tmp_path / "summary.json").read_text())["posterior"]["a"]["mean"] == \
        pytest.approx(post["mean"])
    assert summary["hmc"]["divergent"] == [0, 0]
    with h5py.File(tmp_path / "posterior.h5", "r") as saved:
        assert saved["samples"].shape == (2, 1000, 1)
        assert saved["warmup/samples"].shape == (2, 500, 1)
        recorded, bands = saved["predictive/theta"][:, 0], saved["predictive/u_quantiles"][:]
        drawn = saved["samples"][:, ::10, 0].ravel()
    assert (tmp_path / "posterior.png").exists() and (tmp_path / "predictive.png").exists()
    # u(t; a) increases with a at every t > 0, so u's quantiles are u at a's quantiles
    assert np.array_equal(np.sort(recorded), np.sort(drawn))
    model = SolverTarget(problem, data)
    times = data.observations.points_in(("t",))
    for row, q in zip(bands, (0.025, 0.5, 0.975), strict=True):
        at_quantile = model.model.predict(np.array([np.quantile(recorded, q)]), times)
        assert np.max(np.abs(row - at_quantile)) < 1e-6
    assert summary["predictive"]["n_draws"] == 200


def test_posterior_grid_command(tmp_path, capsys):
    """`bilo posterior-grid logistic --data FILE --nodes 201`: the numbers in grid_summary.json
    are those of bilo.posterior.grid_posterior on the same data (flat prior on a > 0; mean
    1.9841, sd 0.0169), the density integrates to 1 in grid_posterior.h5, the plot is written,
    and a second run into the same folder is refused (exit 2) without touching the first."""
    from bilo.cli import main
    from solvers.exchange import read_solution, write_solution

    path = tmp_path / "data.h5"
    write_solution(path, run_reference("logistic", {"a": 2.0}, n_obs=21, noise=0.01, seed=0))
    out = tmp_path / "grid"
    assert main(["posterior-grid", "logistic", "--data", str(path), "--out", str(out),
                 "--nodes", "201"]) == 0
    assert "a: mean 1.98" in capsys.readouterr().out
    expected = grid_posterior(get_problem("logistic"), read_solution(path), 201)
    summary = json.loads((out / "grid_summary.json").read_text())
    assert summary["mean"]["a"] == pytest.approx(expected.mean["a"], rel=1e-12)
    assert summary["sd"]["a"] == pytest.approx(expected.sd["a"], rel=1e-12)
    assert summary["n_solves"] == 201
    with h5py.File(out / "grid_posterior.h5", "r") as saved:
        a, density = saved["axes/a"][:], saved["density"][:]
    assert np.sum(0.5 * (density[1:] + density[:-1]) * np.diff(a)) == pytest.approx(1.0)
    assert (out / "grid_posterior.png").stat().st_size > 0
    before = (out / "grid_posterior.h5").read_bytes()
    assert main(["posterior-grid", "logistic", "--data", str(path), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert (out / "grid_posterior.h5").read_bytes() == before
