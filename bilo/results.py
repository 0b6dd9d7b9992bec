"""What a run leaves behind: result.h5, summary.json and figures.

`result.h5` (kind `result`, written atomically through `solvers.exchange.atomic_h5`):
  /@problem, /@method               names
  /params                           attributes: the inferred θ
  /params_true                      attributes: θ that made the synthetic data (when known)
  /history/step (n,)                steps at which the losses and θ were recorded
  /history/wall (n,)                wall seconds since the run started (pre-training included)
  /history/theta (n, p)             θ trajectory, columns in /history/theta@names
  /history/<loss> (n,)              unweighted losses (res, rgrad, dat, u0), NaN in steps
                                    where a term is not used (dat in pre-training, u0 after)
  /grid/<axis>, /u_nn               u_NN on the data file's reference grid, axes in /u_nn@axes
  /mesh/vertices, /mesh/cells       instead of a grid axis when the data live on a mesh
  /functions/x (1001,)              points where the inferred functions are stored
  /functions/<name>, <name>_true    inferred unknown function and its truth (when known)
  /wall_s                           attributes: pretrain, finetune seconds
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

import numpy as np

from solvers.exchange import atomic_h5, open_h5, write_json_atomic

TRACKS = ("step", "theta", "wall")  # history entries that are not losses


def relative_errors(params: dict[str, float], truth: dict[str, float]) -> dict[str, float]:
    """|θ − θ*| / |θ*| per parameter; the absolute error where θ* = 0."""
    return {k: abs(params[k] - truth[k]) / (abs(truth[k]) if truth[k] != 0 else 1.0)
            for k in params if k in truth}


def _history_arrays(history: dict[str, list]) -> dict[str, np.ndarray]:
    n = len(history["step"])
    arrays = {"step": np.asarray(history["step"], np.int64),
              "theta": np.asarray(history["theta"], np.float64).reshape(n, -1)}
    arrays.update({k: np.asarray(v, np.float64) for k, v in history.items() if k not in arrays})
    return arrays


FUNCTION_POINTS = np.linspace(0.0, 1.0, 1001)


def write_results(run) -> dict:
    """Write result.h5, summary.json and figures for a finished run; return the summary."""
    out, problem, data = run.out, run.problem, run.data
    theta = run.theta()
    truth = {k: data.params[k] for k in problem.params if k in data.params}
    u_nn = run.u_on_reference_grid()
    inferred = run.functions_on(FUNCTION_POINTS)
    truth_functions = {name: np.interp(FUNCTION_POINTS, data.grid["x"], data.inputs[name])
                       for name in inferred if name in data.inputs}
    history = _history_arrays(run.history)
    with atomic_h5(out / "result.h5", kind="result") as h5:
        h5.attrs["problem"] = problem.name
        h5.attrs["method"] = run.config.method
        h5.attrs["data"] = str(Path(run.config.data).resolve())
        h5.create_group("params").attrs.update(theta)
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
        h5.create_dataset("u_nn", data=u_nn, compression="gzip").attrs["axes"] = ",".join(
            data.axes)
        h5.create_group("wall_s").attrs.update(run.wall)
        if inferred:
            h5.create_dataset("functions/x", data=FUNCTION_POINTS)
            for name, values in inferred.items():
                h5.create_dataset(f"functions/{name}", data=values)
            for name, values in truth_functions.items():
                h5.create_dataset(f"functions/{name}_true", data=values)

    final = {k: float(v[~np.isnan(v)][-1]) for k, v in history.items()
             if k not in TRACKS and not np.all(np.isnan(v))}
    summary = {
        "method": run.config.method,
        "problem": problem.name,
        "params": theta,
        "params_true": truth,
        "params_initial": run.config.theta0,
        "params_fixed": run.method.constants,
        # per parameter, and for each unknown function its relative L2 error on 1001 points
        "rel_err": relative_errors(theta, truth) | {
            name: float(np.linalg.norm(inferred[name] - values) / np.linalg.norm(values))
            for name, values in truth_functions.items()},
        "u_rel_l2_vs_reference": None,
        **({"w_reg": run.method.w_reg} if run.method.function_nets else {}),
        "u_rel_l2_vs_data_solution": float(np.linalg.norm(u_nn - data.u)
                                           / np.linalg.norm(data.u)),
        # totals, as every method writes them; the split by phase beside them
        "steps": run.config.settings.pretrain_steps + run.config.settings.finetune_steps,
        "steps_by_phase": {"pretrain": run.config.settings.pretrain_steps,
                           "finetune": run.config.settings.finetune_steps},
        "wall_s": round(sum(run.wall.values()), 3),
        "wall_s_by_phase": {k: round(v, 3) for k, v in run.wall.items()},
        "device": str(run.device),
        "final_losses": final,
        "data": str(run.config.data),
        "noise_sigma": data.observations.sigma,
        "n_observations": len(data.observations.values),
        "config": run.config.to_json(),
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomic(out / "summary.json", summary)
    plot_training(out / "training.png", history, problem.params, truth, run.config.method)
    if inferred:
        initial = {name: spec.initial(FUNCTION_POINTS) for name, spec in problem.functions.items()}
        plot_functions(out / "functions.png", inferred, truth_functions, initial, summary)
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


def plot_training(path: Path, history: dict[str, np.ndarray], names, truth, method) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if len(names) else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
    ax_loss = axes[0][0]
    steps = history["step"]
    for key, values in history.items():
        if key in TRACKS or np.all(np.isnan(values)):
            continue
        ax_loss.semilogy(steps, values, label=key)
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
