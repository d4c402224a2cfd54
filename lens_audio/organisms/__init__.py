"""The shipped model organisms: small real checkpoints trained here on synthetic audio, each a folder with its task,
its training recipe, its checkpoint, its bundled MMAU-format benchmark and a model card (README.md).

| name                | folder                       | what it is                                               |
|---------------------|------------------------------|----------------------------------------------------------|
| `"workshop"`        | `organisms/workshop/`        | three clips per prompt, a question about one (default)   |
| `"workshop-v1"`     | `organisms/workshop_v1/`     | one clip per prompt                                      |
| `"workshop-chains"` | `organisms/workshop_chains/` | four clips, found by number or by a neighbour's content  |

Importing this package registers the three in the one registry (`lens_audio.model.registry`); the registry imports
it on its first lookup. Shared pieces: `sounds` (twelve synthetic sound classes), `task` (clips, hints and the
prompt every organism is trained on), `benchmark_writer` (benchmarks from a seed) and `evaluate` (the organisms'
`PROFILE` and hint summaries). Rebuild any of them with `lens-audio workshop benchmark` / `lens-audio workshop train`.
"""

from pathlib import Path

from lens_audio.model.registry import ModelEntry, register_model

HERE = Path(__file__).parent
CHECKPOINT_SETS = HERE / "workshop" / "checkpoint"  # "workshop": the clip-set model organism
BENCHMARK_SETS = HERE / "workshop" / "benchmark" / "workshop_sets.json"
SAES = HERE / "workshop" / "saes"  # SAEs of the "workshop" model (`lens-audio sae workshop`), SAELens format
CHECKPOINT_V1 = HERE / "workshop_v1" / "checkpoint"  # "workshop-v1": one clip per prompt
BENCHMARK_V1 = HERE / "workshop_v1" / "benchmark" / "workshop.json"
# "workshop-chains": the package ships its benchmarks' JSON; `benchmark_writer.chain_benchmark()` and
# `direct_chain_benchmark()` write the audio beside it on first use
CHECKPOINT_CHAINS = HERE / "workshop_chains" / "checkpoint"
BENCHMARK_CHAINS = HERE / "workshop_chains" / "benchmark" / "workshop_chains.json"  # questions by number or neighbour
# its registered benchmark: direct questions only ("What is in Audio k?"), where head selection is decidable (card)
BENCHMARK_CHAINS_DIRECT = HERE / "workshop_chains" / "benchmark_direct" / "workshop_chains.json"
CHECKPOINT, BENCHMARK = CHECKPOINT_SETS, BENCHMARK_SETS  # "workshop": the default workshop model and its benchmark
CARD_SETS, CARD_V1, CARD_CHAINS = (HERE / name / "README.md" for name in ("workshop", "workshop_v1", "workshop_chains"))

_PROFILE = "lens_audio.organisms.evaluate:PROFILE"  # every organism is trained on the same prompt, scored by choice
for entry in (
    ModelEntry("workshop", "lens_audio.organisms:CHECKPOINT_SETS", "lens_audio.organisms:BENCHMARK_SETS", _PROFILE,
               "lens_audio.organisms:CARD_SETS"),
    ModelEntry("workshop-v1", "lens_audio.organisms:CHECKPOINT_V1", "lens_audio.organisms:BENCHMARK_V1", _PROFILE,
               "lens_audio.organisms:CARD_V1"),
    ModelEntry("workshop-chains", "lens_audio.organisms:CHECKPOINT_CHAINS",
               "lens_audio.organisms.benchmark_writer:direct_chain_benchmark",
               "lens_audio.organisms.workshop_chains.profile:PROFILE",
               "lens_audio.organisms:CARD_CHAINS"),
):
    register_model(entry)


def __getattr__(name: str):
    """`PROFILE`, `score_items` and `summarize` (`organisms.evaluate`), imported on first use so that registering
    the organisms stays cheap."""
    if name in ("PROFILE", "score_items", "summarize"):
        from lens_audio.organisms import evaluate

        return getattr(evaluate, name)
    raise AttributeError(f"module 'lens_audio.organisms' has no attribute {name!r}")


def benchmark_for(model_name: str) -> Path:
    """The bundled benchmark of a shipped model (`lens_audio.model.registry.bundled_benchmark`)."""
    from lens_audio.model.registry import bundled_benchmark

    return bundled_benchmark(model_name)


__all__ = [
    "BENCHMARK",
    "BENCHMARK_CHAINS",
    "BENCHMARK_CHAINS_DIRECT",
    "BENCHMARK_SETS",
    "BENCHMARK_V1",
    "CARD_CHAINS",
    "CARD_SETS",
    "CARD_V1",
    "CHECKPOINT",
    "CHECKPOINT_CHAINS",
    "CHECKPOINT_SETS",
    "CHECKPOINT_V1",
    "PROFILE",
    "SAES",
    "benchmark_for",
    "score_items",
    "summarize",
]
