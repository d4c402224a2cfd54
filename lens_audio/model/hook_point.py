"""TransformerLens's `HookPoint`, with a `layer()` that also works on the audio encoder's hooks, and name filters.

`HookedAudioLM` has two stacks of blocks: the decoder's `blocks.{L}.*` (TransformerLens's names) and the audio
encoder's `audio.blocks.{L}.*`. A TransformerLens filter such as `lambda name: name.endswith("pattern")` matches
both; on a text-only prompt the encoder does not run, so its hooks never fire, but on an audio prompt they do.
`hook.layer()` gives the block index in either stack and `hook.is_audio` says which; wrap a filter in
`decoder_only` (or `audio_only`) to keep one stack. `block_hook_name(layer, site)` spells a decoder hook's name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from transformer_lens.hook_points import HookPoint as _TLHookPoint

if TYPE_CHECKING:
    from lens_audio.model.hooked_audio_lm import HookedAudioLM

_LAYER = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def block_hook_name(layer: int, site: str) -> str:
    """The decoder hook `site` of block `layer`: `block_hook_name(3, "attn.hook_z") == "blocks.3.attn.hook_z"`.

    `site` is the name inside the block, as in the hook table ("hook_resid_post", "attn.hook_result", ...).
    TransformerLens's `get_act_name("z", 3)` gives the same names from its short site names.
    """
    return f"blocks.{layer}.{site}"


def site_hook_names(model: "HookedAudioLM", layers: Sequence[int], site: str) -> list[str]:
    """`block_hook_name(L, site)` for each of `layers`, refused with the fix when the model has no such hook."""
    names = [block_hook_name(layer, site) for layer in layers]
    unknown = [n for n in names if n not in model.hook_dict]
    if unknown:
        raise ValueError(
            f"no hook point {unknown[0]!r}: layers must be in 0-{model.cfg.n_layers - 1} and site a block hook such "
            "as 'hook_resid_post'."
        )
    return names


def block_input_hook_name(layer: int) -> str:
    """The hook whose value enters block `layer` before its own `hook_resid_pre` fires: the previous block's
    `hook_resid_post`, or `hook_embed` for block 0. Restart a forward there with `run_blocks(state, layer)` and
    every hook from `blocks.{layer}.hook_resid_pre` on fires once, as in a whole forward."""
    return "hook_embed" if layer == 0 else block_hook_name(layer - 1, "hook_resid_post")


class HookPoint(_TLHookPoint):
    def layer(self) -> int:
        """The block index: 3 for `blocks.3.attn.hook_pattern` and for `audio.blocks.3.attn.hook_pattern`."""
        match = _LAYER.search(self.name or "")
        if match is None:
            raise ValueError(f"Hook {self.name!r} is not inside a block, so it has no layer.")
        return int(match.group(1))

    @property
    def is_audio(self) -> bool:
        """True for the audio encoder's hooks (names starting with `audio.`)."""
        return (self.name or "").startswith("audio.")


def names_predicate(names_filter: "str | Sequence[str] | Callable[[str], bool] | None") -> Callable[[str], bool]:
    """TransformerLens's `names_filter` (a name, names or a predicate) as a predicate; None: every hook but the
    per-head `attn.hook_result` (`run_with_cache`'s default)."""
    if names_filter is None:  # as run_with_cache's own default: every hook but the per-head outputs (n_heads times
        return lambda name: not name.endswith("attn.hook_result")  # the residual stream; ask for them by name)
    if isinstance(names_filter, str):
        return lambda name: name == names_filter
    if callable(names_filter):
        return names_filter
    names = set(names_filter)
    return lambda name: name in names


def decoder_only(names_filter: "str | Sequence[str] | Callable[[str], bool] | None" = None) -> Callable[[str], bool]:
    """A names filter matching what `names_filter` matches among the decoder's hooks (not the audio encoder's); with
    none, every decoder hook but the per-head `attn.hook_result` (as `run_with_cache` without a filter)."""
    keep = names_predicate(names_filter)
    return lambda name: not name.startswith("audio.") and keep(name)


def audio_only(names_filter: "str | Sequence[str] | Callable[[str], bool] | None" = None) -> Callable[[str], bool]:
    """A names filter matching what `names_filter` matches among the audio encoder's hooks (with none, all but the
    per-head `attn.hook_result`)."""
    keep = names_predicate(names_filter)
    return lambda name: name.startswith("audio.") and keep(name)
