"""Named checkpoints: short names (`"workshop"`, `"workshop-v1"`, `"workshop-chains"`) for folders that ship inside
a package.

Each name maps to a `"module:attribute"` string naming a `Path`, imported only when the name is
loaded, so `lens_audio.model` (and `lens_audio.evaluation`) never import the package that ships the
weights. A shipped model may also bundle its benchmark (`bundled_benchmark`). Add your own with
`register_checkpoint("my-model", "my_package.models:CHECKPOINT", benchmark="my_package.models:BENCHMARK")`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

NAMED_CHECKPOINTS: dict[str, str] = {
    "workshop": "lens_audio.workshop:CHECKPOINT",  # the clip-set model organism (default everywhere)
    "workshop-v1": "lens_audio.workshop:CHECKPOINT_V1",  # the first workshop model: one clip per prompt
    "workshop-chains": "lens_audio.workshop:CHECKPOINT_CHAINS",  # four clips, found by number or by content
}

NAMED_BENCHMARKS: dict[str, str] = {
    "workshop": "lens_audio.workshop:BENCHMARK",
    "workshop-v1": "lens_audio.workshop:BENCHMARK_V1",
    "workshop-chains": "lens_audio.workshop.benchmark:chain_benchmark",  # its audio is written on first use
}


def register_checkpoint(name: str, target: str, benchmark: str | None = None) -> None:
    """Make `HookedAudioLM.from_pretrained(name)` load the folder named by `target` ("module:attribute").

    `benchmark` ("module:attribute" naming an MMAU-format JSON, or a function returning its path) is the model's
    bundled benchmark, if any.
    """
    for value in (target, benchmark or ":"):
        if ":" not in value:
            raise ValueError(f"targets must read 'module:attribute', not {value!r}.")
    NAMED_CHECKPOINTS[name] = target
    if benchmark is not None:
        NAMED_BENCHMARKS[name] = benchmark


def _resolve(target: str) -> Path:
    """The path a "module:attribute" target names; an attribute that is a function is called for it (a benchmark
    whose audio is written on first use)."""
    module, attribute = target.split(":")
    value = getattr(importlib.import_module(module), attribute)
    return Path(value() if callable(value) else value)


def bundled_benchmark(model_name: str) -> Path:
    """The benchmark bundled with a named model; other models need a benchmark named explicitly."""
    target = NAMED_BENCHMARKS.get(str(model_name))
    if target is None:
        raise ValueError(
            f"no bundled benchmark for model {str(model_name)!r}: give --benchmark (an MMAU-format JSON such as "
            "mmau-test-mini.json with calibration/dev/test splits); the bundled ones fit only "
            f"{sorted(NAMED_BENCHMARKS)}."
        )
    return _resolve(target)


def named_checkpoint(name: str) -> Path | None:
    """The folder of a registered name (checked to hold a config.json), or None for names not registered."""
    target = NAMED_CHECKPOINTS.get(str(name))
    if target is None:
        return None
    folder = _resolve(target)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"The {name!r} checkpoint is missing from {folder}; rebuild it with `lens-audio workshop train --out "
            f"{folder}` (with the recipe of that model; see `lens-audio workshop train --help`)."
        )
    return folder
