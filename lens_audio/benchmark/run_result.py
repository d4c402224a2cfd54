"""`RunResult`: a scored run of the benchmark in item order, with its accuracy tables."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lens_audio.benchmark.report import grouped_accuracy, mmau_report


@dataclass
class RunResult(Sequence):
    """A scored run in item order: the records (dicts, as in the run file) and arrays over items.

    Iterating gives the records, so code that wants dicts keeps working; `correct` and `listening`
    (`[item, layer, head]` audio attention mass at the final prompt token, float32) are numpy.
    """

    records: list[dict[str, Any]]
    listening: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index):
        return self.records[index]

    @property
    def ids(self) -> list[str]:
        return [r["id"] for r in self.records]

    @property
    def correct(self) -> np.ndarray:
        return np.array([bool(r["correct"]) for r in self.records], dtype=bool)

    @property
    def conditions(self) -> list[str]:
        """Each item's hint condition ("all" for benchmarks without hints)."""
        return [r.get("hint", "all") for r in self.records]

    def tables(self, clusters: Sequence[Any] | None = None) -> dict[str, Any]:
        """MMAU's breakdowns, plus hint condition and hint x domain where items have hints.

        With `clusters` (each record's clip, `experiment.cluster_of`), intervals resample clips where they repeat
        (each cell's `ci_unit` says which).
        """
        tables = mmau_report(self.records, clusters)
        if any("hint" in r for r in self.records):
            tables["hint"] = grouped_accuracy(self.records, lambda r: r.get("hint"), clusters=clusters)
            tables["hint_by_task"] = {
                f"{h}/{t}": v
                for (h, t), v in grouped_accuracy(
                    self.records, lambda r: (r.get("hint"), r["task"]), clusters=clusters
                ).items()
            }
        return tables
