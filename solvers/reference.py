"""What a reference solve returns, and sampling it at points (numpy/scipy only).

A problem's declaration (`bilo.model.ReferenceSpec`) names the solver function; it returns a
`Reference`: u over its axes, the node coordinates and the input functions as sampled.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import RegularGridInterpolator

from solvers.common import InputError


@dataclass(frozen=True)
class Reference:
    """What a reference solve returns: u over `axes`, node coordinates, and sampled inputs."""

    axes: tuple[str, ...]
    grid: dict[str, np.ndarray]
    u: np.ndarray
    inputs: dict[str, np.ndarray]
    scheme: str
    resolution: str


def toolkit_version() -> str:
    try:
        return importlib.metadata.version("bilo-toolkit")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def observation_points(layout: str, n_obs: int, grid: dict[str, np.ndarray],
                       layouts: tuple[str, ...]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Evenly spaced observation coordinates for a layout (one of `layouts`, those the
    problem allows); columns are the grid's one axis, or (x, t)."""
    if layout not in layouts:
        raise InputError(f"observation layouts are {', '.join(layouts)}, not '{layout}'")
    if n_obs < 2:
        raise InputError(f"--n-obs must be at least 2, got {n_obs}")
    if layout == "points":  # a steady problem or an ODE: one axis
        (axis,) = grid
        return np.linspace(grid[axis][0], grid[axis][-1], n_obs)[:, None], (axis,)
    x = np.linspace(grid["x"][0], grid["x"][-1], n_obs)
    t_end = grid["t"][-1]
    if layout == "final":
        return np.column_stack([x, np.full(n_obs, t_end)]), ("x", "t")
    t = np.linspace(grid["t"][0], t_end, n_obs)
    xx, tt = np.meshgrid(x, t, indexing="xy")
    return np.column_stack([xx.ravel(), tt.ravel()]), ("x", "t")


def sample(reference: Reference, points: np.ndarray, columns: tuple[str, ...]) -> np.ndarray:
    """u at `points` by multilinear interpolation on the reference grid (exact at its nodes)."""
    axes_values = tuple(reference.grid[a] for a in reference.axes)
    order = [columns.index(a) for a in reference.axes]
    interpolate = RegularGridInterpolator(axes_values, reference.u, method="linear")
    return interpolate(points[:, order])


def sample_events(x: np.ndarray, u: np.ndarray, n_snapshots: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Snapshots of the spatial Poisson process on [x[0], x[-1]] whose intensity is u (nodal
    values, linearly interpolated; u >= 0), by thinning: per snapshot, a homogeneous Poisson
    process of rate u_max = max u (count ~ Poisson(u_max·|domain|), positions uniform), each
    point kept with probability u(q)/u_max. The kept points form a Poisson process of intensity
    u exactly (for the piecewise-linear u, whose maximum is a nodal value), so a snapshot holds
    Poisson(∫u) events.

    Returns (positions (n,), snapshot index (n,) in 0..n_snapshots−1), in snapshot order."""
    x, u = np.asarray(x, dtype=np.float64), np.asarray(u, dtype=np.float64)
    if n_snapshots < 1:
        raise InputError(f"--snapshots must be at least 1, got {n_snapshots}")
    if u.ndim != 1 or u.shape != x.shape:
        raise InputError(f"events need a steady 1-D intensity; got u of shape {u.shape}")
    if not np.all(np.isfinite(u)) or u.min() < 0:
        raise InputError(f"the intensity u must be finite and >= 0 to draw events, "
                         f"got range [{u.min():.4g}, {u.max():.4g}]")
    top, length = float(u.max()), float(x[-1] - x[0])
    positions, snapshot = [], []
    for j in range(int(n_snapshots)):
        candidates = x[0] + length * rng.random(rng.poisson(top * length))
        kept = candidates[rng.random(candidates.size) * top < np.interp(candidates, x, u)]
        positions.append(np.sort(kept))
        snapshot.append(np.full(kept.size, j, dtype=np.int64))
    return np.concatenate(positions), np.concatenate(snapshot)
