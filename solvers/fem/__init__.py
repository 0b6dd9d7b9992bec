"""P1 finite-element reference solvers on dolfinx, runnable under ``mpirun -n N``.

* :func:`solve_darcy` (``solvers.fem.darcy``): −∇·(A∇u) = f on the unit square (or a given
  mesh), u = 0 on the boundary; :func:`darcy_paper_coefficient` and :func:`darcy_grf` build the
  BiLO paper's piecewise-constant coefficient from a seeded Gaussian random field.
* :func:`solve_fkpp2d` (``solvers.fem.reaction_diffusion``): Fisher–KPP
  u_t = ∇·(D·P(x)∇u) + ρu(1−u) with no-flux boundary on a 2-D mesh, Crank–Nicolson + Newton.
* :func:`run_fem_solve` (``solvers.fem.cli``): the `bilo solve darcy|fkpp2d` back end.

Only ``solvers.fem.dolfinx_adapter`` imports dolfinx/ufl/petsc4py, and it is imported lazily,
inside the solve functions: this package, :class:`FemSolution` and the coefficient helpers
import on a machine without dolfinx. Results are gathered on rank 0 in the input order of the
mesh's vertices (the same arrays for any number of ranks); the other ranks get ``None``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from solvers.exchange import Mesh, SolutionFile, write_solution

_LAZY = {
    "solve_darcy": "solvers.fem.darcy",
    "darcy_paper_coefficient": "solvers.fem.darcy",
    "darcy_grf": "solvers.fem.darcy",
    "solve_fkpp2d": "solvers.fem.reaction_diffusion",
    "run_fem_solve": "solvers.fem.cli",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'solvers.fem' has no attribute {name!r}")


def cell_to_vertex(vertices: np.ndarray, cells: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Area-weighted mean of a per-cell field over the cells around each vertex."""
    p = np.asarray(vertices, dtype=np.float64)[cells]
    e1, e2 = p[:, 1, :2] - p[:, 0, :2], p[:, 2, :2] - p[:, 0, :2]
    area = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    weight = np.zeros(len(vertices))
    total = np.zeros(len(vertices))
    for k in range(3):
        np.add.at(weight, cells[:, k], area)
        np.add.at(total, cells[:, k], area * values)
    return total / weight


@dataclass
class FemSolution:
    """A P1 solution gathered on rank 0, in the input order of the mesh's vertices.

    `u` is (n_vertices,) for a steady problem or (n_times, n_vertices) with `times`.
    `vertex_inputs` / `cell_inputs` hold the input fields (e.g. ``P``, ``A``) per vertex / cell;
    `info` the scheme, step counts, Newton iterations, MPI ranks and wall time.
    """

    vertices: np.ndarray
    cells: np.ndarray
    u: np.ndarray
    times: np.ndarray | None = None
    vertex_inputs: dict[str, np.ndarray] = field(default_factory=dict)
    cell_inputs: dict[str, np.ndarray] = field(default_factory=dict)
    units: str = "dimensionless"
    info: dict[str, str | float | int] = field(default_factory=dict)

    @property
    def mesh(self) -> Mesh:
        return Mesh(vertices=self.vertices, cells=self.cells, units=self.units)

    def to_solution_file(self, problem: str, params: dict[str, float],
                         provenance: dict | None = None) -> SolutionFile:
        """The exchange-format record: axes ("vertex",) or ("t", "vertex"). A per-cell input
        (which the exchange format cannot hold) is stored as its area-weighted vertex mean;
        the XDMF output keeps the cell values."""
        inputs = dict(self.vertex_inputs)
        for name, values in self.cell_inputs.items():
            inputs.setdefault(name, cell_to_vertex(self.vertices, self.cells, values))
        steady = self.times is None
        return SolutionFile(
            problem=problem, params=dict(params),
            axes=("vertex",) if steady else ("t", "vertex"),
            grid={} if steady else {"t": np.asarray(self.times, dtype=np.float64)},
            u=self.u, inputs=inputs, mesh=self.mesh,
            provenance={**self.info, **(provenance or {})})

    def write(self, out, problem: str, params: dict[str, float], provenance: dict | None = None,
              xdmf: bool = True) -> list[Path]:
        """Write the exchange HDF5 file `out` and, with `xdmf`, ``<stem>_paraview.xdmf`` (+ .h5)
        beside it for ParaView. Call on rank 0 only."""
        from meshes.io import write_solution_xdmf

        out = Path(out)
        paths = [write_solution(out, self.to_solution_file(problem, params, provenance))]
        if xdmf:
            paths.append(write_solution_xdmf(
                out.with_name(out.stem + "_paraview.xdmf"), self.mesh, self.u, self.times,
                cell_fields=self.cell_inputs, vertex_fields=self.vertex_inputs))
        return paths


__all__ = ["FemSolution", "cell_to_vertex", *_LAZY]
