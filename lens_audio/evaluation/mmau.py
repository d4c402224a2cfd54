"""Loading MMAU-format benchmark files (the official mmau-test-mini.json and files like it).

Quirks handled: `audio_id` is relative to the JSON file's folder (e.g.
`./test-mini-audios/<id>.wav`); `category` is sometimes a one-element list
instead of a string; `answer` must be one of `choices` verbatim.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REQUIRED_KEYS = ("id", "audio_id", "question", "choices", "answer")


def load_mmau(path: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """Items of an MMAU-format JSON list, each with an absolute `audio_path` added.

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
    loaded = []
    for index, item in enumerate(items):
        missing = [k for k in REQUIRED_KEYS if k not in item]
        if missing:
            raise ValueError(f"{path}: item {index} ({item.get('id', '?')}) lacks {missing}.")
        if item["answer"] not in item["choices"]:
            raise ValueError(f"{path}: item {item['id']} has answer {item['answer']!r}, which is not among its choices.")
        if split is not None and item.get("split") != split:
            continue
        category = item.get("category")
        if isinstance(category, list):
            category = category[0] if category else None
        loaded.append({**item, "category": category, "audio_path": str((path.parent / item["audio_id"]).resolve())})
    return loaded
