"""Logistic growth u'(t) = a u (1 - u), u(0) = 0.1, t in [0, 1]: the trapezoidal reference solver
(solvers.fdm.solve_logistic) against the closed form, and the discrete adjoint of the same scheme
(adjoint.logistic.LogisticProblem): Taylor tests, recovery of a, forward sensitivity."""

import numpy as np
import pytest
from misfits import GaussianLogLikelihood, MeanSquares

from adjoint import minimize, taylor_test
from adjoint.logistic import LogisticProblem
from solvers.fdm import logistic_exact, solve_logistic
from solvers.fdm.logistic import logistic_steps
from solvers.verify import observed_orders

A_TRUE = 2.0
SIGMA = 0.01
TIMES = np.linspace(0.0, 1.0, 21)
N_STEPS = 1000


def _noisy_data(seed=0):
    """u at the 21 observation times from a = 2 (the adjoint's own scheme, 1000 steps) plus
    Gaussian noise sigma = 0.01."""
    _, clean = solve_logistic(A_TRUE, t_out=TIMES, n_steps=N_STEPS)
    return clean + SIGMA * np.random.default_rng(seed).standard_normal(TIMES.size)


def test_solver_second_order_against_exact(report):
    """a = 2: |u_N - u(1)| with u(1) = 0.1 e^2 / (0.9 + 0.1 e^2) over n_steps 25, 50, 100, 200
    has observed order 2 (within 0.1; measured 2.000); at the default 1000 steps the error at
    t = 1 is below 1e-6 (measured 8.7e-9; max over the 101 default output times 1.2e-8).
    Output times on the step grid are the step values exactly (0.3 and 0.7 with 10 steps,
    although 0.3 is not 3 * 0.1 in floating point); between steps u is linearly interpolated."""
    resolutions = [25, 50, 100, 200]
    exact_final = float(logistic_exact(A_TRUE, 1.0))

    def final_error(n_steps=None):
        return abs(solve_logistic(A_TRUE, t_out=[0.0, 1.0], n_steps=n_steps)[1][-1] - exact_final)

    errors = [final_error(n) for n in resolutions]
    orders = observed_orders(1.0 / np.array(resolutions), errors)
    t, u = solve_logistic(A_TRUE)
    max_error = float(np.max(np.abs(u - logistic_exact(A_TRUE, t))))
    report(f"errors at t=1 {np.array(errors)}, orders {np.round(orders, 4)}; at 1000 steps "
           f"{final_error():.2e} (max over t_out {max_error:.2e})")
    np.testing.assert_allclose(orders, 2.0, atol=0.1)
    assert final_error() < 1e-6 and max_error < 1e-6

    steps = logistic_steps(A_TRUE, 0.1, 1.0, 10)
    _, on_grid = solve_logistic(A_TRUE, t_out=[0.0, 0.3, 0.7, 1.0], n_steps=10)
    assert np.array_equal(on_grid, steps[[0, 3, 7, 10]])
    _, between = solve_logistic(A_TRUE, t_out=[0.0, 0.05, 1.0], n_steps=10)
    assert between[1] == pytest.approx(0.5 * (steps[0] + steps[1]), rel=1e-14)
    assert solve_logistic(0.0, t_out=[0.0, 1.0])[1][-1] == 0.1
    with pytest.raises(ValueError, match="n_steps"):
        solve_logistic(A_TRUE, n_steps=0)
    with pytest.raises(ValueError, match="a must be finite"):
        solve_logistic(np.nan)
    with pytest.raises(ValueError, match="t_out"):
        solve_logistic(A_TRUE, t_out=[0.5, 1.0])


def test_forward_model_is_the_reference_solver():
    """LogisticProblem.predict at a = 1.7 equals solve_logistic at the same (off-grid) times and
    step count to 1e-14."""
    problem = LogisticProblem(TIMES, np.zeros(TIMES.size), misfit=MeanSquares())
    t = np.array([0.0, 0.0123, 0.5, 0.77777, 1.0])
    np.testing.assert_allclose(problem.predict([1.7], t[:, None]),
                               solve_logistic(1.7, t_out=t, n_steps=N_STEPS)[1], rtol=1e-14)


@pytest.mark.parametrize("misfit", [MeanSquares(), GaussianLogLikelihood(SIGMA)],
                         ids=["mean_squares", "gaussian"])
def test_taylor_logistic(misfit, report):
    """dJ/da by the discrete adjoint at a = 1.3, data from a = 2 with noise 0.01 (seed 0),
    for J = mean((p - d)^2) and J = sum((p - d)^2)/(2 sigma^2): gradient-corrected Taylor
    rates 2 (>= 1.9; measured 2.006 to 2.001). The objective is misfit.value(predictions, data),
    so the Gaussian J and its gradient are n/(2 sigma^2) times the mean-square ones."""
    values = _noisy_data()
    problem = LogisticProblem(TIMES[:, None], values, misfit=misfit, n_steps=N_STEPS)
    result = taylor_test(problem.objective, problem.gradient, [1.3])
    report(f"rates {np.round(result.rates_second, 4)}, min {result.min_rate:.4f}")
    assert result.passed(1.9)
    np.testing.assert_allclose(result.rates_first, 1.0, atol=0.05)

    assert problem.objective([1.3]) == misfit.value(problem.predict([1.3], TIMES), values)
    reference = LogisticProblem(TIMES, values, misfit=MeanSquares(), n_steps=N_STEPS)
    scale = (TIMES.size / (2.0 * SIGMA**2)) if isinstance(misfit, GaussianLogLikelihood) else 1.0
    assert problem.objective([1.3]) == pytest.approx(scale * reference.objective([1.3]),
                                                     rel=1e-12)
    np.testing.assert_allclose(problem.gradient([1.3]), scale * reference.gradient([1.3]),
                               rtol=1e-12)


def test_noise_free_recovery(report):
    """Noise-free data from a = 2 (21 times, the model's 1000 steps): L-BFGS-B from a = 1
    recovers a = 2 to 1e-6 (measured error 3e-11)."""
    _, clean = solve_logistic(A_TRUE, t_out=TIMES, n_steps=N_STEPS)
    problem = LogisticProblem(TIMES, clean, misfit=MeanSquares(), n_steps=N_STEPS)
    assert problem.initial_guess().tolist() == [1.0] and problem.bounds() == [(1e-6, None)]
    result = minimize(problem, log=None)
    error = abs(result.m[0] - A_TRUE)
    report(f"a = {result.m[0]:.12f} (error {error:.1e}), {result.iterations} iterations, "
           f"{result.n_forward_solves} forward solves, J = {result.objective:.1e}")
    assert error < 1e-6


def test_sensitivity_matches_central_differences(report):
    """du/da at a = 1.3 by the tangent-linear scheme at the 21 observation times and at
    off-grid times, against (u(a + 1e-4) - u(a - 1e-4)) / 2e-4: relative error < 1e-6
    (measured about 1e-9); also <sensitivity, dJ/dp> equals the adjoint gradient."""
    values = _noisy_data()
    problem = LogisticProblem(TIMES, values, misfit=MeanSquares(), n_steps=N_STEPS)
    points = np.concatenate([TIMES, [0.0123, 0.4567, 0.98765]])
    sensitivity = problem.sensitivity([1.3], points)
    delta = 1e-4
    central = (problem.predict([1.3 + delta], points)
               - problem.predict([1.3 - delta], points)) / (2.0 * delta)
    relative = np.max(np.abs(sensitivity - central)) / np.max(np.abs(central))
    report(f"max relative difference {relative:.2e}")
    assert sensitivity[0] == 0.0
    assert relative < 1e-6
    predicted = problem.predict([1.3], TIMES)
    chain = MeanSquares().gradient(predicted, values) @ problem.sensitivity([1.3], TIMES)
    assert chain == pytest.approx(problem.gradient([1.3])[0], rel=1e-10)
