"""SAEs over an MMAU-format benchmark, in one call: activations cached once, one SAE per hook, metrics on test.

`train_benchmark_saes(model, items, hook_names, positions, out)` collects the training splits' activations
at every hook in one pass (cached in `out/cache/`), trains one TopK SAE per hook (resumable: `out/<name>/checkpoint/`),
writes each as `out/<name>/` in SAELens's format with `metrics.json` (variance explained and L0 on the training
rows and on the held-out split's), and returns the metrics. With `positions="audio"` each distinct clip set is
read once (`unique_by_audio`); with `silence=True` the silence twins' activations are added to the training rows
(so SAEs at text positions also see the prompts the steering direction is measured against).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lens_audio.sae.activations import ActivationSet, collect_activations, unique_by_audio
from lens_audio.sae.train import SAEMetrics, SAETrainSettings, evaluate_sae, train_sae

if TYPE_CHECKING:
    from lens_audio.model.hooked_audio_lm import HookedAudioLM

METRICS_FILENAME = "metrics.json"


def sae_folder_name(hook_name: str, positions: str) -> str:
    """`blocks.1.hook_resid_post` at audio positions -> `blocks.1.hook_resid_post-audio`."""
    return f"{hook_name}-{positions}"


@dataclass
class SAERecord:
    """What `train_benchmark_saes` measured for one SAE (`metrics.json`)."""

    hook_name: str
    positions: str
    train: SAEMetrics
    held_out: SAEMetrics
    held_out_split: str
    settings: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "train": self.train.to_json(), "held_out": self.held_out.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "SAERecord":
        return cls(**{**data, "train": SAEMetrics.from_json(data["train"]),
                      "held_out": SAEMetrics.from_json(data["held_out"])})


def _cached(path: Path, names: Sequence[str], make: Callable[[], dict[str, ActivationSet]]) -> dict[str, ActivationSet]:
    files = {name: path / f"{name}.safetensors" for name in names}
    if all(f.is_file() for f in files.values()):
        return {name: ActivationSet.load(f) for name, f in files.items()}
    sets = make()
    for name, activation_set in sets.items():
        activation_set.save(files[name])
    return sets


def _merge(a: ActivationSet, b: ActivationSet) -> ActivationSet:
    fields = {f: torch.cat([getattr(a, f), getattr(b, f) + (len(a.item_ids) if f == "item" else 0)])
              for f in ("acts", "item", "position", "clip", "token_in_clip", "token_id")}
    return ActivationSet(a.hook_name, a.positions, item_ids=a.item_ids + [f"{i} (silence)" for i in b.item_ids],
                         **fields)


def benchmark_activations(
    model: "HookedAudioLM", items: Sequence[dict[str, Any]], hook_names: Sequence[str], positions: str,
    cache: Path | None, silence: bool = False, progress: bool = True, batch_size: int = 16,
) -> dict[str, ActivationSet]:
    """Activations of `items` at each hook (deduplicated by clip set for audio positions), cached under `cache`."""
    chosen = unique_by_audio(items) if positions == "audio" else list(items)

    def make() -> dict[str, ActivationSet]:
        sets = collect_activations(model, chosen, hook_names, positions, batch_size=batch_size, progress=progress)
        if silence:
            twins = collect_activations(model, chosen, hook_names, positions, batch_size=batch_size, silence=True,
                                        progress=progress)
            sets = {name: _merge(sets[name], twins[name]) for name in sets}
        return sets

    return make() if cache is None else _cached(cache, list(hook_names), make)


def train_benchmark_saes(
    model: "HookedAudioLM",
    items: Sequence[dict[str, Any]],
    hook_names: Sequence[str],
    positions: str,
    out: str | Path,
    settings: SAETrainSettings = SAETrainSettings(),
    train_splits: Sequence[str] = ("calibration", "dev"),
    held_out_split: str = "test",
    silence: bool = False,
    progress: bool = True,
) -> list[SAERecord]:
    """One SAE per hook in `hook_names`, trained on `train_splits`, measured on `held_out_split`; see the module
    docstring."""
    out = Path(out)
    train_items = [i for i in items if i.get("split") in train_splits]
    held_items = [i for i in items if i.get("split") == held_out_split]
    if not train_items or not held_items:
        raise ValueError(f"the benchmark needs items in splits {list(train_splits)} (training) and {held_out_split!r} "
                         "(held out) in their 'split' field.")
    tag = f"{positions}{'+silence' if silence else ''}"
    with torch.no_grad():
        train_sets = benchmark_activations(model, train_items, hook_names, positions, out / "cache" / f"train-{tag}",
                                           silence, progress)
        held_sets = benchmark_activations(model, held_items, hook_names, positions, out / "cache" / f"held-{tag}",
                                          silence, progress)
    records = []
    for name in hook_names:
        folder = out / sae_folder_name(name, positions)
        if (folder / METRICS_FILENAME).is_file():
            records.append(SAERecord.from_json(json.loads((folder / METRICS_FILENAME).read_text())))
            continue
        with torch.enable_grad():
            result = train_sae(train_sets[name], settings, model.cfg.model_name, folder, progress)
        record = SAERecord(name, positions, evaluate_sae(result.sae, train_sets[name].acts),
                           evaluate_sae(result.sae, held_sets[name].acts), held_out_split, asdict(settings))
        (folder / METRICS_FILENAME).write_text(json.dumps(record.to_json(), indent=2) + "\n")
        records.append(record)
    return records
