"""Calibration / dev / test splits for any benchmark: made (seeded, stratified, clip groups kept whole), mapped from
an item field, or read from a split file; one typed object, `BenchmarkSplit`, written beside results.

The experiment chooses heads on calibration and beta on dev, and reports on test. A benchmark such as MMAU test-mini
has none of these (`split: "test-mini"` on every item), so a split is made for it:

- `make_split(items, sizes=DEFAULT_SIZES, seed=0, stratify=None)`: each stratum (the items' `task` by default, or any
  item fields, e.g. `("task", "sub-category", "difficulty")`) is dealt over calibration, dev and test in proportion to
  `sizes` (fractions summing to 1; default calibration 0.25, dev 0.25, test 0.5). Items sharing a clip (their clip
  group, `clip_group`: `clip_id`, else the audio) go to one split together, so no clip is heard in two
  splits; a clip group with items of several strata counts under its most common one. The same items, sizes,
  stratification and seed always give the same split.
- `split_from_field(items, field, values)`: the user's own item field, whose values name the stages (by default the
  values "calibration", "dev", "test"; `values` maps stage -> value otherwise).
- `read_split(path)` / `BenchmarkSplit.write(path)`: a split file (JSON: the assignment id -> stage, with the seed,
  sizes, stratification and a digest of the assignment), to publish beside results and reuse (`--split-file`).

`stage_split(items, stages, split, ...)` is the one rule the experiment follows: an explicit split wins; otherwise
items whose `split` field holds the profile's stage values are used as they are (no `BenchmarkSplit`; a stage with no
items is refused when it runs, naming the split values present and the fixes); items with none of them get a seeded
split (`make_split`).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lens_audio.benchmark.items import id_key
from lens_audio.checks import UserNote, check_float, check_seed
from lens_audio.files import write_atomically

STAGES = ("calibration", "dev", "test")
DEFAULT_SIZES = (0.25, 0.25, 0.5)  # calibration, dev, test: fractions of the items
FORMAT = "lens_audio.benchmark_split"
FIXES = ("pass a split file (--split-file, API: split=read_split(path)), map an item field (--split-field FIELD, "
         "API: split_from_field), or leave the items without calibration/dev/test values so a seeded split is made "
         "(--split-sizes, --seed)")


@dataclass(frozen=True)
class BenchmarkSplit:
    """Each item id's stage (calibration, dev or test), and how the assignment was made."""

    assignment: dict[str, str]  # id (as text, `items.id_key`) -> stage
    source: str = "seeded"  # "seeded", "field <name>" or "file <path>"
    seed: int | None = None  # seeded splits only
    sizes: tuple[float, float, float] | None = None  # seeded splits only: calibration, dev, test fractions
    stratify: tuple[str, ...] = ()  # seeded splits only: the item fields of the strata
    counts_by_stratum: dict[str, dict[str, int]] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "assignment", {id_key(k): v for k, v in self.assignment.items()})
        wrong = sorted({v for v in self.assignment.values() if v not in STAGES})
        if wrong:
            raise ValueError(f"a split assigns items to {wrong}; each item goes to one of {list(STAGES)}.")
        missing = [s for s in STAGES if s not in self.assignment.values()]
        if missing:
            raise ValueError(f"the split has no {' or '.join(missing)} items ({self.describe_counts()}); each stage "
                             "needs items: give more items, other sizes (--split-sizes) or another split.")
        object.__setattr__(self, "stratify", tuple(self.stratify))
        if self.sizes is not None:
            object.__setattr__(self, "sizes", tuple(float(s) for s in self.sizes))

    @property
    def digest(self) -> str:
        """16 hex digits of sha256 over the assignment (sorted by id): two splits with one digest assign alike."""
        text = json.dumps(sorted(self.assignment.items()), separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def counts(self) -> dict[str, int]:
        """Items per stage."""
        counted = Counter(self.assignment.values())
        return {stage: counted[stage] for stage in STAGES}

    def describe_counts(self) -> str:
        return ", ".join(f"{stage} {n}" for stage, n in self.counts().items())

    @property
    def label(self) -> str:
        """The split in one short line, digest first (what run manifests record and resume compares)."""
        how = self.source
        if self.seed is not None:
            sizes = "/".join(f"{s:g}" for s in self.sizes or ())
            how += f", seed {self.seed}, sizes {sizes}, by {'+'.join(self.stratify) or 'nothing'}"
        return f"{self.digest} ({how})"

    def describe(self) -> str:
        """The one line printed at the start of an experiment."""
        return f"split {self.label}: {self.describe_counts()} items"

    def rows(self, items: Sequence[dict[str, Any]], stage: str) -> list[dict[str, Any]]:
        """The items of `stage`, in the benchmark's order."""
        return [item for item in items if self.assignment.get(id_key(item["id"])) == stage]

    def check_covers(self, items: Sequence[dict[str, Any]]) -> None:
        """Refuse a split whose ids are not the benchmark's (items missing from it, or ids the benchmark lacks)."""
        ids = [id_key(item["id"]) for item in items]
        absent = [i for i in ids if i not in self.assignment]
        extra = sorted(set(self.assignment) - set(ids))
        if absent or extra:
            parts = ([f"{len(absent)} benchmark items are not in it (e.g. {absent[:3]})"] if absent else []) + (
                [f"{len(extra)} of its ids are not in the benchmark (e.g. {extra[:3]})"] if extra else [])
            raise ValueError(f"the split ({self.source}) does not match the benchmark: {'; '.join(parts)}; make the "
                             "split from this benchmark (lens-audio split BENCHMARK --out split.json).")

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": 1, "digest": self.digest, "source": self.source, "seed": self.seed,
                "sizes": None if self.sizes is None else list(self.sizes), "stratify": list(self.stratify),
                "counts": self.counts(), "counts_by_stratum": self.counts_by_stratum,
                "assignment": dict(self.assignment)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "the split") -> BenchmarkSplit:
        """The split back; a digest that does not match the assignment (a hand-edited file) is refused."""
        if not isinstance(data, Mapping) or not isinstance(data.get("assignment"), Mapping):
            raise ValueError(f"{where} must be a JSON object with an 'assignment' of item id -> calibration/dev/test "
                             "(as `lens-audio split` writes it).")
        split = cls(dict(data["assignment"]), data.get("source", "file"), data.get("seed"),
                    None if data.get("sizes") is None else tuple(data["sizes"]), tuple(data.get("stratify") or ()),
                    dict(data.get("counts_by_stratum") or {}))
        if data.get("digest") not in (None, split.digest):
            raise ValueError(f"{where}: its digest {data['digest']} does not match its assignment ({split.digest}): "
                             "the file was edited; remove its 'digest' to accept the edit, or write it anew.")
        return split

    def write(self, path: str | Path) -> Path:
        write_atomically(path, json.dumps(self.to_json(), indent=1))
        return Path(path)


def read_split(path: str | Path) -> BenchmarkSplit:
    """A split file (`BenchmarkSplit.write`, `lens-audio split`), as written (so its label, which manifests record,
    is the one it was made with); a hand-written file of just an `assignment` is "file <name>"."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the split file {path}: {exc}.") from exc
    if isinstance(data, dict):
        data.setdefault("source", f"file {path.name}")
    return BenchmarkSplit.from_json(data, str(path))


def check_sizes(sizes: Sequence[float]) -> tuple[float, float, float]:
    """Three fractions (calibration, dev, test), each in (0, 1), summing to 1."""
    if isinstance(sizes, (str, bytes)) or len(sizes) != 3:
        raise ValueError(f"split sizes are three fractions (calibration dev test, e.g. 0.25 0.25 0.5), not {sizes!r}.")
    values = tuple(check_float(f"split size of {s}", v, 0.0, 1.0) for s, v in zip(STAGES, sizes))
    if min(values) <= 0 or abs(sum(values) - 1) > 1e-6:
        raise ValueError(f"split sizes {list(values)} must each be above 0 and sum to 1 (calibration dev test, e.g. "
                         "0.25 0.25 0.5).")
    return values  # type: ignore[return-value]


def default_stratify(items: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """`("task",)` where items have a task, else no strata."""
    return ("task",) if any(item.get("task") is not None for item in items) else ()


def make_split(
    items: Sequence[dict[str, Any]], sizes: Sequence[float] = DEFAULT_SIZES, seed: int = 0,
    stratify: Sequence[str] | None = None,
) -> BenchmarkSplit:
    """A seeded split of `items` (see the module docstring): strata dealt in proportion to `sizes`, clip groups
    whole."""
    sizes, seed = check_sizes(sizes), check_seed("seed", seed)
    stratify = default_stratify(items) if stratify is None else tuple(stratify)
    absent = [f for f in stratify if not any(item.get(f) is not None for item in items)]
    if absent:
        present = sorted({k for item in items for k in item})
        raise ValueError(f"no item has the field(s) {absent} to stratify by; fields present: {present}.")
    groups: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        groups.setdefault(clip_group(item), []).append(item)
    by_stratum: dict[str, list[str]] = {}
    for key, members in groups.items():
        strata = Counter(stratum_of(item, stratify) for item in members)
        top = max(strata.values())
        by_stratum.setdefault(min(s for s, n in strata.items() if n == top), []).append(key)
    rng = np.random.default_rng(seed)
    counts, seen, assignment, table = np.zeros(3), 0, {}, {}
    for stratum in sorted(by_stratum):
        keys = sorted(by_stratum[stratum])
        for index in rng.permutation(len(keys)):
            members = groups[keys[index]]
            seen += len(members)
            stage = int(np.argmax(np.asarray(sizes) * seen - counts))  # the stage furthest below its share so far
            counts[stage] += len(members)
            row = table.setdefault(stratum, dict.fromkeys(STAGES, 0))
            row[STAGES[stage]] += len(members)
            assignment.update({id_key(item["id"]): STAGES[stage] for item in members})
    return BenchmarkSplit(assignment, "seeded", seed, sizes, stratify, table)


def clip_group(item: dict[str, Any]) -> str:
    """The clip group of an item (`clip_id`, else its audio, else its id): splits keep groups whole, bootstrap
    intervals resample whole groups (`paper.controls.cluster_of` is this function)."""
    if item.get("clip_id") is not None:
        return str(item["clip_id"])
    return json.dumps(item.get("audio_id", item["id"]))


def stratum_of(item: dict[str, Any], fields: Sequence[str]) -> str:
    """An item's stratum: its values of `fields` joined by "/" (a missing field counts as one value)."""
    return "/".join(str(item.get(f)) for f in fields)


def split_from_field(
    items: Sequence[dict[str, Any]], field: str, values: Mapping[str, str] | None = None
) -> BenchmarkSplit:
    """The split an item field names: `values` maps each stage to the field's value for it (default: the stage's
    name). Items whose value is none of them are left out of every stage."""
    values = dict(zip(STAGES, STAGES)) if values is None else dict(values)
    check_stages(values, f"the values of --split-field {field}")
    stage_of = {v: s for s, v in values.items()}
    present = sorted({str(item.get(field)) for item in items})
    assignment = {id_key(i["id"]): stage_of[i.get(field)] for i in items if i.get(field) in stage_of}
    missing = [s for s in STAGES if s not in assignment.values()]
    if missing:
        raise ValueError(f"no item has {field} = {[values[s] for s in missing]} for the {' and '.join(missing)} "
                         f"stage(s); its values here are {present}: map them (--split-field {field} CALIBRATION DEV "
                         "TEST) or let the experiment make a seeded split (drop --split-field).")
    return BenchmarkSplit(assignment, f"field {field}")


def check_stages(mapping: Mapping[str, Any], what: str = "profile.splits") -> None:
    """`mapping` names calibration, dev and test, and test's value is neither calibration's nor dev's (choosing heads
    or beta on the items that are reported on is refused)."""
    if not isinstance(mapping, Mapping):
        raise ValueError(f"{what} must map each stage {list(STAGES)} to a split value, not {mapping!r}.")
    missing, extra = [s for s in STAGES if s not in mapping], sorted(set(mapping) - set(STAGES))
    if missing or extra:
        raise ValueError(f"{what} must name exactly {list(STAGES)}: " + "; ".join(
            ([f"missing {missing}"] if missing else []) + ([f"unknown {extra}"] if extra else []))
            + f" (e.g. {{'calibration': 'calibration', 'dev': 'dev', 'test': 'test'}}), not {dict(mapping)!r}.")
    for stage in ("calibration", "dev"):
        if mapping[stage] == mapping["test"]:
            raise ValueError(f"{what} maps {stage} and test to the same items ({mapping['test']!r}): heads and beta "
                             f"would be chosen on the items reported on; give {stage} its own items, or make a split "
                             "(lens-audio split, --split-sizes).")


def stage_split(
    items: Sequence[dict[str, Any]], stages: Mapping[str, str], split: BenchmarkSplit | None = None,
    sizes: Sequence[float] = DEFAULT_SIZES, seed: int = 0, stratify: Sequence[str] | None = None,
) -> BenchmarkSplit | None:
    """The experiment's split rule (module docstring): `split` if given (checked against the items), None where the
    items' `split` field holds any stage's value of `stages` (e.g. a calibration subset; a stage with no items is
    refused when it runs, `stage_rows`), else a seeded `make_split`."""
    if split is not None:
        split.check_covers(items)
        return split
    present = {item.get("split") for item in items}
    if any(stages[s] in present for s in STAGES):  # a stage without items is refused when it runs (`stage_rows`)
        return None
    return make_split(items, sizes, seed, stratify)


def benchmark_splits(items: Sequence[dict[str, Any]]) -> list[str]:
    """The values of the items' own `split` field, sorted."""
    return sorted({str(item["split"]) for item in items if item.get("split") is not None})


class SplitNote(UserNote):
    """The split an experiment made or was given, said at its start (counts per stage)."""


def stage_rows(
    items: Sequence[dict[str, Any]], name: str, stages: Mapping[str, str], split: BenchmarkSplit | None
) -> list[dict[str, Any]]:
    """The items of stage `name` (calibration, dev, test: from `split`, else the items' `split` field valued
    `stages[name]`), or of the benchmark's own split `name` (e.g. "test-mini"); none is refused naming what exists."""
    if name in STAGES:
        rows = split.rows(items, name) if split is not None else [i for i in items if i.get("split") == stages[name]]
    else:
        rows = [item for item in items if item.get("split") == name]
    if not rows:
        made = f" (the split {split.label})" if split is not None else f" (split values {dict(stages)})"
        raise ValueError(f"no items for split {name!r}: the stages are {', '.join(STAGES)}{made}, and the benchmark's "
                         f"own split values are {benchmark_splits(items)}; give one of them, or {FIXES}.")
    return rows


def publish_split(split: BenchmarkSplit, folder: str | Path, fresh: bool = False) -> Path:
    """Write `split` as `<folder>/split.json` and say it (`SplitNote`); a folder whose runs were made under another
    split is refused (unless `fresh`: the runs start over)."""
    path = Path(folder) / "split.json"
    if path.exists() and not fresh:
        before = read_split(path)
        if before.digest != split.digest:
            raise ValueError(f"{path}: this folder's runs were made under the split {before.label}, not {split.label}; "
                             f"rerun with the split that made them (--split-file {path}), give this run another "
                             "folder (--out), or start over with --fresh.")
    split.write(path)
    warnings.warn(f"{split.describe()} (written to {path})", SplitNote, stacklevel=3)
    return path
