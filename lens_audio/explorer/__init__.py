"""Listen while you look: one prompt's clips, spectrograms, every head's attention over time, and steering,
interactively.

`explore(model, item_or_batch)` returns a JupyterLab widget; `explore_page(model, item_or_batch, "page.html")`
(or `lens-audio explore --item ID --out page.html`) writes the same explorer as one self-contained HTML page.
Computing (`data.py`, one forward of the prompt and its silence twin) is separate from viewing
(`charts.py` shared by `widget.py` and `page.py` + `page.js`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lens_audio.explorer.data import ClipView, ExplorerData, explorer_data

if TYPE_CHECKING:
    from lens_audio.explorer.widget import Explorer
    from lens_audio.inputs.batch import AudioBatch
    from lens_audio.model.hooked_audio_lm import HookedAudioLM


def explore(
    model: "HookedAudioLM",
    item_or_batch: "dict[str, Any] | AudioBatch",
    *,
    prompt: str | Callable[[dict[str, Any]], str] | None = None,
    options: Sequence[str] | None = None,
    head: tuple[int, int] | None = None,
    beta: float = 0.0,
    layers: Sequence[int] | None = None,
) -> "Explorer":
    """The notebook explorer of one MMAU-format item (or a one-example `AudioBatch`); display it in a cell.

    `prompt`: the item's template (default: the model's profile); `options`: answer options for a bare batch
    (default: the model's top next tokens); `head`, `beta`, `layers`: the controls' starting values
    (default: the head with the most final-token attention on the asked clip, `charts.DEFAULT_HEAD_RULE`; no
    push; a direction from every layer).
    """
    from lens_audio.explorer.widget import Explorer

    return Explorer(explorer_data(model, item_or_batch, prompt, options), head, beta, layers)


def explore_page(
    model: "HookedAudioLM",
    item_or_batch: "dict[str, Any] | AudioBatch",
    path: str | Path,
    *,
    prompt: str | Callable[[dict[str, Any]], str] | None = None,
    options: Sequence[str] | None = None,
    head: tuple[int, int] | None = None,
    beta: float = 0.0,
    layers: Sequence[int] | None = None,
) -> Path:
    """Write the explorer as one self-contained HTML page (no server, no network); returns its path."""
    from lens_audio.explorer.page import write_page

    return write_page(explorer_data(model, item_or_batch, prompt, options), path, head, beta, layers)


__all__ = ["ClipView", "ExplorerData", "explore", "explore_page", "explorer_data"]
