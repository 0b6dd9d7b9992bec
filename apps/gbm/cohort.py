"""`bilo gbm cohort DIR --out OUT --np N`: `bilo gbm run` on every patient folder under DIR.

* **Patients.** Every folder directly under DIR (hidden ones and OUT excluded) in which
  :func:`apps.gbm.patient.find_roles` finds seg, wm and gm; the others are listed as skipped
  with the reason. A patient's name is its folder's name; its outputs go to OUT/<name>/.
* **Workers.** With ``--np N`` > 1 the command relaunches itself under
  ``mpirun -n N+1`` (unless it already runs under mpirun): rank 0 schedules the patients and
  writes the table, ranks 1..N are the workers of an ``mpi4py.futures`` pool
  (:class:`~mpi4py.futures.MPICommExecutor`), each running one patient at a time. A rank runs
  its patient as a child process ``python -m bilo.cli gbm run ...`` whose environment has the
  variables of the MPI job removed (the ``OMPI_``/``PMIX_``/... prefixes of
  :mod:`solvers.fem.cli`), so the child is an MPI singleton: the pipeline's in-process FEM solve
  on its own ``COMM_WORLD`` cannot mix with the pool's ranks, and a crash of one patient (even a
  segfault) leaves the rank free for the next. Each child runs on one thread
  (``OMP_NUM_THREADS=1``) whatever N, so a table does not depend on N. With N = 1 the pool is a
  thread in this process, the patients one after another.
* **Table.** OUT/cohort.csv, one row per finished patient (DIR's order), rewritten atomically
  after every patient: name, status (``ok``, ``check failed``: u_NN is not the FEM solution at
  its answer, or ``error`` with its one-line message), the method, the parameters (D, ρ, the
  thresholds, τ with a follow-up), the physical values, the 90 % intervals (``<q>_q05``,
  ``<q>_q95``) with ``--method hmc``, DICE per scan from u_NN and u_FEM (``dice_WT_NN``, ...,
  ``dice_WT_FEM_followup``), ``u_rel_l2_vs_fem``, the plans' recurrence coverage with a
  follow-up (``coverage_standard``, ``coverage_model``) and the wall time. Numbers are written
  in full precision (Python's repr).
* **Resume.** A patient whose OUT/<name>/summary.json exists is not run again; its row is built
  from that file (a finished patient's row is always the one its summary.json gives). A patient
  that errored has no summary.json and runs again. Each child's output is in OUT/<name>/run.log.
* **Exit status.** 0 when every patient is ok, 1 when one errored, else EXIT_NOT_A_SOLUTION
  (:mod:`apps.gbm.pipeline`) when one failed the network check.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from apps.gbm.patient import find_roles
from apps.gbm.pipeline import EXIT_NOT_A_SOLUTION, add_run_arguments
from solvers.common import InputError, atomic_path
from solvers.fem.cli import _MPI_ENV_PREFIXES, _under_mpirun, mpi_command

CSV_NAME = "cohort.csv"
LOG_NAME = "run.log"
# options of `bilo gbm run` that the cohort sets itself (per patient) or does not pass on; a
# patient is run again only without a summary.json, so its folder is always overwritten, and
# in one go (no --stage), from each patient's own initial guess (no --theta0)
_OWN_OPTIONS = ("patient_dir", "out", "overwrite", "np", "stage", "theta0", "help")
# the one-line error of a `bilo` command (bilo/cli.py main)
_ERROR_PREFIX = "bilo gbm: error: "
# the user's OMPI_MCA_* settings, recorded for the patients' processes when relaunching
_MCA_RECORD = "BILO_COHORT_MCA"


@dataclass
class Outcome:
    """What a worker reports of one patient: the exit status of its `bilo gbm run`, the one-line
    error when it failed without a summary, and the wall time."""

    name: str
    returncode: int
    message: str
    wall_s: float


def _run_options() -> list[argparse.Action]:
    """The options of `bilo gbm run` that every patient's run receives (all but PATIENT_DIR,
    --out, --overwrite, --np, --stage and --theta0), read from a parser that
    `add_run_arguments` builds."""
    scratch = argparse.ArgumentParser(add_help=False)
    add_run_arguments(scratch)
    return [action for action in scratch._actions
            if action.option_strings and action.dest not in _OWN_OPTIONS]


def add_cohort_arguments(parser):
    """The options of `bilo gbm cohort` (bilo/cli.py builds the parser): DIR, --out, --np,
    --oversubscribe, and those of `bilo gbm run` but its PATIENT_DIR, --out, --overwrite, --np,
    --stage and --theta0."""
    parser.add_argument("cohort_dir", metavar="DIR", help="folder of patient folders")
    parser.add_argument("--out", required=True, metavar="OUT",
                        help="OUT/<patient>/: each patient's outputs; OUT/cohort.csv: the table")
    parser.add_argument("--np", type=int, default=1, metavar="N",
                        help="patients run at a time, one per MPI worker rank (mpirun -n N+1: "
                             "rank 0 schedules); each patient's FEM runs on one rank")
    parser.add_argument("--oversubscribe", action="store_true",
                        help="allow --np above the core count")
    group = parser.add_argument_group("options of `bilo gbm run`, passed to every patient")
    for action in _run_options():
        group._add_action(action)
    return parser


def forwarded_arguments(args) -> list[str]:
    """The `bilo gbm run` options of `args` that differ from their defaults, as arguments."""
    argv = []
    for action in _run_options():
        value = getattr(args, action.dest, action.default)
        if value is None or value == action.default:
            continue
        flag = action.option_strings[-1]
        if action.nargs == 0:  # a switch
            argv.append(flag)
        else:
            argv += [flag, str(value)]
    return argv


def discover(cohort_dir, out=None) -> tuple[list[tuple[str, Path]], list[tuple[str, str]]]:
    """The patient folders directly under `cohort_dir`, by name, as (name, path), and the other
    folders as (name, reason). Hidden folders and `out` (when it lies there) are left out.

    Raises:
        InputError: `cohort_dir` is not a folder.
    """
    root = Path(cohort_dir)
    if not root.is_dir():
        raise InputError(f"{root}: cohort folder " + ("is not a directory" if root.exists()
                                                      else "does not exist"))
    out_resolved = Path(out).resolve() if out is not None else None
    patients, skipped = [], []
    for folder in sorted(root.iterdir(), key=lambda p: p.name):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        if out_resolved is not None and folder.resolve() == out_resolved:
            continue
        try:
            find_roles(folder)
        except InputError as exc:
            # find_roles names the folder first: keep the reason only
            reason = str(exc)
            prefix = f"{folder}: "
            skipped.append((folder.name, reason[len(prefix):] if reason.startswith(prefix)
                            else reason))
            continue
        patients.append((folder.name, folder))
    return patients, skipped


def status_of(summary: dict) -> str:
    return "ok" if summary.get("check", {}).get("passed", False) else "check failed"


# column groups of the table, in this order; within a group, in order of first appearance
_GROUPS = ("patient", "params", "physical", "intervals", "dice", "check", "coverage", "wall")


def row_from_summary(name: str, summary: dict) -> list[tuple[str, str, object]]:
    """A finished patient's row, built from its summary.json only: (group, column, value)."""
    status = status_of(summary)
    message = summary["warnings"][0] if status != "ok" and summary.get("warnings") else ""
    row = [("patient", "name", name), ("patient", "status", status),
           ("patient", "message", message), ("patient", "method", summary.get("method", ""))]
    row += [("params", key, value) for key, value in summary.get("params", {}).items()]
    row += [("physical", key, value) for key, value in summary.get("physical", {}).items()]
    intervals = (summary.get("posterior") or {}).get("intervals", {})
    for quantity, interval in intervals.items():
        row += [("intervals", f"{quantity}_{q}", interval[q]) for q in ("q05", "q95")]
    row += [("dice", f"dice_{key}", value) for key, value in summary.get("dice", {}).items()]
    check = summary.get("check", {})
    if "u_rel_l2_vs_fem" in check:
        row.append(("check", "u_rel_l2_vs_fem", check["u_rel_l2_vs_fem"]))
    coverage = (summary.get("plans") or {}).get("coverage", {})
    row += [("coverage", f"coverage_{plan}", value) for plan, value in coverage.items()]
    row.append(("wall", "wall_s", summary.get("wall_s", "")))
    return row


def row_from_error(name: str, message: str, wall_s: float) -> list[tuple[str, str, object]]:
    return [("patient", "name", name), ("patient", "status", "error"),
            ("patient", "message", message), ("wall", "wall_s", round(wall_s, 2))]


def write_table(path, rows: list[list[tuple[str, str, object]]]) -> None:
    """The rows as CSV at `path`, atomically (a temp file renamed onto it); the columns are the
    union of the rows' columns, by group, and a row lacking one leaves it empty."""
    columns: dict[str, list[str]] = {group: [] for group in _GROUPS}
    for row in rows:
        for group, column, _ in row:
            if column not in columns[group]:
                columns[group].append(column)
    header = [column for group in _GROUPS for column in columns[group]]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            values = {column: value for _, column, value in row}
            writer.writerow([values.get(column, "") for column in header])


def read_table(path) -> list[dict[str, str]]:
    """OUT/cohort.csv's rows as dicts (column -> text)."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def exit_status(statuses) -> int:
    """1 when a patient errored, else EXIT_NOT_A_SOLUTION when one failed its check, else 0."""
    statuses = list(statuses)
    if "error" in statuses:
        return 1
    return EXIT_NOT_A_SOLUTION if "check failed" in statuses else 0


def standalone_env() -> dict[str, str]:
    """This process's environment without the variables of an enclosing MPI job, one thread,
    unbuffered output: a child started with it is an MPI singleton. Copied from os.environ, not
    inherited (an initialised MPI adds variables at C level). The user's ``OMPI_MCA_*`` settings
    are kept: outside mpirun all of them, under mpirun (whose own ``OMPI_MCA_ess``, ``..._uri``
    ... would make the child look for its job and abort) those the relaunching process recorded
    in BILO_COHORT_MCA."""
    under = _under_mpirun()
    env = {k: v for k, v in os.environ.items() if not k.startswith(_MPI_ENV_PREFIXES)
           or (k.startswith("OMPI_MCA_") and not under)}
    if under:
        env.update(json.loads(os.environ.get(_MCA_RECORD, "{}")))
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _error_line(log: Path, returncode: int) -> str:
    """The one-line reason of a failed run: its `bilo gbm: error:` line, else the last line of
    its output (a traceback's exception), else its exit status."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines()
                 if line.strip()]
    except OSError:
        lines = []
    errors = [line[len(_ERROR_PREFIX):] for line in lines if line.startswith(_ERROR_PREFIX)]
    if errors:
        return errors[-1]
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}" + (f" after: {lines[-1]}" if lines else "")
    return lines[-1] if lines else f"bilo gbm run exited with status {returncode}"


def _end_with_parent() -> None:
    """In the patient's process before it starts: SIGTERM it when its parent, the worker, ends
    (Linux; mpirun ends the ranks of an interrupted cohort with signals they cannot pass on,
    which would leave the patients running). Elsewhere nothing."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def run_patient(name: str, patient_dir: str, out_dir: str, options: list[str]) -> Outcome:
    """`bilo gbm run PATIENT_DIR --out OUT_DIR OPTIONS` in a child process (an MPI singleton,
    see :func:`standalone_env`), its output in OUT_DIR/run.log. Runs on a worker rank."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "bilo.cli", "gbm", "run", str(patient_dir), "--out",
               str(out), "--overwrite", *options]
    started = time.perf_counter()
    with open(out / LOG_NAME, "w") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        result = subprocess.run(command, env=standalone_env(), stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=_end_with_parent)
    wall = time.perf_counter() - started
    message = "" if result.returncode in (0, EXIT_NOT_A_SOLUTION) else _error_line(
        out / LOG_NAME, result.returncode)
    return Outcome(name, result.returncode, message, wall)


def _worker_count(comm) -> int:
    # MPICommExecutor on one rank is a one-thread pool in this process
    return max(comm.Get_size() - 1, 1)


def _print(line: str) -> None:
    print(line, flush=True)


def run_cohort(args, runner=run_patient, log=_print) -> int:
    """`bilo gbm cohort` on parsed arguments (`add_cohort_arguments`); the exit status.
    `runner(name, patient_dir, out_dir, options) -> Outcome` runs one patient (on a worker)."""
    if int(args.np) != args.np or args.np < 1:
        raise InputError(f"--np must be an integer >= 1, got {args.np}")
    cores = os.cpu_count() or 1
    if args.np > cores and not args.oversubscribe and not _under_mpirun():
        raise InputError(f"--np {args.np}: more patients at a time than this machine's {cores} "
                         "cores; add --oversubscribe to run them anyway (slower)")
    if Path(args.out).resolve() == Path(args.cohort_dir).resolve():
        raise InputError(f"--out {args.out}: is DIR itself; the patients' outputs would go into "
                         "their own folders (give another folder)")
    patients, skipped = discover(args.cohort_dir, args.out)
    if not patients:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in skipped[:3])
        raise InputError(f"{args.cohort_dir}: no patient folder (one holding seg, wm and gm) "
                         f"in it" + (f"; skipped {reasons}" if reasons else ""))
    if args.np > 1 and not _under_mpirun():
        return _relaunch(args)
    from mpi4py import MPI
    from mpi4py.futures import MPICommExecutor

    with MPICommExecutor(MPI.COMM_WORLD, root=0) as executor:
        if executor is None:  # a worker rank: it has served patients until the root finished
            return 0
        return _schedule(executor, _worker_count(MPI.COMM_WORLD), args, patients, skipped,
                         runner, log)


def _schedule(executor, n_workers: int, args, patients, skipped, runner, log) -> int:
    """Run the patients not yet done, at most `n_workers` at a time; rewrite the table after
    every finished one. The exit status."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    options = forwarded_arguments(args)
    total = len(patients)
    for name, reason in skipped:
        log(f"cohort: skipped {name}: {reason}")
    rows, statuses, pending = {}, {}, []
    for name, folder in patients:
        summary_path = out / name / "summary.json"
        if summary_path.exists():
            try:
                summary = _read_summary(summary_path)
            except ValueError as exc:
                log(f"cohort: {name}: {exc}; running it again")
                pending.append((name, folder))
                continue
            rows[name], statuses[name] = row_from_summary(name, summary), status_of(summary)
            log(f"cohort: {name} already done ({statuses[name]}; {summary_path}) "
                f"[{len(rows)}/{total} done]")
        else:
            pending.append((name, folder))
    order = [name for name, _ in patients]

    def save():
        write_table(out / CSV_NAME, [rows[name] for name in order if name in rows])

    if rows:
        save()
    log(f"cohort: {total} patient(s), {len(rows)} done, {len(pending)} to run on "
        f"{n_workers} worker(s) -> {out / CSV_NAME}")
    queue, running = list(pending), {}

    def start():
        name, folder = queue.pop(0)
        log(f"cohort: started {name} [{len(rows)}/{total} done]")
        running[executor.submit(runner, name, str(folder), str(out / name), options)] = name

    while queue and len(running) < n_workers:
        start()
    while running:
        finished, _ = concurrent.futures.wait(running, return_when="FIRST_COMPLETED")
        for future in finished:
            name = running.pop(future)
            summary, message, wall = _collect(future, out / name / "summary.json")
            if summary is None:
                rows[name], status = row_from_error(name, message, wall), "error"
            else:
                rows[name], status = row_from_summary(name, summary), status_of(summary)
            statuses[name] = status
            save()
            log(f"cohort: finished {name}: {status} in {wall:.0f} s"
                + (f": {message}" if status == "error" else "") + f" [{len(rows)}/{total} done]")
            if queue:
                start()
    counts = {status: list(statuses.values()).count(status)
              for status in ("ok", "check failed", "error")}
    log(f"cohort: {total} patient(s): " + ", ".join(f"{n} {s}" for s, n in counts.items())
        + f" -> {out / CSV_NAME}")
    return exit_status(statuses.values())


def _read_summary(path: Path) -> dict:
    """A patient's summary.json, or ValueError with one line saying why it cannot be read."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable ({exc})") from None
    if not isinstance(summary, dict):
        raise ValueError(f"{path}: unreadable (not a JSON object)")
    return summary


def _collect(future, summary_path: Path) -> tuple[dict | None, str, float]:
    """(summary, one-line message, wall time) of a finished patient's future; the summary is
    None when the run or the worker failed, or left no readable summary.json."""
    try:
        outcome = future.result()
    except Exception as exc:  # the worker itself failed: the patient's row says so
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0], 0.0
    if outcome.returncode not in (0, EXIT_NOT_A_SOLUTION):
        return None, outcome.message or (
            f"bilo gbm run exited with status {outcome.returncode}"), outcome.wall_s
    if not summary_path.exists():
        return None, (f"bilo gbm run exited with status {outcome.returncode} but wrote no "
                      f"{summary_path.name}"), outcome.wall_s
    try:
        return _read_summary(summary_path), "", outcome.wall_s
    except ValueError as exc:
        return None, str(exc), outcome.wall_s


def _relaunch(args) -> int:
    """The cohort again under `mpirun -n N+1` (rank 0 schedules, N workers); its output passes
    through, the exit status is read back from the table it leaves."""
    argv = ["gbm", "cohort", str(args.cohort_dir), "--out", str(args.out), "--np",
            str(args.np), *forwarded_arguments(args)]
    # rank 0 mostly waits (mpi4py's manager polls with a 1 ms back-off): one rank more than
    # the cores is expected, hence --oversubscribe
    command, env = mpi_command(args.np + 1, argv, module="bilo.cli", oversubscribe=True)
    env[_MCA_RECORD] = json.dumps({k: v for k, v in os.environ.items()
                                   if k.startswith("OMPI_MCA_")})
    with subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True,
                          stdin=subprocess.DEVNULL) as process:
        try:
            _, stderr = process.communicate()
        except BaseException:  # interrupted: mpirun passes SIGTERM on to the ranks, then ends
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            raise
    result = subprocess.CompletedProcess(command, process.returncode, None, stderr)
    errors = [line[len(_ERROR_PREFIX):] for line in result.stderr.splitlines()
              if line.startswith(_ERROR_PREFIX)]
    if errors:
        raise InputError(errors[0])
    table = Path(args.out) / CSV_NAME
    if result.returncode in (0, 1, EXIT_NOT_A_SOLUTION) and table.exists():
        return exit_status(row["status"] for row in read_table(table))
    raise RuntimeError(f"mpirun -n {args.np + 1} failed (exit {result.returncode}):\n"
                       + "\n".join(result.stderr.splitlines()[-20:]))
