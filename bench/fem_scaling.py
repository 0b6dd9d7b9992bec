"""Benchmark: strong scaling of the 2-D Fisher–KPP FEM solve (``solvers.fem.solve_fkpp2d``).

Problem: u_t = ∇·(D·P(x)∇u) + ρu(1−u), no flux, on the unit square cut into n×n squares of two
triangles (default n = 224: 100,352 cells, 50,625 vertices), P piecewise constant per cell
(1 where the seeded Darcy GRF is > 0, 0.1 elsewhere: white/grey-matter-like contrast),
D = 0.01, ρ = 1, u0 a Gaussian of σ = 0.05 at the centre, Crank–Nicolson + Newton,
``--steps`` steps to T = 1, Newton's linear solves with ``--solver`` (MUMPS LU or CG+AMG).

Each rank count runs in its own ``mpirun --allow-run-as-root -n N`` (OMP_NUM_THREADS=1), as
``--repeat`` runs; the reported time is the median of the solve's wall time on rank 0 (the
time of ``solve_fkpp2d``: mesh distribution, assembly, Newton, gathering the snapshots; not
the Python start-up, the JIT (warmed up first) or the output). Speed-up = t(1 rank) / t(N).
The CPU time of the busiest rank (``time.process_time``) is printed too: on a machine shared
with other jobs it shows how the work divides even when the wall time cannot.

Usage: ``python bench/fem_scaling.py [--n 224] [--steps 20] [--ranks 1 2] [--solver lu]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def worker(n: int, steps: int, solver: str) -> None:
    """Run inside mpirun: one warm-up solve on a tiny mesh (JIT), then the timed solve."""
    import numpy as np

    from meshes.image_mesh import unit_square_mesh
    from solvers.fem.darcy import darcy_grf
    from solvers.fem.dolfinx_adapter import mpi_comm_world
    from solvers.fem.reaction_diffusion import gaussian_initial_condition, solve_fkpp2d

    comm = mpi_comm_world()

    def u0(p):
        return gaussian_initial_condition(p, (0.5, 0.5), 0.05, 0.5)

    def tissue(p):
        return np.where(darcy_grf(p, seed=1) > 0, 1.0, 0.1)

    small = unit_square_mesh(4)
    solve_fkpp2d(small, tissue, 0.01, 1.0, u0, [0.0, 1.0], 2, comm, solver=solver, P_at="cell")
    mesh = unit_square_mesh(n)
    comm.Barrier()
    started, cpu_started = time.perf_counter(), time.process_time()
    solution = solve_fkpp2d(mesh, tissue, 0.01, 1.0, u0, [0.0, 0.5, 1.0], steps, comm,
                            solver=solver, P_at="cell")
    cpu = comm.gather(time.process_time() - cpu_started, root=0)
    comm.Barrier()
    wall = time.perf_counter() - started
    if comm.rank == 0:
        print("RESULT " + json.dumps({
            "ranks": comm.size, "wall_s": wall, "cpu_max_s": max(cpu), "cells": len(mesh.cells),
            "vertices": len(mesh.vertices), "newton": solution.info["newton_iterations"],
            "u_max": float(solution.u[-1].max())}))


def launch(ranks: int, n: int, steps: int, solver: str) -> dict:
    from solvers.fem.cli import mpi_command

    command, env = mpi_command(ranks, [])
    command = command[: command.index("-m")] + [str(Path(__file__).resolve()), "--worker",
                                                "--n", str(n), "--steps", str(steps),
                                                "--solver", solver]
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        raise SystemExit(f"mpirun -n {ranks} failed (exit {result.returncode}):\n"
                         + result.stderr[-3000:])
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=224, help="n×n squares (2n² cells)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--solver", default="lu", choices=("lu", "cg"))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.n, args.steps, args.solver)
        return
    runs = {}
    for ranks in args.ranks:
        results = [launch(ranks, args.n, args.steps, args.solver) for _ in range(args.repeat)]
        runs[ranks] = results[0] | {
            key: statistics.median(r[key] for r in results) for key in ("wall_s", "cpu_max_s")}
    first = runs[args.ranks[0]]
    print(f"Fisher-KPP 2-D, P1: {first['cells']} cells, {first['vertices']} vertices, "
          f"{args.steps} CN steps, solver {args.solver}, median of {args.repeat}")
    base, base_cpu = first["wall_s"], first["cpu_max_s"]
    for ranks, run in runs.items():
        print(f"  {ranks} rank(s): wall {run['wall_s']:7.2f} s  speed-up "
              f"{base / run['wall_s']:.2f}   CPU of the busiest rank {run['cpu_max_s']:7.2f} s  "
              f"ratio {base_cpu / run['cpu_max_s']:.2f}   (Newton iterations {run['newton']}, "
              f"max u(T) {run['u_max']:.6f})")
    print(f"  load average during the runs: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores "
          "(wall-time speed-up is only meaningful on otherwise idle cores)")


if __name__ == "__main__":
    main()
