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

from meshes.interpolation import barycentric_coordinates
from solvers.common import Diverged

SOLVERS = {
    "lu": {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"},
    "cg": {"ksp_type": "cg", "pc_type": "hypre", "pc_hypre_type": "boomeramg",
           "ksp_rtol": 1e-12, "ksp_atol": 1e-50, "ksp_max_it": 1000},
}
NEWTON_RTOL = 1e-12
NEWTON_MAX_ITERATIONS = 30
# a reaction-diffusion state this far outside [0, 1] has broken down (`_breakdown`)
UNDERSHOOT = 0.1
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
        function = fem.Function(self.V, name=name)
        self.assign_vertex_values(function, values)
        return function

    def assign_vertex_values(self, function: fem.Function, values) -> None:
        """Set a P1 function (owned and ghost dofs) to values at the input vertices (read on
        rank 0)."""
        values = broadcast_array(self.comm, values)
        function.x.array[:] = values[self.vertex_of_dof]

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

    def vertex_values_on_all_ranks(self, function: fem.Function) -> np.ndarray:
        """The values of a P1 function at the input vertices, in input order, on every rank."""
        return broadcast_array(self.comm, self.gather_vertex_values(function))

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


def sum_over_ranks(comm, value):
    """The sum of `value` over the ranks, bitwise the same on every rank (reduced on rank 0 and
    broadcast: an allreduce may round differently per rank, and ranks that run an optimiser on
    replicated numbers must never disagree)."""
    return comm.bcast(comm.reduce(value, op=MPI.SUM, root=0), root=0)


class PointObservation:
    """u ↦ (u(x_i))_i for P1 functions, and its transpose; each point is handled by one rank.

    A point is assigned to the lowest rank that owns a cell containing it; on that rank its
    value is the P1 interpolant in that cell, Σ_k φ_k(x_i) u_k with the barycentric weights φ_k
    (``meshes.interpolation.barycentric_coordinates``). Raises ValueError if a point lies
    outside the mesh.
    """

    def __init__(self, dm: DistributedMesh, points):
        self.dm = dm
        points = broadcast_array(dm.comm, points)
        self.n_points = len(points)
        points3 = np.zeros((len(points), 3))
        points3[:, : points.shape[1]] = points
        tree = geometry.BoundingBoxTree(dm.mesh, dm.mesh.topology.dim)
        candidates = geometry.compute_collisions(tree, points3)
        colliding = geometry.compute_colliding_cells(dm.mesh, candidates, points3)
        cell_of_point = np.array([colliding.links(i)[0] if len(colliding.links(i)) else -1
                                  for i in range(len(points3))], dtype=np.int64)
        found_on = np.array(dm.comm.allgather(cell_of_point >= 0))
        if not found_on.any(axis=0).all():
            missing = int(np.argmin(found_on.any(axis=0)))
            raise ValueError(f"observation point {points[missing].tolist()} is outside the mesh")
        self.points = np.flatnonzero(np.argmax(found_on, axis=0) == dm.comm.rank)
        cells = cell_of_point[self.points]
        geometry_nodes = dm.mesh.geometry.dofmap.array.reshape(-1, 3)[cells]
        # the P1 dofs of a cell follow the local vertex order of its geometry
        self.dofs = dm.V.dofmap.list.array.reshape(-1, 3)[cells].astype(np.int32)
        self.weights = barycentric_coordinates(dm.mesh.geometry.x[geometry_nodes, :2],
                                               points[self.points, :2])

    def values(self, function: fem.Function) -> np.ndarray:
        """u at every point, the same array on every rank."""
        local = np.sum(self.weights * function.x.array[self.dofs], axis=1)
        values = np.empty(self.n_points)
        for index, part in self.dm.comm.allgather((self.points, local)):
            values[index] = part
        return values

    def transpose(self, weights) -> fem.Function:
        """The P1 dof vector Σ_i weights_i φ(x_i) (weights: one per point, same on every rank),
        the derivative of Σ_i weights_i u(x_i) with respect to the dofs of u."""
        result = fem.Function(self.dm.V)
        np.add.at(result.x.array, self.dofs.ravel(),
                  (self.weights * np.asarray(weights)[self.points, None]).ravel())
        result.vector.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        result.x.scatter_forward()
        return result


def gradient_energy(dm: DistributedMesh, function: fem.Function) -> tuple[float, np.ndarray]:
    """(∫|∇a|² dx, its gradient 2∫∇a·∇φ_k dx with respect to the P1 values a_k of a, in input
    vertex order); both the same on every rank. The regulariser R(a) of the project's objective
    convention (``bilo.model``: no ½)."""
    test = ufl.TestFunction(dm.V)
    value = fem.assemble_scalar(fem.form(ufl.inner(ufl.grad(function), ufl.grad(function))
                                         * ufl.dx))
    gradient = fem.Function(dm.V)
    fem_petsc.assemble_vector(gradient.vector,
                              fem.form(2.0 * ufl.inner(ufl.grad(function), ufl.grad(test))
                                       * ufl.dx))
    gradient.vector.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
    return sum_over_ranks(dm.comm, value), dm.vertex_values_on_all_ranks(gradient)


class DiffusionOperator:
    """The P1 matrix K(κ) of −∇·(κ∇u) = f with u = 0 on the whole boundary, and its solves.

    Dirichlet rows and columns are both replaced by the identity, so K is symmetric and the
    adjoint system Kᵀλ = r is solved with K itself (PETSc's transposed solve is not available
    with CG + BoomerAMG). `assemble()` re-reads κ (a P1 or DG0 function whose values may
    change between calls).
    """

    def __init__(self, dm: DistributedMesh, kappa: fem.Function, solver: str = "lu"):
        self.dm, self.kappa = dm, kappa
        u, v = ufl.TrialFunction(dm.V), ufl.TestFunction(dm.V)
        self.bilinear = fem.form(kappa * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx)
        self.bc = fem.dirichletbc(PETSc.ScalarType(0.0), dm.boundary_dofs(), dm.V)
        self.A = fem_petsc.create_matrix(self.bilinear)
        self.ksp = _new_ksp(dm.comm, solver)

    def assemble(self) -> None:
        self.A.zeroEntries()
        fem_petsc.assemble_matrix(self.A, self.bilinear, bcs=[self.bc])
        self.A.assemble()
        self.ksp.setOperators(self.A)

    def solve(self, source: fem.Function) -> fem.Function:
        """u with K u = b, b_i = ∫ f φ_i dx (0 on the boundary)."""
        rhs = fem.form(source * ufl.TestFunction(self.dm.V) * ufl.dx)
        b = fem_petsc.assemble_vector(rhs)
        fem_petsc.apply_lifting(b, [self.bilinear], bcs=[[self.bc]])
        b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        fem_petsc.set_bc(b, [self.bc])
        uh = self._solve(b, "diffusion solve")
        b.destroy()
        return uh

    def solve_adjoint(self, objective_derivative: fem.Function) -> fem.Function:
        """λ with Kᵀλ = −∂J/∂u off the boundary and λ = 0 on it (the Dirichlet rows of K pin u
        to 0 whatever J is), for ∂J/∂u given as a P1 dof vector."""
        b = objective_derivative.vector.copy()
        b.scale(-1.0)
        fem_petsc.set_bc(b, [self.bc])
        lam = self._solve(b, "adjoint diffusion solve")
        b.destroy()
        return lam

    def _solve(self, b: PETSc.Vec, what: str) -> fem.Function:
        result = fem.Function(self.dm.V)
        self.ksp.solve(b, result.vector)
        _check_ksp(self.ksp, what)
        result.x.scatter_forward()
        return result

    def coefficient_sensitivity(self, u: fem.Function, lam: fem.Function) -> np.ndarray:
        """λᵀ ∂(K u)/∂κ_k = ∫ φ_k ∇u·∇λ dx for every P1 value κ_k of κ, in input vertex order on
        every rank (λ vanishes on the boundary, where the rows of K do not depend on κ)."""
        kappa_hat = ufl.TestFunction(self.dm.V)
        form = fem.form(kappa_hat * ufl.inner(ufl.grad(u), ufl.grad(lam)) * ufl.dx)
        sensitivity = fem.Function(self.dm.V)
        fem_petsc.assemble_vector(sensitivity.vector, form)
        sensitivity.vector.ghostUpdate(addv=PETSc.InsertMode.ADD,
                                       mode=PETSc.ScatterMode.REVERSE)
        return self.dm.vertex_values_on_all_ranks(sensitivity)

    def destroy(self) -> None:
        for obj in (self.ksp, self.A):
            obj.destroy()


def solve_diffusion(dm: DistributedMesh, kappa: fem.Function, source: fem.Function,
                    solver: str = "lu") -> fem.Function:
    """P1 solution of −∇·(κ∇u) = f with u = 0 on the whole boundary (κ and f functions)."""
    operator = DiffusionOperator(dm, kappa, solver)
    operator.assemble()
    uh = operator.solve(source)
    operator.destroy()
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
        self.u_initial = self.u.x.array.copy()
        self.u_old = fem.Function(dm.V, name="u_old")
        self.dt = fem.Constant(dm.mesh, PETSc.ScalarType(1.0))
        self.theta = fem.Constant(dm.mesh, PETSc.ScalarType(0.5))
        self.D = fem.Constant(dm.mesh, PETSc.ScalarType(D))
        self.rho = fem.Constant(dm.mesh, PETSc.ScalarType(rho))
        v = ufl.TestFunction(dm.V)

        def diffusion(w):
            return P * ufl.inner(ufl.grad(w), ufl.grad(v)) * ufl.dx

        def growth(w):
            return w * (1 - w) * v * ufl.dx

        def theta_average(term):
            return self.theta * term(self.u) + (1 - self.theta) * term(self.u_old)

        # The residual is affine in D and ρ; their coefficients are its parameter derivatives.
        self.parameter_derivatives = {"D": theta_average(diffusion),
                                      "rho": -theta_average(growth)}
        self.residual_form = ((self.u - self.u_old) / self.dt * v * ufl.dx
                              + self.D * self.parameter_derivatives["D"]
                              + self.rho * self.parameter_derivatives["rho"])
        self.residual = fem.form(self.residual_form)
        self.jacobian = fem.form(ufl.derivative(self.residual_form, self.u,
                                                ufl.TrialFunction(dm.V)))
        self.A = fem_petsc.create_matrix(self.jacobian)
        self.b = fem_petsc.create_vector(self.residual)
        self.du = self.A.createVecRight()
        self.ksp = _new_ksp(dm.comm, solver)
        self.newton_iterations = 0

    def restart(self, D: float, rho: float) -> None:
        """Back to u0 with new parameters, reusing the compiled forms and the matrix."""
        self.D.value, self.rho.value = D, rho
        self.u.x.array[:] = self.u_initial
        self.newton_iterations = 0

    def assemble_jacobian(self) -> None:
        """∂G/∂u at the current u, uⁿ, dt and θ into `A`, set as the linear solver's operator."""
        self.A.zeroEntries()
        fem_petsc.assemble_matrix(self.A, self.jacobian)
        self.A.assemble()
        self.ksp.setOperators(self.A)

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
            self.assemble_jacobian()
            self.ksp.solve(self.b, self.du)
            _check_ksp(self.ksp, "Newton step")
            self.u.vector.axpy(1.0, self.du)
            self.u.x.scatter_forward()
            correction = self.du.norm(PETSc.NormType.NORM_INFINITY)
            size = self.u.vector.norm(PETSc.NormType.NORM_INFINITY)
            if not np.isfinite(correction):
                raise self._breakdown("produced non-finite values")
            if correction <= NEWTON_RTOL * max(size, 1e-300):
                self.newton_iterations += iteration
                return iteration
        raise self._breakdown(f"did not converge in {NEWTON_MAX_ITERATIONS} iterations")

    def _breakdown(self, what: str) -> Diverged:
        """Why a step failed, from the last good state uⁿ: u(1−u) makes every u < 0 grow, so
        the P1 scheme's undershoot below 0 at a steep front, once large, blows up."""
        comm = self.dm.comm
        low = comm.allreduce(float(self.u_old.x.array.min(initial=np.inf)), op=MPI.MIN)
        high = comm.allreduce(float(self.u_old.x.array.max(initial=-np.inf)), op=MPI.MAX)
        cause = (f"u had left [0, 1] (range [{low:.3g}, {high:.3g}]): the scheme's undershoot "
                 "at the front grew under ρu(1−u); use a finer mesh or more time steps"
                 if low < -UNDERSHOOT or high > 1 + UNDERSHOOT else
                 f"u in [{low:.3g}, {high:.3g}]; use more time steps")
        return Diverged(f"reaction-diffusion FEM: Newton's iteration {what} at "
                        f"D = {float(self.D.value):.4g}, ρ = {float(self.rho.value):.4g}: {cause}")

    def snapshot(self) -> np.ndarray:
        """This rank's dof values of u (owned and ghost), to hand back to the adjoint."""
        return self.u.x.array.copy()

    def values(self) -> np.ndarray | None:
        """Current u at the input vertices on rank 0 (None elsewhere)."""
        return self.dm.gather_vertex_values(self.u)

    def destroy(self) -> None:
        for obj in (self.ksp, self.A, self.b, self.du):
            obj.destroy()


class ReactionDiffusionAdjoint:
    """The discrete adjoint of a :class:`ReactionDiffusionStepper`'s sub-steps, for (D, ρ).

    Sub-step j (size dt_j, θ_j) solves G_j(w_j; w_{j−1}, D, ρ) = 0, the stepper's residual.
    For J depending on the states, the adjoint states solve backwards from the last sub-step M

        (∂G_j/∂w_j)ᵀ λ_j = −∂J/∂w_j − (∂G_{j+1}/∂w_j)ᵀ λ_{j+1},   λ_{M+1} = 0,

    and dJ/dp = Σ_j λ_jᵀ ∂G_j/∂p. The Jacobian is the stepper's own form and matrix; it is
    symmetric (mass, P-weighted stiffness and ∫ρ(1−2u)δu v dx), so the transposed systems are
    solved with it directly.
    """

    def __init__(self, stepper: ReactionDiffusionStepper):
        self.stepper = stepper
        V = stepper.dm.V
        self.lam = fem.Function(V, name="lambda")
        weighted_residual = ufl.action(stepper.residual_form, self.lam)  # λᵀG
        self.old_state_coupling = fem.form(
            ufl.derivative(weighted_residual, stepper.u_old, ufl.TestFunction(V)))
        self.parameter_terms = {name: fem.form(ufl.action(form, self.lam))
                                for name, form in stepper.parameter_derivatives.items()}
        self.coupling = fem_petsc.create_vector(self.old_state_coupling)

    def parameter_gradient(self, substeps, states, sources) -> dict[str, float]:
        """dJ/dD and dJ/dρ, the same on every rank.

        Args:
            substeps: (dt_j, θ_j) of sub-steps j = 1..M, as the forward solve took them.
            states: the stepper's snapshots w_0..w_M.
            sources: {j: ∂J/∂w_j as a P1 function} for the sub-steps J depends on (j >= 1).
        """
        stepper = self.stepper
        totals = dict.fromkeys(self.parameter_terms, 0.0)
        for j in range(len(substeps), 0, -1):
            stepper.dt.value, stepper.theta.value = substeps[j - 1]
            stepper.u.x.array[:] = states[j]
            stepper.u_old.x.array[:] = states[j - 1]
            rhs = stepper.b
            with rhs.localForm() as local:
                local.set(0.0)
            if j in sources:
                rhs.axpy(-1.0, sources[j].vector)
            if j < len(substeps):
                rhs.axpy(-1.0, self.coupling)
            stepper.assemble_jacobian()
            stepper.ksp.solve(rhs, self.lam.vector)
            _check_ksp(stepper.ksp, "adjoint step")
            self.lam.x.scatter_forward()
            for name, form in self.parameter_terms.items():
                totals[name] += fem.assemble_scalar(form)
            with self.coupling.localForm() as local:
                local.set(0.0)
            fem_petsc.assemble_vector(self.coupling, self.old_state_coupling)
            self.coupling.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        return {name: sum_over_ranks(stepper.dm.comm, total) for name, total in totals.items()}

    def destroy(self) -> None:
        self.coupling.destroy()


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
