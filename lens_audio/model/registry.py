"""The one registry of named models: a short name (`"workshop"`, `"workshop-chains"`) -> a `ModelEntry` holding its
checkpoint, its bundled benchmark, its experiment profile and its model card.

Every field is a `"module:attribute"` string, imported only when that field is asked for, so `lens_audio.model` (and
the harness) never import the package that ships the weights or defines the profile. Providers register their own
entries: the shipped organisms register theirs when `lens_audio.organisms` is imported, which the registry does on
its first lookup (`PROVIDERS`). One name maps to one entry, so a checkpoint cannot lose its profile or benchmark; an
entry with no profile uses the default (`lens_audio.paper.profile.profile_for` says so in one line).

Add your own:

    register_model(ModelEntry("my-model", checkpoint="my_pkg.models:CHECKPOINT",
                              benchmark="my_pkg.models:BENCHMARK", profile="my_pkg.models:PROFILE"))
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Packages that register entries when imported; imported (once) on the first lookup.
PROVIDERS: tuple[str, ...] = ("lens_audio.organisms",)
_ENTRIES: dict[str, ModelEntry] = {}
_loaded_providers: set[str] = set()


@dataclass(frozen=True)
class ModelEntry:
    """A named model. `checkpoint`: a folder holding config.json; `benchmark`: an MMAU-format JSON (or a function
    returning its path, for benchmarks whose audio is written on first use); `profile`: its `ExperimentProfile`;
    `card`: its model card (a README.md with YAML metadata). Each is a "module:attribute" string."""

    name: str
    checkpoint: str
    benchmark: str | None = None
    profile: str | None = None
    card: str | None = None

    def __post_init__(self) -> None:
        for field in ("checkpoint", "benchmark", "profile", "card"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, str) or value.count(":") != 1):
                raise ValueError(f"ModelEntry.{field} must read 'module:attribute', not {value!r}.")


def register_model(entry: ModelEntry) -> None:
    """Make `entry.name` resolve everywhere: `HookedAudioLM.from_pretrained`, the bundled benchmark, the profile."""
    if not isinstance(entry, ModelEntry):
        raise TypeError(f"register_model takes a ModelEntry, not {type(entry).__name__}.")
    _ENTRIES[entry.name] = entry


def _load_providers() -> None:
    for provider in PROVIDERS:
        if provider not in _loaded_providers:
            _loaded_providers.add(provider)
            importlib.import_module(provider)


def model_entry(name: Any) -> ModelEntry | None:
    """The entry registered under `name`, or None."""
    _load_providers()
    return _ENTRIES.get(str(name))


def registered_names() -> list[str]:
    _load_providers()
    return sorted(_ENTRIES)


def resolve(target: str) -> Any:
    """The object a "module:attribute" string names."""
    module, attribute = target.split(":")
    return getattr(importlib.import_module(module), attribute)


def register_checkpoint(name: str, target: str, benchmark: str | None = None) -> None:
    """Make `HookedAudioLM.from_pretrained(name)` load the folder named by `target` ("module:attribute"), keeping the
    rest of an existing entry (`register_model` registers a whole entry)."""
    old = _ENTRIES.get(name)
    changes = {"checkpoint": target} | ({"benchmark": benchmark} if benchmark is not None else {})
    register_model(dataclasses.replace(old, **changes) if old else ModelEntry(name, **changes))


def bundled_benchmark(model_name: Any) -> Path:
    """The benchmark bundled with a named model; other models need a benchmark named explicitly."""
    entry = model_entry(model_name)
    if entry is None or entry.benchmark is None:
        shipped = [n for n in registered_names() if _ENTRIES[n].benchmark]
        raise ValueError(
            f"no bundled benchmark for model {str(model_name)!r}: give --benchmark (an MMAU-format JSON such as "
            f"mmau-test-mini.json with calibration/dev/test splits); the bundled ones fit only {shipped}."
        )
    value = resolve(entry.benchmark)
    return Path(value() if callable(value) else value)


def named_checkpoint(name: Any) -> Path | None:
    """The folder of a registered name (checked to hold a config.json), or None for names not registered."""
    entry = model_entry(name)
    if entry is None:
        return None
    folder = Path(resolve(entry.checkpoint))
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"The {name!r} checkpoint is missing from {folder}; rebuild it with `lens-audio workshop train --out "
            f"{folder}` (with the recipe of that model; see `lens-audio workshop train --help`)."
        )
    return folder


def model_card(name: Any) -> Path | None:
    """The model card (README.md) of a registered model, or None."""
    entry = model_entry(name)
    return None if entry is None or entry.card is None else Path(resolve(entry.card))
