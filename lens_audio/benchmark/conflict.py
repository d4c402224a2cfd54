"""Text dominance measured as the field measures it in 2026, from a run's records.

Over items with hint conditions (`hint`: "none", "congruent" or "conflicting"; `hinted_choice` the option the text
asserts), as the workshop benchmarks have and `benchmark.conflict_suite` makes from any MMAU-format benchmark:

- **text-dominance ratio** (ALME, arXiv 2602.11488): over conflicting items, followed_text / (followed_text +
  followed_audio), where the answer is the hinted option (text) or the right one (audio); items that followed
  neither are left out, as ALME does;
- **same-audio flip rate** (arXiv 2606.05161): the share of conflicting items whose answer differs from the answer to
  the same question on the same audio with no hint (paired by `base_id`, else the id without its `-{hint}` suffix);
- **silence flip rate**: the share of items whose answer differs between the audio run and the same prompts with the
  audio replaced by silence (the `{split}-silence` run): how much the answers depend on the audio at all.

Each rate comes with a bootstrap interval resampling `clusters` (clips) where they repeat, overall and per task,
difficulty and sub-category; every count can be redone from the run files (the tests do).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lens_audio.benchmark.report import BREAKDOWNS, accuracy_with_ci, breakdown_order
from lens_audio.benchmark.scoring import string_match

RATES = ("text_dominance", "same_audio_flip", "silence_flip")


def base_key(item: Mapping[str, Any]) -> str:
    """The question an item is a hint variant of: its `base_id`, else its id without the `-{hint}` suffix."""
    if item.get("base_id") is not None:
        return str(item["base_id"])
    suffix = f"-{item.get('hint')}"
    text = str(item["id"])
    return text[: -len(suffix)] if item.get("hint") and text.endswith(suffix) else text


def chosen(record: Mapping[str, Any], item: Mapping[str, Any]) -> str:
    """The option a record's answer is (MMAU's string match of its `extracted` answer against each choice; choice
    mode's answer is the option itself), else the extracted text as it is."""
    extracted = str(record.get("extracted", record.get("output", "")))
    matches = [c for c in item["choices"] if string_match(c, extracted, item["choices"])]
    return matches[0] if len(matches) == 1 else extracted


def rate(flags: Sequence[bool], clusters: Sequence[Any] | None) -> dict[str, Any]:
    """A rate in percent with its interval (`accuracy_with_ci`'s fields; `accuracy` holds the rate)."""
    return accuracy_with_ci(flags, clusters=clusters)


@dataclass
class ConflictMeasures:
    """The three rates (each `rate`'s dict, None where no item qualifies) overall and by breakdown field and value."""

    overall: dict[str, dict[str, Any] | None]
    by_field: dict[str, dict[str, dict[str, dict[str, Any] | None]]] = field(default_factory=dict)

    def describe(self) -> str:
        def one(name: str, value: dict[str, Any] | None) -> str:
            if value is None or value["accuracy"] is None:
                return f"{name.replace('_', ' ')} n/a"
            low, high = value["ci"]
            return f"{name.replace('_', ' ')} {value['accuracy']:.1f}% [{low:.1f}, {high:.1f}] (n = {value['n']})"

        return "; ".join(one(name, self.overall.get(name)) for name in RATES)

    def to_json(self) -> dict[str, Any]:
        return {"overall": self.overall, "by_field": self.by_field}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ConflictMeasures":
        return cls(data["overall"], data.get("by_field", {}))


def _rates(rows: Sequence[int], records: Sequence[Mapping[str, Any]], clusters: Sequence[Any] | None,
           neutral: Mapping[str, Mapping[str, Any]], silence: Mapping[str, Mapping[str, Any]] | None
           ) -> dict[str, dict[str, Any] | None]:
    cluster = (lambda picked: None) if clusters is None else (lambda picked: [clusters[i] for i in picked])
    conflicting = [i for i in rows if records[i].get("hint") == "conflicting"]
    decided = [i for i in conflicting if records[i]["chosen"] in (records[i]["hinted_choice"], records[i]["gold"])]
    paired = [i for i in conflicting if base_key(records[i]) in neutral]
    silent = [i for i in rows if silence is not None and str(records[i]["id"]) in silence]
    return {
        "text_dominance": rate([records[i]["chosen"] == records[i]["hinted_choice"] for i in decided],
                               cluster(decided)) if decided else None,
        "same_audio_flip": rate([records[i]["chosen"] != neutral[base_key(records[i])]["chosen"] for i in paired],
                                cluster(paired)) if paired else None,
        "silence_flip": rate([records[i]["chosen"] != silence[str(records[i]["id"])] for i in silent],
                             cluster(silent)) if silent else None,
    }


def conflict_measures(
    records: Sequence[Mapping[str, Any]],
    items: Sequence[Mapping[str, Any]],
    clusters: Sequence[Any] | None = None,
    silence_records: Sequence[Mapping[str, Any]] | None = None,
) -> ConflictMeasures:
    """The rates of one run's `records` (run-file records: `extracted` is the model's answer) over its `items`
    (same order; the items give the right answer and the hinted option), with intervals resampling `clusters` (one
    per record) and the silence flip rate where `silence_records` (the same items' run on silence) are given."""
    if len(records) != len(items):
        raise ValueError(f"{len(records)} records for {len(items)} items: give the run's records in its items' order.")
    if not any(i.get("hint") == "conflicting" for i in items):
        raise ValueError("no item has hint 'conflicting': make a conflict suite of the benchmark first "
                         "(lens-audio conflict-suite, benchmark.conflict_suite).")
    rows = [{"id": item["id"], "chosen": chosen(r, item), "gold": item["answer"], "hint": item.get("hint"),
             "hinted_choice": item.get("hinted_choice"), "base_id": item.get("base_id")}
            for r, item in zip(records, items)]
    neutral = {base_key(r): r for r in rows if r.get("hint") == "none"}
    by_id = {str(i["id"]): i for i in items}
    silence = None if silence_records is None else {
        str(r["id"]): chosen(r, by_id[str(r["id"])]) for r in silence_records if str(r["id"]) in by_id}
    everything = list(range(len(rows)))
    measures = ConflictMeasures(_rates(everything, rows, clusters, neutral, silence))
    for name in BREAKDOWNS:
        values = sorted({str(item[name]) for item in items if name in item}, key=breakdown_order)
        hints = {str(item.get(name)): set() for item in items}
        for item in items:
            hints[str(item.get(name))].add(item.get("hint"))
        one_each = all(len(h) == 1 for h in hints.values())
        renames_hints = one_each and len(values) == len({frozenset(h) for h in hints.values()})
        if len(values) > 1 and not renames_hints:  # (the workshop's sub-categories are its hint conditions)
            measures.by_field[name] = {
                v: _rates([i for i in everything if str(items[i].get(name)) == v], rows, clusters, neutral, silence)
                for v in values
            }
    return measures
