"""P1 interpolation on a triangle mesh: barycentric coordinates and point location.

u_h(x) = Σ_k λ_k(x) u_k over the corners k of the triangle that contains x, with λ_k the
barycentric coordinates of x in it: the value of a P1 finite-element function at a point. This is
the toolkit's one implementation; the FEM point observations of the adjoints
(``solvers.fem.dolfinx_adapter.PointObservation``, which locates points with dolfinx on each MPI
rank) and the GBM app (u_FEM at pixels and at training points) use it.

numpy only; :class:`P1Interpolator` locates points with matplotlib's trapezoid-map tri-finder,
imported when one is built.
"""

from __future__ import annotations

import numpy as np


def barycentric_coordinates(corners, points) -> np.ndarray:
    """Barycentric coordinates (n, 3) of points (n, 2) in triangles with corners (n, 3, 2).

    Row i holds (λ_0, λ_1, λ_2) with Σ λ = 1 and points[i] = Σ_k λ_k corners[i, k]; all three lie
    in [0, 1] when the point is inside its triangle. Extra coordinate columns are ignored.
    """
    corners = np.asarray(corners, dtype=np.float64)[..., :2]
    points = np.asarray(points, dtype=np.float64)[..., :2]
    origin = corners[:, 0]
    e1, e2 = corners[:, 1] - origin, corners[:, 2] - origin
    r = points - origin
    det = e1[:, 0] * e2[:, 1] - e2[:, 0] * e1[:, 1]
    l1 = (r[:, 0] * e2[:, 1] - e2[:, 0] * r[:, 1]) / det
    l2 = (e1[:, 0] * r[:, 1] - r[:, 0] * e1[:, 1]) / det
    return np.column_stack([1.0 - l1 - l2, l1, l2])


class P1Interpolator:
    """Values of P1 fields of one triangle mesh at arbitrary points.

    Args:
        vertices: (n_vertices, 2) coordinates (extra columns are ignored).
        cells: (n_cells, 3) vertex indices of the triangles (a valid, non-overlapping mesh).
    """

    def __init__(self, vertices, cells):
        from matplotlib.tri import Triangulation

        self.vertices = np.asarray(vertices, dtype=np.float64)[:, :2]
        self.cells = np.asarray(cells, dtype=np.int64)
        self._find = Triangulation(self.vertices[:, 0], self.vertices[:, 1],
                                   self.cells).get_trifinder()

    def locate(self, points) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(inside, corners, weights) for points (n, 2) (extra columns ignored): `inside` (n,)
        marks the points in a triangle of the mesh; for those m points, `corners` (m, 3) are the
        vertex indices of their triangle and `weights` (m, 3) their barycentric coordinates."""
        points = np.atleast_2d(np.asarray(points, dtype=np.float64))
        triangle = np.asarray(self._find(points[:, 0], points[:, 1]))
        inside = triangle >= 0
        corners = self.cells[triangle[inside]]
        return inside, corners, barycentric_coordinates(self.vertices[corners], points[inside])

    def __call__(self, values, points, outside: float = 0.0) -> np.ndarray:
        """The P1 field with `values` at the vertices, (n_vertices,), at points (n, 2); `outside`
        where a point lies in no triangle."""
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (len(self.vertices),):
            raise ValueError(f"expected {len(self.vertices)} vertex values, got shape "
                             f"{values.shape}")
        inside, corners, weights = self.locate(points)
        result = np.full(len(inside), float(outside))
        result[inside] = np.sum(weights * values[corners], axis=1)
        return result
