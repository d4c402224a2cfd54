"""Run files: JSON lines of finished records, one writer at a time, safe against crashes.

- **One writer.** `RunFile` holds an exclusive lock on `<file>.lock` (which names the owner's pid) for as
  long as it is open. The lock is an `fcntl.flock`, which the kernel drops when its process dies, so a lock
  file left by a killed run is taken over by the next writer without guessing whether its pid is alive;
  a second live writer gets `RunLockedError` naming the file and the owner's pid.
- **No torn lines.** Each record is one `os.write` of a whole line to a file opened in append mode,
  then fsynced. If a crash still leaves a partial or corrupt line (a power cut, an old file), opening
  the file for writing rewrites it atomically (temporary file, fsync, rename) with every complete
  record and nothing else, so no later record is ever lost to it.
- **Readers** (`read_records`) never change the file: they skip what does not parse and keep the first
  record of each id.
- **Bound to what made it.** Opened with a `RunManifest`, the file's records must all carry that manifest's
  digest, or opening refuses (`RunMismatchError`, one line naming the settings that differ); the manifest is
  written beside the file (`<run>.manifest.json`, atomically) before the first record. With `fresh`, the old
  records are dropped (the file replaced atomically, under the lock) and the run starts over.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from lens_audio.benchmark.manifest import (
    DIGEST_KEY,
    RunManifest,
    RunMismatchError,
    manifest_path,
    read_manifest,
    refusal,
)
from lens_audio.files import RunLockedError, acquire_lock, naming_the_file, release_lock, write_atomically

__all__ = ["RunFile", "RunLockedError", "read_records"]


def _parse_lines(path: Path, numbers: dict[Any, int] | None = None) -> tuple[dict[str, dict[str, Any]], bool]:
    """Complete records by id (first of each id wins), and whether the file holds anything else; `numbers`, if
    given, gets each record's line number (from 1)."""
    records: dict[str, dict[str, Any]] = {}
    dirty = False
    if not path.exists():
        return records, dirty
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                record = json.loads(line)
            except ValueError:
                dirty = True
                continue
            usable = isinstance(record, dict) and "id" in record and _hashable(record["id"]) \
                and record["id"] not in records
            dirty = dirty or not usable or not line.endswith(b"\n")
            if usable:
                records[record["id"]] = record
                if numbers is not None:
                    numbers[record["id"]] = number
    return records, dirty


def _hashable(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, type(None)))


def read_records(path: str | Path) -> dict[str, dict[str, Any]]:
    """Records written to `path` by id; unparseable lines (a crash mid-write) are skipped, the file is not changed."""
    return _parse_lines(Path(path))[0]


def record_problem(record: dict[str, Any], manifest: RunManifest, shape: tuple[int, ...] | None = None) -> str | None:
    """What makes a record (a line of a run file, perhaps edited by hand) unusable by the run it belongs to, or None:
    every record of `run_benchmark` has a boolean `correct`, a string `output`, and with `listening` a
    [layer][head] table of finite numbers (of `shape`, the other records' shape, when given)."""
    if not isinstance(record.get("correct"), bool):
        return f"'correct' must be true or false, not {record.get('correct', 'missing')!r}"
    if not isinstance(record.get("output"), str):
        return f"'output' must be a string, not {record.get('output', 'missing')!r}"
    if manifest.listening:
        table = record.get("listening")
        try:
            values = np.asarray(table, dtype=np.float64)
        except (TypeError, ValueError):
            values = np.zeros(0)
        if values.ndim != 2 or not values.size or not np.isfinite(values).all():
            return f"'listening' must be a [layer][head] table of finite numbers, not {_shown(table)}"
        if shape is not None and values.shape != shape:
            return f"'listening' is {values.shape[0]}x{values.shape[1]}, the other records' {shape[0]}x{shape[1]}"
    return None


def _shown(value: Any) -> str:
    text = "missing" if value is None else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class RunFile:
    """An append-only JSON-lines file of records owned by this process while open (a context manager).

    `records` holds what was already there when it was opened; `append(record)` adds one durably. With a
    `manifest`, every record must carry its digest (`record["manifest_digest"]`, the caller's to add).
    """

    def __init__(self, path: str | Path, manifest: RunManifest | None = None, fresh: bool = False) -> None:
        self.path = Path(path)
        self.manifest, self.fresh = manifest, fresh
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.records: dict[str, dict[str, Any]] = {}
        self.lines: dict[Any, int] = {}  # each record's line number in the file (for errors)
        self._lock_fd: int | None = None
        self._fd: int | None = None

    def __enter__(self) -> "RunFile":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = acquire_lock(self.lock_path, self.path)
        try:
            self.records, dirty = _parse_lines(self.path, self.lines)
            if self.fresh:
                self.records, dirty = {}, self.path.exists()
            if dirty:
                _rewrite(self.path, self.records.values())
                self.lines = {item_id: number for number, item_id in enumerate(self.records, start=1)}
            if self.manifest is not None:
                self._bind(self.manifest)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except BaseException:
            self._release()
            raise
        return self

    def _bind(self, manifest: RunManifest) -> None:
        """Refuse records made under another manifest; write ours beside the file unless it is there already."""
        stored = read_manifest(self.path)
        stale = [r for r in self.records.values() if r.get(DIGEST_KEY) != manifest.digest]
        if stale or (self.records and manifest.undescribed):  # undescribed hooks: equal digests prove nothing
            raise RunMismatchError(refusal(self.path, manifest, stored, stale, len(self.records)))
        shape = None
        for item_id, record in self.records.items():
            problem = record_problem(record, manifest, shape)
            if problem is not None:
                raise RunMismatchError(
                    f"{self.path}, line {self.lines.get(item_id, '?')}: the record of item {item_id!r} was edited or "
                    f"damaged: {problem}; restore the line, delete it (that item is then run again), or start over "
                    "with --fresh (API: fresh=True).")
            if manifest.listening and shape is None:
                shape = np.shape(record["listening"])
        if stored is None or stored.digest != manifest.digest:
            write_atomically(manifest_path(self.path), json.dumps(manifest.to_json(), indent=1) + "\n")

    def append(self, record: dict[str, Any]) -> None:
        if self._fd is None:
            raise RuntimeError(f"{self.path}: append() needs the run file open (use `with RunFile(path) as run:`).")
        data = (json.dumps(record) + "\n").encode()
        with naming_the_file(self.path):  # a full disk names the run file (the lines before stay whole)
            written = os.write(self._fd, data)
            while written < len(data):  # regular files take the whole line at once; this is only for safety
                written += os.write(self._fd, data[written:])
            os.fsync(self._fd)
        self.records[record["id"]] = record

    def __exit__(self, *exc_info: Any) -> None:
        self._release()

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            release_lock(self._lock_fd, self.lock_path)
            self._lock_fd = None


def _rewrite(path: Path, records: Any) -> None:
    """Replace `path` atomically by exactly `records`, one line each."""
    write_atomically(path, "".join(json.dumps(r) + "\n" for r in records))
