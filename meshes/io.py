"""Meshes and mesh functions as XDMF + HDF5 files (reusable, and opened by ParaView and dolfinx).

numpy/h5py only. A mesh ``NAME.xdmf`` is an XDMF 3 text file that describes the data in its
companion ``NAME.h5`` (referenced by file name, so the two move together):

==========================  =========================================================
``/Mesh/mesh/geometry``     vertex coordinates (n_vertices, 2), float64
``/Mesh/mesh/topology``     triangles (n_cells, 3), int64 rows of the geometry
``/Mesh/mesh@units``        unit of the coordinates (``mm`` for image meshes)
``/Fields/cell/NAME``       a field with one value per cell (XDMF Center="Cell")
``/Fields/vertex/NAME``     a field with one value per vertex (XDMF Center="Node")
==========================  =========================================================

The grid is named ``mesh`` and the datasets sit where dolfinx's ``XDMFFile`` puts its own, so
``XDMFFile(comm, "NAME.xdmf", "r").read_mesh(name="mesh")`` reads the mesh (tested), and
:func:`read_mesh` also reads the mesh of an XDMF file written by dolfinx. The files are written
here with h5py rather than by dolfinx so that vertices and cells keep their order (dolfinx
renumbers them) and so that this module runs without dolfinx.

:func:`write_solution_xdmf` writes a solution on a mesh (one snapshot or a time series) for
viewing in ParaView; the exchange file (``solvers.exchange``) remains the data of record.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from meshes.image_mesh import MeshData
from solvers.common import InputError, atomic_path
from solvers.exchange import Mesh, atomic_h5

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_TOPOLOGY = "/Mesh/mesh/topology"
_GEOMETRY = "/Mesh/mesh/geometry"


def _xdmf_path(path) -> Path:
    path = Path(path)
    if path.suffix != ".xdmf":
        raise InputError(f"{path}: a mesh file name must end in .xdmf (its data go to .h5)")
    return path


def _check_mesh(mesh: Mesh, where: str) -> tuple[np.ndarray, np.ndarray]:
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    cells = np.asarray(mesh.cells, dtype=np.int64)
    if vertices.ndim != 2 or vertices.shape[1] not in (2, 3) or len(vertices) == 0:
        raise InputError(f"{where}: vertices must have shape (n, 2) or (n, 3), "
                         f"got {vertices.shape}")
    if cells.ndim != 2 or cells.shape[1] != 3 or len(cells) == 0:
        raise InputError(f"{where}: cells must be triangles of shape (m, 3), got {cells.shape}")
    if cells.min() < 0 or cells.max() >= len(vertices):
        raise InputError(f"{where}: a cell refers to a vertex outside 0..{len(vertices) - 1}")
    if not np.all(np.isfinite(vertices)):
        raise InputError(f"{where}: vertex coordinates must be finite")
    return vertices, cells


def _check_fields(fields: Mapping[str, np.ndarray] | None, size: int, kind: str, where: str):
    checked = {}
    for name, values in (fields or {}).items():
        if not _NAME.match(name):
            raise InputError(f"{where}: field name {name!r} must be letters, digits, _ . -")
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (size,):
            raise InputError(f"{where}: {kind} field '{name}' has shape {values.shape}, "
                             f"expected ({size},)")
        if not np.all(np.isfinite(values)):
            raise InputError(f"{where}: {kind} field '{name}' has non-finite values")
        checked[name] = values
    return checked


def _write_mesh_and_fields(h5: h5py.File, vertices, cells, units: str, cell_fields: dict,
                           vertex_fields: dict) -> list[tuple[str, str, str, int]]:
    """The mesh and its constant fields into `h5`; returns the fields' XDMF attributes."""
    _write_mesh_datasets(h5, vertices, cells, units)
    for name, values in cell_fields.items():
        h5.create_dataset(f"Fields/cell/{name}", data=values)
    for name, values in vertex_fields.items():
        h5.create_dataset(f"Fields/vertex/{name}", data=values)
    return ([(n, "Cell", f"/Fields/cell/{n}", len(cells)) for n in cell_fields]
            + [(n, "Node", f"/Fields/vertex/{n}", len(vertices)) for n in vertex_fields])


def _data_item(h5_name: str, dataset: str, shape: tuple[int, ...], integer: bool = False) -> str:
    number = 'NumberType="Int"' if integer else 'NumberType="Float"'
    dims = " ".join(str(s) for s in shape)
    return (f'<DataItem Dimensions="{dims}" {number} Precision="8" Format="HDF">'
            f"{h5_name}:{dataset}</DataItem>")


def _grid_lines(h5_name: str, name: str, n_vertices: int, n_cells: int, gdim: int,
                units: str, attributes: list[tuple[str, str, str, int]], time: float | None,
                indent: str) -> list[str]:
    geometry_type = "XY" if gdim == 2 else "XYZ"
    lines = [f'<Grid Name="{name}" GridType="Uniform">',
             f'  <Topology TopologyType="Triangle" NumberOfElements="{n_cells}" '
             'NodesPerElement="3">',
             "    " + _data_item(h5_name, _TOPOLOGY, (n_cells, 3), integer=True),
             "  </Topology>",
             f'  <Geometry GeometryType="{geometry_type}">',
             "    " + _data_item(h5_name, _GEOMETRY, (n_vertices, gdim)),
             "  </Geometry>"]
    if units:
        lines.append(f'  <Information Name="units" Value="{units}"/>')
    if time is not None:
        lines.append(f'  <Time Value="{time!r}"/>')
    for attr_name, center, dataset, size in attributes:
        lines += [f'  <Attribute Name="{attr_name}" AttributeType="Scalar" Center="{center}">',
                  "    " + _data_item(h5_name, dataset, (size,)),
                  "  </Attribute>"]
    lines.append("</Grid>")
    return [indent + line for line in lines]


def _write_xdmf(path: Path, grids: list[str]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as stream:
        stream.write('<?xml version="1.0"?>\n<!DOCTYPE Xdmf SYSTEM "Xdmf.dtd" []>\n'
                     '<Xdmf Version="3.0" xmlns:xi="http://www.w3.org/2001/XInclude">\n'
                     "  <Domain>\n")
        stream.write("\n".join(grids) + "\n")
        stream.write("  </Domain>\n</Xdmf>\n")


def _write_mesh_datasets(h5: h5py.File, vertices, cells, units: str) -> None:
    group = h5.create_group("Mesh/mesh")
    group.attrs["units"] = units
    group.create_dataset("geometry", data=vertices)
    group.create_dataset("topology", data=cells)


def write_mesh(path, mesh: Mesh | MeshData, cell_fields: Mapping[str, np.ndarray] | None = None,
               vertex_fields: Mapping[str, np.ndarray] | None = None) -> Path:
    """Write `mesh` and its fields to ``path`` (``NAME.xdmf``) and ``NAME.h5``, atomically each.

    `mesh` is a :class:`solvers.exchange.Mesh` or a :class:`meshes.MeshData` (whose fields are
    written too, together with the extra `cell_fields` / `vertex_fields`).
    """
    path = _xdmf_path(path)
    if isinstance(mesh, MeshData):
        cell_fields = {**mesh.cell_fields, **(cell_fields or {})}
        vertex_fields = {**mesh.vertex_fields, **(vertex_fields or {})}
        mesh = mesh.mesh
    vertices, cells = _check_mesh(mesh, str(path))
    cell_fields = _check_fields(cell_fields, len(cells), "cell", str(path))
    vertex_fields = _check_fields(vertex_fields, len(vertices), "vertex", str(path))
    h5_path = path.with_suffix(".h5")
    with atomic_h5(h5_path, kind="mesh") as h5:
        attributes = _write_mesh_and_fields(h5, vertices, cells, mesh.units, cell_fields,
                                            vertex_fields)
    _write_xdmf(path, _grid_lines(h5_path.name, "mesh", len(vertices), len(cells),
                                  vertices.shape[1], mesh.units, attributes, None, "    "))
    return path


def write_solution_xdmf(path, mesh: Mesh, u: np.ndarray, times=None, name: str = "u",
                        cell_fields: Mapping[str, np.ndarray] | None = None,
                        vertex_fields: Mapping[str, np.ndarray] | None = None) -> Path:
    """Write a vertex function `u` ((n_vertices,), or (n_times, n_vertices) with `times`) and
    optional constant fields to ``path`` (``NAME.xdmf``) + ``NAME.h5`` for ParaView: a grid
    ``mesh`` with the fields and, for a time series, a temporal collection of `name` (each step
    also shows the constant fields; all grids refer to the same mesh datasets)."""
    path = _xdmf_path(path)
    vertices, cells = _check_mesh(mesh, str(path))
    u = np.asarray(u, dtype=np.float64)
    series = u[None, :] if times is None else u
    if series.ndim != 2 or series.shape[1] != len(vertices):
        raise InputError(f"{path}: u has shape {u.shape}, expected (n_times, {len(vertices)})")
    if times is not None and len(times) != len(series):
        raise InputError(f"{path}: {len(times)} times for {len(series)} snapshots")
    if not _NAME.match(name):
        raise InputError(f"{path}: function name {name!r} must be letters, digits, _ . -")
    cell_fields = _check_fields(cell_fields, len(cells), "cell", str(path))
    vertex_fields = _check_fields(vertex_fields, len(vertices), "vertex", str(path))
    h5_path = path.with_suffix(".h5")
    with atomic_h5(h5_path, kind="xdmf-data") as h5:
        static = _write_mesh_and_fields(h5, vertices, cells, mesh.units, cell_fields,
                                        vertex_fields)
        for k, snapshot in enumerate(series):
            h5.create_dataset(f"Function/{name}/{k}", data=snapshot)
    nv, nc, gdim = len(vertices), len(cells), vertices.shape[1]
    if times is None:
        static.append((name, "Node", f"/Function/{name}/0", nv))
        grids = _grid_lines(h5_path.name, "mesh", nv, nc, gdim, mesh.units, static, None, "    ")
    else:
        grids = _grid_lines(h5_path.name, "mesh", nv, nc, gdim, mesh.units, static, None, "    ")
        grids.append(f'    <Grid Name="{name}" GridType="Collection" CollectionType="Temporal">')
        for k, t in enumerate(times):
            grids += _grid_lines(h5_path.name, name, nv, nc, gdim, mesh.units,
                                 [(name, "Node", f"/Function/{name}/{k}", nv), *static],
                                 float(t), "      ")
        grids.append("    </Grid>")
    _write_xdmf(path, grids)
    return path


def _read_item(item: ET.Element | None, xdmf: Path, what: str) -> np.ndarray:
    if item is None or item.get("Format", "XML") != "HDF" or not (item.text or "").strip():
        raise InputError(f"{xdmf}: {what}: expected an HDF5 DataItem")
    file_name, _, dataset = item.text.strip().partition(":")
    h5_path = xdmf.parent / file_name
    if not h5_path.exists():
        raise InputError(f"{h5_path}: file does not exist (the data of {xdmf})")
    try:
        with h5py.File(h5_path, "r") as h5:
            if dataset not in h5 or not isinstance(h5[dataset], h5py.Dataset):
                raise InputError(f"{h5_path}: {what}: dataset '{dataset}' is missing")
            return h5[dataset][()]
    except OSError as exc:
        reason = str(exc).split("(")[0].strip().rstrip(",") or "unreadable"
        raise InputError(f"{h5_path}: not a readable HDF5 file (truncated or corrupt?): "
                         f"{reason}") from None


def read_mesh(path) -> MeshData:
    """Read a mesh with its fields from an XDMF file written by :func:`write_mesh` (or the mesh
    of one written by dolfinx). Missing or unreadable files raise a one-line
    :class:`~solvers.common.InputError` naming the file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: mesh file does not exist")
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable XDMF file ({exc})") from None
    grids = [g for g in root.iter("Grid") if g.get("GridType", "Uniform") == "Uniform"]
    grid = next((g for g in grids if g.get("Name") == "mesh"), grids[0] if grids else None)
    if grid is None or grid.find("Topology") is None or grid.find("Geometry") is None:
        raise InputError(f"{path}: no grid with a Topology and a Geometry")
    topology, geometry = grid.find("Topology"), grid.find("Geometry")
    if topology.get("TopologyType", "").lower() != "triangle":
        raise InputError(f"{path}: topology '{topology.get('TopologyType')}' is not Triangle")
    cells = np.asarray(_read_item(topology.find("DataItem"), path, "topology"), dtype=np.int64)
    vertices = np.asarray(_read_item(geometry.find("DataItem"), path, "geometry"), np.float64)
    if vertices.ndim == 2 and vertices.shape[1] == 3 and np.ptp(vertices[:, 2]) == 0.0:
        vertices = vertices[:, :2]
    units = "dimensionless"
    for info in grid.findall("Information"):
        if info.get("Name") == "units":
            units = info.get("Value", units)
    mesh = Mesh(vertices=vertices, cells=cells, units=units)
    _check_mesh(mesh, str(path))
    data = MeshData(mesh)
    for attribute in grid.findall("Attribute"):
        name, center = attribute.get("Name", ""), attribute.get("Center", "Node")
        values = np.asarray(_read_item(attribute.find("DataItem"), path, f"field '{name}'"),
                            dtype=np.float64).ravel()
        target, size = ((data.cell_fields, len(cells)) if center == "Cell"
                        else (data.vertex_fields, len(vertices)))
        if values.shape != (size,):
            raise InputError(f"{path}: field '{name}' has {values.size} values, expected {size}")
        target[name] = values
    return data
