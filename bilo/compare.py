"""`bilo compare`: several methods on the same data file, one table and one figure.

Every method runs into its own folder under OUT (`adjoint/`, `bilo/seed0/`,
`pinn_wdat10/seed0/`, ...) and leaves its usual summary.json; the comparison collects them
into `comparison.csv` (one row per run), `comparison.md` (mean ± std over seeds per method)
and `comparison.png` (parameters against wall time, as the paper's Fig. D.22).
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bilo.model import Problem
from bilo.problems import get_problem
from bilo.strategies import METHODS, fit, make_options
from solvers.common import InputError


@dataclass(frozen=True)
class Variant:
    """One method with some of its options set (e.g. PINN at one w_dat)."""

    method: str
    values: tuple[tuple[str, float], ...] = ()

    @property
    def label(self) -> str:
        return self.method + "".join(f"_{k.replace('_', '')}{v:g}" for k, v in self.values)


def variants(methods: list[str], w_dats: list[float]) -> list[Variant]:
    """Every method, once per data weight for the methods that take one."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise InputError(f"--methods: unknown {', '.join(unknown)}; known: {', '.join(METHODS)}")
    out = []
    for method in methods:
        names = {f.name for f in dataclasses.fields(METHODS[method].Options)}
        if "w_dat" in names:
            out.extend(Variant(method, (("w_dat", w),)) for w in w_dats)
        else:
            out.append(Variant(method))
    return out


def _trajectory(run_dir: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Wall seconds and parameter values along a run (recorded steps or iterations)."""
    import h5py

    with h5py.File(run_dir / "result.h5", "r") as h5:
        wall = h5["history/wall"][()]
        theta = h5["history/theta"][()]
        names = str(h5["history/theta"].attrs["names"]).split(",")
    return wall, {name: theta[:, j] for j, name in enumerate(names) if name}


def _scalar_errors(summary: dict) -> dict[str, float]:
    return {k: float(v) for k, v in summary.get("rel_err", {}).items()
            if isinstance(v, (int, float))}


def compare(problem: str | Problem, data: str, methods: list[str], out: str | Path, *,
            seeds: int = 1, w_dats: tuple[float, ...] = (1.0, 10.0, 100.0),
            preset: str = "quick", u0: str | None = "auto", overrides: dict | None = None,
            w_reg: float | None = None, overwrite: bool = False,
            method_options: dict | None = None) -> list[dict]:
    """Run every method variant (PINN once per w_dat) and write the comparison files;
    `overrides` replaces preset settings (width, steps, ...) of the network methods; `w_reg`
    (unknown functions) the regulariser weight of every method, the adjoint included;
    `method_options` (the samplers' n_chains, n_samples, ...) go to every method that has
    them. Methods with a seed run once per seed. A sampler's row adds the posterior sd of each
    parameter, the largest R-hat and the smallest bulk ESS."""
    problem = get_problem(problem) if isinstance(problem, str) else problem
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, runs = [], []
    for variant in variants(methods, list(w_dats)):
        names = {f.name for f in dataclasses.fields(METHODS[variant.method].Options)}
        seeded = "seed" in names
        for seed in range(seeds if seeded else 1):
            run_dir = out / variant.label / (f"seed{seed}" if seeded else "")
            print(f"== {variant.label}" + (f", seed {seed}" if seeded else "")
                  + f" -> {run_dir}", flush=True)
            given = {k: v for k, v in {"seed": seed, "u0": u0, "w_reg": w_reg,
                                       **(method_options or {})}.items()
                     if k in names and v is not None}
            options = make_options(problem, variant.method, preset, overrides,
                                   **given, **dict(variant.values))
            summary = fit(problem, data, variant.method, run_dir, options,
                          overwrite=overwrite).summary
            rows.append({"method": variant.label, "seed": seed,
                         **{f"rel_err_{k}": v for k, v in _scalar_errors(summary).items()},
                         "u_rel_l2_vs_reference": summary.get("u_rel_l2_vs_reference"),
                         "reference_rel_l2_vs_data": summary.get("reference_rel_l2_vs_data"),
                         "reference_objective": summary.get("reference_objective"),
                         # scores of an inferred function (darcy: the classification accuracy)
                         **{k: v for k, v in summary.get("function_metrics", {}).items()
                            if not k.endswith("_threshold")},
                         **_posterior_columns(summary),
                         **({"surrogate_heldout_rel_l2": summary["surrogate_heldout"]["rel_l2"]}
                            if summary.get("surrogate_heldout") else {}),
                         **summary.get("solution_checks", {}).get("method", {}),
                         "wall_s": summary["wall_s"], "steps": summary["steps"]})
            runs.append((variant.label, seed, run_dir, summary))
    _add_distance_to_adjoint(rows, runs)
    _write_csv(out / "comparison.csv", rows)
    (out / "comparison.md").write_text(_markdown(problem.name, data, rows))
    _plot(out / "comparison.png", runs)
    print((out / "comparison.md").read_text())
    return rows


def _add_distance_to_adjoint(rows: list[dict], runs: list) -> None:
    """With the adjoint among the methods, each row's relative distance of every parameter
    from the adjoint's answer: the minimiser of the same J, the target for finite or noisy
    data (where the truth is not the answer)."""
    adjoint = next((summary.get("params") for label, _, _, summary in runs
                    if label == "adjoint"), None)
    if not adjoint:
        return
    for row, (_, _, _, summary) in zip(rows, runs, strict=True):
        for name, value in summary.get("params", {}).items():
            if adjoint.get(name):
                row[f"vs_adjoint_{name}"] = abs(value / adjoint[name] - 1.0)


def _posterior_columns(summary: dict) -> dict[str, float]:
    posterior = summary.get("posterior")
    if not posterior:
        return {}
    along = summary.get("predictive", {}).get("u_rel_l2_vs_solver", {})
    return {**{f"sd_{k}": v["sd"] for k, v in posterior.items()},
            "rhat_max": max(v["rhat"] for v in posterior.values()),
            "ess_bulk_min": min(v["ess_bulk"] for v in posterior.values()),
            **({"u_nn_vs_solver_along_chain": along["mean"]} if along else {})}


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _markdown(problem: str, data: str, rows: list[dict]) -> str:
    columns = [k for k in dict.fromkeys(k for row in rows for k in row)
               if k not in ("method", "seed")]
    lines = [f"# {problem}: methods on {data}", "",
             "Mean ± std over seeds (adjoint: one deterministic run). u_rel_l2_vs_reference: the "
             "network solution against the FDM solution at the inferred parameters (0 for the "
             "adjoint, whose u is that solution). reference_rel_l2_vs_data: that FDM solution "
             "against the observations. reference_objective (unknown functions): the "
             "objective J = misfit + w_reg·∫f′² (bilo.model.objective) that all methods minimise, "
             "with u from that FDM solution. vs_adjoint_θ: the relative distance of θ from the "
             "adjoint's answer, the minimiser of the same J.", "",
             "| method | runs | " + " | ".join(columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for method in dict.fromkeys(r["method"] for r in rows):
        group = [r for r in rows if r["method"] == method]
        cells = []
        for column in columns:
            values = np.array([r[column] for r in group if r.get(column) is not None], float)
            if values.size == 0:
                cells.append("–")
            elif values.size == 1:
                cells.append(f"{values[0]:.4g}")
            else:
                cells.append(f"{values.mean():.4g} ± {values.std(ddof=1):.2g}")
        lines.append(f"| {method} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plot(path: Path, runs) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(k for *_, s in runs for k in s.get("params_true", {})
                               if isinstance(s["params_true"][k], (int, float))))
    if not names:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4), squeeze=False)
    colours = {label: f"C{i}" for i, label in enumerate(dict.fromkeys(r[0] for r in runs))}
    for label, seed, run_dir, _ in runs:
        wall, values = _trajectory(run_dir)
        for ax, name in zip(axes[0], names, strict=True):
            if name in values and len(wall):
                ax.plot(wall, values[name], color=colours[label], lw=1,
                        label=label if seed == 0 else None)
    for ax, name in zip(axes[0], names, strict=True):
        truth = next(s["params_true"][name] for *_, s in runs if name in s["params_true"])
        ax.axhline(truth, color="k", ls="--", lw=0.8)
        ax.set(xlabel="wall time (s, pre-training included)", ylabel=name,
               title=f"{name} (dashed: truth)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
