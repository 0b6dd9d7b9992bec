"""Operator-learning datasets: many reference solves of one problem in one HDF5 file.

`bilo dataset` (`bilo.dataset`) writes them, the DeepONet baseline (`bilo.deeponet`) reads them.
numpy and h5py only. The layout (kind ``dataset`` of the exchange format's family, so
`solvers.exchange.open_h5` reads its header):

  /@problem                     the problem's name
  /parameters/theta (n, p)      the parameter values of each sample, columns in @names
  /constants                    attributes: parameters fixed for every sample
  /functions/x (m,)             where the unknown functions are sampled (the solver's x)
  /functions/<name> (n, m)      each sample's function there
  /grid/<axis>                  the solver's grid
  /u (n, *grid)                 each sample's solution, axes in @axes; chunked one sample per
                                chunk, shuffle + gzip
  /provenance                   attributes: solver, scheme, resolution, the parameter set's
                                description, versions

Nothing in the file depends on when or on how many MPI ranks it was made (no time stamp, no
wall time, no host): the same command gives the same bytes (`bilo dataset --np N`). The file is
written under a temporary name beside the target and renamed when complete.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from solvers.common import atomic_path
from solvers.exchange import FORMAT_NAME, FORMAT_VERSION, ExchangeError, open_h5

KIND = "dataset"


@dataclass
class Dataset:
    """Solutions u[i] of one problem at the parameters theta[i] (columns `names`) and, for
    unknown functions, the functions[name][i] sampled at `function_x`."""

    problem: str
    names: tuple[str, ...]
    theta: np.ndarray  # (n, p)
    axes: tuple[str, ...]
    grid: dict[str, np.ndarray]
    u: np.ndarray  # (n, *grid shape)
    constants: dict[str, float] = field(default_factory=dict)
    function_x: np.ndarray | None = None
    functions: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (n, m)
    provenance: dict[str, str | float | int] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return int(self.u.shape[0])


def write_dataset(path: str | os.PathLike, data: Dataset) -> Path:
    """Write `data` to `path` (atomically; the same data give the same bytes)."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.attrs["format"] = FORMAT_NAME
            h5.attrs["format_version"] = FORMAT_VERSION
            h5.attrs["kind"] = KIND
            h5.attrs["problem"] = data.problem
            theta = h5.create_group("parameters").create_dataset(
                "theta", data=np.asarray(data.theta, np.float64).reshape(data.n_samples, -1))
            theta.attrs["names"] = ",".join(data.names)
            h5.create_group("constants").attrs.update(
                {k: float(v) for k, v in data.constants.items()})
            if data.functions:
                group = h5.create_group("functions")
                group.create_dataset("x", data=np.asarray(data.function_x, np.float64))
                for name, values in data.functions.items():
                    group.create_dataset(name, data=np.asarray(values, np.float64),
                                         chunks=(1, values.shape[1]), shuffle=True,
                                         compression="gzip", compression_opts=4)
            grid = h5.create_group("grid")
            for axis in data.axes:
                grid.create_dataset(axis, data=np.asarray(data.grid[axis], np.float64))
            u = h5.create_dataset("u", data=np.asarray(data.u, np.float64),
                                  chunks=(1, *data.u.shape[1:]), shuffle=True,
                                  compression="gzip", compression_opts=4)
            u.attrs["axes"] = ",".join(data.axes)
            h5.create_group("provenance").attrs.update(data.provenance)
    return Path(path)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_dataset(path: str | os.PathLike) -> Dataset:
    """Read and check a dataset file; errors name the file and the field."""
    with open_h5(path, kind=KIND) as h5:
        def need(name: str):
            if name not in h5:
                raise ExchangeError(path, name, "missing")
            return h5[name]

        problem = _text(h5.attrs.get("problem", ""))
        theta_ds = need("parameters/theta")
        names = tuple(n for n in _text(theta_ds.attrs.get("names", "")).split(",") if n)
        theta = np.asarray(theta_ds[()], dtype=np.float64)
        u_ds = need("u")
        axes = tuple(a for a in _text(u_ds.attrs.get("axes", "")).split(",") if a)
        grid = {a: need(f"grid/{a}")[()].astype(np.float64) for a in axes}
        u = np.asarray(u_ds[()], dtype=np.float64)
        constants = ({k: float(v) for k, v in h5["constants"].attrs.items()}
                     if "constants" in h5 else {})
        function_x, functions = None, {}
        if "functions" in h5:
            function_x = need("functions/x")[()].astype(np.float64)
            functions = {k: h5["functions"][k][()].astype(np.float64)
                         for k in h5["functions"] if k != "x"}
        provenance = {k: _text(v) if isinstance(v, (bytes, str)) else
                      (v.item() if isinstance(v, np.generic) else v)
                      for k, v in h5["provenance"].attrs.items()} if "provenance" in h5 else {}
    n = u.shape[0] if u.ndim else 0
    if n < 1:
        raise ExchangeError(path, "u", "holds no sample")
    if theta.shape != (n, len(names)):
        raise ExchangeError(path, "parameters/theta", f"shape {theta.shape}, expected "
                                                      f"({n}, {len(names)}) for names {names}")
    shape = tuple(len(grid[a]) for a in axes)
    if u.shape[1:] != shape:
        raise ExchangeError(path, "u", f"shape {u.shape[1:]} per sample, the grid has {shape}")
    for name, values in functions.items():
        if values.shape != (n, len(function_x)):
            raise ExchangeError(path, f"functions/{name}", f"shape {values.shape}, expected "
                                                           f"({n}, {len(function_x)})")
    for name, values in (("u", u), ("parameters/theta", theta),
                         *((f"functions/{k}", v) for k, v in functions.items())):
        if not np.all(np.isfinite(values)):
            raise ExchangeError(path, name, "holds non-finite values")
    return Dataset(problem=problem, names=names, theta=theta, axes=axes, grid=grid, u=u,
                   constants=constants, function_x=function_x, functions=functions,
                   provenance=provenance)


def describe_dataset(data: Dataset, path: str | os.PathLike = "") -> str:
    """A human-readable summary of a dataset file, for `bilo info`."""
    lines = [f"file       {path}", f"problem    {data.problem} (dataset of {data.n_samples} "
                                                f"solves)"]
    for j, name in enumerate(data.names):
        values = np.unique(data.theta[:, j])
        lines.append(f"parameter  {name}: {len(values)} values in [{values[0]:g}, "
                     f"{values[-1]:g}]")
    for name, values in data.functions.items():
        lines.append(f"function   {name}: {values.shape[0]} draws on {values.shape[1]} points, "
                     f"range [{values.min():.4g}, {values.max():.4g}]")
    for axis in data.axes:
        g = data.grid[axis]
        lines.append(f"grid {axis:<5} {len(g)} nodes in [{g[0]:g}, {g[-1]:g}]")
    lines.append(f"solution   u{list(data.u.shape)} over (sample, {', '.join(data.axes)}), "
                 f"range [{data.u.min():.4g}, {data.u.max():.4g}]")
    if data.provenance:
        lines.append("provenance " + ", ".join(f"{k}={v}" for k, v in data.provenance.items()
                                               if v != ""))
    return "\n".join(lines)
