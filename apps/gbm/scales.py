"""Characteristic scales of a GBM patient: how the toolkit nondimensionalises the tumour model.

The model on an axial slice Ω (mm), with dimensionless time t in [0, 1] (t = 1: the scan)::

    u_t = D·D̄ ∇·(P(x)∇u) + ρ·ρ̄ u(1 − u)   in Ω,   no flux on ∂Ω,
    u(x, 0) = A·exp(−|x − x_c|² / (2 w²)),

with D, ρ the dimensionless unknowns (O(1)) and D̄ (mm² per unit time), ρ̄ (per unit time) the
characteristic scales estimated from the segmentation:

* Length L (mm): the equivalent radius of the whole tumour, ``L = sqrt(area_WT / π)``.
  Chosen over "farthest WT pixel from the TC centroid" because it is an area average: it does
  not jump with one stray or disconnected WT pixel, nor with the orientation of an elongated
  tumour, and it is defined for any segmentation.
* Growth scale ρ̄ = :data:`RHO_BAR` = 5 e-foldings per unit time, fixed: the tumour's age is the
  time unit, and 5 e-foldings over it matches published GBM proliferation rates times ages
  (ρ ≈ 0.01–0.03 /day over a year or so).
* Diffusion scale D̄: with D = ρ = 1 and P = 1 the Fisher–KPP front speed
  ``c = 2·sqrt(D̄·ρ̄)`` (mm per unit time) carries the front over the distance L in the time
  T = 1, c·T = L, hence ``D̄ = L² / (4 ρ̄ T²) = L²/20``. Then the infiltration length
  ``sqrt(D̄/ρ̄) = L/(2ρ̄) = L/10`` (2 mm for L = 20 mm, as measured for GBM).
* Centre x_c: the centroid of the tumour-core (TC) pixels in mm. The initial condition is a
  Gaussian there with standard deviation w = :data:`IC_WIDTH_MM` = 2.5 mm and amplitude
  A = :data:`IC_AMPLITUDE` = 0.5: a small seed, fixed in mm (not scaled with L) so that a
  synthetic patient and the inference on its segmentation use the same seed shape.

In coordinates scaled by L, x̂ = (x − x_c)/L, the model reads
``û_t = (D/(4ρ̄)) ∇̂·(P∇̂u) + ρ·ρ̄ u(1−u)``: the dimensionless diffusion is D/20.
The lag of the logistic start and the slower diffusion in grey matter hold the front back, so
D = ρ = 1 gives an equivalent WT radius below L and a tumour's dimensionless D is typically
above 1 (measured in docs/gbm.md).

The physically meaningful (scale-free) quantities are the products D·D̄ (mm² per unit time)
and ρ·ρ̄ (per unit time).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from solvers.common import InputError
from solvers.fem.reaction_diffusion import gaussian_initial_condition

RHO_BAR = 5.0
FRONT_TIME = 1.0
IC_WIDTH_MM = 2.5
IC_AMPLITUDE = 0.5
# Prior ranges of the segmentation thresholds. From the two masks of one scan alone, (D, ρ) are
# not identifiable when the thresholds are free: other (D, ρ) with other thresholds draw the
# same two contours (see docs/gbm.md). The thresholds are kept in these ranges, which the
# synthetic generator also draws from.
THRESHOLD_RANGES = {"th_wt": (0.2, 0.35), "th_tc": (0.5, 0.7)}


@dataclass(frozen=True)
class Scales:
    """Characteristic scales (see the module docstring).

    Attributes:
        L_mm: characteristic length (equivalent WT radius), mm.
        D_bar_mm2: diffusion scale D̄, mm² per unit time.
        rho_bar: growth-rate scale ρ̄, per unit time.
        centroid_mm: (x, y) of the initial condition's centre (the TC centroid), mm.
        ic_width_mm, ic_amplitude: standard deviation and amplitude of the initial Gaussian.
    """

    L_mm: float
    D_bar_mm2: float
    rho_bar: float
    centroid_mm: tuple[float, float]
    ic_width_mm: float = IC_WIDTH_MM
    ic_amplitude: float = IC_AMPLITUDE

    @property
    def front_speed_mm(self) -> float:
        """Fisher–KPP front speed 2·sqrt(D̄ρ̄) for D = ρ = P = 1, mm per unit time."""
        return 2.0 * float(np.sqrt(self.D_bar_mm2 * self.rho_bar))

    @property
    def diffusion_hat(self) -> float:
        """D̄/L²: the diffusion scale in coordinates scaled by L (= 1/(4ρ̄) by construction)."""
        return self.D_bar_mm2 / self.L_mm**2

    def initial_condition(self, points_mm):
        """u(x, 0) at points (N, 2) in mm (see :func:`initial_condition`)."""
        return initial_condition(points_mm, self.centroid_mm, self.ic_width_mm,
                                 self.ic_amplitude)

    def to_dict(self) -> dict:
        record = asdict(self)
        record["centroid_mm"] = [float(c) for c in self.centroid_mm]
        return record


def scales_from_length(L_mm: float, centroid_mm, *, rho_bar: float = RHO_BAR,
                       ic_width_mm: float = IC_WIDTH_MM,
                       ic_amplitude: float = IC_AMPLITUDE) -> Scales:
    """The scales for a characteristic length: ρ̄ fixed, D̄ = L²/(4ρ̄T²) (T = 1)."""
    L_mm, rho_bar = float(L_mm), float(rho_bar)
    if not (np.isfinite(L_mm) and L_mm > 0):
        raise InputError(f"characteristic length must be > 0, got {L_mm}")
    if not (np.isfinite(rho_bar) and rho_bar > 0):
        raise InputError(f"rho_bar must be > 0, got {rho_bar}")
    centre = np.asarray(centroid_mm, dtype=np.float64).ravel()
    if centre.shape != (2,) or not np.all(np.isfinite(centre)):
        raise InputError(f"centroid must be two finite mm coordinates, got {centroid_mm}")
    D_bar = L_mm**2 / (4.0 * rho_bar * FRONT_TIME**2)
    return Scales(L_mm=L_mm, D_bar_mm2=D_bar, rho_bar=rho_bar,
                  centroid_mm=(float(centre[0]), float(centre[1])),
                  ic_width_mm=float(ic_width_mm), ic_amplitude=float(ic_amplitude))


def equivalent_radius_mm(mask, pixel_area_mm2: float) -> float:
    """sqrt(area / π) of a mask, in mm."""
    return float(np.sqrt(np.count_nonzero(mask) * pixel_area_mm2 / np.pi))


def mask_centroid_mm(mask, affine2d) -> tuple[float, float]:
    """Centroid (mm) of the pixel centres of a 2-D mask; `affine2d` maps voxel to mm (3×3)."""
    ij = np.argwhere(np.asarray(mask, dtype=bool)).astype(np.float64)
    if len(ij) == 0:
        raise InputError("centroid of an empty mask")
    affine2d = np.asarray(affine2d, dtype=np.float64)
    centre = ij.mean(axis=0) @ affine2d[:2, :2].T + affine2d[:2, 2]
    return float(centre[0]), float(centre[1])


def estimate_scales(wt, tc, affine2d, *, rho_bar: float = RHO_BAR) -> Scales:
    """Scales from the WT and TC masks of a slice (see the module docstring): L = equivalent WT
    radius, D̄ = L²/(4ρ̄), centre = TC centroid."""
    wt, tc = np.asarray(wt, dtype=bool), np.asarray(tc, dtype=bool)
    if not wt.any():
        raise InputError("characteristic scales: the whole-tumour mask is empty")
    if not tc.any():
        raise InputError("characteristic scales: the tumour-core mask is empty")
    affine2d = np.asarray(affine2d, dtype=np.float64)
    pixel_area = abs(float(np.linalg.det(affine2d[:2, :2])))
    return scales_from_length(equivalent_radius_mm(wt, pixel_area),
                              mask_centroid_mm(tc, affine2d), rho_bar=rho_bar)


def patient_scales(patient, *, rho_bar: float = RHO_BAR) -> Scales:
    """:func:`estimate_scales` of an ``apps.gbm.patient.Patient``."""
    return estimate_scales(patient.wt, patient.tc, patient.affine2d, rho_bar=rho_bar)


def initial_condition(points_mm, centroid_mm, width_mm: float = IC_WIDTH_MM,
                      amplitude: float = IC_AMPLITUDE) -> np.ndarray:
    """A·exp(−|x − x_c|²/(2w²)) at points (N, 2) in mm (extra columns ignored):
    ``solvers.fem.reaction_diffusion.gaussian_initial_condition`` with the GBM defaults."""
    return gaussian_initial_condition(points_mm, centroid_mm, width_mm, amplitude)


__all__ = [
    "FRONT_TIME",
    "IC_AMPLITUDE",
    "IC_WIDTH_MM",
    "RHO_BAR",
    "Scales",
    "equivalent_radius_mm",
    "estimate_scales",
    "initial_condition",
    "mask_centroid_mm",
    "patient_scales",
    "scales_from_length",
]
