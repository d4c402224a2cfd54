"""Loading MMAU-format benchmark files (the official mmau-test-mini.json and files like it).

Quirks handled: `audio_id` is relative to the JSON file's folder (e.g.
`./test-mini-audios/<id>.wav`); `category` is sometimes a one-element list
instead of a string; `answer` must be one of `choices` as a reader sees it
(`lens_audio.benchmark.text`: Unicode NFC, runs of whitespace as one, no case), and the loaded item's
`answer` is that choice as the file writes it.

Extension: `audio_id` may also be a list of paths, several clips for one
prompt, in order ("Audio 1", "Audio 2", ...); `audio_path` is then a list.

The whole file is checked before anything is returned, every problem naming the
item and the field, all reported together in one `BenchmarkError`: the checks every benchmark item gets
(`lens_audio.benchmark.items.validate_items`, shared with `run_benchmark`), plus missing audio files and
audio paths that leave the file's folder (unless `allow_outside=True`). The folder check is lexical: a
symlink the user put inside the folder is theirs and is followed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lens_audio.benchmark.items import FILE_KEYS, BenchmarkError, matching_choice, validate_items

__all__ = ["BenchmarkError", "load_mmau"]


def load_mmau(path: str | Path, split: str | None = None, allow_outside: bool = False) -> list[dict[str, Any]]:
    """Items of an MMAU-format JSON list, each with an absolute `audio_path` added (a list for a list of clips).

    Every item of the file is checked, whatever `split`; all problems are raised together as a `BenchmarkError`.

    Args:
        path: the JSON file.
        split: keep only items whose `split` field equals this (e.g. "test"); a split no item has is refused, naming
            the split values the file holds (MMAU test-mini holds only "test-mini": its calibration/dev/test split
            is made by the experiment, `lens_audio.benchmark.splits`).
        allow_outside: accept `audio_id` paths that lead outside the file's folder (`..`, absolute paths);
            refused by default, so a benchmark file cannot make the workbench read files elsewhere.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such benchmark file.")
    items = _read_list(path)
    folder = os.path.realpath(path.parent)  # once: the clips' paths are joined to it as text
    validate_items(items, str(path), FILE_KEYS, lambda item: _check_audio(item["audio_id"], folder, allow_outside))
    loaded = []
    for item in items:
        if split is not None and item.get("split") != split:
            continue
        category = item.get("category")
        if isinstance(category, list):
            category = category[0] if category else None
        loaded.append({**item, "answer": matching_choice(item["answer"], item["choices"]), "category": category,
                       "audio_path": _audio_paths(item["audio_id"], folder)})
    if split is not None and not loaded:
        present = sorted({str(item.get("split")) for item in items})
        raise BenchmarkError(
            f"{path}: no item has split {split!r}; the file's split values are {present} ('None': no split field). "
            "Load it with one of them, or without split= (a calibration/dev/test split is made with "
            "lens_audio.benchmark.splits.make_split or `lens-audio split`)."
        )
    return loaded


def _read_list(path: Path) -> list[Any]:
    """The file's JSON list; JSON Lines (one object a line) and other JSON are refused naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BenchmarkError(f"{path} is not UTF-8 text ({exc}); a benchmark file is a JSON list of items.") from exc
    try:
        items = json.loads(text)
    except ValueError as exc:
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) > 1 and all(line.lstrip().startswith("{") for line in lines[:2]):
            raise BenchmarkError(
                f"{path} looks like JSON Lines (one object a line), but a benchmark file must hold one JSON list of "
                "items (MMAU format): write it as [item, item, ...], e.g. json.dump(items, file)."
            ) from exc
        raise BenchmarkError(
            f"{path} is not valid JSON ({exc}); a benchmark file holds one JSON list of items."
        ) from exc
    if not isinstance(items, list):
        raise BenchmarkError(f"{path} must hold a JSON list of items (MMAU format), not a {type(items).__name__}.")
    return items


def _check_audio(audio_id: Any, folder: str, allow_outside: bool) -> list[str]:
    """Every clip a non-empty relative path to an existing file inside `folder` (anywhere with `allow_outside`).

    `folder` is the benchmark's folder, absolute and normalised. Plain string paths: one stat per clip, so 100 000
    items check in a second or two."""
    clips = audio_id if isinstance(audio_id, list) else [audio_id]
    if not clips or not all(isinstance(c, str) and c for c in clips):
        return [f"audio_id must be a path or a non-empty list of paths, not {audio_id!r}"]
    targets = [os.path.normpath(os.path.join(folder, c)) for c in clips]
    # Lexically, so a symlink the user put inside the folder stays allowed; `..` and absolute paths do not.
    outside = [c for c, t in zip(clips, targets) if t != folder and not t.startswith(folder.rstrip(os.sep) + os.sep)]
    if outside and not allow_outside:
        more = f" (and {len(outside) - 1} more of its clips)" if len(outside) > 1 else ""
        return [f"audio_id {outside[0]!r}{more} leads outside the benchmark folder {folder!r}; move the clips "
                "into it, or allow this with allow_outside=True (--allow-outside-audio)"]
    return [f"audio file {t!r} " + ("is a folder" if os.path.isdir(t) else "does not exist")
            for t in targets if not os.path.isfile(t)]


def _audio_paths(audio_id: str | list[str], folder: str) -> str | list[str]:
    """Each clip's absolute path: the folder's real path joined with the clip, normalised."""
    if isinstance(audio_id, list):
        return [os.path.normpath(os.path.join(folder, clip)) for clip in audio_id]
    return os.path.normpath(os.path.join(folder, audio_id))
