"""Command-line back end of the FEM solves: ``bilo solve darcy|fkpp2d`` and ``python -m
solvers.fem.cli``.

How the `bilo` CLI should call it (from ``cmd_solve``, for ``args.problem in FEM_PROBLEMS``)::

    from solvers.fem.cli import FEM_PROBLEMS, run_fem_solve
    summary = run_fem_solve(args.problem, params, args.mesh, args.out, n_ranks=args.np,
                            n=args.nx, nt=args.nt)
    print(summary["line"])

``params`` is the ``--param NAME=VALUE`` dictionary (floats; see :data:`PARAMS` for the names
and defaults of each problem), ``args.mesh`` an XDMF mesh written by ``meshes.write_mesh``
(optional: the unit square with n×n squares otherwise; note n counts squares per side, not
nodes), ``args.nt`` the number of output times, ``--np N`` the number of MPI ranks (`bilo solve`
needs the new options ``--mesh MESH.xdmf`` and ``--np N``; ``--function`` and the observation
options do not apply to these problems).
With n_ranks > 1, the call relaunches ``python -m solvers.fem.cli`` under
``mpirun --allow-run-as-root -n N`` with ``OMP_NUM_THREADS=1`` and waits for it; dolfinx is
then imported only in the MPI ranks. Bad input raises :class:`solvers.common.InputError`
(one line), also when it happens inside the relaunched ranks.

Outputs (written by rank 0): the exchange file `out` (``solvers.exchange``; axes ``("vertex",)``
for darcy, ``("t", "vertex")`` for fkpp2d) and ``<stem>_paraview.xdmf`` + ``.h5`` beside it.

Problems and their parameters:

* ``darcy``: −∇·(A∇u) = f, u = 0 on the boundary. A = `high` where the seeded GRF
  ``darcy_grf(seed)`` is > 0 and `low` elsewhere (the BiLO paper: 12 and 3), or the mesh's cell
  field named by `field` (default ``A`` if the mesh has it); f constant. The solve takes A per
  cell (the GRF at the centroids); the file's ``inputs/A``, the truth of the unknown function,
  is per vertex: the GRF thresholded at each vertex (a mesh field: its area-weighted vertex
  mean). Observations of u (``obs``): at every mesh vertex (``vertices``, the default) or on an
  n_obs × n_obs grid over the mesh's bounding box (``grid``; u_h interpolated in P1), with
  Gaussian noise of standard deviation `noise` drawn from ``default_rng(seed)``.
* ``fkpp2d``: u_t = ∇·(D·P∇u) + ρu(1−u), no flux, t in [0, T], nt output times; P is the
  mesh field named by `field` (default ``P`` if present, else 1); u0 = amp·exp(−|x−x0|²/(2σ²))
  centred at (x0, y0) (default: the vertex nearest the mesh's centroid), σ default 5% of the
  mesh's bounding-box diagonal.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from solvers.common import Diverged, InputError

FEM_PROBLEMS = ("darcy", "fkpp2d")
PARAMS = {
    "darcy": {"seed": 0.0, "f": 1.0, "high": 12.0, "low": 3.0},
    "fkpp2d": {"D": 1.0, "rho": 1.0, "T": 1.0, "amp": 0.5},  # + optional x0, y0, sigma
}
OPTIONAL = {"darcy": (), "fkpp2d": ("x0", "y0", "sigma")}
# where a parameter means what the problem models: (low, high, low included). D ≤ 0 is no
# diffusion (D < 0 a backward heat equation), A ≤ 0 no elliptic problem; ρ < 0 (a density that
# dies out) and an amplitude above 1 (the density's maximum) are no tumour
RANGES = {
    "darcy": {"seed": (0.0, np.inf, True), "high": (0.0, np.inf, False),
              "low": (0.0, np.inf, False)},
    "fkpp2d": {"D": (0.0, np.inf, False), "rho": (0.0, np.inf, True),
               "T": (0.0, np.inf, False), "amp": (0.0, 1.0, False),
               "sigma": (0.0, np.inf, False)},
}
OBSERVATION_LAYOUTS = ("vertices", "grid")
_MPI_ENV_PREFIXES = ("OMPI_", "PMIX_", "OPAL_", "PMI_", "HYDRA_")


def _under_mpirun() -> bool:
    return any(k in os.environ for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"))


def _check_params(problem: str, params: dict[str, float]) -> dict[str, float]:
    if problem not in FEM_PROBLEMS:
        raise InputError(f"unknown FEM problem '{problem}'; choose from {', '.join(FEM_PROBLEMS)}")
    allowed = set(PARAMS[problem]) | set(OPTIONAL[problem])
    unknown = set(params) - allowed
    if unknown:
        raise InputError(f"{problem}: unknown parameter(s) {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(sorted(allowed))}")
    merged = {**PARAMS[problem], **{k: float(v) for k, v in params.items()}}
    for name, value in merged.items():
        if not np.isfinite(value):
            raise InputError(f"{problem}: parameter {name}={value} is not finite")
        low, high, closed = RANGES[problem].get(name, (-np.inf, np.inf, True))
        if not ((value >= low if closed else value > low) and value <= high):
            raise InputError(f"{problem}: parameter {name}={value} must lie in "
                             f"{'[' if closed else '('}{low:g}, "
                             f"{'inf)' if high == np.inf else f'{high:g}]'}")
        if name == "seed" and value != int(value):
            raise InputError(f"{problem}: parameter seed={value} must be a whole number")
    return merged


def mpi_command(n_ranks: int, args: list[str], module: str = "solvers.fem.cli",
                oversubscribe: bool = False) -> tuple[list[str], dict[str, str]]:
    """The mpirun command line and environment that run ``python -m MODULE ARGS`` (default
    ``solvers.fem.cli``) on `n_ranks` ranks. The environment is copied from os.environ (not
    inherited: an MPI library initialised in this process has added variables at C level that
    would confuse mpirun), less the variables of an enclosing MPI job; ``OMPI_MCA_*`` settings
    are kept."""
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        raise InputError("--np: mpirun not found (install Open MPI, or run without --np)")
    env = {k: v for k, v in os.environ.items()
           if k.startswith("OMPI_MCA_") or not k.startswith(_MPI_ENV_PREFIXES)}
    env["OMP_NUM_THREADS"] = "1"
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    command = [mpirun, "--allow-run-as-root", *(["--oversubscribe"] if oversubscribe else []),
               "-n", str(n_ranks), sys.executable, "-m", module, *args]
    return command, env


# how the command reports a failure on stderr and in its exit status: bad input, a breakdown
FAILURES = ((InputError, "error: ", 2), (Diverged, "diverged: ", 3))


def check_relaunch(result: subprocess.CompletedProcess, n_ranks: int) -> None:
    """After an mpirun relaunch: a rank's "error: ..." line (bad input) as one InputError, its
    "diverged: ..." line (a solve that broke down) as Diverged, any other failure as a
    RuntimeError with the last lines of stderr."""
    if result.returncode == 0:
        return
    lines = result.stderr.splitlines()
    for kind, prefix, _ in FAILURES:
        found = [line for line in lines if line.startswith(prefix)]
        if found:
            raise kind(found[0][len(prefix):])
    raise RuntimeError(f"mpirun -n {n_ranks} failed (exit {result.returncode}):\n"
                       + "\n".join(result.stderr.splitlines()[-20:]))


def _relaunch(problem, params, mesh_path, out, n_ranks, oversubscribe=False,
              **options) -> dict:
    args = [problem, "--out", str(out)]
    for name, value in params.items():
        args += ["--param", f"{name}={value!r}"]
    if mesh_path is not None:
        args += ["--mesh", str(mesh_path)]
    for name, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        args += [flag] if value is True else [flag, str(value)]
    command, env = mpi_command(n_ranks, args, oversubscribe=oversubscribe)
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    check_relaunch(result, n_ranks)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return {"line": lines[-1] if lines else "", "out": str(out), "mpi_ranks": n_ranks}


def _load_mesh(mesh_path, n: int):
    from meshes.image_mesh import MeshData, unit_square_mesh
    from meshes.io import read_mesh

    if mesh_path is None:
        return MeshData(unit_square_mesh(n))
    return read_mesh(mesh_path)


def _field(mesh_data, name: str | None, default: str):
    """(values, location) of the mesh field `name` (or `default` if present), else None."""
    key = name or default
    if key in mesh_data.cell_fields:
        return mesh_data.cell_fields[key], "cell"
    if key in mesh_data.vertex_fields:
        return mesh_data.vertex_fields[key], "vertex"
    if name is not None:
        raise InputError(f"mesh has no field '{name}' (cell fields: "
                         f"{', '.join(mesh_data.cell_fields) or 'none'}; vertex fields: "
                         f"{', '.join(mesh_data.vertex_fields) or 'none'})")
    return None


def _gaussian_seed(mesh_data, params: dict[str, float]):
    from solvers.fem.reaction_diffusion import gaussian_initial_condition

    vertices = mesh_data.mesh.vertices[:, :2]
    if "x0" in params and "y0" in params:
        centre = np.array([params["x0"], params["y0"]])
    else:
        nearest = np.argmin(np.sum((vertices - vertices.mean(axis=0)) ** 2, axis=1))
        centre = vertices[nearest]
    sigma = params.get("sigma", 0.05 * float(np.linalg.norm(np.ptp(vertices, axis=0))))
    if sigma <= 0:
        raise InputError(f"fkpp2d: sigma must be > 0, got {sigma}")
    params.update(x0=float(centre[0]), y0=float(centre[1]), sigma=float(sigma))
    return lambda p: gaussian_initial_condition(p, centre, sigma, params["amp"])


def run_fem_solve(problem: str, params: dict[str, float], mesh_path=None, out="solution.h5", *,
                  n_ranks: int = 1, n: int | None = None, nt: int | None = None,
                  n_steps: int | None = None, field: str | None = None, solver: str = "lu",
                  xdmf: bool = True, comm=None, oversubscribe: bool = False,
                  obs: str | None = None, n_obs: int | None = None, noise: float = 0.0,
                  seed: int | None = None) -> dict | None:
    """Solve `problem` ("darcy" or "fkpp2d") and write its outputs (see the module docstring).

    Args:
        problem: "darcy" or "fkpp2d".
        params: parameter overrides (names in :data:`PARAMS`, plus x0, y0, sigma for fkpp2d).
        mesh_path: XDMF mesh (``meshes.write_mesh``) or None for the unit square.
        out: the exchange HDF5 file to write.
        n_ranks: MPI ranks; > 1 relaunches under mpirun unless already running under it.
        n: unit-square resolution (n×n squares; default 64) when no mesh is given.
        nt: number of output times of fkpp2d in [0, T] (default 11).
        n_steps: time steps of fkpp2d (default: the smallest count >= 100 hitting every output).
        field: mesh field to use as A (darcy) or P (fkpp2d).
        solver: "lu" (MUMPS) or "cg" (CG + BoomerAMG).
        xdmf: also write ``<stem>_paraview.xdmf`` for ParaView.
        comm: MPI communicator for an in-process solve (default COMM_WORLD).
        oversubscribe: allow more ranks than cores (passed to mpirun).
        obs, n_obs, noise, seed: darcy's observations (module docstring): layout "vertices"
            (default) or "grid" with n_obs per side (default 51), noise σ, noise seed.

    Returns:
        On rank 0 (and in the relaunching process) a summary dict with ``line`` (a one-line
        report), ``out``, ``xdmf``, ``mpi_ranks`` and ``wall_s``; None on the other ranks.
    """
    params = _check_params(problem, dict(params))
    if int(n_ranks) != n_ranks or n_ranks < 1:
        raise InputError(f"--np must be an integer >= 1, got {n_ranks}")
    cores = os.cpu_count() or 1
    if n_ranks > cores and not oversubscribe and not _under_mpirun():
        raise InputError(f"--np {n_ranks}: more ranks than this machine's {cores} cores; add "
                         "--oversubscribe to run them anyway (slower)")
    for flag, value, least in (("--nx", n, 1), ("--nt", nt, 2), ("--n-steps", n_steps, 1)):
        if value is not None and value < least:
            raise InputError(f"{flag} {value}: must be at least {least}")
    if mesh_path is not None and not Path(mesh_path).exists():
        raise InputError(f"{mesh_path}: mesh file does not exist")
    observing = obs is not None or n_obs is not None or noise or seed is not None
    if problem != "darcy" and observing:
        raise InputError(f"{problem}: --obs, --n-obs, --noise and --seed apply to darcy only")
    if obs is not None and obs not in OBSERVATION_LAYOUTS:
        raise InputError(f"--obs {obs}: choose from {', '.join(OBSERVATION_LAYOUTS)}")
    if n_obs is not None and (obs != "grid" or n_obs < 2):
        raise InputError(f"--n-obs {n_obs}: needs --obs grid and at least 2 points per side")
    if not (np.isfinite(noise) and noise >= 0):
        raise InputError(f"--noise {noise}: must be a finite number >= 0")
    options = {"n": n, "nt": nt, "n_steps": n_steps, "field": field, "solver": solver,
               "no_xdmf": not xdmf, "obs": obs, "n_obs": n_obs, "noise": noise, "seed": seed}
    if n_ranks > 1 and not _under_mpirun():
        return _relaunch(problem, params, mesh_path, out, int(n_ranks),
                         oversubscribe=oversubscribe, **options)
    return _solve_here(problem, params, mesh_path, out, n=64 if n is None else n,
                       nt=11 if nt is None else nt,
                       n_steps=n_steps, field=field, solver=solver, xdmf=xdmf, comm=comm,
                       observe={"layout": obs or "vertices", "n_obs": n_obs or 51,
                                "noise": float(noise), "seed": seed})


def _observe(data, *, layout: str, n_obs: int, noise: float, seed: int | None):
    """Darcy's observations of the solution in `data` (module docstring)."""
    from meshes.interpolation import P1Interpolator
    from solvers.exchange import Observations

    vertices = data.mesh.vertices[:, :2]
    if layout == "vertices":
        points, clean = vertices.copy(), data.u.copy()
    else:
        axes = [np.linspace(lo, hi, n_obs) for lo, hi in zip(vertices.min(axis=0),
                                                             vertices.max(axis=0), strict=True)]
        xx, yy = np.meshgrid(*axes, indexing="ij")
        points = np.column_stack([xx.ravel(), yy.ravel()])
        interpolate = P1Interpolator(vertices, data.mesh.cells)
        inside, _, _ = interpolate.locate(points)
        if not inside.all():
            raise InputError(f"--obs grid: {int((~inside).sum())} of its points lie outside the "
                             f"mesh, e.g. {points[~inside][0].tolist()}; use --obs vertices")
        clean = interpolate(data.u, points)
    rng = np.random.default_rng(seed)
    values = clean + noise * rng.standard_normal(clean.shape) if noise > 0 else clean.copy()
    return Observations(points=points, values=values, columns=("x", "y"), sigma=noise,
                        seed=seed, clean=clean, layout=layout)


def _solve_here(problem, params, mesh_path, out, *, n, nt, n_steps, field, solver, xdmf, comm,
                observe):
    from meshes.io import write_solution_xdmf
    from solvers.exchange import write_solution
    from solvers.fem.darcy import darcy_grf, darcy_paper_coefficient, solve_darcy
    from solvers.fem.reaction_diffusion import solve_fkpp2d

    started = time.perf_counter()
    mesh_data = _load_mesh(mesh_path, n)
    if problem == "darcy":
        found = _field(mesh_data, field, "A")
        if found is not None and found[1] != "cell":
            raise InputError(f"darcy: the coefficient field '{field or 'A'}' must be per cell")
        seed = int(params["seed"])
        A = (found[0] if found is not None else darcy_paper_coefficient(
            lambda p: darcy_grf(p, seed), high=params["high"], low=params["low"]))
        solution = solve_darcy(A, params["f"], mesh=mesh_data, comm=comm, solver=solver)
        truth = (None if found is not None else darcy_paper_coefficient(
            darcy_grf(mesh_data.mesh.vertices[:, :2], seed), params["high"], params["low"]))
    else:
        found = _field(mesh_data, field, "P")
        P, P_at = (1.0, "auto") if found is None else found
        u0 = _gaussian_seed(mesh_data, params)
        t_out = np.linspace(0.0, params["T"], nt)
        solution = solve_fkpp2d(mesh_data, P, params["D"], params["rho"], u0, t_out, n_steps,
                                comm, solver=solver, P_at=P_at)
    if solution is None:
        return None
    provenance = {"mesh": str(mesh_path) if mesh_path else f"unit square {n}x{n}"}
    data = solution.to_solution_file(problem, params, provenance)
    if problem == "darcy":
        if truth is not None:
            data.inputs["A"] = truth
        data.observations = _observe(data, **observe)
    paths = [write_solution(out, data)]
    if xdmf:
        paths.append(write_solution_xdmf(
            Path(out).with_name(Path(out).stem + "_paraview.xdmf"), solution.mesh, solution.u,
            solution.times, cell_fields=solution.cell_inputs,
            vertex_fields=solution.vertex_inputs))
    wall = time.perf_counter() - started
    line = (f"{problem}: solved with {solution.info['solver']} on {solution.info['mpi_ranks']} "
            f"rank(s) ({solution.info['resolution']}) in {wall:.2f} s -> "
            + ", ".join(str(p) for p in paths))
    return {"line": line, "out": str(paths[0]), "xdmf": str(paths[1]) if xdmf else None,
            "mpi_ranks": solution.info["mpi_ranks"], "wall_s": wall}


def _key_value(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER, got '{text}'") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m solvers.fem.cli",
        description="FEM reference solves (dolfinx, P1) -> exchange HDF5 + ParaView XDMF.")
    parser.add_argument("problem", choices=FEM_PROBLEMS)
    parser.add_argument("--param", action="append", type=_key_value, default=[],
                        metavar="NAME=VALUE", help="problem parameter (repeatable)")
    parser.add_argument("--mesh", default=None, metavar="MESH.xdmf")
    parser.add_argument("--field", default=None, help="mesh field used as A (darcy) / P (fkpp2d)")
    parser.add_argument("--n", type=int, default=None, help="unit-square resolution (default 64)")
    parser.add_argument("--nt", type=int, default=None, help="fkpp2d output times (default 11)")
    parser.add_argument("--n-steps", type=int, default=None, help="fkpp2d time steps")
    parser.add_argument("--solver", default="lu", choices=("lu", "cg"))
    parser.add_argument("--no-xdmf", action="store_true", help="skip the ParaView XDMF output")
    parser.add_argument("--np", type=int, default=1, dest="n_ranks", metavar="N",
                        help="MPI ranks (relaunches under mpirun)")
    parser.add_argument("--obs", default=None, choices=OBSERVATION_LAYOUTS,
                        help="darcy: observe u at the mesh vertices (default) or on a grid")
    parser.add_argument("--n-obs", type=int, default=None, help="darcy: grid points per side")
    parser.add_argument("--noise", type=float, default=0.0, help="darcy: noise sigma")
    parser.add_argument("--seed", type=int, default=None, help="darcy: noise seed")
    parser.add_argument("--out", required=True, metavar="FILE.h5")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK", "0")))
    try:
        summary = run_fem_solve(args.problem, dict(args.param), args.mesh, args.out,
                                n_ranks=args.n_ranks, n=args.n, nt=args.nt,
                                n_steps=args.n_steps, field=args.field, solver=args.solver,
                                xdmf=not args.no_xdmf, obs=args.obs, n_obs=args.n_obs,
                                noise=args.noise, seed=args.seed)
    except (InputError, Diverged) as exc:
        if os.environ.get("BILO_DEBUG"):
            raise
        prefix, status = next((p, code) for kind, p, code in FAILURES if isinstance(exc, kind))
        if rank == 0:
            print(prefix + str(exc), file=sys.stderr)
        return status
    if summary is not None:
        print(summary["line"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
