"""The workshop model and its synthetic benchmark, shipped inside the package so everything runs offline.

Two models, each with its bundled MMAU-format benchmark:

- `"workshop"` (`CHECKPOINT`, `BENCHMARK`): the clip-set model organism. Three
  clips per prompt and a question about one of them (`clip_sets.py`,
  `train_sets.py`), so the audio reaches the final position only after the
  decoder has found the named clip.
- `"workshop-v1"` (`CHECKPOINT_V1`, `BENCHMARK_V1`): the first workshop model,
  one clip per prompt (`task.py`, `train.py`).

Both are rebuilt by `lens-audio workshop benchmark` and `lens-audio workshop
train` (`--recipe clip-sets` or `--recipe v1`).
"""

from pathlib import Path

from lens_audio.files import atomic_folder  # re-exported: the benchmark and training writers use it

CHECKPOINT_SETS = Path(__file__).parent / "checkpoint_sets"  # the clip-set model organism
BENCHMARK_SETS = Path(__file__).parent / "data_sets" / "workshop_sets.json"
CHECKPOINT_V1 = Path(__file__).parent / "checkpoint"  # "workshop-v1": the first workshop model (one clip per prompt)
BENCHMARK_V1 = Path(__file__).parent / "data" / "workshop.json"
SAES = Path(__file__).parent / "saes"  # SAEs of the "workshop" model (`lens-audio sae workshop`), SAELens format
# the clip-chain organism's benchmark (`clip_chains.py`; its model is still training, in `TRAINING_RUNS / "chains"`)
BENCHMARK_CHAINS = Path(__file__).parent / "data_chains" / "workshop_chains.json"
TRAINING_RUNS = Path(__file__).parent / "training"  # resumable training runs (not package data)
CHECKPOINT, BENCHMARK = CHECKPOINT_SETS, BENCHMARK_SETS  # "workshop": the default workshop model and its benchmark


def benchmark_for(model_name: str) -> Path:
    """The bundled benchmark of a shipped workshop model (`lens_audio.model.registry.bundled_benchmark`)."""
    from lens_audio.model.registry import bundled_benchmark

    return bundled_benchmark(model_name)


__all__ = [
    "BENCHMARK",
    "BENCHMARK_CHAINS",
    "BENCHMARK_SETS",
    "benchmark_for",
    "BENCHMARK_V1",
    "CHECKPOINT",
    "CHECKPOINT_SETS",
    "CHECKPOINT_V1",
    "SAES",
    "TRAINING_RUNS",
    "atomic_folder",
]
