"""The workshop model and its synthetic benchmark, shipped inside the package so everything runs offline.

Three models, each with its bundled MMAU-format benchmark:

- `"workshop"` (`CHECKPOINT`, `BENCHMARK`): the clip-set model organism. Three
  clips per prompt and a question about one of them (`clip_sets.py`,
  `train_sets.py`), so the audio reaches the final position only after the
  decoder has found the named clip.
- `"workshop-v1"` (`CHECKPOINT_V1`, `BENCHMARK_V1`): the first workshop model,
  one clip per prompt (`task.py`, `train.py`).
- `"workshop-chains"` (`CHECKPOINT_CHAINS`, `BENCHMARK_CHAINS`): four clips per
  prompt, the one to answer about named by its number or by its neighbour's
  content (`clip_chains.py`, `train_chains.py`); a 16-layer decoder trained so
  the answer's content reaches the final position only after layer 8.

All are rebuilt by `lens-audio workshop benchmark` and `lens-audio workshop
train` (`--recipe clip-sets`, `v1` or `chains`).
"""

from pathlib import Path

from lens_audio.files import atomic_folder  # re-exported: the benchmark and training writers use it

CHECKPOINT_SETS = Path(__file__).parent / "checkpoint_sets"  # the clip-set model organism
BENCHMARK_SETS = Path(__file__).parent / "data_sets" / "workshop_sets.json"
CHECKPOINT_V1 = Path(__file__).parent / "checkpoint"  # "workshop-v1": the first workshop model (one clip per prompt)
BENCHMARK_V1 = Path(__file__).parent / "data" / "workshop.json"
SAES = Path(__file__).parent / "saes"  # SAEs of the "workshop" model (`lens-audio sae workshop`), SAELens format
# "workshop-chains": the clip-chain organism (`clip_chains.py`, `train_chains.py`); the package ships its benchmark's
# JSON, and `benchmark.chain_benchmark()` writes the audio beside it on first use
CHECKPOINT_CHAINS = Path(__file__).parent / "checkpoint_chains"
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
    "CHECKPOINT_CHAINS",
    "CHECKPOINT_SETS",
    "CHECKPOINT_V1",
    "SAES",
    "TRAINING_RUNS",
    "atomic_folder",
]
