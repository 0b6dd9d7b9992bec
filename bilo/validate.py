"""`bilo validate RUN_DIR`: re-solve the reference problem at the inferred parameters and
measure the network solution against it.

The solve goes through the exchange format (RUN_DIR/reference_at_inferred.h5), as it would if
it ran on another machine. Needs numpy/scipy/h5py only, not torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from adjoint.optimize import function_objective
from bilo.results import read_result
from solvers.exchange import InputError, read_solution, write_json_atomic, write_solution
from solvers.problems import run_reference, sample


def grid_points(axes: tuple[str, ...], grid: dict[str, np.ndarray]) -> np.ndarray:
    mesh = np.meshgrid(*(grid[a] for a in axes), indexing="ij")
    return np.column_stack([m.reshape(-1) for m in mesh])


def _sampled(x: np.ndarray, values: np.ndarray):
    """A function of x from its samples (linear interpolation), as the solvers take them."""

    def evaluate(points: np.ndarray) -> np.ndarray:
        return np.interp(points, x, values)

    evaluate.description = f"inferred, {len(x)} samples"
    return evaluate


def validate(run_dir: str | Path) -> dict:
    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        raise InputError(f"{summary_path}: missing; is {run_dir} a finished training run?")
    result = read_result(run_dir / "result.h5")
    summary = json.loads(summary_path.read_text())
    reference_path = run_dir / "reference_at_inferred.h5"
    functions = {name: _sampled(result["function_x"], values)
                 for name, values in result["functions"].items()}
    # parameters the run kept fixed (e.g. the heat equation's D) and the inferred ones
    params = {**summary.get("params_fixed", {}), **result["params"]}
    write_solution(reference_path, run_reference(result["problem"], params, functions))
    reference = read_solution(reference_path)
    u_ref = sample(reference, grid_points(result["axes"], result["grid"]),
                   result["axes"]).reshape(result["u_nn"].shape)
    error = float(np.linalg.norm(result["u_nn"] - u_ref) / np.linalg.norm(u_ref))
    summary["u_rel_l2_vs_reference"] = error
    summary.update(_reference_against_data(reference, summary, result))
    misfit = summary["reference_rel_l2_vs_data"]
    summary["reference"] = {"file": reference_path.name, **reference.provenance}
    write_json_atomic(summary_path, summary)
    plot_solution(run_dir / "solution.png", result, u_ref, summary)
    params = ", ".join(f"{k}={v:.5g}" for k, v in result["params"].items())
    errors = ", ".join(f"{k} {v:.2e}" for k, v in summary.get("rel_err", {}).items())
    print(f"{result['method']} on {result['problem']}: {params}"
          + (f" (rel. err {errors})" if errors else "")
          + f"; |u_NN - u_ref| / |u_ref| = {error:.3e} against {reference_path.name} "
            f"({reference.provenance['solver']}, {reference.provenance['resolution']})"
          + (f"; the reference misses the data by {misfit:.3e} (rel. L2)"
             if misfit is not None else ""))
    return summary


def _reference_against_data(reference, summary: dict, result: dict) -> dict:
    """How well the inferred parameters explain the data, independent of the network:
    `reference_rel_l2_vs_data`, the relative L2 misfit of the trusted solver's solution at
    them against the observations (None when the run's data file is no longer at its recorded
    path), and for unknown functions `reference_objective`, the objective J with u from that
    solution (comparable across methods, the adjoint's included; older runs lack `w_reg`)."""
    data_path = Path(summary.get("data", ""))
    if not data_path.is_file():
        print(f"note: {data_path}: not found; reference-vs-data misfit not computed")
        return {"reference_rel_l2_vs_data": None}
    obs = read_solution(data_path).observations
    predicted = sample(reference, obs.points, obs.columns)
    found = {"reference_rel_l2_vs_data": float(np.linalg.norm(predicted - obs.values)
                                               / np.linalg.norm(obs.values))}
    if result["functions"] and "w_reg" in summary:
        functions = {name: (result["function_x"], values)
                     for name, values in result["functions"].items()}
        found["reference_objective"] = function_objective(predicted, obs.values, functions,
                                                          summary["w_reg"])
    return found


def plot_solution(path: Path, result: dict, u_ref: np.ndarray, summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes, grid, u_nn = result["axes"], result["grid"], result["u_nn"]
    x = grid["x"]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    if "t" in axes:
        t = grid["t"]
        for i, colour in zip(np.linspace(0, len(t) - 1, 5).astype(int),
                             plt.cm.viridis(np.linspace(0, 0.9, 5)), strict=True):
            ax.plot(x, u_ref[i], color=colour, lw=2.5, alpha=0.45)
            ax.plot(x, u_nn[i], "--", color=colour, lw=1.2, label=f"t = {t[i]:.2f}")
    else:
        ax.plot(x, u_ref, lw=2.5, alpha=0.45, label="reference")
        ax.plot(x, u_nn, "--", lw=1.2, label="network")
    ax.set(xlabel="x", ylabel="u", title=f"{result['method']} on {result['problem']}: u_NN (dashed)"
           f" vs reference at inferred θ (thick)\nrel. L2 {summary['u_rel_l2_vs_reference']:.2e}")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
