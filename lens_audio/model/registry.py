"""Named checkpoints: short names (`"workshop"`, `"workshop-v1"`) for folders that ship inside a package.

Each name maps to a `"module:attribute"` string naming a `Path`, imported only when the name is
loaded, so `lens_audio.model` never imports the package that ships the weights. Add your own
with `register_checkpoint("my-model", "my_package.models:CHECKPOINT")`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

NAMED_CHECKPOINTS: dict[str, str] = {
    "workshop": "lens_audio.workshop:CHECKPOINT",  # the clip-set model organism (default everywhere)
    "workshop-v1": "lens_audio.workshop:CHECKPOINT_V1",  # the first workshop model: one clip per prompt
}


def register_checkpoint(name: str, target: str) -> None:
    """Make `HookedAudioLM.from_pretrained(name)` load the folder named by `target` ("module:attribute")."""
    if ":" not in target:
        raise ValueError(f"target must read 'module:attribute', not {target!r}.")
    NAMED_CHECKPOINTS[name] = target


def named_checkpoint(name: str) -> Path | None:
    """The folder of a registered name (checked to hold a config.json), or None for names not registered."""
    target = NAMED_CHECKPOINTS.get(str(name))
    if target is None:
        return None
    module, attribute = target.split(":")
    folder = Path(getattr(importlib.import_module(module), attribute))
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"The {name!r} checkpoint is missing from {folder}; rebuild it with `lens-audio workshop train --out {folder}`."
        )
    return folder
