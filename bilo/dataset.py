"""`bilo dataset`: a problem's reference solver run over a set of parameters (or of random
unknown functions), written as one HDF5 dataset (`solvers.datasets`) for operator learning.

* `--grid NAME=START:STEP:STOP` (both ends included; or one value `NAME=VALUE`) for every
  parameter of the problem: the samples are the Cartesian product, the first parameter of the
  problem's declaration varying slowest;
* `--samples N --function NAME="grf(length_scale=.., variance=.., mean=.., left=.., right=..)"`
  for a problem with unknown functions: N draws of the Gaussian random field of
  `solvers.grf.grf_samples` (`left`/`right` condition f(0), f(1); `--seed S` seeds the draws).

`--np N` solves on N MPI ranks (mpi4py, relaunched under `mpirun` with OMP_NUM_THREADS=1 as the
FEM solves are): rank r solves the samples r, r + N, ...; rank 0 gathers and writes. The
one-rank path limits BLAS to one thread as well, so that the file is the same bytes for every N.
numpy/scipy/h5py (and mpi4py under --np) only.
"""

from __future__ import annotations

import ast
import itertools
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from bilo.model import Problem
from bilo.problems import get_problem
from solvers.common import InputError
from solvers.datasets import Dataset, write_dataset
from solvers.expressions import GRF_BOUNDS
from solvers.grf import CANONICAL_GRID, grf_samples
from solvers.reference import toolkit_version

MAX_SAMPLES = 1_000_000
# the keyword arguments of a dataset's grf(...) function: (lowest, highest) or None (any number)
_GRF_KEYS = {"length_scale": GRF_BOUNDS["length_scale"], "variance": GRF_BOUNDS["variance"],
             "mean": None, "left": None, "right": None}


def parse_grid(text: str) -> tuple[str, np.ndarray]:
    """'NAME=START:STEP:STOP' (STOP included, a whole number of steps from START) or
    'NAME=VALUE' -> (name, values)."""
    def fail(why: str):
        raise InputError(f"--grid {text}: {why}")

    name, sep, spec = text.partition("=")
    name, spec = name.strip(), spec.strip()
    if not sep or not name or not spec:
        fail("expected NAME=START:STEP:STOP or NAME=VALUE")
    parts = spec.split(":")
    if len(parts) not in (1, 3):
        fail("expected NAME=START:STEP:STOP or NAME=VALUE")
    numbers = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            fail(f"'{part}' is not a number")
        if not math.isfinite(value):
            fail(f"'{part}' is not a finite number")
        numbers.append(value)
    if len(numbers) == 1:
        return name, np.array(numbers)
    start, step, stop = numbers
    if step <= 0:
        fail("STEP must be above 0")
    if stop < start:
        fail("STOP must not be below START")
    count = (stop - start) / step
    if abs(count - round(count)) > 1e-6 * max(1.0, count):
        fail(f"(STOP - START)/STEP = {count:.6g} is not a whole number of steps")
    if count + 1 > MAX_SAMPLES:
        fail(f"{count + 1:.0f} values, more than {MAX_SAMPLES}")
    # rounded to 12 digits: 0.8 + 3·0.05 is stored as 0.95, not 0.9500000000000001
    return name, np.round(start + step * np.arange(round(count) + 1), 12)


def parse_grf(name: str, text: str) -> dict[str, float]:
    """'grf(length_scale=0.2, variance=0.05, mean=1, left=1, right=1)' -> its keyword arguments
    (numbers only; length scale and variance within `solvers.expressions.GRF_BOUNDS`)."""
    where = f"--function {name}={text}"
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise InputError(f"{where}: expected grf(length_scale=.., variance=.., mean=.., "
                         "left=.., right=..)") from None
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "grf") or node.args:
        raise InputError(f"{where}: expected grf(...) with keyword arguments only, e.g. "
                         "grf(length_scale=0.2, variance=0.05, mean=1, left=1, right=1)")
    values: dict[str, float] = {}
    for keyword in node.keywords:
        key = keyword.arg
        if key not in _GRF_KEYS:
            raise InputError(f"{where}: grf has no argument {key!r}; its arguments: "
                             f"{', '.join(_GRF_KEYS)} (the seed is --seed)")
        try:
            value = float(ast.literal_eval(keyword.value))
        except (ValueError, TypeError, SyntaxError):
            raise InputError(f"{where}: {key} must be a number") from None
        bounds = _GRF_KEYS[key]
        if not math.isfinite(value) or (bounds and not bounds[0] <= value <= bounds[1]):
            limits = f" in [{bounds[0]:g}, {bounds[1]:g}]" if bounds else ""
            raise InputError(f"{where}: {key}={value:g} must be a finite number{limits}")
        values[key] = value
    if ("left" in values) != ("right" in values):
        raise InputError(f"{where}: give both left and right (the boundary values) or neither")
    return values


@dataclass
class Plan:
    """What to solve: the parameter rows and the function draws, and how."""

    problem: Problem
    names: tuple[str, ...]
    theta: np.ndarray  # (n, p)
    fixed: dict[str, float]  # declared defaults of the rest (constants)
    draws: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (n, 1001)
    nx: int = 0
    nt: int = 0
    description: dict[str, str] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return int(self.theta.shape[0])

    def functions(self, i: int) -> dict:
        spec = self.problem.reference
        from solvers.expressions import parse_function

        given = {k: parse_function(k, v) for k, v in spec.inputs.items()}
        for name, draws in self.draws.items():
            given[name] = (lambda row: lambda x: np.interp(np.asarray(x, np.float64),
                                                           CANONICAL_GRID, row))(draws[i])
        return given


def make_plan(problem: str | Problem, grids: list[str], *, samples: int | None = None,
              functions: list[tuple[str, str]] | None = None, seed: int = 0,
              nx: int | None = None, nt: int | None = None) -> Plan:
    """Check the options and list the samples (one line naming the option for bad input)."""
    problem = get_problem(problem) if isinstance(problem, str) else problem
    spec = problem.reference
    if spec is None:
        raise InputError(f"problem '{problem.name}' declares no reference solver")
    if spec.on_mesh:
        raise InputError(f"problem '{problem.name}' is solved on a mesh; bilo dataset takes "
                         "the problems on a grid")
    values: dict[str, np.ndarray] = {}
    for text in grids:
        name, axis = parse_grid(text)
        if name not in problem.params:
            raise InputError(f"--grid {text}: problem '{problem.name}' has no parameter "
                             f"'{name}'; its parameters: {', '.join(problem.params) or '(none)'}")
        if name in values:
            raise InputError(f"--grid {text}: parameter '{name}' given twice")
        values[name] = axis
    missing = [p for p in problem.params if p not in values]
    if missing:
        raise InputError(f"--grid: no values for parameter {', '.join(missing)} of "
                         f"'{problem.name}' (give --grid NAME=START:STEP:STOP or NAME=VALUE)")
    functions = list(functions or [])
    given = dict(functions)
    if len(given) != len(functions):
        raise InputError("--function: a function given twice")
    unknown = set(given) - set(problem.functions)
    if unknown:
        raise InputError(f"--function {sorted(unknown)[0]}: problem '{problem.name}' has no "
                         f"unknown function by that name; its unknown functions: "
                         f"{', '.join(problem.functions) or '(none)'}")
    if problem.functions:
        lacking = [f for f in problem.functions if f not in given]
        if lacking:
            raise InputError(f"--function: give {lacking[0]}=\"grf(...)\" for problem "
                             f"'{problem.name}'")
        if samples is None:
            raise InputError(f"--samples: give the number of draws of "
                             f"{', '.join(problem.functions)}")
    elif samples is not None:
        raise InputError(f"--samples: problem '{problem.name}' has no unknown function; its "
                         "samples are the --grid product")
    if samples is not None and not 1 <= samples <= MAX_SAMPLES:
        raise InputError(f"--samples {samples}: must be in [1, {MAX_SAMPLES}]")
    if problem.params and problem.functions:
        raise InputError(f"problem '{problem.name}' has parameters and unknown functions; "
                         "bilo dataset takes one or the other")
    if seed is None or not 0 <= seed < 2**32:
        raise InputError(f"--seed {seed}: must be in [0, 2^32)")
    for flag, value, least in (("--nx", nx, 3), ("--nt", nt, 2)):
        if value is not None and not least <= value <= 1 << 20:
            raise InputError(f"{flag} {value}: must be in [{least}, {1 << 20}]")
    axes = [values[p] for p in problem.params]
    count = math.prod(len(a) for a in axes)
    if count > MAX_SAMPLES:
        raise InputError(f"--grid: {count} samples, more than {MAX_SAMPLES}")
    theta = (np.array(list(itertools.product(*axes)), dtype=np.float64).reshape(count, -1)
             if problem.params else np.zeros((samples or 0, 0)))
    draws = {}
    for k, (name, text) in enumerate(sorted(given.items())):
        kwargs = parse_grf(name, text)
        boundary = (kwargs.pop("left"), kwargs.pop("right")) if "left" in kwargs else None
        draws[name] = grf_samples(samples, boundary=boundary, seed=seed + k, **kwargs)
    fixed = {**spec.defaults, **problem.constants}
    description = {"parameters": "; ".join(grids), "functions": "; ".join(
        f"{k} = {v}" for k, v in sorted(given.items())),
        "inputs": "; ".join(f"{k} = {v}" for k, v in spec.inputs.items()),
        "seed": str(seed) if given else ""}
    return Plan(problem, tuple(problem.params), theta, fixed, draws,
                spec.nx if nx is None else nx, spec.nt if nt is None else nt, description)


def solve_samples(plan: Plan, indices, progress=None) -> tuple[dict[int, tuple], object]:
    """Solve the samples `indices`: {i: (u, {function: values on the solver's x})}, and the
    last Reference (its grid and scheme)."""
    spec = plan.problem.reference
    out, reference = {}, None
    indices = list(indices)
    for count, i in enumerate(indices):
        params = {**plan.fixed, **dict(zip(plan.names, plan.theta[i].tolist(), strict=True))}
        try:
            reference = spec.solve(params, plan.functions(i), plan.nx, plan.nt)
        except ValueError as exc:  # the solver's refusal (e.g. D <= 0 somewhere)
            shown = ", ".join(f"{k}={v:g}" for k, v in zip(plan.names, plan.theta[i],
                                                          strict=True))
            raise InputError(f"sample {i} ({shown or 'function draw'}): {exc}") from None
        if not np.all(np.isfinite(reference.u)):
            raise InputError(f"sample {i}: the solver returned non-finite values")
        out[i] = (reference.u, {k: reference.inputs[k] for k in plan.draws})
        if progress is not None:
            progress(count + 1, len(indices))
    return out, reference


def assemble(plan: Plan, solved: dict[int, tuple], reference) -> Dataset:
    """The dataset of all samples (in sample order)."""
    import h5py
    import scipy

    problem = plan.problem
    u = np.stack([solved[i][0] for i in range(plan.n_samples)])
    functions = {k: np.stack([solved[i][1][k] for i in range(plan.n_samples)])
                 for k in plan.draws}
    provenance = {"solver": f"solvers.fdm ({problem.name})", "scheme": reference.scheme,
                  "resolution": reference.resolution, **plan.description,
                  "samples": plan.n_samples, "toolkit_version": toolkit_version(),
                  "numpy": np.__version__, "scipy": scipy.__version__,
                  "h5py": h5py.version.version}
    return Dataset(problem=problem.name, names=plan.names, theta=plan.theta,
                   axes=reference.axes, grid=reference.grid, u=u,
                   constants={k: v for k, v in plan.fixed.items() if k not in plan.names},
                   function_x=reference.grid.get("x") if functions else None,
                   functions=functions, provenance=provenance)


def _progress_printer(label: str):
    started = time.perf_counter()
    marks = set()

    def report(done: int, total: int) -> None:
        tenth = done * 10 // total
        if tenth not in marks and (tenth > 0 or done == total):
            marks.add(tenth)
            print(f"{label}{done}/{total} solves, {time.perf_counter() - started:.1f} s",
                  flush=True)
    return report


def run_dataset(problem: str | Problem, grids: list[str], out: str, *,
                samples: int | None = None, functions: list[tuple[str, str]] | None = None,
                seed: int = 0, nx: int | None = None, nt: int | None = None,
                n_ranks: int = 1, oversubscribe: bool = False) -> str:
    """Solve every sample and write the dataset to `out`; returns a one-line report."""
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    if isinstance(n_ranks, bool) or not isinstance(n_ranks, int) or n_ranks < 1:
        raise InputError(f"--np {n_ranks}: must be a whole number >= 1")
    cores = os.cpu_count() or 1
    if n_ranks > cores and not oversubscribe:
        raise InputError(f"--np {n_ranks}: more ranks than this machine's {cores} cores; add "
                         "--oversubscribe to run them anyway (slower)")
    with threadpool_limits(limits=1):  # the ranks' BLAS: one thread (the same bytes)
        plan = make_plan(problem, grids, samples=samples, functions=functions, seed=seed,
                         nx=nx, nt=nt)
        if n_ranks > 1:
            _relaunch(plan, grids, out, samples, functions, seed, nx, nt, n_ranks,
                      oversubscribe)
        else:
            solved, reference = solve_samples(plan, range(plan.n_samples),
                                              _progress_printer(""))
            write_dataset(out, assemble(plan, solved, reference))
    return (f"{plan.problem.name}: {plan.n_samples} solves on {n_ranks} rank(s) (nx={plan.nx}"
            + (f", nt={plan.nt}" if plan.problem.reference.time_dependent else "")
            + f") in {time.perf_counter() - started:.1f} s -> {out}")


def _arguments(problem: str, grids, out, samples, functions, seed, nx, nt) -> list[str]:
    args = [problem, "--out", str(out), "--seed", str(seed)]
    for text in grids:
        args += ["--grid", text]
    for name, text in functions or []:
        args += ["--function", f"{name}={text}"]
    for flag, value in (("--samples", samples), ("--nx", nx), ("--nt", nt)):
        if value is not None:
            args += [flag, str(value)]
    return args


def _relaunch(plan, grids, out, samples, functions, seed, nx, nt, n_ranks, oversubscribe):
    from solvers.fem.cli import check_relaunch, mpi_command

    command, env = mpi_command(n_ranks, _arguments(plan.problem.name, grids, out, samples,
                                                   functions, seed, nx, nt),
                               module="bilo.dataset", oversubscribe=oversubscribe)
    result = subprocess.run(command, env=env, stdout=None, stderr=subprocess.PIPE, text=True)
    check_relaunch(result, n_ranks)


def _main_rank(argv: list[str]) -> int:
    """One MPI rank of `bilo dataset --np N`: solve this rank's share, rank 0 writes."""
    import argparse

    from mpi4py import MPI

    parser = argparse.ArgumentParser(prog="python -m bilo.dataset")
    parser.add_argument("problem")
    parser.add_argument("--grid", action="append", default=[])
    parser.add_argument("--function", action="append", default=[])
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nx", type=int, default=None)
    parser.add_argument("--nt", type=int, default=None)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    share, reference, error = {}, None, None
    threadpool_limits(limits=1)  # as the one-rank path
    try:
        plan = make_plan(args.problem, args.grid, samples=args.samples,
                         functions=[tuple(f.split("=", 1)) for f in args.function],
                         seed=args.seed, nx=args.nx, nt=args.nt)
        share, reference = solve_samples(plan, range(rank, plan.n_samples, size),
                                         _progress_printer("rank 0: ") if rank == 0 else None)
    except InputError as exc:
        error = str(exc)
    gathered = comm.gather((share, reference, error), root=0)
    if rank != 0:
        return 0
    errors = [e for _, _, e in gathered if e]
    if errors:
        print(f"error: {errors[0]}", file=sys.stderr)
        return 2
    solved = {}
    for part, _, _ in gathered:
        solved.update(part)
    reference = next(r for _, r, _ in gathered if r is not None)
    write_dataset(args.out, assemble(plan, solved, reference))
    return 0


if __name__ == "__main__":
    sys.exit(_main_rank(sys.argv[1:]))
