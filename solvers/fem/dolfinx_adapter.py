"""Everything the toolkit does with dolfinx, UFL and petsc4py (written for dolfinx 0.5).

This is the only module that imports dolfinx, ufl or petsc4py, so a newer dolfinx needs changes
here only. The rest of ``solvers.fem`` passes numpy arrays in and gets numpy arrays back.

Ordering convention (what makes results independent of the number of MPI ranks): a mesh is
created from arrays given on rank 0 (vertices and cells in the caller's order); dolfinx
partitions and renumbers it, and this module keeps, for every local P1 degree of freedom, the
row of the input vertex it sits on (``geometry.input_global_indices``) and, for every local
cell, its input row (``topology.original_cell_index``). Input fields are given in input order
(on rank 0, broadcast), and results are gathered to rank 0 in input order.

Linear solves use MUMPS (LU) by default: a direct solve reproduces the serial result to
round-off on any number of ranks. ``solver="cg"`` selects CG + BoomerAMG (relative tolerance
1e-12), which scales better on large meshes.
"""

from __future__ import annotations

import itertools

import numpy as np
import ufl
from dolfinx import fem, geometry
from dolfinx import mesh as dmesh
from dolfinx.fem import petsc as fem_petsc
from mpi4py import MPI
from petsc4py import PETSc

SOLVERS = {
    "lu": {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"},
    "cg": {"ksp_type": "cg", "pc_type": "hypre", "pc_hypre_type": "boomeramg",
           "ksp_rtol": 1e-12, "ksp_atol": 1e-50, "ksp_max_it": 1000},
}
NEWTON_RTOL = 1e-12
NEWTON_MAX_ITERATIONS = 30
_prefixes = itertools.count()


def _solver_options(solver: str) -> dict:
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {sorted(SOLVERS)}, got {solver!r}")
    return SOLVERS[solver]


def _new_ksp(comm, solver: str) -> PETSc.KSP:
    prefix = f"bilo_fem_{next(_prefixes)}_"
    options = PETSc.Options()
    for key, value in _solver_options(solver).items():
        options[prefix + key] = value
    ksp = PETSc.KSP().create(comm)
    ksp.setOptionsPrefix(prefix)
    ksp.setFromOptions()
    for key in _solver_options(solver):
        options.delValue(prefix + key)
    return ksp


def _check_ksp(ksp: PETSc.KSP, what: str) -> None:
    if ksp.getConvergedReason() <= 0:
        raise RuntimeError(f"{what}: the linear solver failed (PETSc reason "
                           f"{ksp.getConvergedReason()})")


def broadcast_array(comm, values, dtype=np.float64) -> np.ndarray:
    """Rank 0's array on every rank (the other ranks' `values` are ignored)."""
    header = comm.bcast(None if comm.rank else np.shape(values), root=0)
    data = (np.ascontiguousarray(values, dtype=dtype) if comm.rank == 0
            else np.empty(header, dtype=dtype))
    comm.Bcast(data, root=0)
    return data


class DistributedMesh:
    """A dolfinx triangle mesh made from arrays, with P1 and DG0 spaces and the maps from local
    dofs/cells back to the input rows.

    `vertices` (n, 2) and `cells` (m, 3) are read on rank 0 only; every vertex must belong to a
    cell (dolfinx drops unused vertices, and the gathered results would miss them).
    """

    def __init__(self, vertices, cells, comm=None):
        self.comm = comm = MPI.COMM_WORLD if comm is None else comm
        if comm.rank == 0:
            vertices = np.ascontiguousarray(np.asarray(vertices, dtype=np.float64)[:, :2])
            cells = np.ascontiguousarray(cells, dtype=np.int64)
            self.vertices, self.cells = vertices, cells
        else:
            vertices, cells = np.empty((0, 2)), np.empty((0, 3), dtype=np.int64)
            self.vertices = self.cells = None
        self.n_vertices, self.n_cells = comm.bcast((len(vertices), len(cells)), root=0)
        domain = ufl.Mesh(ufl.VectorElement("Lagrange", ufl.triangle, 1))
        self.mesh = dmesh.create_mesh(comm, cells, vertices, domain,
                                      ghost_mode=dmesh.GhostMode.none)
        self.V = fem.FunctionSpace(self.mesh, ("CG", 1))
        self.V0 = fem.FunctionSpace(self.mesh, ("DG", 0))
        # P1 dofs and the P1 geometry share the local vertex order of every cell.
        node_of_dof = np.empty(self.V.dofmap.index_map.size_local
                               + self.V.dofmap.index_map.num_ghosts, dtype=np.int64)
        dofs = self.V.dofmap.list.array.reshape(-1, 3)
        node_of_dof[dofs.ravel()] = self.mesh.geometry.dofmap.array.reshape(-1, 3).ravel()
        input_index = np.asarray(self.mesh.geometry.input_global_indices, dtype=np.int64)
        self.vertex_of_dof = input_index[node_of_dof]
        self.n_owned_dofs = self.V.dofmap.index_map.size_local
        n_local_cells = len(dofs)
        self.cell_of_local_cell = np.asarray(self.mesh.topology.original_cell_index,
                                             dtype=np.int64)[:n_local_cells]
        self.dg0_dofs = self.V0.dofmap.list.array.reshape(-1)[:n_local_cells]

    def cells_per_rank(self) -> list[int] | None:
        """Number of cells owned by each rank, on rank 0 (None elsewhere)."""
        return self.comm.gather(self.mesh.topology.index_map(2).size_local, root=0)

    @property
    def rank(self) -> int:
        return self.comm.rank

    def vertex_function(self, values, name: str = "f") -> fem.Function:
        """A P1 function with the given values at the input vertices (values read on rank 0)."""
        values = broadcast_array(self.comm, values)
        function = fem.Function(self.V, name=name)
        function.x.array[:] = values[self.vertex_of_dof]
        return function

    def cell_function(self, values, name: str = "f") -> fem.Function:
        """A DG0 function with the given values on the input cells (values read on rank 0)."""
        values = broadcast_array(self.comm, values)
        function = fem.Function(self.V0, name=name)
        function.x.array[self.dg0_dofs] = values[self.cell_of_local_cell]
        function.x.scatter_forward()
        return function

    def gather_vertex_values(self, function: fem.Function) -> np.ndarray | None:
        """The values of a P1 function at the input vertices, in input order, on rank 0
        (None on the other ranks)."""
        owned = self.n_owned_dofs
        pieces = self.comm.gather((self.vertex_of_dof[:owned],
                                   np.array(function.x.array[:owned])), root=0)
        if self.comm.rank != 0:
            return None
        values = np.full(self.n_vertices, np.nan)
        for index, local in pieces:
            values[index] = local
        if np.isnan(values).any():
            raise RuntimeError("gather: some vertices received no value")
        return values

    def evaluate(self, function: fem.Function, points) -> np.ndarray | None:
        """Values of `function` at `points` (k, 2), on rank 0 (NaN outside the mesh)."""
        points = broadcast_array(self.comm, points)
        points3 = np.zeros((len(points), 3))
        points3[:, : points.shape[1]] = points
        tree = geometry.BoundingBoxTree(self.mesh, self.mesh.topology.dim)
        candidates = geometry.compute_collisions(tree, points3)
        colliding = geometry.compute_colliding_cells(self.mesh, candidates, points3)
        found, cells = [], []
        for i in range(len(points3)):
            links = colliding.links(i)
            if len(links):
                found.append(i)
                cells.append(links[0])
        local = (function.eval(points3[found], np.asarray(cells, dtype=np.int32)).ravel()
                 if found else np.empty(0))
        pieces = self.comm.gather((np.asarray(found, dtype=np.int64), local), root=0)
        if self.comm.rank != 0:
            return None
        values = np.full(len(points3), np.nan)
        for index, part in reversed(pieces):  # the lowest rank wins on partition boundaries
            values[index] = part
        return values

    def boundary_dofs(self) -> np.ndarray:
        """Local P1 dofs on the boundary of the mesh."""
        tdim = self.mesh.topology.dim
        self.mesh.topology.create_connectivity(tdim - 1, tdim)
        facets = dmesh.exterior_facet_indices(self.mesh.topology)
        return fem.locate_dofs_topological(self.V, tdim - 1, facets)


def solve_diffusion(dm: DistributedMesh, kappa: fem.Function, source: fem.Function,
                    solver: str = "lu") -> fem.Function:
    """P1 solution of −∇·(κ∇u) = f with u = 0 on the whole boundary (κ and f functions)."""
    u, v = ufl.TrialFunction(dm.V), ufl.TestFunction(dm.V)
    a = fem.form(kappa * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx)
    rhs = fem.form(source * v * ufl.dx)
    bc = fem.dirichletbc(PETSc.ScalarType(0.0), dm.boundary_dofs(), dm.V)
    A = fem_petsc.assemble_matrix(a, bcs=[bc])
    A.assemble()
    b = fem_petsc.assemble_vector(rhs)
    fem_petsc.apply_lifting(b, [a], bcs=[[bc]])
    b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
    fem_petsc.set_bc(b, [bc])
    ksp = _new_ksp(dm.comm, solver)
    ksp.setOperators(A)
    uh = fem.Function(dm.V, name="u")
    ksp.solve(b, uh.vector)
    _check_ksp(ksp, "diffusion solve")
    uh.x.scatter_forward()
    for obj in (ksp, A, b):
        obj.destroy()
    return uh


class ReactionDiffusionStepper:
    """θ-scheme steps of u_t = ∇·(κ∇u) + ρu(1−u), κ = D·P, no-flux boundary, P1 in space.

    One step of size dt solves, for u = u^{n+1} and every P1 test function v,
        ∫ (u − uⁿ)/dt v + θ[κ∇u·∇v − ρu(1−u)v] + (1−θ)[κ∇uⁿ·∇v − ρuⁿ(1−uⁿ)v] dx = 0
    (consistent mass matrix, exact quadrature) by Newton's method from uⁿ, stopping when
    ‖δu‖∞ <= 1e-12 ‖u‖∞. θ = 1/2 is Crank–Nicolson, θ = 1 implicit Euler.
    """

    def __init__(self, dm: DistributedMesh, P: fem.Function, D: float, rho: float, u0,
                 solver: str = "lu"):
        self.dm = dm
        self.u = dm.vertex_function(u0, name="u")
        self.u_old = fem.Function(dm.V, name="u_old")
        self.dt = fem.Constant(dm.mesh, PETSc.ScalarType(1.0))
        self.theta = fem.Constant(dm.mesh, PETSc.ScalarType(0.5))
        rho = fem.Constant(dm.mesh, PETSc.ScalarType(rho))
        kappa = fem.Constant(dm.mesh, PETSc.ScalarType(D)) * P
        v = ufl.TestFunction(dm.V)

        def rate(w):
            return (-kappa * ufl.inner(ufl.grad(w), ufl.grad(v)) + rho * w * (1 - w) * v) * ufl.dx

        residual = ((self.u - self.u_old) / self.dt * v * ufl.dx
                    - self.theta * rate(self.u) - (1 - self.theta) * rate(self.u_old))
        self.residual = fem.form(residual)
        self.jacobian = fem.form(ufl.derivative(residual, self.u, ufl.TrialFunction(dm.V)))
        self.A = fem_petsc.create_matrix(self.jacobian)
        self.b = fem_petsc.create_vector(self.residual)
        self.du = self.A.createVecRight()
        self.ksp = _new_ksp(dm.comm, solver)
        self.newton_iterations = 0

    def step(self, dt: float, theta: float) -> int:
        """Advance by dt; returns the number of Newton iterations."""
        self.dt.value = dt
        self.theta.value = theta
        self.u_old.x.array[:] = self.u.x.array
        for iteration in range(1, NEWTON_MAX_ITERATIONS + 1):
            with self.b.localForm() as local:
                local.set(0.0)
            fem_petsc.assemble_vector(self.b, self.residual)
            self.b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
            self.b.scale(-1.0)
            self.A.zeroEntries()
            fem_petsc.assemble_matrix(self.A, self.jacobian)
            self.A.assemble()
            self.ksp.setOperators(self.A)
            self.ksp.solve(self.b, self.du)
            _check_ksp(self.ksp, "Newton step")
            self.u.vector.axpy(1.0, self.du)
            self.u.x.scatter_forward()
            correction = self.du.norm(PETSc.NormType.NORM_INFINITY)
            size = self.u.vector.norm(PETSc.NormType.NORM_INFINITY)
            if not np.isfinite(correction):
                raise RuntimeError("Newton iteration produced non-finite values; reduce dt")
            if correction <= NEWTON_RTOL * max(size, 1e-300):
                self.newton_iterations += iteration
                return iteration
        raise RuntimeError(f"Newton iteration did not converge in {NEWTON_MAX_ITERATIONS} "
                           "iterations; reduce dt")

    def values(self) -> np.ndarray | None:
        """Current u at the input vertices on rank 0 (None elsewhere)."""
        return self.dm.gather_vertex_values(self.u)

    def destroy(self) -> None:
        for obj in (self.ksp, self.A, self.b, self.du):
            obj.destroy()


def xdmf_mesh_summary(path, comm=None) -> tuple[int, float]:
    """Read the mesh of an XDMF file with dolfinx: (global number of cells, area)."""
    from dolfinx import io

    comm = MPI.COMM_WORLD if comm is None else comm
    with io.XDMFFile(comm, str(path), "r") as xdmf:
        msh = xdmf.read_mesh(name="mesh")
    area = fem.assemble_scalar(fem.form(fem.Constant(msh, PETSc.ScalarType(1.0)) * ufl.dx))
    return msh.topology.index_map(msh.topology.dim).size_global, comm.allreduce(area)


def mpi_comm_world():
    """MPI.COMM_WORLD (importing mpi4py initialises MPI)."""
    return MPI.COMM_WORLD
