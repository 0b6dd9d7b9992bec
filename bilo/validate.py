"""`bilo validate RUN_DIR`: re-solve the problem's reference at the inferred parameters and
measure the answer against it, for every method.

* u: the method's solution against the reference solver's at the inferred θ (and f);
* the data: the reference solution's misfit against the observations, and the objective J of
  `bilo.model.objective` with the reference's u (`reference_objective`, the same number for
  every method);
* θ (problems with an adjoint, scalar parameters, Gaussian noise): the gradient of J at θ̂ from
  the adjoint and a Gauss–Newton estimate of the distance from θ̂ to the solver's stationary
  point, from the solver's sensitivities (`gauss_newton_step`); a warning when it exceeds
  `DISTANCE_TOLERANCE` relative to θ̂.

The solve is at the data's resolution and goes through the exchange format
(RUN_DIR/reference_at_inferred.h5), as it would if it ran on another machine. Needs
numpy/scipy/h5py only, not torch. A problem on a mesh with an unknown function (darcy) is
re-solved by its FEM on the data file's mesh (`reference_solution`, dolfinx), and its J takes
the problem's own regulariser on the mesh.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bilo.likelihoods import Gaussian
from bilo.model import Problem, objective
from bilo.results import read_result
from bilo.synthetic import run_reference
from solvers.common import InputError, write_json_atomic
from solvers.exchange import read_solution, write_solution
from solvers.reference import sample

# relative distance to the solver's stationary point above which validation warns
DISTANCE_TOLERANCE = 1e-2


def grid_points(axes: tuple[str, ...], grid: dict[str, np.ndarray]) -> np.ndarray:
    mesh = np.meshgrid(*(grid[a] for a in axes), indexing="ij")
    return np.column_stack([m.reshape(-1) for m in mesh])


def _sampled(x: np.ndarray, values: np.ndarray):
    """A function of x from its samples (linear interpolation), as the solvers take them."""

    def evaluate(points: np.ndarray) -> np.ndarray:
        return np.interp(points, x, values)

    evaluate.description = f"inferred, {len(x)} samples"
    return evaluate


def gauss_newton_step(predict, m: np.ndarray, observed: np.ndarray,
                      relative_step: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """The Gauss–Newton step δ = −(SᵀS)⁻¹Sᵀ(u(m) − d) of the least-squares misfit at m, with
    S = ∂u/∂m at the observations by central differences of `predict(m)` (the solver); m + δ
    estimates the solver's minimiser, |δ| the distance to it. Returns (δ, S)."""
    m = np.asarray(m, dtype=np.float64)
    residual = predict(m) - observed
    columns = []
    for k in range(m.size):
        h = relative_step * max(abs(m[k]), 1.0)
        step = np.zeros_like(m)
        step[k] = h
        columns.append((predict(m + step) - predict(m - step)) / (2 * h))
    sensitivity = np.column_stack(columns)
    delta = -np.linalg.lstsq(sensitivity, residual, rcond=None)[0]
    return delta, sensitivity


def solver_check(problem: Problem, data, params: dict[str, float], log=print) -> dict:
    """The solver's view of θ̂: ∂J/∂θ by the adjoint and the Gauss–Newton distance to the
    solver's stationary point, per parameter; {} when the problem has no adjoint, infers
    functions, or its likelihood is not Gaussian."""
    if not params or problem.functions or not isinstance(problem.likelihood, Gaussian):
        return {}
    model = problem.adjoint(data, w_reg={})
    if model is None:
        return {}
    names = problem.params
    m = np.array([params[k] for k in names])
    points = data.observations.points_in(problem.coords)
    delta, _ = gauss_newton_step(lambda v: model.predict(v, points), m, data.observations.values)
    relative = {k: float(abs(d) / max(abs(v), 1e-12)) for k, d, v in zip(names, delta, m,
                                                                          strict=True)}
    check = {"gradient": dict(zip(names, model.gradient(m).tolist(), strict=True)),
             "distance_to_solver_minimiser": dict(zip(names, np.abs(delta).tolist(),
                                                      strict=True)),
             "relative_distance": relative,
             "solver_minimiser_estimate": dict(zip(names, (m + delta).tolist(), strict=True)),
             "tolerance": DISTANCE_TOLERANCE,
             "within_tolerance": bool(max(relative.values()) <= DISTANCE_TOLERANCE)}
    if not check["within_tolerance"]:
        far = ", ".join(f"{k} {v:.2%}" for k, v in relative.items() if v > DISTANCE_TOLERANCE)
        log(f"warning: the solver puts its minimiser away from the inferred θ ({far} relative, "
            f"Gauss-Newton estimate {check['solver_minimiser_estimate']}); the data loss is "
            "small but θ is not converged")
    return check


def events_check(problem: Problem, reference, events) -> dict:
    """A point-process likelihood's view of the reference at the inferred θ: its objective
    −log L/M (u at the likelihood's `points`, interpolated from the reference solution) and the
    expected events per snapshot ∫u against the observed mean."""
    axis = reference.axes[0]
    likelihood = problem.likelihood
    points = likelihood.points(events.positions_in((axis,)))
    u = sample(reference, points, (axis,))
    _, weights = likelihood.quadrature()
    return {"reference_objective": float(likelihood.value(u, events)),
            "reference_events_per_snapshot": float(weights @ u[:weights.size]),
            "data_events_per_snapshot": len(events.positions) / events.n_snapshots}


def validate(run_dir: str | Path, problem: Problem | None = None, log=print) -> dict:
    from bilo.problems import get_problem

    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        raise InputError(f"{summary_path}: missing; is {run_dir} a finished training run?")
    result = read_result(run_dir / "result.h5")
    summary = json.loads(summary_path.read_text())
    problem = problem or get_problem(result["problem"])
    reference_path = run_dir / "reference_at_inferred.h5"
    if problem.reference.on_mesh:
        return _validate_on_mesh(run_dir, problem, result, summary, reference_path, log)
    functions = {name: _sampled(result["function_x"], values)
                 for name, values in result["functions"].items()}
    # parameters the run kept fixed (e.g. the heat equation's D) and the inferred ones
    params = {**summary.get("params_fixed", {}), **result["params"]}
    write_solution(reference_path, run_reference(problem, params, functions,
                                                 **problem.reference.resolution(result["grid"])))
    reference = read_solution(reference_path)
    u_ref = sample(reference, grid_points(result["axes"], result["grid"]),
                   result["axes"]).reshape(result["u_nn"].shape)
    error = float(np.linalg.norm(result["u_nn"] - u_ref) / np.linalg.norm(u_ref))
    summary["u_rel_l2_vs_reference"] = error
    checks = {who: problem.solution_checks(result["grid"], u, params)
              for who, u in (("method", result["u_nn"]), ("reference", u_ref))}
    if checks["method"]:
        summary["solution_checks"] = checks
    data_path = Path(summary.get("data") or "")
    if data_path.is_file() and problem.likelihood.data == "events":
        data = read_solution(data_path)
        summary.update(events_check(problem, reference, data.events))
        summary["reference_rel_l2_vs_data"] = None
    elif data_path.is_file():
        data = read_solution(data_path)
        obs = data.observations
        predicted = sample(reference, obs.points_in(reference.axes), reference.axes)
        summary["reference_rel_l2_vs_data"] = float(np.linalg.norm(predicted - obs.values)
                                                    / np.linalg.norm(obs.values))
        samples = {name: (result["function_x"], values)
                   for name, values in result["functions"].items()}
        summary["reference_objective"] = objective(problem, predicted, obs.values, params,
                                                   samples, summary.get("w_reg", {}))
        if "posterior" not in summary:  # a posterior mean is no minimiser of J
            summary["solver_check"] = solver_check(problem, data, result["params"], log=log)
    else:
        log(f"note: {data_path}: not found; reference-vs-data misfit not computed")
        summary["reference_rel_l2_vs_data"] = None
    misfit = summary["reference_rel_l2_vs_data"]
    summary["reference"] = {"file": reference_path.name, **reference.provenance}
    write_json_atomic(summary_path, summary)
    plot_solution(run_dir / "solution.png", result, u_ref, summary,
                  events=data.events if problem.likelihood.data == "events" and
                  data_path.is_file() else None)
    shown = ", ".join(f"{k}={v:.5g}" for k, v in result["params"].items())
    errors = ", ".join(f"{k} {v:.2e}" for k, v in summary.get("rel_err", {}).items())
    log(f"{result['method']} on {result['problem']}: {shown}"
        + (f" (rel. err {errors})" if errors else "")
        + f"; |u - u_ref| / |u_ref| = {error:.3e} against {reference_path.name} "
          f"({reference.provenance['solver']}, {reference.provenance['resolution']})"
        + (f"; the reference misses the data by {misfit:.3e} (rel. L2)"
           if misfit is not None else "")
        + (f"; ∫u = {summary['reference_events_per_snapshot']:.4g} events per snapshot "
           f"expected, {summary['data_events_per_snapshot']:.4g} seen"
           if "data_events_per_snapshot" in summary else "")
        + "".join(f"; {name} {value:.5g} (reference {checks['reference'][name]:.5g})"
                  for name, value in checks["method"].items()))
    return summary


def _validate_on_mesh(run_dir: Path, problem: Problem, result: dict, summary: dict,
                      reference_path: Path, log) -> dict:
    """`validate` for a function on a mesh: the FEM at the inferred function on the data's
    mesh, u against it at the vertices, its misfit and J against the data's observations."""
    from meshes.interpolation import P1Interpolator

    data_path = Path(summary.get("data") or "")
    if not data_path.is_file():
        raise InputError(f"{run_dir}: problem '{problem.name}' is re-solved on the data file's "
                         f"mesh, and the data file {data_path} is not there")
    data = read_solution(data_path)
    solution = problem.reference_solution(data, result["functions"])
    write_solution(reference_path, solution.to_solution_file(
        problem.name, data.params, {"inferred_from": str(run_dir)}))
    reference = read_solution(reference_path)
    error = float(np.linalg.norm(result["u_nn"] - reference.u) / np.linalg.norm(reference.u))
    obs = data.observations
    predicted = P1Interpolator(reference.mesh.vertices, reference.mesh.cells)(
        reference.u, obs.points_in(("x", "y")), outside=np.nan)
    w_reg = summary.get("w_reg", {})
    regularisation = sum(w_reg[name] * problem.regularisation(
        reference.mesh, values, summary.get("regulariser"), summary.get("tv_eps"))
        for name, values in result["functions"].items())
    summary.update({
        "u_rel_l2_vs_reference": error,
        "reference_rel_l2_vs_data": float(np.linalg.norm(predicted - obs.values)
                                          / np.linalg.norm(obs.values)),
        "reference_objective": float(problem.likelihood.value(predicted, obs.values, {}))
        + float(regularisation),
        "reference_rel_l2_vs_truth": float(np.linalg.norm(reference.u - data.u)
                                           / np.linalg.norm(data.u)),
        "reference": {"file": reference_path.name, **reference.provenance}})
    write_json_atomic(run_dir / "summary.json", summary)
    plot_mesh_solution(run_dir / "solution.png", reference, result["u_nn"], data.u, summary)
    log(f"{result['method']} on {result['problem']}: |u - u_ref| / |u_ref| = {error:.3e} "
        f"against {reference_path.name} ({reference.provenance['solver']}, "
        f"{reference.provenance['resolution']}); the reference misses the data by "
        f"{summary['reference_rel_l2_vs_data']:.3e} (rel. L2), J = "
        f"{summary['reference_objective']:.6e}")
    return summary


def plot_mesh_solution(path: Path, reference, u_method: np.ndarray, u_true: np.ndarray,
                       summary: dict) -> None:
    """The FEM solution at the inferred function, the method's u against it, and the FEM's
    error against the solution that made the data, on the mesh."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mesh = reference.mesh
    panels = [("u_FEM at the inferred function", reference.u),
              (f"u_{summary['method']} - u_FEM (rel. L2 "
               f"{summary['u_rel_l2_vs_reference']:.1e})", u_method - reference.u),
              (f"u_FEM - u_true (rel. L2 {summary['reference_rel_l2_vs_truth']:.1e})",
               reference.u - u_true)]
    fig, axes = plt.subplots(1, 3, figsize=(11.5, 3.5))
    for ax, (title, values) in zip(axes, panels, strict=True):
        image = ax.tripcolor(mesh.vertices[:, 0], mesh.vertices[:, 1], mesh.cells, values,
                             shading="gouraud", cmap="viridis" if ax is axes[0] else "RdBu_r")
        fig.colorbar(image, ax=ax, shrink=0.8)
        ax.set(title=title, aspect="equal")
        ax.title.set_fontsize(9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_solution(path: Path, result: dict, u_ref: np.ndarray, summary: dict,
                  events=None) -> None:
    """u against the reference; with events (a point process, whose intensity u is), their
    histogram per snapshot and unit length beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes, grid, u_nn = result["axes"], result["grid"], result["u_nn"]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    if len(axes) == 2:  # (t, x): curves at five times
        x, t = grid["x"], grid["t"]
        for i, colour in zip(np.linspace(0, len(t) - 1, 5).astype(int),
                             plt.cm.viridis(np.linspace(0, 0.9, 5)), strict=True):
            ax.plot(x, u_ref[i], color=colour, lw=2.5, alpha=0.45)
            ax.plot(x, u_nn[i], "--", color=colour, lw=1.2, label=f"t = {t[i]:.2f}")
    else:
        ax.plot(grid[axes[0]], u_ref, lw=2.5, alpha=0.45, label="reference")
        ax.plot(grid[axes[0]], u_nn, "--", lw=1.2, label=result["method"])
        if events is not None:
            counts, edges = np.histogram(events.positions[:, 0], bins=50, range=(0.0, 1.0))
            ax.stairs(counts / (events.n_snapshots * np.diff(edges)), edges, color="0.5",
                      lw=0.8, label=f"events per snapshot and unit length "
                                    f"(M = {events.n_snapshots})")
    ax.set(xlabel=axes[-1], ylabel="u",
           title=f"{result['method']} on {result['problem']}: u (dashed)"
           f" vs reference at inferred θ (thick)\nrel. L2 {summary['u_rel_l2_vs_reference']:.2e}")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
