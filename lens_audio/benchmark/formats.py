"""Benchmarks beyond MMAU, converted to the MMAU format the harness, the splits and the experiment read.

    path = convert_benchmark("MMAR-meta.json", "mmar")            # MMAR-meta-mmau-format.json beside it
    path = convert_benchmark("test.parquet", "mmau-pro")          # MMAU-Pro's test split (parquet or JSON rows)
    items = load_mmau(path)                                        # then as any MMAU-format benchmark

Both formats as their public descriptions give them (the MMAR and MMAU-Pro repositories and dataset cards; the files
here are the tests' own):

- **MMAR** (arXiv 2505.13032; `MMAR-meta.json`, 1000 items): `id`, `audio_path`, `question`, `choices` (2 to 6 free-text
  options), `answer`, `modality` (sound, music, speech, or a mix such as `sound-music`), `category` (the reasoning
  layer: signal, perception, semantic, cultural), `sub-category`, `language`, `url`, `timestamp`. Its Hugging Face
  copy writes choices as `"A. text"` with a letter answer; both are read. `modality` becomes `task` (the breakdown
  MMAR reports), `category` and `sub-category` stay.
- **MMAU-Pro** (arXiv 2508.13992; `test.parquet`, 5305 items): `id`, `audio_path` (a list: several clips for
  multi-audio questions), `question`, `choices`, `answer`, `category`. Only its closed-form multiple-choice items
  are converted: open-ended and instruction-following items (no choices, judged by an LLM in its own evaluation) are
  left out, and said so. MMAU-Pro matches a generated answer to the option whose embedding is nearest it
  (NV-Embed-v2): `benchmark.answer_match.EmbeddingMatch` (the experiment's `--answer-embedder`) does the same with
  an embedding model, where the default is MMAU's string match; choice mode ranks the options itself.

Items whose answer is not one of their choices cannot be scored; they are left out and counted in the conversion's
note, never silently kept. The converted file keeps every source field beside the MMAU ones, so nothing is lost.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lens_audio.files import write_atomically

FORMATS = ("mmar", "mmau-pro")
_LETTERED = re.compile(r"^\s*\(?([A-Z])[.)]\s+(.*)$", re.S)
NOT_CLOSED_FORM = ("open", "instruction following")


@dataclass
class Conversion:
    """The converted items and what was left out, and why (`describe`)."""

    items: list[dict[str, Any]]
    left_out: dict[str, list[str]] = field(default_factory=dict)  # reason -> item ids

    def describe(self) -> str:
        kept = f"{len(self.items)} items converted"
        dropped = "; ".join(f"{len(ids)} left out: {why} (e.g. {ids[0]!r})" for why, ids in self.left_out.items())
        return kept + (f"; {dropped}" if dropped else "")


def _unlettered(choices: Sequence[str], answer: str) -> tuple[list[str], str]:
    """`["A. x", "B. y"]` with answer "B" (or "B. y") -> `["x", "y"]`, "y"; plain choices unchanged."""
    parsed = [_LETTERED.match(str(c)) for c in choices]
    if not choices or not all(parsed):
        return [str(c) for c in choices], str(answer)
    texts = [m.group(2).strip() for m in parsed]
    letters = [m.group(1) for m in parsed]
    answer = str(answer).strip()
    lettered = _LETTERED.match(answer)
    letter = lettered.group(1) if lettered else answer.rstrip(".)").lstrip("(")
    return texts, texts[letters.index(letter)] if letter in letters else answer


def _audio(value: Any) -> str | list[str]:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return str(value[0]) if len(value) == 1 else [str(v) for v in value]
    return str(value)


def _keep(conversion: Conversion, item: dict[str, Any], source: dict[str, Any]) -> None:
    item = {k: v for k, v in item.items() if v is not None}  # an absent field stays absent
    if item["answer"] not in item["choices"]:
        conversion.left_out.setdefault("the answer is not one of the choices", []).append(str(item["id"]))
        return
    conversion.items.append({**{k: v for k, v in source.items() if k not in item}, **item})


def from_mmar(rows: Sequence[dict[str, Any]]) -> Conversion:
    """MMAR's items in the MMAU format (see the module docstring)."""
    conversion = Conversion([])
    for row in rows:
        choices, answer = _unlettered(list(row["choices"]), row["answer"])
        item = {"id": str(row["id"]), "audio_id": _audio(row["audio_path"]), "question": row["question"],
                "choices": choices, "answer": answer, "task": row.get("modality", "unknown"),
                "category": row.get("category"), "sub-category": row.get("sub-category", row.get("subcategory")),
                "dataset": "MMAR", "split": row.get("split", "test")}
        _keep(conversion, item, dict(row))
    return conversion


def from_mmau_pro(rows: Sequence[dict[str, Any]]) -> Conversion:
    """MMAU-Pro's closed-form items in the MMAU format (see the module docstring)."""
    conversion = Conversion([])
    for row in rows:
        choices = row.get("choices")
        choices = list(choices.tolist() if hasattr(choices, "tolist") else choices or [])
        category = str(row.get("category", "")).strip()
        if category.lower() in NOT_CLOSED_FORM or len(choices) < 2:
            conversion.left_out.setdefault("open-ended or instruction-following (no options to score)",
                                           []).append(str(row["id"]))
            continue
        choices, answer = _unlettered(choices, row["answer"])
        item = {"id": str(row["id"]), "audio_id": _audio(row["audio_path"]), "question": row["question"],
                "choices": choices, "answer": answer, "task": category or "unknown", "dataset": "MMAU-Pro",
                "split": row.get("split", "test")}
        _keep(conversion, item, {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in dict(row).items()})
    return conversion


def read_rows(path: Path) -> list[dict[str, Any]]:
    """A benchmark file's rows: a JSON list, JSON lines, or a parquet table (needs pyarrow)."""
    if path.suffix == ".parquet":
        try:
            import pandas
        except ImportError as exc:
            raise ImportError(f"{path}: reading parquet needs pandas and pyarrow (pip install pandas pyarrow).") \
                from exc
        return pandas.read_parquet(path).to_dict("records")
    text = path.read_text()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of items, not a {type(data).__name__}.")
    return data


def convert_benchmark(path: str | Path, source: str, out: str | Path | None = None) -> tuple[Path, Conversion]:
    """Convert `path` (format `source`: "mmar" or "mmau-pro") to an MMAU-format JSON beside it (default
    `<stem>-mmau-format.json`, where its relative audio paths resolve); returns the path and the conversion."""
    if source not in FORMATS:
        raise ValueError(f"benchmark format {source!r}: give one of {list(FORMATS)} (MMAU itself needs no conversion).")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such benchmark file.")
    rows = read_rows(path)
    missing = [k for k in ("id", "audio_path", "question", "choices", "answer") if rows and k not in rows[0]]
    if missing:
        raise ValueError(f"{path}: its items have no {missing} field(s); is it {source}'s format? (MMAU-format files "
                         "need no conversion: pass them to --benchmark as they are.)")
    conversion = from_mmar(rows) if source == "mmar" else from_mmau_pro(rows)
    if not conversion.items:
        raise ValueError(f"{path}: no item could be converted ({conversion.describe()}).")
    out = Path(out) if out is not None else path.with_name(f"{path.stem}-mmau-format.json")
    if out.resolve().parent != path.resolve().parent:
        raise ValueError(f"write the converted file beside {path.name}, where its audio paths resolve, not in "
                         f"{out.parent}.")
    write_atomically(out, json.dumps(conversion.items, indent=1, default=str))
    return out, conversion
