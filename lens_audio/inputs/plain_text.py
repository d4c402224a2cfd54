"""User text stays text: special-token strings inside a question or system prompt are tokenized as plain text.

transformers' processors tokenize the rendered chat as one string, so a question holding `<|im_end|>` closes the
user turn early, and `<|audio_bos|>` or `<|AUDIO|>` adds audio markers with no audio. Here the chat template is
rendered with a sentinel in place of each user text (private-use characters the template passes through
verbatim). The family's processor then runs unchanged, expanding only the audio placeholders the template put
there, and its call of the tokenizer reaches `PlainTextTokenizer`, which puts the user texts back and tokenizes:

- the template's own text is split at every added token (special or not), as the tokenizer itself splits, and
  each added token becomes its id;
- the runs of text between them, user text included, are tokenized with `split_special_tokens=True`, so a
  special-token string inside user text becomes the ordinary tokens of its characters.

For text without special-token strings this gives exactly the processor's ids (a fast tokenizer tokenizes the
runs between added tokens independently too); `make_batch` takes this path only when some user text holds one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

SENTINEL = "\ue000{}\ue001"  # private-use characters: no template or tokenizer gives them a meaning
_SENTINEL = re.compile("\ue000(\\d+)\ue001")
_UNSUPPORTED = ("truncation", "max_length", "stride", "return_overflowing_tokens", "is_split_into_words")
# The audio placeholders and markers of every supported family (Qwen2-Audio and the Qwen2.5-Omni thinker,
# Qwen3-Omni, AudioFlamingo3 and Music Flamingo, Voxtral). Written in user text they are refused, never read as
# text nor as audio slots: the chat template places them itself, one set per clip.
AUDIO_MARKERS = ("<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>", "<|audio_pad|>", "<|audio_start|>", "<|audio_end|>",
                 "<sound>", "[AUDIO]", "[BEGIN_AUDIO]")


def added_tokens(tokenizer: Any) -> list[str]:
    """Every added token's text (special or not), longest first (so the longest match wins, as in tokenizers)."""
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    texts = {token.content for token in decoder.values()} | set(getattr(tokenizer, "all_special_tokens", []))
    return sorted((t for t in texts if t), key=len, reverse=True)


def holds_special_tokens(tokenizer: Any, texts: Sequence[str | None]) -> bool:
    tokens = added_tokens(tokenizer)
    return any(text is not None and any(token in text for token in tokens) for text in texts)


def audio_markers(processor: Any = None) -> tuple[str, ...]:
    """The audio marker texts to refuse in user text: `AUDIO_MARKERS`, plus `processor`'s audio placeholder and its
    tokenizer's added tokens that name audio or sound (a family not listed above)."""
    found = set(AUDIO_MARKERS)
    if processor is not None:
        found.add(getattr(processor, "audio_token", None) or AUDIO_MARKERS[0])
        try:
            found.update(t for t in added_tokens(processor.tokenizer) if "audio" in t.lower() or "sound" in t.lower())
        except Exception:  # a tokenizer without added-token tables (mistral-common's Tekken): the list above
            pass
    return tuple(sorted(found, key=len, reverse=True))


def audio_marker_in(text: Any, markers: Sequence[str] = AUDIO_MARKERS) -> str | None:
    """The first audio marker written in `text` (None if none, or if `text` is not a string)."""
    if not isinstance(text, str) or ("<" not in text and "[" not in text and markers is AUDIO_MARKERS):
        return None  # every listed marker holds "<" or "[": most text is passed over at once
    return next((marker for marker in markers if marker in text), None)


def refuse_audio_markers(processor: Any, questions: Sequence[Any], system_prompt: Any = None, first: int = 0) -> None:
    """Raise naming the question (by index, counted from `first`) or the system prompt holding an audio marker.

    Audio markers in user text are refused, whether its special tokens will be parsed or kept as text: parsed, a
    marker would add an audio slot with no clip; kept as text, the model would read the family's audio markup as
    words. The chat template places one set of markers per clip itself; raw markup goes through `prompt=`.
    """
    markers = audio_markers(processor)
    named = [(f"question {i}", q) for i, q in enumerate(questions, first)] + [("system_prompt", system_prompt)]
    for where, text in named:
        marker = audio_marker_in(text, markers)
        if marker is not None:
            raise ValueError(
                f"{where} contains {marker}, an audio marker; the chat template adds the audio markers itself, one "
                "set per clip, so remove it from the text (or use prompt= for raw text with your own placeholders)."
            )


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of user text (a choice, an answer) with no special tokens added or parsed from it."""
    if holds_special_tokens(tokenizer, [text]):
        return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return tokenizer.encode(text, add_special_tokens=False)


class PlainTextTokenizer:
    """Stands in for `tokenizer` inside a processor call: sentinels become `user_texts`, tokenized as plain text.

    Every other attribute is the tokenizer's own.
    """

    def __init__(self, tokenizer: Any, user_texts: Sequence[str]) -> None:
        self._tokenizer, self._user_texts = tokenizer, list(user_texts)
        tokens = added_tokens(tokenizer)
        self._added = re.compile("(" + "|".join(map(re.escape, tokens)) + ")") if tokens else None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)

    def __call__(self, text: str | list[str], **kwargs: Any) -> Any:
        unsupported = [k for k in _UNSUPPORTED if kwargs.get(k)]
        if unsupported:
            raise ValueError(f"plain-text tokenization does not support {unsupported}; pass "
                             "parse_special_tokens=True to make_batch to tokenize as transformers does.")
        single = isinstance(text, str)
        add_special = kwargs.get("add_special_tokens", True)
        rows = [self.encode_row(t, add_special) for t in ([text] if single else text)]
        padded = self._tokenizer.pad(
            {"input_ids": rows[0] if single else rows},
            padding=kwargs.get("padding", False),
            padding_side=kwargs.get("padding_side"),
            pad_to_multiple_of=kwargs.get("pad_to_multiple_of"),
            return_attention_mask=kwargs.get("return_attention_mask", True),
            return_tensors=kwargs.get("return_tensors"),
        )
        return padded

    def encode_row(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of one rendered prompt: the template's added tokens as ids, all other text as plain text."""
        tok = self._tokenizer
        ids: list[int] = []
        run = ""

        def flush() -> None:
            nonlocal run
            if run:
                ids.extend(tok(run, add_special_tokens=False, split_special_tokens=True)["input_ids"])
            run = ""

        for index, piece in enumerate(_SENTINEL.split(text)):
            if index % 2 == 1:  # a sentinel's number: user text joins the current run, never split at tokens
                run += self._user_texts[int(piece)]
                continue
            for part_index, part in enumerate(self._added.split(piece) if self._added else [piece]):
                if part_index % 2 == 1:
                    flush()
                    ids.append(tok.convert_tokens_to_ids(part))
                else:
                    run += part
        flush()
        return self._with_special_tokens(ids) if add_special_tokens else ids

    def _with_special_tokens(self, ids: list[int]) -> list[int]:
        """`ids` with what the tokenizer adds around a sequence (a BOS, ...): found by encoding one character."""
        tok = self._tokenizer
        bare = tok("a", add_special_tokens=False)["input_ids"]
        full = tok("a", add_special_tokens=True)["input_ids"]
        for start in range(len(full) - len(bare) + 1):
            if full[start : start + len(bare)] == bare:
                return full[:start] + ids + full[start + len(bare) :]
        return ids
