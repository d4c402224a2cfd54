"""What SAE features respond to on a labelled benchmark: each feature's class precision over the rows it fires on.

Labels come from the benchmark's items: an item asking about clip `target_clip` (1-based) of clip set `clip_id`
has that clip's class as its `answer`, so every clip of a set asked about somewhere is labelled (the workshop
benchmark asks about each clip). A one-clip item without those fields labels its clip with its `answer`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from lens_audio.sae.activations import ActivationSet
from lens_audio.sae.sae import SparseAutoencoder


def clip_classes(items: Sequence[dict[str, Any]]) -> dict[tuple[str, int], str]:
    """(clip set, 0-based clip) -> class, from the items' answers (see the module docstring)."""
    labels: dict[tuple[str, int], str] = {}
    for item in items:
        key = (str(item.get("clip_id", item.get("audio_id"))), int(item.get("target_clip", 1)) - 1)
        labels.setdefault(key, item["answer"])
    return labels


def row_classes(activations: ActivationSet, items: Sequence[dict[str, Any]]) -> list[str | None]:
    """The class of the clip behind each audio row of `activations` (None for text rows or unlabelled clips)."""
    labels = clip_classes(items)
    by_id = {str(item["id"]): item for item in items}
    keys = [str(by_id[i].get("clip_id", by_id[i].get("audio_id"))) if i in by_id else None
            for i in activations.item_ids]
    return [None if clip < 0 or keys[item] is None else labels.get((keys[item], clip))
            for item, clip in zip(activations.item.tolist(), activations.clip.tolist())]


@dataclass
class FeatureClass:
    """One feature on a labelled set: how often it fires and the share of those rows from its commonest class."""

    feature: int
    n_fired: int
    top_class: str | None
    precision: float  # share of the firing rows whose clip is top_class


@torch.no_grad()
def feature_classes(sae: SparseAutoencoder, activations: ActivationSet, items: Sequence[dict[str, Any]],
                    chunk: int = 8192) -> list[FeatureClass]:
    """Per feature of `sae`, its class precision on the labelled audio rows of `activations`."""
    classes = row_classes(activations, items)
    labelled = torch.tensor([c is not None for c in classes])
    if not bool(labelled.any()):
        raise ValueError("none of these rows has a class label: use audio-position activations of labelled items.")
    names = sorted({c for c in classes if c is not None})
    code = torch.tensor([names.index(c) if c is not None else -1 for c in classes])
    counts = torch.zeros(sae.cfg.d_sae, len(names))
    acts = activations.acts[labelled]
    codes = code[labelled]
    for start in range(0, len(acts), chunk):
        fired = (sae.encode(acts[start : start + chunk].to(sae.device)) > 0).float().cpu()
        counts += fired.T @ torch.nn.functional.one_hot(codes[start : start + chunk], len(names)).float()
    out = []
    for f in range(sae.cfg.d_sae):
        n = int(counts[f].sum())
        best = int(counts[f].argmax())
        out.append(FeatureClass(f, n, names[best] if n else None, float(counts[f, best] / n) if n else 0.0))
    return out


def classes_with_a_feature(table: Sequence[FeatureClass], min_precision: float = 0.8,
                           min_fired: int = 20) -> dict[str, list[int]]:
    """Class -> its features firing on at least `min_fired` rows with precision >= `min_precision` for it."""
    found: dict[str, list[int]] = {}
    for row in table:
        if row.top_class is not None and row.n_fired >= min_fired and row.precision >= min_precision:
            found.setdefault(row.top_class, []).append(row.feature)
    return dict(sorted(found.items()))


def summary(table: Sequence[FeatureClass]) -> dict[str, Any]:
    return {"features_firing": sum(r.n_fired > 0 for r in table),
            "top_classes": Counter(r.top_class for r in table if r.n_fired).most_common(),
            "table": [asdict(r) for r in table]}
