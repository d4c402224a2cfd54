"""Loading MMAU-format benchmark files (the official mmau-test-mini.json and files like it).

Quirks handled: `audio_id` is relative to the JSON file's folder (e.g.
`./test-mini-audios/<id>.wav`); `category` is sometimes a one-element list
instead of a string; `answer` must be one of `choices` verbatim.

Extension: `audio_id` may also be a list of paths, several clips for one
prompt, in order ("Audio 1", "Audio 2", ...); `audio_path` is then a list.

The whole file is checked before anything is returned, every problem naming the
item and the field, all reported together in one `BenchmarkError`: missing keys,
duplicate ids, a question or choice that is not a non-empty string (null, a
number), repeated choices, an answer that is not one of the choices, missing
audio files, and audio paths that leave the file's folder (unless
`allow_outside=True`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

REQUIRED_KEYS = ("id", "audio_id", "question", "choices", "answer")
OPTIONAL_TEXT_KEYS = ("split", "task", "difficulty", "sub-category", "hint", "dataset")  # strings where present
_WORD = re.compile(r"\b\w+\b")  # the official scoring rule's words (evaluation.scoring)
MAX_SHOWN = 10  # problems spelled out in the error; the rest are counted


class BenchmarkError(ValueError):
    """A benchmark file with problems; the message lists them (item index, id, what is wrong)."""


def load_mmau(path: str | Path, split: str | None = None, allow_outside: bool = False) -> list[dict[str, Any]]:
    """Items of an MMAU-format JSON list, each with an absolute `audio_path` added (a list for a list of clips).

    Every item of the file is checked, whatever `split`; all problems are raised together as a `BenchmarkError`.

    Args:
        path: the JSON file.
        split: keep only items whose `split` field equals this (e.g. "test").
        allow_outside: accept `audio_id` paths that lead outside the file's folder (`..`, absolute paths);
            refused by default, so a benchmark file cannot make the workbench read files elsewhere.
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
        problem = _check_item(item, path.parent, seen, index, allow_outside)
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


def _check_item(item: Any, folder: Path, seen: dict[Any, int], index: int, allow_outside: bool) -> str | None:
    """What is wrong with one item (None if nothing), each problem naming its field; records its id in `seen`."""
    if not isinstance(item, dict):
        return f"is a {type(item).__name__}, not an object with keys {list(REQUIRED_KEYS)}"
    missing = [k for k in REQUIRED_KEYS if k not in item]
    if missing:
        return f"lacks {missing}"
    wrong = []
    if isinstance(item["id"], bool) or not isinstance(item["id"], (str, int)) or item["id"] == "":
        wrong.append(f"its id must be a non-empty string, not {item['id']!r}")
    elif item["id"] in seen:
        wrong.append(f"duplicate id (also item {seen[item['id']]}); give every item its own id")
    else:
        seen[item["id"]] = index
    wrong += _check_audio(item["audio_id"], folder, allow_outside)
    if not _is_text(item["question"]):
        wrong.append(f"question must be a non-empty string, not {item['question']!r}")
    wrong += _check_choices(item["choices"], item["answer"])
    for key in OPTIONAL_TEXT_KEYS:
        value = item.get(key)
        if value is not None and not isinstance(value, str):
            wrong.append(f"{key} must be a string (or absent), not {value!r}")
    category = item.get("category")
    if isinstance(category, list) and not (len(category) <= 1 and all(isinstance(c, str) for c in category)):
        wrong.append(f"category must be a string or a one-element list of one (MMAU's form), not {category!r}")
    elif category is not None and not isinstance(category, (str, list)):
        wrong.append(f"category must be a string, not {category!r}")
    return ", ".join(wrong) or None


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _check_choices(choices: Any, answer: Any) -> list[str]:
    """Choices: a non-empty list of distinct non-empty strings; the answer one of them, with a word to score."""
    if not isinstance(choices, list) or not choices:
        return [f"choices must be a non-empty list of strings, not {choices!r}"]
    bad = [c for c in choices if not _is_text(c)]
    if bad:
        return [f"choices must all be non-empty strings, but {bad[0]!r} ({type(bad[0]).__name__}) is not (write "
                "numbers as text, e.g. \"3\")"]
    folded = [c.strip().casefold() for c in choices]
    repeated = sorted({c for c, f in zip(choices, folded) if folded.count(f) > 1})
    if repeated:
        return [f"choices repeat {repeated[0]!r} (compared without case and outer spaces); a repeated choice cannot "
                "be told apart from itself"]
    if not isinstance(answer, str):
        return [f"answer must be a string, one of the choices, not {answer!r}"]
    if answer not in choices:
        return [f"answer {answer!r} is not among its choices {choices}"]
    if not _WORD.search(answer):
        return [f"answer {answer!r} holds no word the official scoring rule can match"]
    return []


def _check_audio(audio_id: Any, folder: Path, allow_outside: bool) -> list[str]:
    """Every clip a non-empty relative path to an existing file inside `folder` (anywhere with `allow_outside`)."""
    clips = audio_id if isinstance(audio_id, list) else [audio_id]
    if not clips or not all(isinstance(c, str) and c for c in clips):
        return [f"audio_id must be a path or a non-empty list of paths, not {audio_id!r}"]
    # Lexically, so a symlink the user put inside the folder stays allowed; `..` and absolute paths do not.
    outside = [c for c in clips if not _inside(Path(os.path.normpath(folder / c)), Path(os.path.normpath(folder)))]
    if outside and not allow_outside:
        more = f" (and {len(outside) - 1} more of its clips)" if len(outside) > 1 else ""
        return [f"audio_id {outside[0]!r}{more} leads outside the benchmark folder {str(folder)!r}; move the clips "
                "into it, or allow this with allow_outside=True (--allow-outside-audio)"]
    wrong = []
    for clip in clips:
        target = folder / clip
        if not target.is_file():
            wrong.append(f"audio file {str(target)!r} " + ("is a folder" if target.is_dir() else "does not exist"))
    return wrong


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _audio_paths(audio_id: str | list[str], folder: Path) -> str | list[str]:
    if isinstance(audio_id, list):
        return [str((folder / clip).resolve()) for clip in audio_id]
    return str((folder / audio_id).resolve())
