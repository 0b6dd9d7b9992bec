"""Meshes for the FEM solvers: from image masks (brain slices) or the unit square, as arrays
(numpy/scipy only), written and read as XDMF + HDF5 (h5py only; no dolfinx needed), and P1
interpolation of vertex values at points (`interpolation`; matplotlib finds the triangles)."""

from meshes.image_mesh import (
    MeshData,
    affine_2d,
    cell_components,
    mesh_from_mask,
    rectangle_mesh,
    triangle_areas,
    unit_square_mesh,
)
from meshes.interpolation import P1Interpolator, barycentric_coordinates
from meshes.io import read_mesh, write_mesh, write_solution_xdmf

__all__ = [
    "MeshData",
    "P1Interpolator",
    "affine_2d",
    "barycentric_coordinates",
    "cell_components",
    "mesh_from_mask",
    "read_mesh",
    "rectangle_mesh",
    "triangle_areas",
    "unit_square_mesh",
    "write_mesh",
    "write_solution_xdmf",
]
