"""What every layer shares: the error type for bad user input and atomic file writes.

The bottom of the import layers (see ``[tool.importlinter]`` in pyproject.toml): it imports the
standard library only, so that the solvers, the meshes, the adjoints, the trainer and the apps
can all raise :class:`InputError` and write files atomically without importing one another.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


class InputError(ValueError):
    """Bad input from a user (file, option or parameter): the CLI prints it as one line."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; it is renamed onto `path` (readable by everyone)
    only when the block completes, and removed if it fails: nothing half-written is ever left
    at `path`."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # the temp name keeps the target's extensions: writers such as nibabel read the format there
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent,
                                    suffix=".tmp" + "".join(target.suffixes))
    os.close(fd)
    try:
        yield Path(tmp_name)
        os.chmod(tmp_name, 0o644)  # mkstemp creates 0600
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def write_json_atomic(path: str | os.PathLike, blob: dict) -> None:
    """Write `blob` as JSON to `path` atomically (temp file in the same folder, then rename)."""
    with atomic_path(path) as tmp, open(tmp, "w") as handle:
        json.dump(blob, handle, indent=2)
        handle.write("\n")


class Diverged(RuntimeError):
    """A computation produced a non-finite value; the message names the step and the quantity
    and where the last finite state is."""


class Interrupted(Exception):
    """A long run stopped on a signal (SIGINT, SIGTERM) after saving its state."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum
