"""The glioblastoma growth model as a BiLO problem on one patient's brain slice.

    u_t = D·D̄·∇·(P(x)∇u) + ρ·ρ̄·u(1−u)   on the brain slice, t ∈ [0, 1]

in dimensionless coordinates x̂ = (x − c)/L (c: tumour-core centroid, L: characteristic length,
both in mm), so the diffusion term carries κ = D̄/L². The residual expands
∇·(P∇u) = PΔu + ∇P·∇u with P and ∇P sampled (bilinearly, differentiably in the points) from the
smoothed tissue image (``apps.gbm.patient.ImageField``). Output transform: u = u0(x̂) + N·t,
u0 = a·exp(−|x̂|²/(2w²)), so the initial condition holds exactly. No-flux at the brain boundary
is not imposed on the network (the tumour stays well inside the brain); the FEM reference
imposes it.

Observations: whole tumour (WT) and tumour core (TC) masks at t = 1, modelled as
sigmoid(20(u − u_c)) with thresholds u_c^WT, u_c^TC that the upper level infers along with D, ρ
(`bilo.likelihoods.SegmentationMasks`). Observed values are coded 0 (outside WT), 1 (WT, not
TC), 2 (TC). The point estimate minimises the paper's eq. 36; the sampler (`bayesian=True`)
uses the Bernoulli likelihood of the masks through their contours (`MaskContours`) and the priors
of BAYES_PARAMETERS.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from apps.gbm.patient import ImageField
from apps.gbm.scales import THRESHOLD_RANGES
from bilo.likelihoods import MaskContours, ScaledDensity, SegmentationMasks, Stacked
from bilo.model import Parameter, Problem, Settings
from bilo.priors import LogNormal, TruncatedNormal
from solvers.common import InputError

SIGMOID_SLOPE = 20.0
# Half of each step's residual points lie within this many L of the tumour-core centroid, where
# u has its front; the rest cover the whole training region.
NEAR_RADIUS = 1.5
NEAR_FRACTION = 0.5
# An error of the network at time t, while u is small, grows by up to exp(ρ·ρ̄·(1 − t)) by the
# scan. So residual times are drawn as t = s**TIME_POWER (s uniform: early times more often)
# and the residual is weighted by exp(RESIDUAL_DECAY·ρ̄·(1 − t)) (measured in docs/gbm.md).
TIME_POWER = 2.0
RESIDUAL_DECAY = 0.5


# The Bayesian model (`bilo gbm run --method hmc`): each mask's pixels Bernoulli through a
# sigmoid link in the pixel's distance from the model's contour (`MaskContours`): a link in u
# favours steep profiles on hard masks (docs/gbm.md). The contours' position error has sd
# CONTOUR_SD_MM (`--contour-sd`): half a 1 mm pixel, the scale of the quantisation of a
# thresholded mask; on the embedded patient's FEM grid posterior it covers the truth, 1 and 2 mm
# less so (docs/gbm.md).
# Priors: D and ρ are dimensionless (one scan has no time unit: the tumour's age is t = 1):
# log-normal around the scale rule's D = ρ = 1 (apps/gbm/scales.py), a factor e either way at
# one sd. Thresholds: normal around 0.3 (WT) and 0.7 (TC), sd 0.1, on (0, 1), as the BiLO
# authors' GBM work; their bounds are those of the prior, not THRESHOLD_RANGES.
CONTOUR_SD_MM = 0.5
MASK_THRESHOLDS = {1: "th_wt", 2: "th_tc"}
# the point estimate's data loss: the paper's eq. 36 or the sampler's contour likelihood
MASK_LOSSES = ("eq36", "contours")
BAYES_PARAMETERS = (
    Parameter("D", 1.0, bounds=(0.01, 100.0), prior=LogNormal(0.0, 1.0)),
    Parameter("rho", 1.0, bounds=(0.01, 100.0), prior=LogNormal(0.0, 1.0)),
    Parameter("th_wt", 0.3, bounds=(0.01, 0.99), prior=TruncatedNormal(0.3, 0.1, 0.0, 1.0)),
    Parameter("th_tc", 0.7, bounds=(0.01, 0.99), prior=TruncatedNormal(0.7, 0.1, 0.0, 1.0)))


# With a follow-up scan the unknown τ = interval/age (the age at the first scan is the time
# unit) joins the parameters. Its initial guess takes an age of TYPICAL_AGE_DAYS at the first
# scan; its prior is log-normal around that, a factor e either way at one sd.
TYPICAL_AGE_DAYS = 365.0
TAU_BOUNDS = (0.01, 10.0)


def tau_parameter(interval_days: float, bayesian: bool) -> Parameter:
    typical = float(interval_days) / TYPICAL_AGE_DAYS
    return Parameter("tau", typical, bounds=TAU_BOUNDS,
                     prior=LogNormal(float(np.log(typical)), 1.0) if bayesian else None)


# With `infer_origin` the seed's centre is unknown: (x0, y0) in units of L from the tumour-core
# centroid, within ORIGIN_BOUND of it (the seed lies inside the core, whose radius is below L).
ORIGIN_BOUND = 0.5


def origin_parameters(bayesian: bool) -> tuple[Parameter, ...]:
    return tuple(Parameter(name, 0.0, bounds=(-ORIGIN_BOUND, ORIGIN_BOUND), prior=(
        TruncatedNormal(0.0, ORIGIN_BOUND / 2, -ORIGIN_BOUND, ORIGIN_BOUND) if bayesian
        else None)) for name in ("x0", "y0"))


# With a PET-like map: its unknown scale c (uptake at u = 1), its initial guess the map's 95th
# percentile over the core (where u is near 1), bounds and prior a factor 100 / e around it.
def pet_parameter(scale0: float, bayesian: bool) -> Parameter:
    return Parameter("pet_scale", scale0, bounds=(scale0 / 100.0, scale0 * 100.0),
                     prior=LogNormal(float(np.log(scale0)), 1.0) if bayesian else None)


@dataclass(frozen=True)
class ModelChoices:
    """What the patient's model includes beyond D, ρ and the thresholds: the sampler's
    likelihood and priors (`bayesian`), a follow-up scan after `followup_days` (τ), the seed's
    centre (`infer_origin`: x0, y0), a PET-like map (`pet_scale0`: its scale c, with relative
    noise `pet_noise`), the point estimate's data loss (`mask_loss`: the paper's "eq36" or the
    sampler's likelihood, "contours") and the contours' position error (`contour_sd_mm`);
    `theta0`: (name, value) pairs that replace parameters' initial guesses."""

    bayesian: bool = False
    followup_days: float | None = None
    infer_origin: bool = False
    pet_scale0: float | None = None
    pet_noise: float = 0.05
    contour_sd_mm: float = CONTOUR_SD_MM
    mask_loss: str = "eq36"
    theta0: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class MaskGrid:
    """The segmentation rows on the pixel grid: each row's four neighbours
    (`bilo.likelihoods.grid_neighbours`, rows of the same scan), the grid steps along its two
    axes in the problem's units, and millimetres per unit (L)."""

    neighbours: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))
    spacing: tuple[float, float] = (1.0, 1.0)
    mm_per_unit: float = 1.0


def time_map(s, tau: float):
    """Physical time (in tumour ages) of the network's time s: t(s) = (τ^s − 1)/(τ − 1), so
    t(0) = 0, t(1) = 1 (first scan) and t(2) = 1 + τ (follow-up) for every τ > 0; t = s at
    τ = 1. Numpy."""
    s = np.asarray(s, dtype=np.float64)
    a = np.log(tau)
    return s if abs(a) < 1e-8 else np.expm1(a * s) / np.expm1(a)


def network_time(t, tau: float):
    """The inverse of `time_map`: s(t) = log(1 + t(τ − 1))/log τ; s = t at τ = 1. Numpy."""
    t = np.asarray(t, dtype=np.float64)
    a = np.log(tau)
    return t if abs(a) < 1e-8 else np.log1p(t * np.expm1(a)) / a


def time_rate(s, tau):
    """dt/ds of `time_map` in jet or torch arithmetic: a·e^(as)/(e^a − 1), a = log τ, with the
    series of a/(e^a − 1) near a = 0 (where the quotient cancels)."""
    a = tau.log()
    value = a.value if hasattr(a, "value") else a
    if abs(float(value.detach())) < 1e-3:
        factor = 1.0 - a * 0.5 + a * a * (1.0 / 12.0)
    else:
        factor = a / (a.exp() - 1.0)
    return factor * (a * s).exp()


class ImageSampler:
    """An :class:`~apps.gbm.patient.ImageField` and its gradient at dimensionless points
    x̂ = (x_mm − centroid)/L, in torch (bilinear, differentiable in the points, on the network's
    device): the same sampling as ``field(x_mm)`` and ``L·field.gradient(x_mm)``, which are its
    numpy reference (tests/test_gbm_pipeline.py)."""

    def __init__(self, field: ImageField, centroid_mm, length_mm: float):
        self.offset = field.affine2d[:2, 2]
        self.to_pixel = np.linalg.inv(field.affine2d[:2, :2])
        self.centroid = np.asarray(centroid_mm, dtype=np.float64)
        self.length = float(length_mm)
        # chain rule: ∂P/∂x̂ = L·∂P/∂x_mm
        self.stack = torch.as_tensor(np.stack([field.values, *(self.length * field.gradient_mm)]),
                                     dtype=torch.float32)
        self.shape = field.values.shape

    def to(self, device) -> ImageSampler:
        self.stack = self.stack.to(device)
        return self

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(3, N): P, ∂P/∂x̂, ∂P/∂ŷ at the points."""
        to_pixel = torch.as_tensor(self.to_pixel, dtype=x.dtype, device=x.device)
        shift = torch.as_tensor((self.centroid - self.offset), dtype=x.dtype, device=x.device)
        mm_rel = torch.stack([x, y], dim=1) * self.length + shift
        pixel = mm_rel @ to_pixel.T  # (N, 2) as (row, column)
        rows, cols = self.shape
        # grid_sample wants (x = column, y = row) normalised to [-1, 1] over pixel centres
        grid = torch.stack([2 * pixel[:, 1] / (cols - 1) - 1, 2 * pixel[:, 0] / (rows - 1) - 1],
                           dim=1)
        sampled = torch.nn.functional.grid_sample(
            self.stack[None].to(x.dtype), grid[None, None], mode="bilinear",
            padding_mode="border", align_corners=True)
        return sampled[0, :, 0, :]


class GBMProblem(Problem):
    name = "gbm"
    coords = ("x", "y", "t")
    parameters = (Parameter("D", 1.0, bounds=(0.01, 100.0)),
                  Parameter("rho", 1.0, bounds=(0.01, 100.0)),
                  Parameter("th_wt", 0.275, bounds=THRESHOLD_RANGES["th_wt"]),
                  Parameter("th_tc", 0.6, bounds=THRESHOLD_RANGES["th_tc"]))
    # masks coded 1 (WT, not TC) and 2 (TC); each region's misfit relative to its size, so the
    # smaller core weighs as much as the whole tumour (the paper's eq. 36)
    likelihood = SegmentationMasks(thresholds=MASK_THRESHOLDS, slope=SIGMOID_SLOPE,
                                   noise="relative")
    residual_keys = ((), ("t",), ("x",), ("y",), ("x", "x"), ("y", "y"))
    resample_collocation = True
    predictive_on_grid = False  # the sampler records u at the observed pixels only
    # the front is about a tenth of L wide: start the network with sharper spatial features
    coord_init_scale = {"x": 8.0, "y": 8.0}
    presets = {
        # n_res: residual points per step = n_res[0]·n_res[1], drawn anew every step
        # hold_upper 3: on patient_cortex's two scans u_NN 24.6 % from FEM against 39.5 %, on
        # the embedded patient θ never waited (docs/gbm.md)
        "quick": Settings(width=64, depth=2, n_res=(500, 4), pretrain_steps=5_000,
                          finetune_steps=5_000, lr_net=2e-3, lr_theta=3e-3, hold_upper=3.0),
        "paper": Settings(width=128, depth=2, n_res=(8000, 11), pretrain_steps=10_000,
                          finetune_steps=50_000, lr_net=1e-3, lr_theta=1e-3),
    }

    def __init__(self, tissue: ImageSampler, kappa: float, rho_bar: float, ic_width: float,
                 ic_amplitude: float, brain_points: np.ndarray, pixel_size: float,
                 seed: int = 0, model: ModelChoices = ModelChoices(),
                 rows: tuple[int, int] | None = None, mask_grid: MaskGrid | None = None):
        """`rows`: with a PET map, the observations' (segmentation rows, PET rows), in that
        order. `mask_grid`: where the segmentation rows lie on the pixel grid, for the
        sampler's likelihood."""
        self.tissue = tissue
        self.kappa, self.rho_bar = float(kappa), float(rho_bar)
        self.ic_width, self.ic_amplitude = float(ic_width), float(ic_amplitude)
        self.brain_points = np.asarray(brain_points, dtype=np.float64)  # dimensionless (M, 2)
        self.near_points = self.brain_points[np.linalg.norm(self.brain_points, axis=1)
                                             < NEAR_RADIUS]
        self.pixel_size = float(pixel_size)  # dimensionless
        self.seed = seed
        self._declare(model, rows, mask_grid)

    def _declare(self, model: ModelChoices, rows: tuple[int, int] | None = None,
                 mask_grid: MaskGrid | None = None) -> None:
        bayesian, followup_days = model.bayesian, model.followup_days
        if bayesian or model.mask_loss == "contours":  # masks through their contours
            grid = mask_grid or MaskGrid()  # empty: a declaration without a patient
            self.likelihood = MaskContours(
                thresholds=MASK_THRESHOLDS, neighbours=grid.neighbours, spacing=grid.spacing,
                sd=model.contour_sd_mm / grid.mm_per_unit)
        if bayesian:  # the sampler's priors
            self.parameters = BAYES_PARAMETERS
        # observations at s = 1 and s = 2 (time_map) with a follow-up scan
        self.last_scan = 1.0
        if followup_days is not None:
            self.parameters = (*self.parameters, tau_parameter(followup_days, bayesian))
            self.last_scan = 2.0
        self.infer_origin = model.infer_origin
        if model.infer_origin:  # the seed's centre, a PDE parameter through u's transform
            self.parameters = (*self.parameters, *origin_parameters(bayesian))
        if model.pet_scale0 is not None:  # an observation parameter: no network input
            self.parameters = (*self.parameters, pet_parameter(model.pet_scale0, bayesian))
            seg_rows, pet_rows = rows or (0, 0)  # (0, 0): a declaration without data
            self.likelihood = Stacked(((self.likelihood, seg_rows), (
                ScaledDensity("pet_scale", model.pet_noise), pet_rows)))
        given = dict(model.theta0)
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            raise InputError(f"--theta0: {', '.join(unknown)}: not a parameter of this run's "
                             f"model ({', '.join(self.params)})")
        self.parameters = tuple(replace(p, initial=float(given.get(p.name, p.initial)))
                                for p in self.parameters)

    @classmethod
    def declaration(cls, model: ModelChoices = ModelChoices()) -> GBMProblem:
        """The declaration without a patient (parameters, presets, likelihood): what options
        are checked against before a patient is prepared."""
        problem = cls.__new__(cls)
        problem._declare(model)
        return problem

    def initial(self, x, y):
        """u(x̂, 0) in jet arithmetic: ``solvers.fem.reaction_diffusion.gaussian_initial_condition``
        (the numpy reference, tested to agree) in x̂, with width w/L."""
        return self.ic_amplitude * (-(x * x + y * y) / (2 * self.ic_width**2)).exp()

    def output(self, net, coords, theta, functions):
        x, y = coords["x"], coords["y"]
        if self.infer_origin:
            x, y = x - theta["x0"], y - theta["y0"]
        return self.initial(x, y) + net * coords["t"]

    def residual(self, u, coords, theta, functions):
        x, y = coords["x"].value, coords["y"].value
        p, p_x, p_y = self.tissue.to(x.device)(x, y)
        diffusion = p * (u.d("x", "x") + u.d("y", "y")) + p_x * u.d("x") + p_y * u.d("y")
        weight = (RESIDUAL_DECAY * self.rho_bar * (1.0 - coords["t"].value).clamp(min=0.0)).exp()
        rhs = self.kappa * theta["D"] * diffusion + self.rho_bar * theta["rho"] * u * (1.0 - u)
        if self.last_scan > 1.0:  # the network's time s is time_map's
            rhs = time_rate(coords["t"], theta["tau"]) * rhs
        return (u.d("t") - rhs) * weight

    def collocation(self, n_res, dtype=torch.float32, seed: int = 0):
        """Random points: brain pixels jittered within the pixel (a fraction of them near the
        tumour, see NEAR_RADIUS), times in [0, last scan] skewed to early ones (TIME_POWER); drawn
        anew every step (`resample_collocation`), so the front is covered over the steps."""
        n_points = n_res[0] * n_res[1]
        n_near = int(NEAR_FRACTION * n_points) if len(self.near_points) else 0
        rng = np.random.default_rng([self.seed, seed])
        space = np.concatenate([
            self.near_points[rng.integers(0, len(self.near_points), n_near)],
            self.brain_points[rng.integers(0, len(self.brain_points), n_points - n_near)]])
        space = space + (rng.random((n_points, 2)) - 0.5) * self.pixel_size
        times = self.last_scan * rng.random(n_points) ** TIME_POWER
        return torch.as_tensor(np.column_stack([space, times]), dtype=dtype)
