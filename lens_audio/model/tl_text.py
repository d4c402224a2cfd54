"""`HookedTransformer`'s text helpers for `HookedAudioLM`: `to_tokens`, `to_string`, `to_str_tokens`,
`get_token_position`.

Qwen's tokenizer has no beginning-of-sequence token and transformers prepends none, so neither do these helpers
(`prepend_bos` is accepted for TransformerLens code and must not be True). Audio prompts are built with
`model.to_batch(audio, question)`; these helpers are for text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from jaxtyping import Int
from torch import Tensor


class TLTextMixin:
    """Mixed into `HookedAudioLM`; needs `self.tokenizer` and `self.device`."""

    tokenizer: Any
    device: torch.device

    def to_tokens(
        self,
        input: str | Sequence[str],
        prepend_bos: bool | None = None,
        padding_side: Literal["left", "right"] | None = None,
        move_to_device: bool = True,
    ) -> Int[Tensor, "batch pos"]:
        """Token ids `[batch, pos]` of a string or a list of strings (padded with the pad token on `padding_side`)."""
        return self._tokenize(input, prepend_bos, padding_side, move_to_device)[0]

    def _tokenize(
        self,
        input: str | Sequence[str],
        prepend_bos: bool | None = None,
        padding_side: Literal["left", "right"] | None = None,
        move_to_device: bool = True,
    ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
        """Token ids and attention mask (left padding by default, as generation needs)."""
        if prepend_bos:
            raise ValueError("Qwen's tokenizer has no BOS token and transformers prepends none: drop prepend_bos=True.")
        texts = [input] if isinstance(input, str) else list(input)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"Expected a string or a list of strings, got {input!r}.")
        tok = self.tokenizer
        side, tok.padding_side = tok.padding_side, padding_side or "left"
        try:
            encoded = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
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

    def to_str_tokens(self, input: "str | int | Sequence[int] | Int[Tensor, '...']") -> list[str]:
        """One string per token of a string, an id list, a `[pos]` tensor or a `[1, pos]` tensor (axis labels)."""
        if isinstance(input, str):
            input = self.to_tokens(input)
        tokens = torch.as_tensor(input)
        if tokens.ndim == 2:
            if tokens.shape[0] != 1:
                raise ValueError(
                    f"to_str_tokens takes one sequence; got a batch of shape {tuple(tokens.shape)}: index a row."
                )
            tokens = tokens[0]
        return [self.tokenizer.decode([int(t)]) for t in tokens.reshape(-1)]

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
