"""One declared problem, every method a strategy over it: the logistic ODE u′ = a·u(1 − u),
u(0) = 0.1 on t ∈ [0, 1] (one file in bilo/problems, its solver in solvers/fdm, its discrete
adjoint in adjoint/), the objective computed once, priors and likelihoods as objects, and the
solver's view of θ in validation."""

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from bilo.likelihoods import Gaussian, SegmentationMasks
from bilo.model import objective
from bilo.priors import Gamma, LogNormal, Normal, TruncatedNormal, Uniform
from bilo.problems import get_problem
from bilo.strategies import fit, make_options
from bilo.synthetic import run_reference
from bilo.validate import solver_check
from solvers.exchange import read_solution, write_solution
from solvers.reference import sample


@pytest.fixture(scope="module")
def logistic_data(tmp_path_factory):
    """`bilo solve logistic --param a=2 --n-obs 21 --noise 0.01 --seed 0`."""
    path = tmp_path_factory.mktemp("logistic") / "data.h5"
    write_solution(path, run_reference("logistic", {"a": 2.0}, n_obs=21, noise=0.01, seed=0))
    return path


def test_every_method_recovers_the_adjoints_estimate(logistic_data, tmp_path, report):
    """Logistic data above (truth a = 2, σ = 0.01, 21 points), from a = 1: the adjoint's
    L-BFGS-B minimiser of J = mean((u − d)²) is the target (measured 1.98421: with noisy data
    it is not the truth); BiLO and PINN (w_dat 1, quick preset: 32-wide network, 1000 + 2000
    steps) land within 2 % of it (measured 0.002 % and about 0.1 %), and every run reports
    the same J at its answer through `bilo validate` (reference_objective)."""
    problem = get_problem("logistic")
    found = {}
    for method in ("adjoint", "bilo", "pinn"):
        result = fit(problem, logistic_data, method, tmp_path / method,
                     make_options(problem, method), log=None)
        found[method] = result.summary
    target = found["adjoint"]["params"]["a"]
    for method in ("bilo", "pinn"):
        a = found[method]["params"]["a"]
        report(f"{method}: a = {a:.6f}, adjoint {target:.6f}, rel. diff "
               f"{abs(a - target) / target:.2e}, J {found[method]['reference_objective']:.6e}")
        assert abs(a - target) / target < 0.02
    assert found["adjoint"]["reference_objective"] == pytest.approx(
        found["adjoint"]["objective"], rel=1e-9)


def test_objective_at_the_truth_is_one_number(logistic_data):
    """J(a = 2) on the logistic data, computed three ways: `bilo.model.objective` with the
    reference solver's u, the adjoint's own J (its discretisation, the likelihood object as
    data term), and the likelihood on torch float64 tensors (the networks' path): equal to
    1e-12 (relative)."""
    problem = get_problem("logistic")
    data = read_solution(logistic_data)
    obs = data.observations
    reference = run_reference(problem, {"a": 2.0}, nx=len(data.grid["t"]))
    u = sample(reference, obs.points_in(reference.axes), reference.axes)
    declared = objective(problem, u, obs.values, {"a": 2.0})
    adjoint = problem.adjoint(data, w_reg={}).objective([2.0])
    network_path = float(problem.likelihood.value(torch.as_tensor(u),
                                                  torch.as_tensor(obs.values)))
    assert adjoint == pytest.approx(declared, rel=1e-12, abs=0)
    assert network_path == pytest.approx(declared, rel=1e-12, abs=0)


def test_gauss_newton_distance_to_the_solver_minimiser(tmp_path):
    """Noise-free logistic data at a = 2 (the solver's minimiser is a = 2 exactly): at
    a = 2.1 and 1.8 validation's Gauss–Newton estimate of the distance to it is within 30 % of
    the true 0.1 and 0.2 (measured within 2 %), the adjoint gradient there is nonzero, and the
    check warns (above 1 %); at a = 2 the distance is below 1e-6."""
    problem = get_problem("logistic")
    path = tmp_path / "clean.h5"
    write_solution(path, run_reference("logistic", {"a": 2.0}, n_obs=21))
    data = read_solution(path)
    lines = []
    for a in (2.1, 1.8):
        check = solver_check(problem, data, {"a": a}, log=lines.append)
        distance = check["distance_to_solver_minimiser"]["a"]
        assert abs(distance - abs(a - 2.0)) < 0.3 * abs(a - 2.0)
        assert not check["within_tolerance"] and abs(check["gradient"]["a"]) > 0
    assert len(lines) == 2 and "warning" in lines[0]
    assert solver_check(problem, data, {"a": 2.0})["distance_to_solver_minimiser"]["a"] < 1e-6


@pytest.mark.parametrize("prior, reference", [
    (Uniform(1.0, 3.0), stats.uniform(1.0, 2.0)),
    (Normal(1.0, 2.0), stats.norm(1.0, 2.0)),
    (LogNormal(0.5, 0.3), stats.lognorm(0.3, scale=np.exp(0.5))),
    (Gamma(2.0, 3.0), stats.gamma(2.0, scale=1 / 3.0)),
    (TruncatedNormal(0.3, 0.1, 0.0, 1.0), stats.truncnorm(-3.0, 7.0, loc=0.3, scale=0.1)),
])
def test_priors_are_normalised_densities(prior, reference):
    """Each prior's log_prob equals scipy's logpdf to 1e-12 on its support (numpy and torch
    alike), integrates to 1 by quadrature (1e-8), and 20 000 seeded draws have the
    distribution's mean within 4 standard errors."""
    lo, hi = reference.support()
    x = np.linspace(max(lo, -10) + 1e-3, min(hi, 10) - 1e-3, 50)
    np.testing.assert_allclose(prior.log_prob(x), reference.logpdf(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(prior.log_prob(torch.as_tensor(x)).numpy(), reference.logpdf(x),
                               rtol=1e-12, atol=1e-12)
    mass, _ = integrate.quad(lambda v: np.exp(prior.log_prob(v)), max(lo, -50), min(hi, 50),
                             limit=200)
    assert mass == pytest.approx(1.0, abs=1e-8)
    draws = prior.sample(np.random.default_rng(0), 20_000)
    assert abs(draws.mean() - reference.mean()) < 4 * reference.std() / np.sqrt(20_000)
    assert prior.log_prob(lo - 1.0) == -np.inf if np.isfinite(lo) else True


def test_likelihoods_agree_between_numpy_and_torch():
    """Gaussian: −log L = n/(2σ²)·mean((u − d)²) and its gradient 2(u − d)/n matches torch's
    autograd; segmentation masks (relative and Bernoulli): the numpy and torch values agree
    to 1e-12, and the Bernoulli misfit is the mean binary cross-entropy of both regions."""
    rng = np.random.default_rng(0)
    u, d = rng.random(30), rng.random(30)
    gaussian = Gaussian(sigma=0.1)
    assert gaussian.negative_log(u, d) == pytest.approx(np.sum((u - d) ** 2) / 0.02)
    u_t = torch.as_tensor(u, dtype=torch.float64).requires_grad_()
    gaussian.value(u_t, torch.as_tensor(d)).backward()
    np.testing.assert_allclose(u_t.grad.numpy(), gaussian.gradient(u, d), rtol=1e-12)
    codes = rng.integers(0, 3, 30).astype(float)
    theta = {"th_wt": 0.3, "th_tc": 0.6}
    for noise in ("relative", "bernoulli"):
        masks = SegmentationMasks(thresholds={1: "th_wt", 2: "th_tc"}, noise=noise)
        value = masks.value(u, codes, theta)
        torch_value = float(masks.value(torch.as_tensor(u), torch.as_tensor(codes), theta))
        assert torch_value == pytest.approx(value, rel=1e-12)
    p_wt = 1 / (1 + np.exp(-20 * (u - 0.3)))
    p_tc = 1 / (1 + np.exp(-20 * (u - 0.6)))
    bce = -np.mean((codes >= 1) * np.log(p_wt) + (codes < 1) * np.log(1 - p_wt)
                   + (codes >= 2) * np.log(p_tc) + (codes < 2) * np.log(1 - p_tc))
    assert value == pytest.approx(bce, rel=1e-10)


def test_polish_finishes_a_network_answer_at_the_solvers_minimiser(logistic_data, tmp_path):
    """PINN on the logistic data, stopped early (300 fine-tuning steps: a ≈ 1.977), then
    `--polish 10`: ten L-BFGS-B iterations of the solver and its adjoint from that answer reach
    the adjoint's own minimiser (a = 1.984208) to 1e-6, J does not increase, and the network's
    answer stays beside the polished one in summary.json."""
    problem = get_problem("logistic")
    options = make_options(problem, "pinn", "quick", {"finetune_steps": 300}, polish=10)
    summary = fit(problem, logistic_data, "pinn", tmp_path / "pinn", options, log=None).summary
    target = fit(problem, logistic_data, "adjoint", tmp_path / "adjoint", log=None,
                 validate=False).summary["params"]["a"]
    polished = summary["polish"]
    assert polished["params"]["a"] == pytest.approx(target, abs=1e-6)
    assert polished["objective"] <= polished["objective_before"]
    assert abs(summary["params"]["a"] - target) > 1e-4


def test_network_methods_refuse_problems_without_a_residual(tmp_path, capsys):
    """`bilo train fkpp2d --method bilo` (a problem with a reference solver but no network
    formulation yet): exit code 2 and one line saying so, before the data are read."""
    from bilo.cli import main

    data = tmp_path / "s.h5"
    write_solution(data, run_reference("singular", nx=201))
    assert main(["train", "fkpp2d", "--data", str(data), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "declares no residual" in err and len(err.splitlines()) == 1


def test_scaled_density_likelihood_recovers_its_scale():
    """d = c·(u + σε), c = 1.7, σ = 0.05, 4000 points with u uniform in [0, 1]: −log L in numpy
    and torch agree (1e-9 relative, float64); minimised over c on a fine grid it is smallest
    within 3 standard errors of 1.7 (the Fisher information Σu²/(c²σ²) + 2n/c² ≈ 1.9e5 gives
    an sd of 0.0023), and torch's ∂(−log L)/∂c matches a central difference to 1e-6 relative.
    """
    from bilo.likelihoods import ScaledDensity

    rng = np.random.default_rng(4)
    u = rng.uniform(0.0, 1.0, 4000)
    d = 1.7 * (u + 0.05 * rng.standard_normal(4000))
    pet = ScaledDensity("c", sigma=0.05)
    value = pet.negative_log(u, d, {"c": 1.6})
    c = torch.tensor(1.6, dtype=torch.float64, requires_grad=True)
    value_t = pet.negative_log(torch.as_tensor(u), torch.as_tensor(d), {"c": c})
    assert float(value_t.detach()) == pytest.approx(value, rel=1e-9)
    (grad,) = torch.autograd.grad(value_t, c)
    h = 1e-6
    central = (pet.negative_log(u, d, {"c": 1.6 + h})
               - pet.negative_log(u, d, {"c": 1.6 - h})) / (2 * h)
    assert float(grad) == pytest.approx(central, rel=1e-6)
    grid = np.linspace(1.6, 1.8, 2001)
    best = grid[np.argmin([pet.negative_log(u, d, {"c": g}) for g in grid])]
    assert abs(best - 1.7) < 3 * 0.0023
    assert pet.value(u, d, {"c": 1.6}) == pytest.approx(value / 4000)


def test_stacked_likelihood_sums_its_parts_by_rows():
    """Stacked((Gaussian σ = 0.1, 3 rows), (ScaledDensity, 2 rows)): −log L is the sum of the
    parts' on their rows (exactly), its misfit the same sum (scale 1), its parameters the
    union; rows that do not add up to the data's are an error naming both counts."""
    from bilo.likelihoods import ScaledDensity, Stacked

    gauss, pet = Gaussian(sigma=0.1), ScaledDensity("c", sigma=0.05)
    stacked = Stacked(((gauss, 3), (pet, 2)))
    u = np.array([0.1, 0.2, 0.3, 0.5, 0.9])
    d = np.array([0.12, 0.18, 0.33, 0.8, 1.9])
    theta = {"c": 2.0}
    expected = gauss.negative_log(u[:3], d[:3]) + pet.negative_log(u[3:], d[3:], theta)
    assert stacked.negative_log(u, d, theta) == pytest.approx(expected, rel=1e-12)
    assert stacked.value(u, d, theta) == pytest.approx(expected, rel=1e-12)
    assert stacked.parameters == ("c",)
    with pytest.raises(ValueError, match="cover 5 rows, the data have 6"):
        stacked.negative_log(np.append(u, 0.0), np.append(d, 0.0), theta)
