"""Writing files so that they appear whole or not at all, and so that a failed write names the file.

`write_atomically(path, data)` writes a temporary sibling, syncs it and renames it into place (`data` may also be
a function that writes the temporary path itself, e.g. a plotting library's exporter); `atomic_folder`
does the same for a folder (a checkpoint, a benchmark). Both, and `naming_the_file` around any other writer,
turn an OS error that names no file (a full disk's "[Errno 28] No space left on device", a quota, an I/O error)
into one that names the file being written and what to do. `acquire_lock` / `release_lock` keep one writer per
run (a run file, a training run's folder). This module imports nothing else of lens_audio.

Every HTML page the package writes (the explorer, SAE dashboards, figures, the report) escapes what it shows
with the two functions here and is written by `write_atomically`: `escape_html` for text in elements and
attributes, `script_json` for data inlined in a `<script>` element.
"""

from __future__ import annotations

import contextlib
import errno
import html
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the lock file is still written for humans to see
    fcntl = None

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


def write_atomically(path: str | Path, data: str | bytes | Callable[[str], Any]) -> Path:
    """Write `data` to `path` whole or not at all (temporary sibling, fsync, rename); errors name `path`.

    `data` is the text or bytes, or a function `write(temporary_path)` that writes the file itself.
    """
    path = Path(path)
    with naming_the_file(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as out:
                if not callable(data):
                    out.write(data.encode() if isinstance(data, str) else data)
                    out.flush()
                    os.fsync(out.fileno())
            if callable(data):
                data(temporary)
                with open(temporary, "rb") as written:
                    os.fsync(written.fileno())
            os.chmod(temporary, 0o644)  # mkstemp makes it private
            os.replace(temporary, path)
        finally:
            Path(temporary).unlink(missing_ok=True)
    return path


def escape_html(value: Any) -> str:
    """`str(value)` safe as HTML text or as a quoted attribute value (`&`, `<`, `>`, both quotes escaped)."""
    return html.escape(str(value), quote=True)


SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def script_json(value: Any) -> str:
    """JSON safe to inline in a `<script>` element: `<`, `>` and `&` (which only occur inside JSON strings) become
    `\\u003c`-style escapes, so no text in it can close the element or open a comment (`</script>`, `<!--`,
    `<script>`); the parsed value is unchanged."""
    text = json.dumps(value)
    for raw, escaped in SCRIPT_ESCAPES.items():
        text = text.replace(raw, escaped)
    return text


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


class RunLockedError(RuntimeError):
    """Another live process is writing the same run (a run file or a training run's folder)."""


def acquire_lock(lock_path: Path, run_path: Path) -> int:
    """Open and lock `lock_path` (an `fcntl.flock`, which the kernel drops when its process dies, so a lock file left
    by a killed run is taken over), write our pid into it, and return its descriptor; a second live writer gets
    `RunLockedError` naming `run_path` and the owner's pid."""
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:
            break
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunLockedError(
                f"{run_path} is being written by another process (pid {owner}, lock {lock_path}); wait for it to "
                "finish, or give this run another output folder (--out)."
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not unlinked by a finishing owner between our open and our lock
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def release_lock(fd: int, lock_path: Path) -> None:
    """Remove the lock file (still ours: a newcomer that opened it re-checks the inode and retries) and unlock."""
    try:
        os.unlink(lock_path)
    except FileNotFoundError:
        pass
    os.close(fd)
