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
