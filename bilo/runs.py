"""Run folders: one run per folder, never overwritten by accident, never shared by two
processes.

`run_folder(out, resume=, overwrite=)` holds an advisory lock (`fcntl.flock`) on OUT/.lock for
the duration of a run, so a second process on the same folder stops at once with one line. A
folder that holds a run (summary.json, result.h5 or checkpoint.pt) is refused unless the run is
resumed or explicitly overwritten; temporary files of an interrupted write are removed on the
next start; a new folder whose run fails before its first checkpoint is removed again.
`check_resume(out, config)` refuses a resume whose settings differ from the checkpoint's in
anything but the step counts and bookkeeping.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from solvers.common import InputError

RUN_FILES = ("summary.json", "result.h5", "checkpoint.pt")
# the outputs a run writes, removed by --overwrite before the new run starts
OUTPUTS = (*RUN_FILES, "config.json", "reference_at_inferred.h5", "u0.h5", "training.png",
           "solution.png", "functions.png")
# options a resumed run may change: how long it runs and how it records, not what it computes
RESUMABLE = {"pretrain_steps", "finetune_steps", "settle_steps", "device", "checkpoint_every",
             "record_every", "polish", "stop_window", "stop_theta_tol", "stop_lower_tol"}


@contextlib.contextmanager
def run_folder(out: str | os.PathLike, *, resume: bool = False,
               overwrite: bool = False) -> Iterator[Path]:
    out = Path(out)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out}: cannot create the run folder ({exc.strerror})") from None
    # the lock file stays (removing it would let a waiting process lock a new file while this
    # one still holds the old)
    lock = open(out / ".lock", "a")  # noqa: SIM115 (held for the whole run)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise InputError(f"{out}: another run is using this folder (locked); wait for it to "
                         "finish or choose another --out") from None
    try:
        held = [name for name in RUN_FILES if (out / name).exists()]
        if held and not (resume or overwrite):
            raise InputError(f"{out}: holds a run ({', '.join(held)}); --resume continues it, "
                             "--overwrite replaces it")
        if overwrite and not resume:
            for name in OUTPUTS:
                (out / name).unlink(missing_ok=True)
        for stale in out.glob(".*.tmp*"):  # an interrupted atomic write
            stale.unlink(missing_ok=True)
        yield out
    except BaseException:
        if created and not any((out / name).exists() for name in RUN_FILES):
            shutil.rmtree(out, ignore_errors=True)  # a failed start: nothing worth keeping
        raise
    finally:
        lock.close()  # releases the lock


def _flatten(blob: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in blob.items():
        if isinstance(value, dict) and key != "theta0":
            flat.update(_flatten(value, ""))
        else:
            flat[prefix + key] = value
    return flat


def check_resume(out: Path, config: dict) -> None:
    """Refuse `--resume` with settings the checkpoint fixes (network shape, seed, learning
    rates, weights, data, ...) changed; the step counts may grow."""
    path = out / "config.json"
    if not (out / "checkpoint.pt").exists():
        raise InputError(f"{out / 'checkpoint.pt'}: no checkpoint to resume from")
    if not path.exists():
        return
    saved, new = _flatten(json.loads(path.read_text())), _flatten(config)
    changed = [f"{k} {saved.get(k)!r} -> {new.get(k)!r}"
               for k in sorted(set(saved) | set(new))
               if k not in RESUMABLE and _normal(saved.get(k)) != _normal(new.get(k))]
    if changed:
        raise InputError(f"{path}: --resume with changed settings ({'; '.join(changed)}); the "
                         "checkpoint fixes them: drop those options or start a new run")


def _normal(value):
    """JSON round trip (tuples become lists), so saved and new settings compare alike."""
    return json.loads(json.dumps(value, default=str))
