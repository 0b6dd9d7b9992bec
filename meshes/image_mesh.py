"""Triangle meshes from image masks (e.g. a brain slice) and of the unit square.

numpy/scipy only: no dolfinx is needed to build, sample or check a mesh.

Construction of :func:`mesh_from_mask`: every set pixel of a 2-D mask becomes a square on the
lattice of pixel corners, split into two triangles along the same diagonal; vertices are the
pixel corners in use. Pixel ``(i, j)`` has its centre at voxel coordinates ``(i, j)`` (the NIfTI
convention), so its corners lie at ``(i ± 1/2, j ± 1/2)``; the image affine maps voxel to
physical coordinates (mm). Before meshing, the mask is optionally coarsened by an integer
factor c (a c×c block of pixels becomes one coarse pixel, set when more than half of it is
set, and on a checkerboard pattern when exactly half is) and reduced to its largest 4-connected
component (so the mesh is connected through edges).

Fields (tissue maps sampled from images of the mask's shape) come along per cell (the mean of
the image over the pixels of the cell's (coarse) pixel) or per vertex (bilinear interpolation of
the image at the vertex).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import csgraph

from solvers.common import InputError
from solvers.exchange import Mesh


@dataclass
class MeshData:
    """A triangle mesh with named fields: `cell_fields[name]` has one value per cell,
    `vertex_fields[name]` one per vertex (rows of `mesh.vertices`)."""

    mesh: Mesh
    cell_fields: dict[str, np.ndarray] = field(default_factory=dict)
    vertex_fields: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_cells(self) -> int:
        return len(self.mesh.cells)

    @property
    def n_vertices(self) -> int:
        return len(self.mesh.vertices)

    def area(self) -> float:
        """Total area of the triangles (in units², e.g. mm²)."""
        return float(triangle_areas(self.mesh.vertices, self.mesh.cells).sum())


def triangle_areas(vertices: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Unsigned area of every triangle."""
    p = np.asarray(vertices, dtype=np.float64)[np.asarray(cells)]
    e1, e2 = p[:, 1, :2] - p[:, 0, :2], p[:, 2, :2] - p[:, 0, :2]
    return 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])


def cell_components(mesh: Mesh) -> int:
    """Number of connected components of the mesh, cells being connected through shared edges."""
    cells = np.asarray(mesh.cells, dtype=np.int64)
    n_cells = len(cells)
    if n_cells == 0:
        return 0
    edges = np.concatenate([cells[:, [0, 1]], cells[:, [1, 2]], cells[:, [2, 0]]])
    edges.sort(axis=1)
    owner = np.tile(np.arange(n_cells), 3)
    _, edge_id = np.unique(edges, axis=0, return_inverse=True)
    edge_id = edge_id.ravel()
    incidence = sparse.csr_matrix((np.ones(len(owner)), (owner, edge_id)))
    adjacency = incidence @ incidence.T
    return int(csgraph.connected_components(adjacency, directed=False)[0])


def rectangle_mesh(nx: int, ny: int, width: float = 1.0, height: float = 1.0) -> Mesh:
    """[0, width]×[0, height] cut into nx×ny rectangles, each split into two triangles along the
    diagonal from its lower-left to its upper-right corner. Vertex k = j*(nx+1) + i lies at
    (i*width/nx, j*height/ny); the cells run row by row, two per rectangle, counter-clockwise."""
    for name, value in (("nx", nx), ("ny", ny)):
        if int(value) != value or value < 1:
            raise InputError(f"rectangle mesh: {name} must be an integer >= 1, got {value}")
    if not (np.isfinite(width) and np.isfinite(height) and width > 0 and height > 0):
        raise InputError(f"rectangle mesh: width and height must be > 0, got {width}, {height}")
    nx, ny = int(nx), int(ny)
    x, y = np.meshgrid(np.linspace(0.0, width, nx + 1), np.linspace(0.0, height, ny + 1),
                       indexing="xy")
    vertices = np.column_stack([x.ravel(), y.ravel()])
    i, j = np.meshgrid(np.arange(nx), np.arange(ny), indexing="xy")
    a = (j * (nx + 1) + i).ravel()
    b, c, d = a + 1, a + nx + 2, a + nx + 1
    cells = np.stack([np.column_stack([a, b, c]), np.column_stack([a, c, d])], axis=1)
    return Mesh(vertices=vertices, cells=cells.reshape(-1, 3).astype(np.int64),
                units="dimensionless")


def unit_square_mesh(n: int) -> Mesh:
    """The unit square as :func:`rectangle_mesh` with n×n squares (2n² triangles)."""
    return rectangle_mesh(n, n)


def affine_2d(affine, *, slice_axis: int = 2, slice_index: float = 0.0) -> np.ndarray:
    """The 3×3 map from in-plane voxel coordinates (homogeneous) to 2-D physical coordinates.

    A 3×3 affine is returned as is. For a 4×4 (NIfTI) affine of a 3-D image, the 2-D mask is the
    slice ``slice_index`` along voxel axis `slice_axis`; the kept physical coordinates are the two
    axes other than the one most aligned with the slice normal (for an axial slice of an
    RAS-aligned image: x and y in mm), so an oblique slice is projected onto that plane.
    """
    a = np.asarray(affine, dtype=np.float64)
    if a.shape == (3, 3):
        result = a
    elif a.shape == (4, 4):
        if slice_axis not in (0, 1, 2):
            raise InputError(f"slice_axis must be 0, 1 or 2, got {slice_axis}")
        in_plane = [k for k in range(3) if k != slice_axis]
        dropped = int(np.argmax(np.abs(a[:3, slice_axis])))
        kept = [k for k in range(3) if k != dropped]
        offset = a[:3, 3] + slice_index * a[:3, slice_axis]
        result = np.eye(3)
        result[:2, :2] = a[np.ix_(kept, in_plane)]
        result[:2, 2] = offset[kept]
    else:
        raise InputError(f"affine must be 3x3 (2-D image) or 4x4 (3-D image), got shape {a.shape}")
    if not np.all(np.isfinite(result)) or abs(np.linalg.det(result[:2, :2])) < 1e-12:
        raise InputError("affine: the in-plane voxel-to-physical map must be finite and invertible")
    return result


def _coarsen_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return mask
    fraction = _block_mean(mask.astype(np.float64), factor)
    # Blocks exactly half set (common for even factors) are kept on a checkerboard, so that
    # coarsening neither grows nor shrinks the region on average.
    i, j = np.indices(fraction.shape)
    return (fraction > 0.5) | ((fraction == 0.5) & ((i + j) % 2 == 0))


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean over factor×factor blocks; a partial block at the end is padded with zeros."""
    nx, ny = -(-image.shape[0] // factor), -(-image.shape[1] // factor)
    padded = np.zeros((nx * factor, ny * factor))
    padded[: image.shape[0], : image.shape[1]] = image
    return padded.reshape(nx, factor, ny, factor).mean(axis=(1, 3))


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n_labels = ndimage.label(mask)  # default structure: 4-connectivity in 2-D
    if n_labels <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (1 + int(np.argmax(sizes)))


def mesh_from_mask(
    mask,
    affine,
    *,
    coarsen: int = 1,
    largest_component: bool = True,
    cell_images: Mapping[str, np.ndarray] | None = None,
    vertex_images: Mapping[str, np.ndarray] | None = None,
    slice_axis: int = 2,
    slice_index: float = 0.0,
    units: str = "mm",
) -> MeshData:
    """Triangle mesh of the pixels where the 2-D `mask` is set (see the module docstring).

    Args:
        mask: 2-D array, truthy where the domain is (e.g. grey + white matter of a slice).
        affine: 3×3 (2-D image) or 4×4 (3-D image; see :func:`affine_2d`) voxel-to-mm affine.
        coarsen: integer factor c >= 1; c×c pixel blocks become one (set if > half is set).
        largest_component: keep only the largest 4-connected component of the (coarse) mask.
        cell_images / vertex_images: name -> image of the mask's shape, sampled onto the cells
            (block mean) or vertices (bilinear interpolation) of the mesh.
        slice_axis, slice_index: which slice of the 3-D image the mask is (4×4 affine only).
        units: unit of the physical coordinates.

    Returns:
        MeshData: vertices (n, 2) in physical coordinates, cells (m, 3) counter-clockwise in the
        physical frame, and the sampled fields.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise InputError(f"mask must be a 2-D array, got shape {mask.shape}")
    if int(coarsen) != coarsen or coarsen < 1:
        raise InputError(f"coarsen must be an integer >= 1, got {coarsen}")
    coarsen = int(coarsen)
    to_physical = affine_2d(affine, slice_axis=slice_axis, slice_index=slice_index)
    images = {**(cell_images or {}), **(vertex_images or {})}
    for name, image in images.items():
        if np.shape(image) != mask.shape:
            raise InputError(f"image '{name}' has shape {np.shape(image)}, the mask {mask.shape}")
        if not np.all(np.isfinite(image)):
            raise InputError(f"image '{name}' has non-finite values")

    coarse = _coarsen_mask(mask.astype(bool), coarsen)
    if largest_component:
        coarse = _largest_component(coarse)
    pixels = np.argwhere(coarse)
    if len(pixels) == 0:
        raise InputError("mask is empty: no pixel set (after coarsening), nothing to mesh")

    # Corners of coarse pixel (I, J) on the lattice with (nx+1) x (ny+1) points.
    ny1 = coarse.shape[1] + 1
    i, j = pixels[:, 0], pixels[:, 1]
    c00, c10 = i * ny1 + j, (i + 1) * ny1 + j
    c11, c01 = c10 + 1, c00 + 1
    cells = np.stack([np.column_stack([c00, c10, c11]), np.column_stack([c00, c11, c01])], axis=1)
    cells = cells.reshape(-1, 3)
    lattice_ids, cells = np.unique(cells, return_inverse=True)
    cells = cells.reshape(-1, 3).astype(np.int64)
    # Voxel coordinates of the used lattice points: corner I of the coarse grid is at I*c - 1/2.
    voxel = np.column_stack([lattice_ids // ny1, lattice_ids % ny1]).astype(np.float64)
    voxel = voxel * coarsen - 0.5
    vertices = voxel @ to_physical[:2, :2].T + to_physical[:2, 2]
    if np.linalg.det(to_physical[:2, :2]) < 0:  # keep the cells counter-clockwise in mm
        cells = cells[:, [0, 2, 1]]

    cell_fields = {}
    pixel_of_cell = np.repeat(pixels, 2, axis=0)
    for name, image in (cell_images or {}).items():
        block = _block_mean(np.asarray(image, dtype=np.float64), coarsen)
        cell_fields[name] = block[pixel_of_cell[:, 0], pixel_of_cell[:, 1]]
    vertex_fields = {
        name: ndimage.map_coordinates(np.asarray(image, dtype=np.float64), voxel.T, order=1,
                                      mode="nearest")
        for name, image in (vertex_images or {}).items()
    }
    return MeshData(Mesh(vertices=vertices, cells=cells, units=units), cell_fields, vertex_fields)
