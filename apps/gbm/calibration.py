"""What a GBM fit says beyond its point estimate: credible intervals, whether the data determine
the growth parameters, the tumour-cell density beyond the visible margin as a probability, and
radiotherapy plans with their coverage of a later recurrence.

* **Intervals** (`posterior_intervals`): the 5/50/95 % quantiles of every parameter and of the
  derived D·ρ (front speed², with the scales) and D/ρ (front width²), and their physical values
  D·D̄ (mm² per tumour age), ρ·ρ̄ (per age); with a follow-up (τ = interval/age) in days.
* **Concentration** (`concentration_notes`): a quantity q ∈ {D, ρ, D·ρ, D/ρ} counts as
  determined by the data when the posterior's sd of log q is at most :data:`CONCENTRATED` times
  the prior's (log-normal priors on D and ρ: the prior sd of log(D·ρ) and log(D/ρ) is
  √(σ_D² + σ_ρ²)). A note names each one that is not.
* **Infiltration** (`infiltration_maps`): from u at the scan time at the recorded posterior
  draws, per pixel the mean, the sd and the probability P(u > level); beyond the visible whole
  tumour that probability is the infiltration map. Default level :data:`DETECTION_LEVEL`.
* **Plans** (`standard_plan`, `model_plan`, `coverage`): the standard clinical target volume,
  the brain pixels within :data:`MARGIN_MM` of the tumour core, and the model-based one of the
  same area, the pixels of the highest predicted density; the recurrence coverage of a plan is
  the share of the follow-up scan's whole-tumour pixels inside it (PredictGBM's evaluation of
  growth models). On the 2-D slice of the pipeline the margin is in-plane.
"""

from __future__ import annotations

import math

import numpy as np

# A quantity is "determined" when its posterior's sd of log is at most this share of the
# prior's: the data have narrowed it at least twofold.
CONCENTRATED = 0.5
# Density counted as infiltration: 5 % of the carrying capacity, below the thresholds at which
# the whole tumour becomes visible (u_c^WT ≈ 0.2–0.35). An assumption, an option of the run.
DETECTION_LEVEL = 0.05
MARGIN_MM = 15.0
# Chains whose largest rank-normalised R-hat is above RHAT_MAX or whose smallest bulk ESS is
# below ESS_MIN are not yet a posterior sample (Vehtari et al. 2021, "Rank-normalization,
# folding, and localization"): their intervals say nothing, however narrow.
RHAT_MAX = 1.01
ESS_MIN = 100.0


def _derived(draws: np.ndarray, names) -> dict[str, np.ndarray]:
    by_name = dict(zip(names, draws.T, strict=True))
    out = dict(by_name)
    if {"D", "rho"} <= by_name.keys():
        out["D*rho"] = by_name["D"] * by_name["rho"]
        out["D/rho"] = by_name["D"] / by_name["rho"]
    return out


def _quantiles(x: np.ndarray) -> dict[str, float]:
    q05, q50, q95 = np.quantile(x, [0.05, 0.5, 0.95])
    return {"mean": float(np.mean(x)), "sd": float(np.std(x, ddof=1)), "q05": float(q05),
            "q50": float(q50), "q95": float(q95)}


def posterior_intervals(draws: np.ndarray, names, *, D_bar: float, rho_bar: float,
                        interval_days: float | None = None) -> dict:
    """Mean, sd and the 90 % interval (q05, q95) of each parameter, of D·ρ and D/ρ, of D·D̄
    (mm² per tumour age) and ρ·ρ̄ (per age), and with τ and `interval_days` (a follow-up) of
    the age T = interval_days/τ in days and D·D̄/T (mm²/day), ρ·ρ̄/T (/day), from draws (n, p)
    in the order of `names`."""
    values = _derived(np.asarray(draws, dtype=np.float64), names)
    if {"D", "rho"} <= values.keys():
        values["D_mm2_per_age"] = values["D"] * D_bar
        values["rho_per_age"] = values["rho"] * rho_bar
        if "tau" in values and interval_days:
            values["T_days"] = interval_days / values["tau"]
            values["D_mm2_per_day"] = values["D_mm2_per_age"] / values["T_days"]
            values["rho_per_day"] = values["rho_per_age"] / values["T_days"]
    return {name: _quantiles(x) for name, x in values.items()}


def _log_sd(prior) -> float | None:
    """The sd of log x under a log-normal prior (None for other priors)."""
    return float(prior.sigma) if type(prior).__name__ == "LogNormal" else None


def concentration(draws: np.ndarray, parameters) -> dict[str, float]:
    """posterior sd of log q / prior sd of log q for q = D, ρ, D·ρ, D/ρ (log-normal priors)."""
    names = [p.name for p in parameters]
    priors = {p.name: _log_sd(p.prior) for p in parameters}
    if priors.get("D") is None or priors.get("rho") is None:
        return {}
    values = _derived(np.asarray(draws, dtype=np.float64), names)
    prior_sd = {"D": priors["D"], "rho": priors["rho"],
                "D*rho": math.hypot(priors["D"], priors["rho"]),
                "D/rho": math.hypot(priors["D"], priors["rho"])}
    return {q: float(np.std(np.log(values[q]), ddof=1) / sd) for q, sd in prior_sd.items()}


def concentration_notes(ratios: dict[str, float], intervals: dict) -> list[str]:
    """One line per quantity that the data do not determine (ratio above CONCENTRATED)."""
    notes = []
    for q, ratio in ratios.items():
        if ratio > CONCENTRATED:
            i = intervals[q]
            notes.append(f"{q} is not determined by the data: its 90 % interval is "
                         f"[{i['q05']:.3g}, {i['q95']:.3g}], the posterior's sd of log({q}) "
                         f"{ratio:.0%} of the prior's")
    return notes


def convergence_notes(diagnostics: dict) -> list[str]:
    """One line when the chains have not converged (R-hat above RHAT_MAX or bulk ESS below
    ESS_MIN): the intervals and the concentration are then not the posterior's."""
    rhat, ess = diagnostics["rhat_max"], diagnostics["ess_bulk_min"]
    if rhat <= RHAT_MAX and ess >= ESS_MIN:
        return []
    return [f"the chains have not converged (largest R-hat {rhat:.3g}, above {RHAT_MAX:g} is "
            f"too large; smallest bulk ESS {ess:.3g}, below {ESS_MIN:g} too small): the "
            "intervals are not the posterior's, however narrow; run longer chains"]


def infiltration_maps(u_draws: np.ndarray, level: float = DETECTION_LEVEL
                      ) -> dict[str, np.ndarray]:
    """Per pixel over posterior draws of u (n_draws, n_pixels): mean, sd, P(u > level)."""
    u = np.asarray(u_draws, dtype=np.float64)
    return {"mean": u.mean(axis=0), "sd": u.std(axis=0, ddof=1) if len(u) > 1 else
            np.zeros(u.shape[1]), "probability": (u > level).mean(axis=0)}


def pixel_spacing_mm(affine2d: np.ndarray) -> tuple[float, float]:
    return tuple(float(np.linalg.norm(affine2d[:2, j])) for j in range(2))


def standard_plan(tc: np.ndarray, brain: np.ndarray, affine2d: np.ndarray,
                  margin_mm: float = MARGIN_MM) -> np.ndarray:
    """The brain pixels within `margin_mm` (Euclidean, in-plane) of the tumour core."""
    from scipy.ndimage import distance_transform_edt

    if not tc.any():
        return np.zeros_like(brain, dtype=bool)
    distance = distance_transform_edt(~tc, sampling=pixel_spacing_mm(affine2d))
    return (distance <= margin_mm) & brain


def model_plan(density: np.ndarray, brain: np.ndarray, n_pixels: int) -> np.ndarray:
    """The `n_pixels` brain pixels of highest density (ties broken by pixel order)."""
    values = np.where(brain, density, -np.inf).ravel()
    n = min(int(n_pixels), int(brain.sum()))
    plan = np.zeros(values.size, dtype=bool)
    plan[np.argsort(-values, kind="stable")[:n]] = True
    return plan.reshape(brain.shape)


def coverage(plan: np.ndarray, recurrence: np.ndarray) -> float:
    """|plan ∩ recurrence| / |recurrence| (NaN for an empty recurrence)."""
    total = int(recurrence.sum())
    return float(np.logical_and(plan, recurrence).sum() / total) if total else math.nan
