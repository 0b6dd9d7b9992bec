"""What a run of any method leaves behind: result.h5, summary.json and figures.

`result.h5` (kind `result`, written atomically through `solvers.exchange.atomic_h5`):
  /@problem, /@method               names
  /params                           attributes: the inferred θ
  /params_true                      attributes: θ that made the synthetic data (when known)
  /history/step (n,)                steps (adjoint: iterations) where losses and θ were recorded
  /history/wall (n,)                wall seconds since the run started (pre-training included)
  /history/theta (n, p)             θ trajectory, columns in /history/theta@names
  /history/<loss> (n,)              unweighted losses (res, rgrad, dat, u0), NaN in steps
                                    where a term is not used (dat in pre-training, u0 after)
  /grid/<axis>, /u_nn               the method's u on the data's reference grid, axes in @axes
  /mesh/vertices, /mesh/cells       instead of a grid axis when the data live on a mesh
  /functions/x (1001,)              points where the inferred functions are stored (data on a
                                    mesh: the vertices (n, 2), a function per vertex)
  /functions/<name>, <name>_true    inferred unknown function and its truth (when known)
  /wall_s                           attributes: seconds per phase
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bilo.model import Problem
from solvers.common import write_json_atomic
from solvers.exchange import SolutionFile, atomic_h5, open_h5

TRACKS = ("step", "theta", "wall")  # history entries that are not losses
FUNCTION_POINTS = np.linspace(0.0, 1.0, 1001)


@dataclass
class Result:
    """What every method returns: the answer, how it got there, and what it cost.

    `u` is the method's own solution on the data file's reference grid (the network's, or the
    adjoint's solver); `history` holds `step`, `wall`, `theta` (n, p) and one array per
    recorded loss; `steps` and `wall_s` are split by phase; `predict` gives the method's u at
    numpy points (what applications evaluate), `extra` the method's own summary fields."""

    method: str
    problem: Problem
    data: SolutionFile
    data_path: str | None
    params: dict[str, float]
    functions: dict[str, np.ndarray]  # at function_x
    u: np.ndarray
    history: dict[str, np.ndarray]
    steps: dict[str, int]
    wall_s: dict[str, float]
    device: str
    w_reg: dict[str, float]
    constants: dict[str, float]
    options: dict
    predict: Callable[[np.ndarray], np.ndarray] | None = None
    extra: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    # where the functions are given: the method's own nodes (the adjoint's grid) or 1001 points
    function_x: np.ndarray = field(default_factory=lambda: FUNCTION_POINTS)


def function_points(problem: Problem, data: SolutionFile) -> np.ndarray:
    """Where a run reports its unknown functions: at the mesh's vertices (k, 2) for data on a
    mesh, else at FUNCTION_POINTS in x."""
    if data.mesh is not None:
        return data.mesh.vertices[:, :len(problem.function_coords)]
    return FUNCTION_POINTS


def reference_points(problem: Problem, data: SolutionFile) -> np.ndarray:
    """All nodes of the data file's grid (or mesh vertices × times), as rows of coordinates in
    the problem's order, in the order of `data.u`'s entries."""
    axes = [np.arange(data.axis_length("vertex")) if a == "vertex" else data.grid[a]
            for a in data.axes]
    mesh = np.meshgrid(*axes, indexing="ij")
    by_axis = {a: m.reshape(-1) for a, m in zip(data.axes, mesh, strict=True)}
    if "vertex" in by_axis:
        vertices = data.mesh.vertices[by_axis.pop("vertex").astype(int)]
        by_axis.update({name: vertices[:, i] for i, name in enumerate(("x", "y", "z")[
            :vertices.shape[1]])})
    return np.column_stack([by_axis[c] for c in problem.coords])


def relative_errors(params: dict[str, float], truth: dict[str, float]) -> dict[str, float]:
    """|θ − θ*| / |θ*| per parameter; the absolute error where θ* = 0."""
    return {k: abs(params[k] - truth[k]) / (abs(truth[k]) if truth[k] != 0 else 1.0)
            for k in params if k in truth}


def relative_l2(values: np.ndarray, truth: np.ndarray) -> float:
    norm = float(np.linalg.norm(truth))
    return float(np.linalg.norm(np.asarray(values) - truth)) / (norm if norm > 0 else 1.0)


def write_result(out: str | os.PathLike, result: Result) -> dict:
    """Write result.h5, summary.json and figures for a finished run of any method; return the
    summary (also kept in `result.summary`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    problem, data = result.problem, result.data
    truth = {k: float(data.params[k]) for k in problem.params if k in data.params}
    on_mesh = data.mesh is not None  # functions per vertex, compared there
    if on_mesh:
        truth_functions = {name: data.inputs[name] for name in result.functions
                           if name in data.inputs}
        initial_functions = {name: spec.initial(function_points(problem, data))
                             for name, spec in problem.functions.items()}
        inferred = dict(result.functions)
    else:
        truth_functions = {name: np.interp(FUNCTION_POINTS, data.grid["x"], data.inputs[name])
                           for name in result.functions if name in data.inputs}
        initial_functions = {name: spec.initial(FUNCTION_POINTS)
                             for name, spec in problem.functions.items()}
        inferred = {name: np.interp(FUNCTION_POINTS, result.function_x, values)
                    for name, values in result.functions.items()}
    # problem-specific scores of a function against its truth (darcy: classification)
    scores = {when: {k: v for name, values in truth_functions.items()
                     for k, v in problem.function_metrics(name, functions[name], values,
                                                          data.params).items()}
              for when, functions in (("function_metrics", inferred),
                                      ("function_metrics_initial", initial_functions))}
    scores = {when: values for when, values in scores.items() if values}
    history = result.history
    with atomic_h5(out / "result.h5", kind="result") as h5:
        h5.attrs["problem"] = problem.name
        h5.attrs["method"] = result.method
        h5.attrs["data"] = str(result.data_path or "")
        h5.create_group("params").attrs.update(result.params)
        h5.create_group("params_true").attrs.update(truth)
        group = h5.create_group("history")
        for key, values in history.items():
            group.create_dataset(key, data=values)
        group["theta"].attrs["names"] = ",".join(problem.params)
        for axis in data.axes:
            if axis == "vertex":
                h5.create_dataset("mesh/vertices", data=data.mesh.vertices)
                h5.create_dataset("mesh/cells", data=data.mesh.cells)
            else:
                h5.create_dataset(f"grid/{axis}", data=data.grid[axis])
        h5.create_dataset("u_nn", data=result.u, compression="gzip").attrs["axes"] = ",".join(
            data.axes)
        h5.create_group("wall_s").attrs.update(result.wall_s)
        if result.functions:
            h5.create_dataset("functions/x", data=result.function_x)
            for name, values in result.functions.items():
                h5.create_dataset(f"functions/{name}", data=values)
            for name, values in truth_functions.items():
                h5.create_dataset(f"functions/{name}_true", data=values if on_mesh else np.interp(
                    result.function_x, FUNCTION_POINTS, values))

    final = {k: float(v[~np.isnan(v)][-1]) for k, v in history.items()
             if k not in TRACKS and not np.all(np.isnan(v))}
    obs = data.observations
    summary = {
        "method": result.method,
        "problem": problem.name,
        "params": result.params,
        "params_true": truth,
        "params_initial": {k: result.options.get("theta0", {}).get(k, v)
                           for k, v in problem.initial_guess.items()},
        "params_fixed": result.constants,
        # per parameter, and for each unknown function its relative L2 error on 1001 points
        # (on a mesh: over the vertex values)
        "rel_err": relative_errors(result.params, truth) | {
            name: relative_l2(inferred[name], values)
            for name, values in truth_functions.items()},
        **({"rel_err_initial": {name: relative_l2(initial_functions[name], values)
                                for name, values in truth_functions.items()}}
           if truth_functions else {}),
        **scores,
        "u_rel_l2_vs_reference": None,
        "u_rel_l2_vs_truth": relative_l2(result.u, data.u),
        **({"w_reg": result.w_reg} if result.functions else {}),
        # totals, as every method writes them; the split by phase beside them
        "steps": int(sum(result.steps.values())),
        "steps_by_phase": result.steps,
        "wall_s": round(sum(result.wall_s.values()), 4),
        "wall_s_by_phase": {k: round(v, 4) for k, v in result.wall_s.items()},
        "device": result.device,
        "final_losses": final,
        "data": str(result.data_path) if result.data_path else None,
        "likelihood": problem.likelihood.describe(),
        "noise_sigma": obs.sigma if obs is not None else None,
        "n_observations": len(obs.values) if obs is not None else 0,
        **({"n_events": len(data.events.positions), "n_snapshots": data.events.n_snapshots}
           if data.events is not None else {}),
        "options": result.options,
        **result.extra,
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomic(out / "summary.json", summary)
    plot_training(out / "training.png", history, problem.params, truth, result.method)
    if result.functions and on_mesh:
        plot_mesh_functions(out / "functions.png", data.mesh, inferred, truth_functions,
                            initial_functions, summary)
    elif result.functions:
        plot_functions(out / "functions.png", inferred, truth_functions,
                       initial_functions, summary)
    result.summary = summary
    return summary


def read_result(path: str | os.PathLike) -> dict:
    """The arrays and attributes of a result.h5 (validated by `open_h5`)."""
    with open_h5(path, kind="result") as h5:
        axes = tuple(str(h5["u_nn"].attrs["axes"]).split(","))
        functions = ({name: h5[f"functions/{name}"][()] for name in h5["functions"]
                      if name != "x" and not name.endswith("_true")} if "functions" in h5 else {})
        return {"problem": str(h5.attrs["problem"]), "method": str(h5.attrs["method"]),
                "params": {k: float(v) for k, v in h5["params"].attrs.items()},
                "axes": axes, "grid": {a: h5[f"grid/{a}"][()] for a in axes if a != "vertex"},
                "u_nn": h5["u_nn"][()], "functions": functions,
                "function_x": h5["functions/x"][()] if functions else None}


def plot_functions(path: Path, inferred, truth, initial, summary) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(inferred), figsize=(6 * len(inferred), 4), squeeze=False)
    for ax, (name, values) in zip(axes[0], inferred.items(), strict=True):
        ax.plot(FUNCTION_POINTS, initial[name], ":", color="grey", label="initial guess")
        if name in truth:
            ax.plot(FUNCTION_POINTS, truth[name], color="k", lw=2.5, alpha=0.4, label="truth")
        ax.plot(FUNCTION_POINTS, values, "--", color="C3", label=summary["method"])
        error = summary["rel_err"].get(name)
        ax.set(xlabel="x", ylabel=name, title=f"{name}(x)" + (
            f": rel. L2 error {error:.2e}" if error is not None else ""))
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_mesh_functions(path: Path, mesh, inferred, truth, initial, summary) -> None:
    """Per function: truth, initial guess, inferred and (with a threshold among the scores)
    the inferred function thresholded, on the mesh."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for name, values in inferred.items():
        error = summary["rel_err"].get(name)
        panels = [(f"{name} truth", truth.get(name)), (f"{name}0 (initial guess)", initial[name]),
                  (f"{name} {summary['method']}" + (f", rel. L2 {error:.3f}"
                                                     if error is not None else ""), values)]
        threshold = summary.get("function_metrics", {}).get(f"{name}_threshold")
        if threshold is not None:
            accuracy = summary["function_metrics"][f"{name}_accuracy"]
            panels.append((f"{name} > {threshold:g}: accuracy {accuracy:.1%}",
                           np.where(values > threshold, 1.0, 0.0)))
        rows.append([(title, v) for title, v in panels if v is not None])
    columns = max(len(row) for row in rows)
    fig, axes = plt.subplots(len(rows), columns, figsize=(3.6 * columns, 3.3 * len(rows)),
                             squeeze=False)
    x, y = mesh.vertices[:, 0], mesh.vertices[:, 1]
    for ax_row, row in zip(axes, rows, strict=True):
        for ax, (title, values) in zip(ax_row, row, strict=False):
            image = ax.tripcolor(x, y, mesh.cells, values, shading="gouraud", cmap="viridis")
            fig.colorbar(image, ax=ax, shrink=0.8)
            ax.set(title=title, aspect="equal")
            ax.title.set_fontsize(9)
        for ax in ax_row[len(row):]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training(path: Path, history: dict[str, np.ndarray], names, truth, method) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if len(names) else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
    ax_loss = axes[0][0]
    steps = history["step"]
    losses = {key: values for key, values in history.items()
              if key not in TRACKS and not np.all(np.isnan(values))}
    # a negative log-likelihood (events) can be negative: a linear axis then
    positive = all(np.nanmin(values) > 0 for values in losses.values())
    for key, values in losses.items():
        (ax_loss.semilogy if positive else ax_loss.plot)(steps, values, label=key)
    ax_loss.set(xlabel="step", ylabel="loss (unweighted)", title=f"{method}: losses")
    ax_loss.legend()
    if names:
        ax_theta = axes[0][1]
        for j, name in enumerate(names):
            line, = ax_theta.plot(steps, history["theta"][:, j], label=name)
            if name in truth:
                ax_theta.axhline(truth[name], ls="--", color=line.get_color(), lw=0.8)
        ax_theta.set(xlabel="step", ylabel="value", title="parameters (dashed: truth)")
        ax_theta.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
