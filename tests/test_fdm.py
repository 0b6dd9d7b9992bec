"""Convergence tests of the FDM/FVM reference solvers against exact or manufactured solutions."""

import numpy as np
import pytest

from solvers.fdm import (
    burgers_godunov_flux,
    fisher_kpp_initial,
    singular_forcing_exact,
    solve_burgers,
    solve_fisher_kpp,
    solve_heat,
    solve_reaction_diffusion,
    solve_singular_forcing,
    solve_two_point,
    solve_variable_diffusion,
    two_point_exact,
)
from solvers.verify import convergence_study, grid_norm, observed_orders

SECOND_ORDER = 1.9
FIRST_ORDER = 0.8


def hat(x):
    """Hat function peaking at x = 1/2 with value 1."""
    return 1.0 - np.abs(2.0 * x - 1.0)


def heat_hat_exact(x, t, D, n_modes=2000):
    """Heat solution from the hat initial data: sum_k b_k exp(-D k^2 pi^2 t) sin(k pi x),
    b_k = 8 sin(k pi/2) / (k pi)^2."""
    k = np.arange(1, n_modes + 1)
    coefficients = 8.0 * np.sin(k * np.pi / 2.0) / (k * np.pi) ** 2
    return (coefficients * np.exp(-D * (k * np.pi) ** 2 * t)) @ np.sin(np.pi * np.outer(k, x))


def burgers_characteristics_exact(f, df, x, t, a):
    """Solve u = f(x - a*u*t) by Newton's method per point (valid before the breaking time)."""
    u = f(x)
    for _ in range(50):
        foot = x - a * u * t
        u = u - (u - f(foot)) / (1.0 + a * t * df(foot))
    return u


def test_observed_orders_recovers_synthetic_power_law(report):
    """Synthetic data e = 3*h^p with p = 2 then p = 1: observed_orders returns exactly 2 and 1."""
    hs = np.array([0.1, 0.05, 0.025])
    errors = np.array([3 * 0.1**2, 3 * 0.05**2, 3 * 0.05**2 * 0.5])
    orders = observed_orders(hs, errors)
    report(f"synthetic orders {orders}")
    np.testing.assert_allclose(orders, [2.0, 1.0], rtol=1e-12)
    with pytest.raises(ValueError, match="same length"):
        observed_orders(hs, errors[:2])
    with pytest.raises(ValueError, match="positive"):
        observed_orders(hs, [1e-2, 0.0, 1e-3])


def test_convergence_study_on_synthetic_error(report):
    """solve(n) = exact + h^2 sin(pi x) on n nodes: the l2 error is exactly h^2/sqrt(2) and the
    max error h^2, so both report order 2 (to 1e-8); the l1 error h^2 * h*sum|sin| -> 2h^2/pi
    gives order 2 up to O(h^2) (asserted within 0.01).
    """

    def solve(n):
        grid = np.linspace(0.0, 1.0, n)
        return grid, np.cos(grid) + (grid[1] - grid[0]) ** 2 * np.sin(np.pi * grid)

    resolutions = [11, 21, 41]
    tolerances = {"l2": 1e-8, "max": 1e-8, "l1": 1e-2}
    for norm, tolerance in tolerances.items():
        study = convergence_study(solve, np.cos, resolutions, norm=norm)
        report(f"{norm}: {study}")
        np.testing.assert_allclose(study.orders, 2.0, atol=tolerance)
        assert study.min_order == pytest.approx(np.min(study.orders))
        assert str(study).startswith("h=0.1,0.05,0.025 err=")
    l2_errors = convergence_study(solve, np.cos, resolutions).errors
    np.testing.assert_allclose(l2_errors, np.array([0.1, 0.05, 0.025]) ** 2 / np.sqrt(2.0))
    assert grid_norm([3.0, 4.0], h=1.0) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="norm"):
        convergence_study(solve, np.cos, [11, 21], norm="l3")


def test_heat_sine_mode_second_order(report):
    """u_t = D u_xx, u(x,0) = sin(pi x), D = 0.5: exact exp(-D pi^2 t) sin(pi x) at t = 1.

    nx = 41..321 with dt = h (CN + Rannacher); expected L2 order 2 (asserted >= 1.9).
    """
    D = 0.5

    def solve(nx):
        x, _, u = solve_heat(lambda x: np.sin(np.pi * x), D, nx=nx, t_out=[0, 1], n_steps=nx - 1)
        return x, u[-1]

    study = convergence_study(
        solve, lambda x: np.exp(-D * np.pi**2) * np.sin(np.pi * x), [41, 81, 161, 321]
    )
    report(f"sine mode: {study}")
    assert study.min_order >= SECOND_ORDER


@pytest.mark.parametrize("t_index, t", [(1, 0.1), (2, 1.0)], ids=["t0.1", "t1"])
def test_heat_hat_second_order_with_rannacher_startup(report, t_index, t):
    """u_t = u_xx (D = 1), u(x,0) = hat: exact Fourier series (2000 modes) at t = 0.1 and t = 1.

    nx = 51..401, dt = h, so D dt/h^2 = 1/h is large: plain CN keeps the kink's high modes
    (order ~1.2 here); with the four implicit-Euler start-up steps the L2 order is 2 (>= 1.9).
    """
    D = 1.0

    def solve(nx):
        x, _, u = solve_heat(hat, D, nx=nx, t_out=[0, 0.1, 1], n_steps=nx - 1)
        return x, u[t_index]

    study = convergence_study(solve, lambda x: heat_hat_exact(x, t, D), [51, 101, 201, 401])
    report(f"hat IC at t={t}: {study}")
    assert study.min_order >= SECOND_ORDER


def test_reaction_diffusion_logistic_second_order_in_time(report):
    """u_t = 0*u_xx + rho u(1-u), rho = 2: every node follows the logistic ODE, exact
    u(1) = u0 e^rho / (1 - u0 + u0 e^rho). Newton-CN with n_steps = 10..80 at fixed nx = 11;
    expected max-norm order 2 in dt (asserted >= 1.9).
    """
    rho = 2.0
    x = np.linspace(0.0, 1.0, 11)
    u0 = fisher_kpp_initial(x)
    exact = u0 * np.exp(rho) / (1.0 - u0 + u0 * np.exp(rho))
    step_counts = np.array([10, 20, 40, 80])
    errors = []
    for n_steps in step_counts:
        u = solve_reaction_diffusion(
            u0,
            0.0,
            [0.0, 1.0],
            reaction=lambda v: rho * v * (1.0 - v),
            reaction_du=lambda v: rho * (1.0 - 2.0 * v),
            n_steps=n_steps,
        )
        errors.append(np.max(np.abs(u[-1] - exact)))
    orders = observed_orders(1.0 / step_counts, errors)
    report(f"logistic dt-orders {np.round(orders, 3)} errors {np.array(errors)}")
    assert np.min(orders) >= SECOND_ORDER


def test_fisher_kpp_self_convergence(report):
    """u_t = 0.01 D u_xx + rho u(1-u), D = rho = 2, u(x,0) = 0.5 sin^2(pi x), at t = 1.

    Self-convergence (no exact solution): nx = 51, 101, 201, 401 with dt = h; the L2
    difference of each solution and the next finer one (on the coarse nodes) must shrink
    by 4 per level, i.e. observed order 2 (asserted >= 1.9).
    """
    resolutions = [51, 101, 201, 401]
    finals, hs = [], []
    for nx in resolutions:
        x, t, u = solve_fisher_kpp(2.0, 2.0, nx=nx, t_out=[0.0, 0.5, 1.0], n_steps=nx - 1)
        finals.append(u[-1])
        hs.append(x[1] - x[0])
    differences = [
        grid_norm(coarse - fine[::2], h)
        for coarse, fine, h in zip(finals[:-1], finals[1:], hs[:-1], strict=True)
    ]
    orders = observed_orders(hs[:-1], differences)
    report(f"Fisher-KPP self-convergence: differences {np.array(differences)} orders {orders}")
    assert np.min(orders) >= SECOND_ORDER


def test_fisher_kpp_default_output_grid():
    """Default call: 101 output times on [0,1], nx = 401, u(t=0) = 0.5 sin^2(pi x), 0 <= u <= 1."""
    x, t, u = solve_fisher_kpp(1.0, 1.0)
    assert u.shape == (101, 401)
    np.testing.assert_allclose(t, np.linspace(0.0, 1.0, 101))
    np.testing.assert_allclose(u[0], fisher_kpp_initial(x), atol=1e-15)
    assert u.min() >= 0.0 and u.max() <= 1.0


@pytest.mark.parametrize("d_input", ["callable", "nodes"])
def test_variable_diffusion_manufactured_second_order(report, d_input):
    """-(D u')' = f, D = 1 + 0.5 sin(pi x), manufactured u = sin(pi x), u(0) = u(1) = 0,
    f = pi^2 D sin(pi x) - 0.5 pi^2 cos^2(pi x). D given as a callable (midpoints) or as node
    values (midpoint averages); nx = 21..161, expected L2 order 2 (asserted >= 1.9).
    """

    def diffusivity(x):
        return 1.0 + 0.5 * np.sin(np.pi * x)

    def source(x):
        return (
            np.pi**2 * diffusivity(x) * np.sin(np.pi * x) - 0.5 * np.pi**2 * np.cos(np.pi * x) ** 2
        )

    def solve(nx):
        nodes = np.linspace(0.0, 1.0, nx)
        D = diffusivity if d_input == "callable" else diffusivity(nodes)
        return solve_variable_diffusion(D, source, nx=nx)

    study = convergence_study(solve, lambda x: np.sin(np.pi * x), [21, 41, 81, 161])
    report(f"D as {d_input}: {study}")
    assert study.min_order >= SECOND_ORDER


def test_two_point_quadratic_is_exact(report):
    """y'' = 2, y(0) = 0.3, y(1) = -1.2: exact quadratic two_point_exact; central differences
    are exact for quadratics, so the nodal error is round-off (asserted < 1e-10 at nx = 1001).
    """
    x, y = solve_two_point(0.3, -1.2)
    error = np.max(np.abs(y - two_point_exact(x, 0.3, -1.2)))
    report(f"max error {error:.2e}")
    assert error < 1e-10


def test_two_point_sine_forcing_second_order(report):
    """y'' = -pi^2 sin(pi x), y(0) = 1, y(1) = 2: exact y = sin(pi x) + 1 + x.
    nx = 21..161, expected max-norm order 2 (asserted >= 1.9).
    """
    study = convergence_study(
        lambda nx: solve_two_point(
            1.0, 2.0, nx=nx, forcing=lambda x: -(np.pi**2) * np.sin(np.pi * x)
        ),
        lambda x: np.sin(np.pi * x) + 1.0 + x,
        [21, 41, 81, 161],
        norm="max",
    )
    report(f"sine forcing: {study}")
    assert study.min_order >= SECOND_ORDER


def test_burgers_godunov_flux_riemann_cases():
    """F(u) = a u^2/2, a = 0.2: shock right-moving -> F(u_L), left-moving -> F(u_R), stationary
    shock -> F(u_L) = F(u_R), transonic rarefaction -> 0, constant state -> F(u)."""
    u_left = np.array([1.0, -1.0, 1.0, -1.0, 0.5, 2.0])
    u_right = np.array([0.0, -2.0, -1.0, 1.0, 0.5, 3.0])
    expected = 0.1 * np.array([1.0, 4.0, 1.0, 0.0, 0.25, 4.0])
    np.testing.assert_allclose(burgers_godunov_flux(u_left, u_right, 0.2), expected)


def test_burgers_riemann_shock_and_rarefaction(report):
    """u_t + a u u_x = 0, a = 0.2, u(x,0) = 1 on [0.2, 0.5), 0 elsewhere, t = 1, 1000 cells.

    Exact: shock from 0.5 at the Rankine–Hugoniot speed a(1+0)/2 = 0.1, so at x = 0.6 (the
    half-value crossing must be within 2 cells); rarefaction fan u = (x - 0.2)/(a t) on
    [0.2, 0.4] (asserted within 0.02 on [0.22, 0.38], away from the smeared fan edges).
    """
    a = 0.2

    def step(x):
        return np.where((x >= 0.2) & (x < 0.5), 1.0, 0.0)

    x, t, u = solve_burgers(step, a=a, n_cells=1000)
    final = u[-1]
    h = x[1] - x[0]
    crossing = np.nonzero((final[:-1] >= 0.5) & (final[1:] < 0.5))[0][-1]
    # Linear interpolation of the half-value crossing between the two bracketing cells.
    shock = x[crossing] + h * (final[crossing] - 0.5) / (final[crossing] - final[crossing + 1])
    fan = (x > 0.22) & (x < 0.38)
    fan_error = np.max(np.abs(final[fan] - (x[fan] - 0.2) / (a * t[-1])))
    report(
        f"shock at {shock:.5f} (exact 0.6, {abs(shock - 0.6) / h:.2f} cells); "
        f"fan max error {fan_error:.4f}"
    )
    assert abs(shock - 0.6) <= 2 * h
    assert fan_error < 0.02


def test_burgers_smooth_first_order(report):
    """u_t + a u u_x = 0, a = 0.2, u(x,0) = 0.5 sin(pi x), t = 1 < breaking time
    1/(a*0.5*pi) = 6.4: exact from the characteristics u = f(x - a u t). n_cells = 200..1600;
    expected L1 order 1 for first-order Godunov (asserted >= 0.8).
    """
    a = 0.2

    def initial(x):
        return 0.5 * np.sin(np.pi * x)

    def solve(n_cells):
        x, _, u = solve_burgers(initial, a=a, n_cells=n_cells, t_out=[0.0, 1.0])
        return x, u[-1]

    def exact(x):
        return burgers_characteristics_exact(
            initial, lambda x: 0.5 * np.pi * np.cos(np.pi * x), x, 1.0, a
        )

    study = convergence_study(solve, exact, [200, 400, 800, 1600], norm="l1")
    report(f"smooth Burgers: {study}")
    assert study.min_order >= FIRST_ORDER


def test_burgers_reference_reports_entropy_boundary_traces(report):
    """u_t + 0.2 u u_x = 0 with u(x,0) = -1 on (0.05, 0.3), +1 on (0.7, 0.95), 0 elsewhere:
    the two shocks (speed ∓0.1) leave the domain at t = 0.5 and the fans behind them arrive
    only at t = 1.5, so for 0.6 <= t <= 1 the exact traces are u(0, t) = -1 and u(1, t) = +1
    (outflow keeps the interior value; the datum 0 applies only to inflow). `bilo solve
    burgers` (1000 cells) reports them within 1e-6, and 0 at both ends at t = 0."""
    from bilo.synthetic import run_reference

    def initial(x):
        return np.where((0.7 < x) & (x < 0.95), 1.0, 0.0) - np.where((0.05 < x) & (x < 0.3),
                                                                      1.0, 0.0)

    reference = run_reference("burgers", {"a": 0.2}, {"f": initial})
    late = reference.grid["t"] >= 0.6
    traces = reference.u[:, [0, -1]]
    error = np.abs(traces[late] - [-1.0, 1.0]).max()
    report(f"traces at t = 1: {traces[-1]}; max error for t >= 0.6: {error:.1e}")
    assert error < 1e-6
    np.testing.assert_array_equal(traces[0], [0.0, 0.0])


SOURCE_ON_NODE, SOURCE_OFF_NODE = 0.5, 1.0 / 3.0
SOURCE_LOCATIONS = pytest.mark.parametrize(
    "z", [SOURCE_ON_NODE, SOURCE_OFF_NODE], ids=["z_on_node", "z_off_node"]
)


@SOURCE_LOCATIONS
@pytest.mark.parametrize("mu", [1.0, 100.0], ids=["mu1", "mu100"])
def test_singular_forcing_second_order(report, z, mu):
    """u'' - mu u + lam delta(x - z) = 0, lam = 2, u(0) = u(1) = 0: exact Green's function
    singular_forcing_exact. z = 0.5 lies on every grid (nx = 101..801), z = 1/3 on none;
    expected max-norm order 2 (asserted >= 1.9).
    """
    lam = 2.0
    study = convergence_study(
        lambda nx: solve_singular_forcing(lam, mu, z=z, nx=nx),
        lambda x: singular_forcing_exact(x, lam, mu, z),
        [101, 201, 401, 801],
        norm="max",
    )
    report(f"z={z:.4f} mu={mu}: {study}")
    assert study.min_order >= SECOND_ORDER


@SOURCE_LOCATIONS
def test_singular_forcing_exact_at_nodes_without_reaction(report, z):
    """u'' + lam delta(x - z) = 0 (mu = 0), lam = -1.5: exact u = lam min(x,z)(1 - max(x,z)).
    The hat-weighted delta makes the nodal values exact for any z (asserted < 1e-12, nx = 101).
    """
    x, u = solve_singular_forcing(-1.5, 0.0, z=z, nx=101)
    error = np.max(np.abs(u - singular_forcing_exact(x, -1.5, 0.0, z)))
    report(f"z={z:.4f}: max error {error:.2e}")
    assert error < 1e-12


def test_singular_forcing_exact_matches_sinh_form():
    """Closed form for mu = 3, z = 0.43 equals sinh(k x_<) sinh(k(1 - x_>)) / (k sinh k),
    k = sqrt(3) (to 1e-15); for mu = 1e6 it stays finite with peak lam/(2 sqrt(mu)) = 5e-4."""
    k, z = np.sqrt(3.0), 0.43
    x = np.linspace(0.0, 1.0, 17)
    sinh_form = (
        np.sinh(k * np.minimum(x, z)) * np.sinh(k * (1.0 - np.maximum(x, z))) / (k * np.sinh(k))
    )
    np.testing.assert_allclose(singular_forcing_exact(x, 1.0, 3.0, z), sinh_form, atol=1e-15)
    assert singular_forcing_exact(0.5, 1.0, 1e6) == pytest.approx(5e-4)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: solve_heat(hat, -1.0, nx=11), "diffusivity"),
        (lambda: solve_heat(hat, 1.0, nx=2), "nx"),
        (lambda: solve_heat(hat, 1.0, nx=11, t_out=[0.0, 0.5, 0.5]), "increasing"),
        (lambda: solve_heat(hat, 1.0, nx=11, t_out=[0.1, 0.5]), "start at 0"),
        (lambda: solve_heat(hat, 1.0, nx=11, t_out=[0.0, 0.5, 1.0], n_steps=3), "multiple"),
        (lambda: solve_heat(hat, 1.0, nx=11, t_out=[0.0, 0.1234567891, 1.0]), "pass n_steps"),
        (lambda: solve_heat(np.ones(5), 1.0, nx=11), "11 values"),
        (lambda: solve_heat(lambda x: np.full_like(x, np.inf), 1.0, nx=11), "finite"),
        (lambda: solve_reaction_diffusion(np.ones(5), 1.0, [0, 1], reaction=np.sin), "together"),
        (lambda: solve_fisher_kpp(1.0, np.nan), "rho"),
        (lambda: solve_variable_diffusion(lambda x: x - 0.5, 1.0, nx=11), "positive"),
        (lambda: solve_burgers(hat, a=-0.2), "a must be positive"),
        (lambda: solve_burgers(hat, cfl=1.5), "cfl"),
        (lambda: burgers_godunov_flux(1.0, 0.0, 0.0), "a must be positive"),
        (lambda: solve_singular_forcing(1.0, -1.0), "mu"),
        (lambda: solve_singular_forcing(1.0, 1.0, z=1.0), "z"),
    ],
)
def test_invalid_parameters_raise(call, message):
    """Impossible parameters raise ValueError naming the offending input."""
    with pytest.raises(ValueError, match=message):
        call()
