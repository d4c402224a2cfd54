"""`HookedTransformer`'s text helpers for `HookedAudioLM`: `to_tokens`, `to_string`, `to_str_tokens`,
`to_single_str_token`, `get_token_position`.

Qwen's tokenizer has no beginning-of-sequence token and transformers prepends none, so by default neither do these
helpers (`cfg.default_prepend_bos` is False), and the logits equal transformers'. `prepend_bos=True` prepends the
tokenizer's `bos_token`, which, as in TransformerLens, is its EOS token when it has no BOS of its own
(`adopt_tokenizer` sets it when a processor is attached, so `model.tokenizer.bos_token_id` is never None). Audio
prompts are built with `model.to_batch(audio, question)`; these helpers are for text.

Lists of strings are padded on `model.tokenizer.padding_side`, which `adopt_tokenizer` sets to "left" (what
`HookedTransformer.set_tokenizer(tokenizer, default_padding_side="left")` does): generation and final-position
readouts need left padding, and TransformerLens's `utils.get_attention_mask(model.tokenizer, tokens, prepend_bos)`
reads the same side. `padding_side=` overrides it per call, as in TransformerLens. Token ids given to `forward`
without an `attention_mask` get TransformerLens's mask (`_infer_attention_mask`): leading pad tokens (trailing, when
padded on the right) are padding, so `model(model.to_tokens(texts))` equals `model(texts)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor


def adopt_tokenizer(cfg: Any, processor: Any) -> None:
    """What `HookedTransformer.set_tokenizer` does to a tokenizer without BOS: its `bos_token` becomes its EOS token
    (tokenization is unchanged: nothing prepends it unless asked). Records `cfg.tokenizer_prepends_bos`."""
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None:
        return
    if getattr(tokenizer, "bos_token", None) is None and getattr(tokenizer, "eos_token", None) is not None:
        tokenizer.bos_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # the side to_tokens pads on, read by TransformerLens's get_attention_mask
    cfg.tokenizer_prepends_bos = len(tokenizer.encode("")) > 0


class TLTextMixin:
    """Mixed into `HookedAudioLM`; needs `self.tokenizer`, `self.cfg` and `self.device`."""

    tokenizer: Any
    cfg: Any
    device: torch.device

    def to_tokens(
        self,
        input: str | Sequence[str],
        prepend_bos: bool | None = None,
        padding_side: Literal["left", "right"] | None = None,
        move_to_device: bool = True,
        truncate: bool = True,
    ) -> Int[Tensor, "batch pos"]:
        """Token ids `[batch, pos]` of a string or a list of strings, padded with the pad token on `padding_side`
        (default `model.tokenizer.padding_side`, "left"); `truncate` cuts each row to `cfg.n_ctx` tokens."""
        return self._tokenize(input, prepend_bos, padding_side, move_to_device, truncate)[0]

    def _tokenize(
        self,
        input: str | Sequence[str],
        prepend_bos: bool | None = None,
        padding_side: Literal["left", "right"] | None = None,
        move_to_device: bool = True,
        truncate: bool = False,
    ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
        """Token ids and attention mask, padded on `padding_side` (default: the tokenizer's, "left")."""
        texts = [input] if isinstance(input, str) else list(input)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"Expected a string or a list of strings, got {input!r}.")
        tok = self.tokenizer
        if self.cfg.default_prepend_bos if prepend_bos is None else prepend_bos:
            if tok.bos_token is None:
                raise ValueError("prepend_bos=True needs a tokenizer with a bos_token (or an eos_token to stand in).")
            texts = [tok.bos_token + text for text in texts]  # a special token's text encodes to its id
        if padding_side not in (None, "left", "right"):
            raise ValueError(f"padding_side must be 'left', 'right' or None (the tokenizer's), not {padding_side!r}.")
        side, tok.padding_side = tok.padding_side, padding_side or tok.padding_side
        limit = {"truncation": True, "max_length": self.cfg.n_ctx} if truncate else {}
        try:
            encoded = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False, **limit)
        finally:
            tok.padding_side = side
        ids, mask = encoded["input_ids"], encoded["attention_mask"]
        return (ids.to(self.device), mask.to(self.device)) if move_to_device else (ids, mask)

    def to_string(self, tokens: "int | Sequence[int] | Int[Tensor, '...']") -> str | list[str]:
        """Decode `[pos]` (or an int) to one string, `[batch, pos]` to a list of strings."""
        tokens = torch.as_tensor(tokens)
        if tokens.ndim == 0:
            tokens = tokens[None]
        if tokens.ndim == 2:
            return [self.tokenizer.decode(row.tolist()) for row in tokens]
        return self.tokenizer.decode(tokens.tolist())

    def to_str_tokens(
        self,
        input: "str | int | Sequence | np.ndarray | Int[Tensor, '...']",
        prepend_bos: bool | None = None,
        padding_side: Literal["left", "right"] | None = None,
    ) -> list[str] | list[list[str]]:
        """One string per token (axis labels), as in TransformerLens: of a string, a `[pos]` or `[1, pos]` tensor or
        array, or an id list; a list of strings (or of tensors) gives one list per element."""
        if isinstance(input, (list, tuple)) and input and not isinstance(input[0], (int, np.integer)):
            return [self.to_str_tokens(item, prepend_bos, padding_side) for item in input]
        if isinstance(input, str):
            tokens = self.to_tokens(input, prepend_bos=prepend_bos, padding_side=padding_side, move_to_device=False)
        else:
            tokens = torch.as_tensor(input)
        if tokens.ndim == 2:
            if tokens.shape[0] != 1:
                raise ValueError(
                    f"to_str_tokens takes one sequence; got a batch of shape {tuple(tokens.shape)}: index a row, or "
                    "pass a list of rows."
                )
            tokens = tokens[0]
        ids = [[t] for t in tokens.reshape(-1).tolist()]
        return self.tokenizer.batch_decode(ids, clean_up_tokenization_spaces=False)

    def _infer_attention_mask(
        self,
        tokens: Int[Tensor, "batch pos"],
        prepend_bos: bool | None = None,
        padding_side: Literal["left", "right"] | None = None,
    ) -> Int[Tensor, "batch pos"]:
        """The mask TransformerLens's forward builds for tokens given without one (`utils.get_attention_mask`): the
        leading pad tokens of each row are padding (the trailing ones with `padding_side="right"`); all ones when the
        tokenizer has no pad token. A first token equal to the pad id is a real BOS only with `prepend_bos`."""
        tok = getattr(getattr(self, "processor", None), "tokenizer", None)  # a model may have no processor
        if tok is None or getattr(tok, "pad_token_id", None) is None:
            return torch.ones_like(tokens)
        from transformer_lens.utilities import get_attention_mask

        prepend_bos = self.cfg.default_prepend_bos if prepend_bos is None else prepend_bos
        return get_attention_mask(tok, tokens, prepend_bos, padding_side or tok.padding_side)

    def to_single_str_token(self, int_token: int) -> str:
        """The string of one token id."""
        if isinstance(int_token, bool) or not isinstance(int_token, (int, np.integer)):
            raise ValueError(f"to_single_str_token takes one int token id, not {int_token!r}.")
        return self.to_str_tokens([int(int_token)])[0]

    def get_token_position(
        self,
        single_token: str | int,
        input: "str | Sequence[int] | Int[Tensor, '...']",
        mode: Literal["first", "last"] = "first",
    ) -> int:
        """Index of the first (or last) occurrence of `single_token` in `input` (a string or a `[pos]`/`[1, pos]`
        tensor)."""
        token = self.to_single_token(single_token) if isinstance(single_token, str) else int(single_token)
        tokens = self.to_tokens(input)[0] if isinstance(input, str) else torch.as_tensor(input).reshape(-1)
        where = (tokens == token).nonzero()[:, 0]
        if len(where) == 0:
            raise ValueError(f"Token {single_token!r} ({token}) does not occur in the input.")
        if mode not in ("first", "last"):
            raise ValueError(f"mode must be 'first' or 'last', not {mode!r}.")
        return int(where[0] if mode == "first" else where[-1])
