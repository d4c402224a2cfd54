"""`HookedTransformer`'s forward-level helpers for `HookedAudioLM`: `input_to_embed` and `set_use_attn_in`.

`input_to_embed(input)` gives what TransformerLens's gives, `(residual, tokens, shortformer_pos_embed, attention_mask)`,
so `model(residual, start_at_layer=0, attention_mask=mask, tokens=tokens)` finishes the forward. The residual is the
token embeddings with any audio written over its placeholders (`hook_embed` fires); rotary models add no positional
embedding, so `shortformer_pos_embed` is None, as in TransformerLens for rotary models.
"""

from __future__ import annotations

from typing import Any, Literal

from jaxtyping import Float, Int
from torch import Tensor


class UnsupportedSwitchError(AssertionError, ValueError):
    """A TransformerLens switch this model cannot honour: an AssertionError, as TransformerLens raises, and a
    ValueError, as lens_audio raises for bad input."""


class TLForwardMixin:
    """Mixed into `HookedAudioLM`; needs `_unpack_inputs`, `start_decoder` and `cfg`."""

    cfg: Any

    def input_to_embed(
        self,
        input: Any,
        prepend_bos: bool | None = None,
        padding_side: Literal["left", "right"] | None = None,
        attention_mask: Int[Tensor, "batch pos"] | None = None,
        past_kv_cache: Any = None,
        *,
        input_features: Float[Tensor, "clips mels frames"] | None = None,
        feature_attention_mask: Int[Tensor, "clips frames"] | None = None,
    ) -> tuple[Float[Tensor, "batch pos d_model"], Int[Tensor, "batch pos"], None, Int[Tensor, "batch pos"]]:
        """The residual stream entering block 0 of `input` (a string, a list of strings, `[batch, pos]` tokens with
        Hugging Face's audio inputs by keyword, or an `AudioBatch`), with its tokens and attention mask.

        A padded batch needs the mask passed back: `model(residual, attention_mask=mask, start_at_layer=0)`.
        """
        if past_kv_cache is not None:
            raise ValueError(
                "input_to_embed takes no past_kv_cache here: run model(tokens, past_kv_cache=cache) instead (the "
                "cache records the new positions' mask when the blocks run)."
            )
        if isinstance(input, Tensor) and input.ndim == 1:
            input = input[None]  # a [pos] tensor gets a batch dimension, as in TransformerLens
        ids, mask, features, frames_mask = self._unpack_inputs(  # type: ignore[attr-defined]
            input, attention_mask, input_features, feature_attention_mask, prepend_bos, padding_side
        )
        state = self.start_decoder(ids, mask, features, frames_mask)  # type: ignore[attr-defined]
        return state.resid, ids.to(state.resid.device), None, mask.to(state.resid.device)

    def set_use_attn_in(self, use_attn_in: bool) -> None:
        """Fire `blocks.{L}.hook_attn_in`: one copy of the residual stream per head, read by that head's query, key
        and value. Like TransformerLens, refused with grouped-query attention (keys and values are shared by heads)."""
        cfg = self.cfg
        if use_attn_in and cfg.n_key_value_heads != cfg.n_heads:
            raise UnsupportedSwitchError(
                "Can't use attn_in with GroupedQueryAttention, please use split_qkv_input instead: "
                f"model.set_use_split_qkv_input(True) (this model has {cfg.n_key_value_heads} key/value heads for "
                f"{cfg.n_heads} query heads)."
            )
        if use_attn_in and cfg.use_split_qkv_input:
            raise UnsupportedSwitchError(
                "use_attn_in and use_split_qkv_input are exclusive: call model.set_use_split_qkv_input(False) first."
            )
        cfg.use_attn_in = use_attn_in
