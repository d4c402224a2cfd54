"""Writing files so that they appear whole or not at all, and so that a failed write names the file.

`write_atomically(path, data)` writes a temporary sibling, syncs it and renames it into place; `atomic_folder`
does the same for a folder (a checkpoint, a benchmark). Both, and `naming_the_file` around any other writer,
turn an OS error that names no file (a full disk's "[Errno 28] No space left on device", a quota, an I/O error)
into one that names the file being written and what to do. This module imports nothing else of lens_audio.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

_ADVICE = {
    errno.ENOSPC: "the disk is full: free space (or write elsewhere) and rerun",
    errno.EDQUOT: "the disk quota is used up: free space (or write elsewhere) and rerun",
    errno.EROFS: "the file system is read-only: write elsewhere",
    errno.EACCES: "permission denied: write elsewhere or fix the folder's permissions",
}


@contextlib.contextmanager
def naming_the_file(path: str | Path) -> Iterator[None]:
    """Re-raise an OSError met inside as one that names `path` (and, for a full disk, says so)."""
    try:
        yield
    except OSError as exc:
        if exc.errno is None or exc.filename is not None:  # errors that name their file already stay as they are
            raise
        advice = _ADVICE.get(exc.errno, "check the disk and rerun")
        raise OSError(exc.errno, f"could not write {path} ({exc.strerror or exc}); {advice}") from exc


def write_atomically(path: str | Path, data: str | bytes) -> Path:
    """Write `data` to `path` whole or not at all (temporary sibling, fsync, rename); errors name `path`."""
    path = Path(path)
    with naming_the_file(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data.encode() if isinstance(data, str) else data)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, 0o644)  # mkstemp makes it private
            os.replace(temporary, path)
        finally:
            Path(temporary).unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def atomic_folder(folder: Path) -> Iterator[Path]:
    """Yield a staging folder beside `folder`; on success it replaces `folder`, on any failure it is removed.

    So an interrupted benchmark or training run never leaves a half-written folder behind; an OS error inside
    (a full disk) names `folder`.
    """
    folder = Path(folder)
    with naming_the_file(folder):
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        try:
            yield staging
            staging.chmod(0o755)  # mkdtemp makes it private
            for path in staging.rglob("*"):
                path.chmod(0o755 if path.is_dir() else 0o644)
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(staging, folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
