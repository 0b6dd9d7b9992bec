"""The HDF5 exchange format between the reference solvers and the trainer.

Every writer and reader of solution files goes through this module, so that a solve on a CPU
cluster (numpy/dolfinx/MPI) and training on a GPU box (torch only) agree on one layout.
It imports numpy, h5py and ``solvers.common`` only. The layout is specified in ``docs/hdf5.md``.

Writes are atomic (``solvers.common.atomic_path``): the file is written under a temporary name in
the target folder and renamed over the target only once complete, so an interrupted write never
leaves a half-written file and never destroys the previous one. Reads validate everything and
raise :class:`ExchangeError` whose message names the file and the field.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from solvers.common import InputError, atomic_path

FORMAT_NAME = "bilo-toolkit/exchange"
FORMAT_VERSION = 1


class ExchangeError(InputError):
    """A file that does not hold what the exchange format requires."""

    def __init__(self, path: str | os.PathLike, field: str, problem: str):
        self.path, self.field, self.problem = str(path), field, problem
        super().__init__(f"{path}: field '{field}': {problem}")


@dataclass
class Mesh:
    """An unstructured mesh: vertex coordinates (n_vertices, gdim) and cells (n_cells, k)."""

    vertices: np.ndarray
    cells: np.ndarray
    units: str = "dimensionless"


@dataclass
class Observations:
    """Point observations: coordinates (n, d) in the order of `columns`, noisy values (n,)."""

    points: np.ndarray
    values: np.ndarray
    columns: tuple[str, ...]
    sigma: float = 0.0
    seed: int | None = None
    clean: np.ndarray | None = None
    layout: str = ""

    def points_in(self, columns: tuple[str, ...], source: str = "the data file") -> np.ndarray:
        """The points with their columns in the given order (a problem's coordinates)."""
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise InputError(f"{source}: field 'observations/@columns': has {self.columns}, "
                             f"needs {columns}")
        return self.points[:, [self.columns.index(c) for c in columns]]


@dataclass
class Events:
    """Event positions pooled over snapshots: e.g. the particles seen in M images of cells,
    each image a realisation of a spatial Poisson process.

    `positions` (n, d) in the order of `columns`, `snapshot` (n,) the index 0..M−1 of the
    snapshot each event was seen in, `n_snapshots` M (a snapshot may hold no event, so M is
    stored, not inferred). `seed`: of the generator that drew synthetic events (None if none).
    """

    positions: np.ndarray
    snapshot: np.ndarray
    n_snapshots: int
    columns: tuple[str, ...] = ("x",)
    seed: int | None = None

    def positions_in(self, columns: tuple[str, ...], source: str = "the data file") -> np.ndarray:
        """The positions with their columns in the given order (a problem's coordinates)."""
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise InputError(f"{source}: field 'events/@columns': has {self.columns}, "
                             f"needs {columns}")
        return self.positions[:, [self.columns.index(c) for c in columns]]

    def counts(self) -> np.ndarray:
        """Number of events in each snapshot, (M,)."""
        return np.bincount(np.asarray(self.snapshot, dtype=np.int64),
                           minlength=int(self.n_snapshots))


@dataclass
class SolutionFile:
    """Everything one exchange file holds.

    `u` has one dimension per name in `axes`. A structured-grid axis (``x``, ``t``, ...) has its
    node coordinates in `grid`; the axis name ``vertex`` refers to the rows of `mesh.vertices`.
    `inputs` holds functions given on the spatial grid or mesh (e.g. a diffusion D(x)).
    `observations` (values of u at points) and `events` (positions of a point process whose
    intensity is u) are both optional; a file may hold either, both or neither.
    """

    problem: str
    params: dict[str, float]
    axes: tuple[str, ...]
    grid: dict[str, np.ndarray]
    u: np.ndarray
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    observations: Observations | None = None
    mesh: Mesh | None = None
    provenance: dict[str, str | float | int] = field(default_factory=dict)
    events: Events | None = None

    def axis_length(self, name: str) -> int:
        if name == "vertex":
            if self.mesh is None:
                raise ValueError("axis 'vertex' needs a mesh")
            return len(self.mesh.vertices)
        return len(self.grid[name])


@contextlib.contextmanager
def atomic_h5(path: str | os.PathLike, kind: str) -> Iterator[h5py.File]:
    """Open a new HDF5 file for writing that appears at `path` only once fully written.

    The file is built in memory and written out with plain file I/O: a full disk or a file
    size limit is then an OSError naming the file (HDF5 failing in mid-write crashes the
    interpreter at exit), and nothing at `path` is touched."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        h5.attrs["format"] = FORMAT_NAME
        h5.attrs["format_version"] = FORMAT_VERSION
        h5.attrs["kind"] = kind
        h5.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        yield h5
    try:
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(buffer.getbuffer())
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None


def write_solution(path: str | os.PathLike, data: SolutionFile) -> Path:
    """Validate `data` and write it atomically to `path`."""
    _check_solution(data, str(path))
    with atomic_h5(path, kind="solution") as h5:
        h5.attrs["problem"] = data.problem
        params = h5.create_group("params")
        for name, value in data.params.items():
            params.attrs[name] = float(value)
        grid = h5.create_group("grid")
        for name, values in data.grid.items():
            grid.create_dataset(name, data=np.asarray(values, dtype=np.float64))
        if data.mesh is not None:
            mesh = h5.create_group("mesh")
            mesh.attrs["units"] = data.mesh.units
            mesh.create_dataset("vertices", data=np.asarray(data.mesh.vertices, np.float64))
            mesh.create_dataset("cells", data=np.asarray(data.mesh.cells, np.int64))
        solution = h5.create_group("solution")
        u = solution.create_dataset("u", data=np.asarray(data.u, np.float64), compression="gzip")
        u.attrs["axes"] = ",".join(data.axes)
        if data.inputs:
            inputs = h5.create_group("inputs")
            for name, values in data.inputs.items():
                inputs.create_dataset(name, data=np.asarray(values, np.float64))
        if data.observations is not None:
            _write_observations(h5.create_group("observations"), data.observations)
        if data.events is not None:
            _write_events(h5.create_group("events"), data.events)
        provenance = h5.create_group("provenance")
        for key, value in data.provenance.items():
            provenance.attrs[key] = value
    return Path(path)


def _write_observations(group: h5py.Group, obs: Observations) -> None:
    group.attrs["columns"] = ",".join(obs.columns)
    group.attrs["sigma"] = float(obs.sigma)
    group.attrs["seed"] = -1 if obs.seed is None else int(obs.seed)
    group.attrs["layout"] = obs.layout
    group.create_dataset("points", data=np.asarray(obs.points, np.float64))
    group.create_dataset("values", data=np.asarray(obs.values, np.float64))
    if obs.clean is not None:
        group.create_dataset("clean", data=np.asarray(obs.clean, np.float64))


def _write_events(group: h5py.Group, events: Events) -> None:
    group.attrs["columns"] = ",".join(events.columns)
    group.attrs["n_snapshots"] = int(events.n_snapshots)
    group.attrs["seed"] = -1 if events.seed is None else int(events.seed)
    group.create_dataset("positions", data=np.asarray(events.positions, np.float64))
    group.create_dataset("snapshot", data=np.asarray(events.snapshot, np.int64))


def open_h5(path: str | os.PathLike, kind: str | None = None) -> h5py.File:
    """Open one of our HDF5 files read-only, with clear errors for missing, corrupt or foreign
    files. `kind` (``solution``, ``result``, ...) is checked when given."""
    if not Path(path).exists():
        raise ExchangeError(path, "/", "file does not exist")
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        reason = str(exc).split("(")[0].strip().rstrip(",") or "unreadable"
        raise ExchangeError(path, "/", f"not a readable HDF5 file (truncated or corrupt?): "
                                       f"{reason}") from None
    fmt = h5.attrs.get("format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt != FORMAT_NAME:
        h5.close()
        raise ExchangeError(path, "/@format", f"expected '{FORMAT_NAME}', found {fmt!r}: "
                                              "not a bilo-toolkit file")
    version = int(h5.attrs.get("format_version", -1))
    if version > FORMAT_VERSION:
        h5.close()
        raise ExchangeError(path, "/@format_version", f"version {version} is newer than this "
                                                      f"toolkit reads ({FORMAT_VERSION})")
    found_kind = _text(h5.attrs.get("kind", ""))
    if kind is not None and found_kind != kind:
        h5.close()
        raise ExchangeError(path, "/@kind", f"expected a '{kind}' file, found '{found_kind}'")
    return h5


def read_solution(path: str | os.PathLike) -> SolutionFile:
    """Read and validate a solution file written by :func:`write_solution`."""
    with open_h5(path, kind="solution") as h5:
        problem = _text(_attr(h5, path, "/", "problem"))
        params = {k: float(v) for k, v in _group(h5, path, "params").attrs.items()}
        grid = {name: _array(h5, path, f"grid/{name}") for name in _group(h5, path, "grid")}
        mesh = None
        if "mesh" in h5:
            mesh = Mesh(vertices=_array(h5, path, "mesh/vertices"),
                        cells=_array(h5, path, "mesh/cells", dtype=np.int64),
                        units=_text(h5["mesh"].attrs.get("units", "dimensionless")))
        u = _array(h5, path, "solution/u")
        axes = tuple(a for a in _text(_attr(h5, path, "solution/u", "axes")).split(",") if a)
        inputs = ({name: _array(h5, path, f"inputs/{name}") for name in h5["inputs"]}
                  if "inputs" in h5 else {})
        observations = _read_observations(h5, path) if "observations" in h5 else None
        events = _read_events(h5, path) if "events" in h5 else None
        provenance = ({k: _plain(v) for k, v in h5["provenance"].attrs.items()}
                      if "provenance" in h5 else {})
    data = SolutionFile(problem=problem, params=params, axes=axes, grid=grid, u=u, inputs=inputs,
                        observations=observations, mesh=mesh, provenance=provenance,
                        events=events)
    _check_solution(data, str(path))
    return data


def _read_observations(h5: h5py.File, path) -> Observations:
    group = h5["observations"]
    seed = int(group.attrs.get("seed", -1))
    clean = _array(h5, path, "observations/clean") if "clean" in group else None
    columns = tuple(c for c in _text(_attr(h5, path, "observations", "columns")).split(",") if c)
    return Observations(points=_array(h5, path, "observations/points"),
                        values=_array(h5, path, "observations/values"),
                        columns=columns, sigma=float(group.attrs.get("sigma", 0.0)),
                        seed=None if seed < 0 else seed, clean=clean,
                        layout=_text(group.attrs.get("layout", "")))


def _read_events(h5: h5py.File, path) -> Events:
    group = h5["events"]
    if not isinstance(group, h5py.Group):
        raise ExchangeError(path, "events", "expected a group")
    seed = int(group.attrs.get("seed", -1))
    columns = tuple(c for c in _text(_attr(h5, path, "events", "columns")).split(",") if c)
    count = _attr(h5, path, "events", "n_snapshots")
    try:
        n_snapshots = int(count)
        if n_snapshots != float(count):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise ExchangeError(path, "events/@n_snapshots",
                            f"must be a whole number, got {count!r}") from None
    positions = _array(h5, path, "events/positions")
    snapshot = _array(h5, path, "events/snapshot")  # float first: NaN is reported, not cast
    _check_finite(path, "events/snapshot", snapshot)
    if np.any(snapshot != np.round(snapshot)):
        raise ExchangeError(path, "events/snapshot", "snapshot indices must be whole numbers")
    return Events(positions=positions, snapshot=snapshot.astype(np.int64),
                  n_snapshots=n_snapshots, columns=columns, seed=None if seed < 0 else seed)


def _check_solution(data: SolutionFile, path: str) -> None:
    """Shapes must agree and every number must be finite; name the field that is wrong."""
    for name, value in data.params.items():
        if not np.isfinite(value):
            raise ExchangeError(path, f"params/@{name}", f"not finite ({value})")
    for name, values in data.grid.items():
        _check_finite(path, f"grid/{name}", values)
        if np.ndim(values) != 1 or len(values) < 2:
            raise ExchangeError(path, f"grid/{name}", f"must be 1-D with >= 2 nodes, "
                                                      f"got shape {np.shape(values)}")
        if np.any(np.diff(values) <= 0):
            raise ExchangeError(path, f"grid/{name}", "node coordinates must increase")
    if data.mesh is not None:
        _check_finite(path, "mesh/vertices", data.mesh.vertices)
        if np.ndim(data.mesh.vertices) != 2 or np.ndim(data.mesh.cells) != 2:
            raise ExchangeError(path, "mesh", "vertices and cells must be 2-D arrays")
        n_vertices = len(data.mesh.vertices)
        if data.mesh.cells.size and (data.mesh.cells.min() < 0
                                     or data.mesh.cells.max() >= n_vertices):
            raise ExchangeError(path, "mesh/cells", f"vertex index outside 0..{n_vertices - 1}")
    for axis in data.axes:
        if axis == "vertex" and data.mesh is None:
            raise ExchangeError(path, "solution/u@axes", "axis 'vertex' but no /mesh group")
        if axis != "vertex" and axis not in data.grid:
            raise ExchangeError(path, "solution/u@axes", f"axis '{axis}' has no grid/{axis}")
    expected = tuple(data.axis_length(a) for a in data.axes)
    if np.shape(data.u) != expected:
        raise ExchangeError(path, "solution/u", f"shape {np.shape(data.u)} does not match axes "
                                                f"{data.axes} of lengths {expected}")
    _check_finite(path, "solution/u", data.u)
    spatial = [a for a in data.axes if a != "t"]
    spatial_shape = tuple(data.axis_length(a) for a in spatial)
    for name, values in data.inputs.items():
        _check_finite(path, f"inputs/{name}", values)
        if np.shape(values) != spatial_shape:
            raise ExchangeError(path, f"inputs/{name}", f"shape {np.shape(values)} does not "
                                                        f"match the spatial grid {spatial_shape}")
    if data.observations is not None:
        check_observations(data.observations, path)
    if data.events is not None:
        check_events(data.events, path, data.grid)


def check_observations(obs: Observations, path: str) -> None:
    points, values = np.asarray(obs.points), np.asarray(obs.values)
    if points.ndim != 2 or points.shape[1] != len(obs.columns):
        raise ExchangeError(path, "observations/points",
                            f"shape {points.shape} does not match columns {obs.columns}")
    if values.shape != (points.shape[0],):
        raise ExchangeError(path, "observations/values", f"shape {values.shape}, expected "
                                                         f"({points.shape[0]},) as points")
    if len(values) == 0:
        raise ExchangeError(path, "observations/values", "no observations")
    _check_finite(path, "observations/points", points)
    _check_finite(path, "observations/values", values)
    if obs.clean is not None:
        if np.shape(obs.clean) != values.shape:
            raise ExchangeError(path, "observations/clean", f"shape {np.shape(obs.clean)}, "
                                                            f"expected {values.shape}")
        _check_finite(path, "observations/clean", obs.clean)
    if not np.isfinite(obs.sigma) or obs.sigma < 0:
        raise ExchangeError(path, "observations/@sigma", f"must be >= 0, got {obs.sigma}")


def check_events(events: Events, path: str, grid: dict[str, np.ndarray] | None = None) -> None:
    """Positions (n, d) matching the columns, at least one event, every position finite and
    inside the domain (the range of the grid axis of the same name; [0, 1] without one),
    M >= 1 snapshots, every snapshot index in 0..M−1."""
    positions, snapshot = np.asarray(events.positions), np.asarray(events.snapshot)
    if positions.ndim != 2 or positions.shape[1] != len(events.columns):
        raise ExchangeError(path, "events/positions",
                            f"shape {positions.shape} does not match columns {events.columns}")
    if positions.shape[0] == 0:
        raise ExchangeError(path, "events/positions", "no events")
    if snapshot.shape != (positions.shape[0],):
        raise ExchangeError(path, "events/snapshot", f"shape {snapshot.shape}, expected "
                                                     f"({positions.shape[0]},) as positions")
    _check_finite(path, "events/positions", positions)
    _check_finite(path, "events/snapshot", snapshot)
    if not np.issubdtype(snapshot.dtype, np.integer):
        raise ExchangeError(path, "events/snapshot", f"expected integers, found dtype "
                                                     f"{snapshot.dtype}")
    n_snapshots = events.n_snapshots
    if isinstance(n_snapshots, bool) or not isinstance(n_snapshots, (int, np.integer)) \
            or n_snapshots < 1:
        raise ExchangeError(path, "events/@n_snapshots",
                            f"must be a whole number >= 1, got {n_snapshots!r}")
    outside = (snapshot < 0) | (snapshot >= n_snapshots)
    if outside.any():
        raise ExchangeError(path, "events/snapshot",
                            f"{int(outside.sum())} index(es) outside 0..{n_snapshots - 1}, "
                            f"e.g. {int(snapshot[outside][0])}")
    for j, column in enumerate(events.columns):
        axis = (grid or {}).get(column)
        lo, hi = (float(axis[0]), float(axis[-1])) if axis is not None else (0.0, 1.0)
        bad = (positions[:, j] < lo) | (positions[:, j] > hi)
        if bad.any():
            raise ExchangeError(path, "events/positions",
                                f"{int(bad.sum())} event(s) with {column} outside [{lo:g}, "
                                f"{hi:g}], e.g. {positions[bad][0].tolist()}")


def _check_finite(path, name: str, values) -> None:
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.number):
        raise ExchangeError(path, name, f"expected numbers, found dtype {values.dtype}")
    bad = ~np.isfinite(values)
    if bad.any():
        first = np.unravel_index(int(np.argmax(bad)), values.shape)
        raise ExchangeError(path, name, f"{int(bad.sum())} non-finite value(s) (NaN/inf), "
                                        f"first at index {tuple(int(i) for i in first)}")


def _group(h5: h5py.File, path, name: str) -> h5py.Group:
    if name not in h5 or not isinstance(h5[name], h5py.Group):
        raise ExchangeError(path, name, "missing group")
    return h5[name]


def _array(h5: h5py.File, path, name: str, dtype=np.float64) -> np.ndarray:
    if name not in h5 or not isinstance(h5[name], h5py.Dataset):
        raise ExchangeError(path, name, "missing dataset")
    try:
        values = h5[name][()]
    except (OSError, KeyError) as exc:
        raise ExchangeError(path, name, f"unreadable ({exc})") from None
    try:
        return np.asarray(values, dtype=dtype)
    except (TypeError, ValueError):
        raise ExchangeError(path, name, f"expected numbers, found {values.dtype}") from None


def _attr(h5: h5py.File, path, owner: str, name: str):
    obj = h5 if owner == "/" else h5.get(owner)
    if obj is None:
        raise ExchangeError(path, owner, "missing")
    if name not in obj.attrs:
        raise ExchangeError(path, f"{owner.rstrip('/')}/@{name}", "missing attribute")
    return obj.attrs[name]


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _plain(value):
    """HDF5 attribute -> plain Python value for provenance dictionaries."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def describe(data: SolutionFile, path: str | os.PathLike = "") -> str:
    """A human-readable summary of a solution file, for `bilo info`."""
    lines = [f"file       {path}", f"problem    {data.problem}"]
    lines.append("params     " + (", ".join(f"{k}={v:g}" for k, v in data.params.items())
                                  or "(none)"))
    for axis in data.axes:
        if axis == "vertex":
            m = data.mesh
            lines.append(f"mesh       {len(m.vertices)} vertices ({m.vertices.shape[1]}-D, "
                         f"{m.units}), {len(m.cells)} cells of {m.cells.shape[1]} vertices")
        else:
            g = data.grid[axis]
            lines.append(f"grid {axis:<5} {len(g)} nodes in [{g[0]:g}, {g[-1]:g}]")
    lines.append(f"solution   u{list(data.u.shape)} over ({', '.join(data.axes)}), "
                 f"range [{data.u.min():.4g}, {data.u.max():.4g}]")
    for name, values in data.inputs.items():
        lines.append(f"input      {name}: range [{values.min():.4g}, {values.max():.4g}]")
    obs = data.observations
    if obs is None:
        lines.append("observations (none)")
    else:
        seed = "" if obs.seed is None else f", seed {obs.seed}"
        lines.append(f"observations {len(obs.values)} points over ({', '.join(obs.columns)}), "
                     f"layout '{obs.layout}', noise sigma {obs.sigma:g}{seed}")
    events = data.events
    if events is not None:
        counts = events.counts()
        seed = "" if events.seed is None else f", seed {events.seed}"
        lines.append(f"events     {len(events.positions)} over ({', '.join(events.columns)}) in "
                     f"{events.n_snapshots} snapshots, {counts.mean():.4g} per snapshot "
                     f"(min {counts.min()}, max {counts.max()}){seed}")
    if data.provenance:
        lines.append("provenance " + ", ".join(f"{k}={v}" for k, v in data.provenance.items()))
    return "\n".join(lines)
