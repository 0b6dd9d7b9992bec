"""Darcy flow −∇·(A(x)∇u) = f with u = 0 on the boundary, P1 finite elements (dolfinx).

The BiLO paper's Darcy problem takes A = 12 where a Gaussian random field is positive and 3
elsewhere, f = 1, on the unit square, and the initial guess A0 = 9·sigmoid(φ0) + 3 from another
GRF sample φ0. :func:`darcy_grf` is a seeded, grid-independent GRF, :func:`darcy_paper_coefficient`
thresholds it, :func:`darcy_initial_coefficient` makes A0, and :func:`p1_regulariser` is the
regulariser of a P1 coefficient (∫|∇A|² or the smoothed total variation). These are numpy only;
:func:`solve_darcy` imports dolfinx (through ``solvers.fem.dolfinx_adapter``) when called.
"""

from __future__ import annotations

import time

import numpy as np

from solvers.common import InputError
from solvers.fem import FemSolution


def darcy_grf(points, seed: int = 0, *, tau: float = 3.0, alpha: float = 2.0,
              n_modes: int = 32) -> np.ndarray:
    """A seeded Gaussian random field on [0,1]² evaluated at `points` (k, 2).

    Covariance (−Δ + τ²)^(−α) with Neumann boundary conditions (as in the FNO/BiLO Darcy data),
    i.e. the cosine series  g(x, y) = Σ ξ_k λ_k^{1/2} cos(πk₁x) cos(πk₂y)  over
    0 <= k₁, k₂ < n_modes, k ≠ 0, with λ_k = (π²|k|² + τ²)^(−α) and ξ_k ~ N(0, 1) drawn from
    ``numpy.random.default_rng(seed)``. The series is evaluated at the points themselves, so a
    seed gives the same field on every mesh. The overall scale is arbitrary (only the sign
    matters to :func:`darcy_paper_coefficient`).
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] < 2:
        raise InputError(f"darcy_grf: points must have shape (k, 2), got {points.shape}")
    k = np.arange(n_modes)
    k1, k2 = np.meshgrid(k, k, indexing="ij")
    scale = (np.pi**2 * (k1**2 + k2**2) + tau**2) ** (-alpha / 2.0) * tau ** (alpha - 1.0)
    scale[0, 0] = 0.0
    xi = np.random.default_rng(seed).standard_normal((n_modes, n_modes)) * scale
    cos_x = np.cos(np.pi * np.outer(points[:, 0], k))
    cos_y = np.cos(np.pi * np.outer(points[:, 1], k))
    return np.einsum("pi,ij,pj->p", cos_x, xi, cos_y)


def grf_mean_std(*, tau: float = 3.0, alpha: float = 2.0, n_modes: int = 32) -> float:
    """The marginal standard deviation of :func:`darcy_grf`, averaged over the square: the
    root of Σ_k scale_k² ∫cos²(πk₁x)∫cos²(πk₂y) (each integral 1 for k = 0, else ½)."""
    k = np.arange(n_modes)
    k1, k2 = np.meshgrid(k, k, indexing="ij")
    scale = (np.pi**2 * (k1**2 + k2**2) + tau**2) ** (-alpha / 2.0) * tau ** (alpha - 1.0)
    scale[0, 0] = 0.0
    weight = np.where(k1 == 0, 1.0, 0.5) * np.where(k2 == 0, 1.0, 0.5)
    return float(np.sqrt(np.sum(scale**2 * weight)))


# the paper's marginal standard deviation of φ0 (its A0 = 9·sigmoid(φ0) + 3)
INITIAL_STD = float(np.sqrt(10.0))


def darcy_initial_coefficient(points, seed: int, high: float = 12.0,
                              low: float = 3.0) -> np.ndarray:
    """A0 = low + (high − low)·sigmoid(φ0) at `points` (k, 2): φ0 is :func:`darcy_grf` with
    `seed`, rescaled to the paper's marginal standard deviation √10. The paper's squared-
    exponential covariance with length 0.01 would vary below a 51×51 grid's spacing; this GRF's
    features (about 0.2 across) are resolved by it (docs/darcy.md)."""
    phi = darcy_grf(points, seed=seed) * (INITIAL_STD / grf_mean_std())
    return low + (high - low) / (1.0 + np.exp(-phi))


def darcy_paper_coefficient(grf_sample, high: float = 12.0, low: float = 3.0):
    """A = 12 where the GRF sample is > 0, else 3. `grf_sample` is an array of values (e.g. one
    per cell) or a callable of points; a callable gives a callable."""
    if callable(grf_sample):
        return lambda points: darcy_paper_coefficient(grf_sample(points), high, low)
    return np.where(np.asarray(grf_sample, dtype=np.float64) > 0.0, high, low)


def mesh_arrays(mesh) -> tuple[np.ndarray, np.ndarray, str]:
    inner = getattr(mesh, "mesh", mesh)  # meshes.MeshData or solvers.exchange.Mesh
    vertices = np.asarray(inner.vertices, dtype=np.float64)
    cells = np.asarray(inner.cells, dtype=np.int64)
    if vertices.ndim != 2 or vertices.shape[1] < 2 or cells.ndim != 2 or cells.shape[1] != 3:
        raise InputError(f"mesh: expected vertices (n, 2) and triangles (m, 3), got "
                         f"{vertices.shape} and {cells.shape}")
    if cells.min() < 0 or cells.max() >= len(vertices):
        raise InputError("mesh: a cell refers to a vertex that does not exist")
    if np.bincount(cells.ravel(), minlength=len(vertices)).min() == 0:
        raise InputError("mesh: some vertices belong to no cell; remove them first")
    return vertices[:, :2], cells, getattr(inner, "units", "dimensionless")


def centroids(vertices: np.ndarray, cells: np.ndarray) -> np.ndarray:
    return vertices[cells].mean(axis=1)


def sample_field(values, vertices, cells, name: str, where: str) -> np.ndarray:
    """`values` (scalar, callable of points, or array) as one value per cell (`where`="cell",
    callables at the centroids) or per vertex (`where`="vertex")."""
    points = centroids(vertices, cells) if where == "cell" else vertices
    sampled = values(points) if callable(values) else values
    sampled = np.array(sampled, dtype=np.float64)
    if sampled.ndim == 0:
        sampled = np.full(len(points), float(sampled))
    if sampled.shape != (len(points),):
        raise InputError(f"{name}: expected a scalar, a callable or {len(points)} values (one "
                         f"per {where}), got shape {sampled.shape}")
    if not np.all(np.isfinite(sampled)):
        raise InputError(f"{name}: not finite at every {where}")
    return sampled


def p1_gradients(vertices, cells) -> tuple[np.ndarray, np.ndarray]:
    """(areas (m,), gradients (m, 3, 2) of the three P1 hat functions in each triangle)."""
    p = np.asarray(vertices, dtype=np.float64)[:, :2][cells]
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    det = e1[:, 0] * e2[:, 1] - e2[:, 0] * e1[:, 1]
    g1 = np.column_stack([e2[:, 1], -e2[:, 0]]) / det[:, None]
    g2 = np.column_stack([-e1[:, 1], e1[:, 0]]) / det[:, None]
    return 0.5 * np.abs(det), np.stack([-g1 - g2, g1, g2], axis=1)


REGULARISERS = ("tv", "h1")


def p1_regulariser(vertices, cells, values, kind: str = "tv",
                   eps: float = 1.0) -> tuple[float, np.ndarray]:
    """R(A) of the P1 function with `values` at the vertices, and dR/dA per vertex:
    "h1": ∫|∇A|² dx; "tv": the smoothed total variation ∫sqrt(|∇A|² + ε²) dx. ∇A is constant
    on each triangle, so both integrals are exact sums over the cells."""
    if kind not in REGULARISERS:
        raise InputError(f"regulariser '{kind}': choose from {', '.join(REGULARISERS)}")
    cells = np.asarray(cells, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    area, hats = p1_gradients(vertices, cells)
    grad = np.einsum("ck,ckd->cd", values[cells], hats)
    if kind == "h1":
        density, slope = np.sum(grad**2, axis=1), 2.0 * grad
    else:
        density = np.sqrt(np.sum(grad**2, axis=1) + eps**2)
        slope = grad / density[:, None]
    gradient = np.zeros(len(values))
    np.add.at(gradient, cells, area[:, None] * np.einsum("cd,ckd->ck", slope, hats))
    return float(area @ density), gradient


def solve_darcy(A, f=1.0, *, n: int = 64, mesh=None, comm=None,
                solver: str = "lu") -> FemSolution | None:
    """Solve −∇·(A∇u) = f, u = 0 on the boundary, with P1 elements.

    Args:
        A: the coefficient, piecewise constant on cells: a scalar, an array with one value per
            cell (in the mesh's cell order), or a callable of points (k, 2) evaluated at the
            cell centroids. Must be > 0.
        f: source: a scalar, one value per vertex, or a callable of points (evaluated at the
            vertices; f is interpolated in P1).
        n: the unit square is cut into n×n squares of two triangles
            (``meshes.unit_square_mesh(n)``) unless `mesh` is given.
        mesh: optional ``solvers.exchange.Mesh`` or ``meshes.MeshData`` to solve on instead.
        comm: MPI communicator (default COMM_WORLD); the arrays are read on rank 0.
        solver: "lu" (MUMPS, default) or "cg" (CG + BoomerAMG, rtol 1e-12).

    Returns:
        On rank 0 a :class:`FemSolution` with u at the vertices (input order) and A per cell
        (``cell_inputs["A"]``), f per vertex; ``None`` on the other ranks.
    """
    from solvers.fem import dolfinx_adapter as dx

    started = time.perf_counter()
    if mesh is None:
        from meshes.image_mesh import unit_square_mesh

        mesh = unit_square_mesh(n)
    vertices, cells, units = mesh_arrays(mesh)
    a_cells = sample_field(A, vertices, cells, "A", "cell")
    if np.any(a_cells <= 0.0):
        raise InputError(f"A must be > 0 everywhere, minimum {a_cells.min():g}")
    f_vertices = sample_field(f, vertices, cells, "f", "vertex")
    dm = dx.DistributedMesh(vertices, cells, comm)
    uh = dx.solve_diffusion(dm, dm.cell_function(a_cells, "A"), dm.vertex_function(f_vertices),
                            solver=solver)
    u = dm.gather_vertex_values(uh)
    cells_per_rank = dm.cells_per_rank()
    if dm.rank != 0:
        return None
    return FemSolution(vertices=vertices, cells=cells, u=u, vertex_inputs={"f": f_vertices},
                       cell_inputs={"A": a_cells}, units=units,
                       info={"solver": "dolfinx P1 (solvers.fem.darcy)", "scheme": f"P1, {solver}",
                             "resolution": f"{len(vertices)} vertices, {len(cells)} cells",
                             "mpi_ranks": dm.comm.size,
                             "cells_per_rank": ",".join(map(str, cells_per_rank)),
                             "wall_s": time.perf_counter() - started})
