"""A conflict suite from any MMAU-format benchmark: each item three times, with no hint, a congruent and a conflicting
sentence before its question, as the workshop's hints are written.

    suite = conflict_suite(load_mmau("mmau-test-mini.json"), seed=0)
    write_conflict_suite("mmau-test-mini.json", seed=0)   # mmau-test-mini-conflict-seed0.json beside it

Each variant keeps its item's fields and audio, adds `hint` ("none", "congruent", "conflicting"), `hinted_choice` (the
option the sentence asserts: the answer, or a seeded wrong option) and `base_id` (the item's id), and gets the id
`{id}-{hint}`; `suite` records how it was made (seed, templates) so runs of two suites never mix (the items' content
is in every run manifest). The sentence template is drawn per item with the same seed, so a variant's two hinted
forms differ only in the option they name. The measures over such a suite are in `benchmark.conflict`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lens_audio.benchmark.mmau import load_mmau
from lens_audio.files import write_atomically

HINTS = ("none", "congruent", "conflicting")
TEMPLATES = (
    "A note attached to the recording says the answer is {}.",
    "Someone who heard this recording says it is {}.",
    "The label on this clip reads: {}.",
)


def conflict_suite(items: Sequence[dict[str, Any]], seed: int = 0,
                   templates: Sequence[str] = TEMPLATES) -> list[dict[str, Any]]:
    """Three variants of each item (`HINTS`), seeded; items that already carry hint conditions are refused."""
    already = [str(i["id"]) for i in items if i.get("hint") is not None]
    if already:
        raise ValueError(f"{len(already)} items already carry hint conditions (e.g. {already[0]!r}): measure them as "
                         "they are (benchmark.conflict), without a suite of their own.")
    if not templates or any(t.count("{}") != 1 for t in templates):
        raise ValueError("each template needs exactly one {} for the option it asserts.")
    rng = np.random.default_rng(seed)
    suite = []
    for item in items:
        wrong = [c for c in item["choices"] if c != item["answer"]]
        if not wrong:
            raise ValueError(f"item {item['id']!r} has no wrong option to assert; a conflict needs two choices.")
        template = templates[int(rng.integers(len(templates)))]
        asserted = {"none": None, "congruent": item["answer"], "conflicting": wrong[int(rng.integers(len(wrong)))]}
        for hint in HINTS:
            option = asserted[hint]
            question = item["question"] if option is None else f"{template.format(option)} {item['question']}"
            suite.append({**item, "id": f"{item['id']}-{hint}", "question": question, "hint": hint,
                          "hinted_choice": option, "base_id": item["id"],
                          "suite": {"seed": seed, "templates": list(templates)}})
    return suite


def write_conflict_suite(benchmark: str | Path, out: str | Path | None = None, seed: int = 0,
                         templates: Sequence[str] = TEMPLATES) -> Path:
    """Write the suite of the benchmark JSON `benchmark` (default: `<stem>-conflict-seed{seed}.json` beside it, so
    its relative audio paths still resolve); returns the path. The raw items are kept as written (no paths
    resolved), as `load_mmau` expects them."""
    benchmark = Path(benchmark)
    load_mmau(benchmark)  # the benchmark must be valid (a bad one is refused here, naming the problem)
    raw = json.loads(benchmark.read_text())
    out = Path(out) if out is not None else benchmark.with_name(f"{benchmark.stem}-conflict-seed{seed}.json")
    if out.resolve().parent != benchmark.resolve().parent:
        raise ValueError(f"write the suite beside its benchmark ({benchmark.parent}), where its relative audio paths "
                         f"resolve, not in {out.parent}.")
    write_atomically(out, json.dumps(conflict_suite(raw, seed, templates), indent=1))
    return out
