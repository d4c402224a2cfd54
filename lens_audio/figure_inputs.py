"""What the figures draw beyond `ExperimentResult`: the analyses of one example item and the head-ablation scan,
saved as `figure_inputs.json` next to `results.json`, so `lens-audio figures --from` redraws every figure with no
model and no forward pass.

`FigureInputs` holds plain arrays (JSON round-trip like the result objects); `attention_signal`, `attention_batch`
and `lens` hand them to the chart functions in the shapes those take.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from lens_audio.analysis.statistics import nan_list
from lens_audio.files import write_atomically

FILE = "figure_inputs.json"


def _rounded(values: np.ndarray, digits: int = 5) -> list:
    return nan_list(np.round(np.asarray(values, dtype=float), digits))


@dataclass
class FigureInputs:
    """The example item (label, asked clip), its analyses and the head-ablation scan, as arrays.

    margin_change: [layer, head] mean change of the answer margin under zero-ablation (`ablation_items` items);
    attention_heads / attention_rows: the drawn heads and their final-token attention over every position
    ([head, pos]); audio_spans: each clip's positions; mels: each clip's log-mel [bin, frame];
    shown: rule -> heads drawn; patching (None when audio and silence give the same logit difference) and its
    column labels; lens_prob / lens_rank: [layer, option] at the final position, with the TL layer labels.
    """

    margin_change: np.ndarray
    ablation_items: int
    label: str
    asked: int | None
    choices: list[str]
    attention_heads: list[tuple[int, int]]
    attention_rows: np.ndarray
    audio_spans: list[tuple[int, int]]
    mels: list[np.ndarray]
    shown: dict[str, list[tuple[int, int]]]
    patching: np.ndarray | None
    patching_labels: list[str]
    lens_prob: np.ndarray
    lens_rank: np.ndarray
    lens_labels: list[str]
    ablation_selection: str = "no-hint items"  # which test items the ablation scan averages (figures.ablation_scan)

    def attention_signal(self) -> SimpleNamespace:
        """The `ListeningSignal` fields `plots.audio_attention` reads (one example)."""
        rows = torch.as_tensor(np.asarray(self.attention_rows, dtype=np.float32))[None]
        return SimpleNamespace(rows=rows, heads=[tuple(h) for h in self.attention_heads])

    def attention_batch(self) -> SimpleNamespace:
        """The `AudioBatch` fields `plots.audio_attention` reads: spans, padded mels and their frame mask."""
        frames = max(m.shape[1] for m in self.mels)
        features = torch.zeros(len(self.mels), self.mels[0].shape[0], frames)
        mask = torch.zeros(len(self.mels), frames, dtype=torch.long)
        for j, mel in enumerate(self.mels):
            features[j, :, : mel.shape[1]] = torch.as_tensor(np.asarray(mel, dtype=np.float32))
            mask[j, : mel.shape[1]] = 1
        return SimpleNamespace(audio_spans=[[tuple(s) for s in self.audio_spans]], input_features=features,
                               feature_attention_mask=mask)

    def lens(self) -> SimpleNamespace:
        """The `LogitLens` fields `plots.logit_lens_plot` reads: `[layer, example, option]`."""
        return SimpleNamespace(prob=torch.as_tensor(np.asarray(self.lens_prob))[:, None],
                               rank=torch.as_tensor(np.asarray(self.lens_rank, dtype=np.int64))[:, None],
                               labels=list(self.lens_labels))

    def to_json(self) -> dict[str, Any]:
        return {
            "margin_change": nan_list(np.asarray(self.margin_change, dtype=float)),
            "ablation_items": self.ablation_items,
            "label": self.label,
            "asked": self.asked,
            "choices": list(self.choices),
            "attention_heads": [list(h) for h in self.attention_heads],
            "attention_rows": _rounded(self.attention_rows, 6),
            "audio_spans": [list(s) for s in self.audio_spans],
            "mels": [_rounded(m, 3) for m in self.mels],
            "shown": {k: [list(h) for h in v] for k, v in self.shown.items()},
            "patching": None if self.patching is None else nan_list(np.asarray(self.patching, dtype=float)),
            "patching_labels": list(self.patching_labels),
            "lens_prob": nan_list(np.asarray(self.lens_prob, dtype=float)),
            "lens_rank": np.asarray(self.lens_rank).astype(int).tolist(),
            "lens_labels": list(self.lens_labels),
            "ablation_selection": self.ablation_selection,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "FigureInputs":
        array = lambda v: np.array(v, dtype=float)  # noqa: E731  (null -> nan)
        return cls(
            array(data["margin_change"]), data["ablation_items"], data["label"], data["asked"], data["choices"],
            [tuple(h) for h in data["attention_heads"]], array(data["attention_rows"]),
            [tuple(s) for s in data["audio_spans"]], [array(m) for m in data["mels"]],
            {k: [tuple(h) for h in v] for k, v in data["shown"].items()},
            None if data["patching"] is None else array(data["patching"]), data["patching_labels"],
            array(data["lens_prob"]), np.array(data["lens_rank"], dtype=int), data["lens_labels"],
            data.get("ablation_selection", "no-hint items"),
        )

    def save(self, path: str | Path) -> None:
        write_atomically(path, json.dumps(self.to_json()))

    @classmethod
    def load(cls, path: str | Path) -> "FigureInputs":
        return cls.from_json(json.loads(Path(path).read_text()))
