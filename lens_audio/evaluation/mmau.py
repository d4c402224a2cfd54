"""Loading MMAU-format benchmark files (the official mmau-test-mini.json and files like it).

Quirks handled: `audio_id` is relative to the JSON file's folder (e.g.
`./test-mini-audios/<id>.wav`); `category` is sometimes a one-element list
instead of a string; `answer` must be one of `choices` verbatim.

Extension: `audio_id` may also be a list of paths, several clips for one
prompt, in order ("Audio 1", "Audio 2", ...); `audio_path` is then a list.

The whole file is checked before anything is returned: missing keys,
duplicate ids, missing audio files and answers not among the choices are
all reported together in one `BenchmarkError`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REQUIRED_KEYS = ("id", "audio_id", "question", "choices", "answer")
MAX_SHOWN = 10  # problems spelled out in the error; the rest are counted


class BenchmarkError(ValueError):
    """A benchmark file with problems; the message lists them (item index, id, what is wrong)."""


def load_mmau(path: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """Items of an MMAU-format JSON list, each with an absolute `audio_path` added (a list for a list of clips).

    Every item of the file is checked, whatever `split`; all problems are raised together as a `BenchmarkError`.

    Args:
        path: the JSON file.
        split: keep only items whose `split` field equals this (e.g. "test").
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such benchmark file.")
    try:
        items = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}).") from exc
    if not isinstance(items, list):
        raise ValueError(f"{path} must hold a JSON list of items (MMAU format), not {type(items).__name__}.")
    problems: list[str] = []
    seen: dict[Any, int] = {}
    loaded = []
    for index, item in enumerate(items):
        where = f"item {index} ({item.get('id', '?')!r})" if isinstance(item, dict) else f"item {index}"
        problem = _check_item(item, path.parent, seen, index)
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        if split is not None and item.get("split") != split:
            continue
        category = item.get("category")
        if isinstance(category, list):
            category = category[0] if category else None
        loaded.append({**item, "category": category, "audio_path": _audio_paths(item["audio_id"], path.parent)})
    if problems:
        more = len(problems) - MAX_SHOWN
        shown = "; ".join(problems[:MAX_SHOWN]) + (f"; and {more} more" if more > 0 else "")
        raise BenchmarkError(f"{path}: {len(problems)} problem(s), found before any model work: {shown}. Fix the file.")
    return loaded


def _check_item(item: Any, folder: Path, seen: dict[Any, int], index: int) -> str | None:
    """What is wrong with one item (None if nothing); records its id in `seen`."""
    if not isinstance(item, dict):
        return f"is a {type(item).__name__}, not an object with keys {list(REQUIRED_KEYS)}"
    missing = [k for k in REQUIRED_KEYS if k not in item]
    if missing:
        return f"lacks {missing}"
    wrong = []
    if not isinstance(item["id"], (str, int)):
        wrong.append(f"its id must be a string, not {type(item['id']).__name__}")
    elif item["id"] in seen:
        wrong.append(f"duplicate id (also item {seen[item['id']]}); give every item its own id")
    else:
        seen[item["id"]] = index
    clips = item["audio_id"] if isinstance(item["audio_id"], list) else [item["audio_id"]]
    if not clips or not all(isinstance(c, str) and c for c in clips):
        wrong.append(f"audio_id must be a path or a non-empty list of paths, not {item['audio_id']!r}")
    else:
        for clip in clips:
            target = folder / clip
            if not target.is_file():
                wrong.append(f"audio file {str(target)!r} " + ("is a folder" if target.is_dir() else "does not exist"))
    if not isinstance(item["choices"], list) or not item["choices"]:
        wrong.append(f"choices must be a non-empty list, not {item['choices']!r}")
    elif item["answer"] not in item["choices"]:
        wrong.append(f"answer {item['answer']!r} is not among its choices {item['choices']}")
    return ", ".join(wrong) or None


def _audio_paths(audio_id: str | list[str], folder: Path) -> str | list[str]:
    if isinstance(audio_id, list):
        return [str((folder / clip).resolve()) for clip in audio_id]
    return str((folder / audio_id).resolve())
