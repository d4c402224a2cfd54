"""What makes a benchmark item usable: one check, in one pass over the items, for `load_mmau` and `run_benchmark`.

`validate_items` reports every problem of every item together in one `BenchmarkError`, each naming the item (its
index and id) and the field: ids (a non-empty string or an integer, unique as text, so `1` and `"1"` are one id),
the question and choices (non-empty strings, choices distinct as a reader sees them: `text.choice_key`), the
answer (one of the choices as a reader sees it), the optional text fields, and audio markers (`<|AUDIO|>`,
`<sound>`, ... `inputs.plain_text.AUDIO_MARKERS`) written in any text the prompt shows. It takes linear time:
100 000 items validate in about a second. `load_mmau` adds the checks of the file's audio paths. The rules are
documented in docs/benchmark-files.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from lens_audio.benchmark.text import choice_key
from lens_audio.inputs.plain_text import audio_marker_in

FILE_KEYS = ("id", "audio_id", "question", "choices", "answer")  # an item of a benchmark file
RUN_KEYS = ("id", "audio_path", "choices", "answer")  # an item given to run_benchmark (loaded: audio_path set)
OPTIONAL_TEXT_KEYS = ("split", "task", "difficulty", "sub-category", "hint", "dataset")  # strings where present
SHOWN_TEXT_KEYS = ("question", "hint")  # text a prompt template shows the model, besides the choices
_WORD = re.compile(r"\b\w+\b")  # the official scoring rule's words (benchmark.scoring)
MAX_SHOWN = 10  # problems spelled out in the error; the rest are counted


class BenchmarkError(ValueError):
    """Benchmark items with problems; the message lists them (item index, id, what is wrong)."""


def validate_items(
    items: Iterable[Any],
    source: str,
    required: Sequence[str] = FILE_KEYS,
    extra: Callable[[dict[str, Any]], list[str]] | None = None,
    fix: str = "Fix the file.",
) -> None:
    """Raise one `BenchmarkError` listing every problem of `items` (`source` names where they came from).

    `required` are the keys every item must have; `extra(item)` adds problems of a well-formed item (e.g. its audio
    files). Duplicate ids are found with one dictionary, so this is linear in the number of items.
    """
    problems: list[str] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        wrong = item_problems(item, required, seen, index)
        if extra is not None and isinstance(item, dict) and all(key in item for key in required):
            wrong += extra(item)
        if wrong:
            where = f"item {index} ({item.get('id', '?')!r})" if isinstance(item, dict) else f"item {index}"
            problems.append(f"{where}: {', '.join(wrong)}")
    if problems:
        more = len(problems) - MAX_SHOWN
        shown = "; ".join(problems[:MAX_SHOWN]) + (f"; and {more} more" if more > 0 else "")
        raise BenchmarkError(f"{source}: {len(problems)} problem(s), found before any model work: {shown}. {fix}")


def item_problems(item: Any, required: Sequence[str], seen: dict[str, int], index: int) -> list[str]:
    """What is wrong with one item (each naming its field); records its id in `seen` (ids compared as text)."""
    if not isinstance(item, dict):
        return [f"is a {type(item).__name__}, not an object with keys {list(required)}"]
    missing = [key for key in required if key not in item]
    if missing:
        return [f"lacks {missing}"]
    wrong = _id_problems(item["id"], seen, index)
    if "question" in item and not _is_text(item["question"]):
        wrong.append(f"question must be a non-empty string, not {item['question']!r}")
    wrong += _choice_problems(item["choices"], item["answer"])
    for key in OPTIONAL_TEXT_KEYS:
        value = item.get(key)
        if value is not None and not isinstance(value, str):
            wrong.append(f"{key} must be a string (or absent), not {value!r}")
    category = item.get("category")
    if isinstance(category, list) and not (len(category) <= 1 and all(isinstance(c, str) for c in category)):
        wrong.append(f"category must be a string or a one-element list of one (MMAU's form), not {category!r}")
    elif category is not None and not isinstance(category, (str, list)):
        wrong.append(f"category must be a string, not {category!r}")
    return wrong + _marker_problems(item)


def matching_choice(answer: str, choices: Sequence[str]) -> str | None:
    """The choice `answer` names as a reader sees it (`text.choice_key`), as the choice is written; None if none."""
    key = choice_key(answer)
    return next((choice for choice in choices if choice_key(choice) == key), None)


def id_key(id_: Any) -> str:
    """How an item's id is compared: as text, so the integer `1` and the string `"1"` (and `--item 1`) are one id."""
    return str(id_)


def _id_problems(id_: Any, seen: dict[str, int], index: int) -> list[str]:
    if isinstance(id_, bool) or not isinstance(id_, (str, int)) or id_ == "":
        return [f"its id must be a non-empty string, not {id_!r}"]
    key = id_key(id_)
    if key in seen:
        return [f"duplicate id (also item {seen[key]}); ids are compared as text (1 and \"1\" are one id): give "
                "every item its own id"]
    seen[key] = index
    return []


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _choice_problems(choices: Any, answer: Any) -> list[str]:
    """Choices: a non-empty list of strings, distinct as a reader sees them; the answer one of them, with a word."""
    if not isinstance(choices, list) or not choices:
        return [f"choices must be a non-empty list of strings, not {choices!r}"]
    bad = [c for c in choices if not _is_text(c)]
    if bad:
        return [f"choices must all be non-empty strings, but {bad[0]!r} ({type(bad[0]).__name__}) is not (write "
                "numbers as text, e.g. \"3\")"]
    first: dict[str, str] = {}
    for choice in choices:
        other = first.setdefault(choice_key(choice), choice)
        if other is not choice:
            return [f"choices repeat {other!r}: {choice!r} reads the same (compared in Unicode NFC, without case and "
                    "with runs of spaces as one); a repeated choice cannot be told apart from itself"]
    if not isinstance(answer, str):
        return [f"answer must be a string, one of the choices, not {answer!r}"]
    if choice_key(answer) not in first:
        return [f"answer {answer!r} is not among its choices {choices}"]
    if not _WORD.search(answer):
        return [f"answer {answer!r} holds no word the official scoring rule can match"]
    return []


def _marker_problems(item: dict[str, Any]) -> list[str]:
    """Audio markers written in the text a prompt shows: the chat template places them, one set per clip."""
    fields = [(key, item.get(key)) for key in SHOWN_TEXT_KEYS]
    if isinstance(item.get("choices"), list):
        fields += [(f"choice {i}", c) for i, c in enumerate(item["choices"])]
    for field, text in fields:
        marker = audio_marker_in(text)
        if marker is not None:
            return [f"its {field} holds the audio marker {marker!r}; the chat template adds one per clip itself, so "
                    "remove it from the text (write the clip as audio_id)"]
    return []
