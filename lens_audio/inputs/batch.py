"""`AudioBatch`: prompts with their audio, tokenised by the model's own processor, ready for `HookedAudioLM`.

A batch carries what the model takes (`input_ids`, `attention_mask`,
`input_features`, `feature_attention_mask`) and what analyses need on top:
where each clip's audio tokens sit, the final prompt position (the one that
predicts the first answer token), the 16 kHz waveforms, and the rendered
prompt texts from which `silence_twin()` rebuilds the same batch with
all-zero audio of the same durations (identical token layout).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from lens_audio.inputs import voxtral
from lens_audio.inputs.audio import (
    TARGET_SAMPLE_RATE,
    AudioError,
    AudioSource,
    fit_to_window,
    is_number_list,
    load_audio,
    refuse_too_short,
)
from lens_audio.inputs.plain_text import SENTINEL, PlainTextTokenizer, holds_special_tokens, refuse_audio_markers

AUDIO_PLACEHOLDER = "<|AUDIO|>"


@dataclass
class AudioBatch:
    """A padded batch of audio prompts; pass it whole to `model(batch)`, `run_with_cache(batch)`, `generate(batch)`."""

    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    input_features: Float[Tensor, "clips mels frames"] | None
    feature_attention_mask: Int[Tensor, "clips frames"] | None
    audio_spans: list[list[tuple[int, int]]]  # per example, per clip: [start, end) token positions
    waveforms: list[list[np.ndarray]] = field(repr=False)  # per example, per clip: 16 kHz mono
    texts: list[str] = field(repr=False)  # rendered prompts, placeholders not yet expanded
    padding_side: str = "left"
    processor: Any = field(default=None, repr=False, compare=False)

    @property
    def batch_size(self) -> int:
        return self.input_ids.shape[0]

    @property
    def shape(self) -> torch.Size:
        """`[batch, pos]` of the token ids: TransformerLens's patching functions read it from their tokens
        argument, so they take an `AudioBatch` as the corrupted input."""
        return self.input_ids.shape

    @property
    def ndim(self) -> int:
        """2, as for `[batch, pos]` token ids (TransformerLens 4.x's attribution tools check it)."""
        return self.input_ids.ndim

    def __getitem__(self, rows: int | slice) -> "AudioBatch":
        """The examples `rows` (an index or a slice) with their own clips, as a batch: TransformerLens 4.x's
        attribution tools take `clean[i : i + 1]` from their inputs."""
        keep = list(range(self.batch_size))[rows] if isinstance(rows, slice) else [range(self.batch_size)[rows]]
        first_clip = np.cumsum([0] + [len(spans) for spans in self.audio_spans]).tolist()
        clips = [c for i in keep for c in range(first_clip[i], first_clip[i + 1])]
        if self.input_features is not None and self.input_features.shape[0] != first_clip[-1]:
            raise ValueError(
                f"this batch has {self.input_features.shape[0]} feature rows for {first_clip[-1]} clips, so its rows "
                "cannot be taken apart; build one batch per example instead."
            )

        def pick(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[clips]

        return replace(
            self, input_ids=self.input_ids[keep], attention_mask=self.attention_mask[keep],
            input_features=pick(self.input_features), feature_attention_mask=pick(self.feature_attention_mask),
            audio_spans=[self.audio_spans[i] for i in keep], waveforms=[self.waveforms[i] for i in keep],
            texts=[self.texts[i] for i in keep],
        )

    @property
    def audio_mask(self) -> Bool[Tensor, "batch pos"]:
        """True at every audio-token position."""
        mask = torch.zeros(self.input_ids.shape, dtype=torch.bool, device=self.input_ids.device)
        for row, spans in enumerate(self.audio_spans):
            for start, end in spans:
                mask[row, start:end] = True
        return mask

    @property
    def final_position(self) -> Int[Tensor, " batch"]:
        """Index of each row's last real token: the position that predicts the first answer token."""
        positions = torch.arange(self.input_ids.shape[1], device=self.input_ids.device)
        return (positions * self.attention_mask.bool()).max(dim=1).values

    def require_audio(self, analysis: str) -> None:
        """Refuse a batch with an example that holds no audio tokens: `analysis` would silently give zeros."""
        empty = [row for row, spans in enumerate(self.audio_spans) if not spans]
        if empty:
            raise ValueError(
                f"{analysis} needs audio, but example(s) {empty} of this batch hold no audio tokens; "
                "build the batch with a clip for every example (model.to_batch(audio, question))."
            )

    def model_inputs(self) -> dict[str, Tensor | None]:
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "input_features": self.input_features,
            "feature_attention_mask": self.feature_attention_mask,
        }

    def to(self, device: str | torch.device) -> "AudioBatch":
        moved = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in self.model_inputs().items()}
        return replace(self, **moved)

    def silence_twin(self) -> "AudioBatch":
        """The same prompts with all-zero audio of the same durations: same tokens, same audio positions.

        No feature extraction runs: every silent clip, zero-padded to the processor's window, is the same
        all-zero waveform, so its log-mel features are one fixed `[mels, frames]` block (computed once per
        feature extractor); the clips keep their own `feature_attention_mask`. Tensors stay on the batch's device.
        """
        silent = [[np.zeros_like(w) for w in clips] for clips in self.waveforms]
        features = self.input_features
        if features is not None:
            block = silent_features(self.processor.feature_extractor).to(device=features.device, dtype=features.dtype)
            # processors that pad to the longest clip (Qwen3-Omni's) give fewer frames than the window: silence is
            # the same log-mel in every frame, so the block's first frames are those features
            features = block[..., : features.shape[-1]].expand_as(features).clone()
        return replace(self, input_features=features, waveforms=silent)

    @staticmethod
    def concat(batches: Sequence["AudioBatch"]) -> "AudioBatch":
        """Stack batches of one token width along the batch axis (e.g. a batch and its silence twin for one forward)."""
        first = batches[0]
        if any(
            b.input_ids.shape[1] != first.input_ids.shape[1] or b.padding_side != first.padding_side for b in batches
        ):
            raise ValueError(
                "AudioBatch.concat needs batches of equal token width and padding side (e.g. a batch and its silence "
                "twin)."
            )

        def cat(name: str) -> Tensor | None:
            parts = [getattr(b, name) for b in batches]
            return None if any(p is None for p in parts) else torch.cat([p.to(parts[0].device) for p in parts])

        return replace(
            first,
            **{name: cat(name) for name in first.model_inputs()},
            audio_spans=[s for b in batches for s in b.audio_spans],
            waveforms=[w for b in batches for w in b.waveforms],
            texts=[t for b in batches for t in b.texts],
        )


_SILENT_FEATURES: "weakref.WeakKeyDictionary[Any, Tensor]" = weakref.WeakKeyDictionary()


def silent_features(feature_extractor: Any) -> Float[Tensor, "mels frames"]:
    """Log-mel features of an all-zero window, as `feature_extractor` computes them (cached per extractor)."""
    if feature_extractor not in _SILENT_FEATURES:
        zeros = np.zeros(int(feature_extractor.n_samples), dtype=np.float32)
        out = feature_extractor(zeros, sampling_rate=TARGET_SAMPLE_RATE, return_tensors="pt", padding="max_length")
        _SILENT_FEATURES[feature_extractor] = out["input_features"][0]
    return _SILENT_FEATURES[feature_extractor]


def make_batch(
    processor: Any,
    audio: AudioSource | Sequence[Any],
    question: str | Sequence[str] | None = None,
    *,
    prompt: str | Sequence[str] | None = None,
    system_prompt: str | None = None,
    sampling_rate: int | None = None,
    padding_side: str = "left",
    on_long: str = "truncate",
    parse_special_tokens: bool = False,
) -> AudioBatch:
    """Build an `AudioBatch` through the model's `Qwen2AudioProcessor`.

    One example: `make_batch(proc, "dog.wav", "What animal is this?")`; its
    clips may be a list. Several: a list of questions and a matching list of
    audio, each item one clip or a list of clips. `question` goes through the
    chat template (one `Audio i:` line per clip, then the question;
    `system_prompt` replaces the default system message). `prompt` instead
    is raw text holding one audio placeholder per clip (`processor.audio_token`: Qwen2-Audio's `<|AUDIO|>`,
    e.g. for base models `"<|audio_bos|><|AUDIO|><|audio_eos|>Generate the caption in English:"`;
    AudioFlamingo3's `<sound>`; Voxtral's `[AUDIO]` after `[BEGIN_AUDIO]`). The processor is the model
    family's (see `lens_audio.inputs.offline_processor`), which expands each placeholder into its audio tokens.
    A released Voxtral checkpoint's processor (transformers' `VoxtralProcessor` over mistral-common's Tekken)
    renders `question=` through its own chat template (`lens_audio.inputs.voxtral`) and takes no raw `prompt=`.
    Arrays need `sampling_rate`; everything is resampled to 16 kHz mono.
    Batches are left-padded by default, as generation needs.

    `question` and `system_prompt` are user text: an audio marker inside them (`<|AUDIO|>`, `<|audio_bos|>`,
    `<sound>`, `[AUDIO]`, ...: `plain_text.audio_markers`) is refused naming the question or the system prompt,
    and any other special-token string (`<|im_end|>`, ...) is tokenized as the plain characters it is made of
    (`lens_audio.inputs.plain_text`), so it cannot end the user turn. `parse_special_tokens=True` tokenizes them as
    transformers' processor does (special-token strings become control tokens). A raw `prompt=` is markup: its
    special tokens are always parsed.
    """
    if processor is None:
        raise ValueError(
            "No processor: load the model from a folder with processor files (Voxtral's tekken.json needs "
            f"`{voxtral.INSTALL_HINT}`), or pass the family's processor (e.g. AutoProcessor.from_pretrained(folder))."
        )
    if (question is None) == (prompt is None):
        raise ValueError(
            "Give exactly one of question= (chat template) or prompt= (raw text with <|AUDIO|> placeholders)."
        )
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', not {padding_side!r}.")
    text = question if question is not None else prompt
    single = isinstance(text, str)
    texts = [text] if single else list(text)
    if question is not None:
        refuse_audio_markers(processor, texts, system_prompt)
    clips_per_example = [_as_clip_list(audio)] if single else _per_example(audio, len(texts))
    waveforms = [
        [_prepare_clip(processor, clip, sampling_rate, _clip_name(clip, i, j), on_long) for j, clip in enumerate(clips)]
        for i, clips in enumerate(clips_per_example)
    ]
    tokenizer = processor.tokenizer
    previous_side, tokenizer.padding_side = tokenizer.padding_side, padding_side
    try:
        if voxtral.is_tekken_processor(processor):
            if question is None:
                raise ValueError(
                    "Voxtral's released tokenizer (mistral-common's Tekken) reads no special tokens from raw text, so "
                    "prompt= cannot hold [BEGIN_AUDIO][AUDIO] placeholders; pass question= (its chat template)."
                )
            encoded, rendered = voxtral.encode(processor, texts, waveforms, system_prompt)
        else:
            rendered = _render(processor, question, prompt, texts, waveforms, system_prompt, parse_special_tokens)
            flat = [w for clips in waveforms for w in clips]
            kwargs = {"audio": flat, "sampling_rate": TARGET_SAMPLE_RATE} if flat else {}
            # Padding is the text's only: each family's processor pads its audio features itself.
            text_kwargs = {"padding": True, "padding_side": padding_side}
            user = [*texts, *([system_prompt] if system_prompt is not None else [])]
            if question is not None and not parse_special_tokens and holds_special_tokens(tokenizer, user):
                marked = _render_marked(processor, texts, waveforms, system_prompt)
                with _tokenizer_replaced(processor, PlainTextTokenizer(tokenizer, user)):
                    encoded = processor(text=marked, return_tensors="pt", text_kwargs=text_kwargs, **kwargs)
            else:
                encoded = processor(text=rendered, return_tensors="pt", text_kwargs=text_kwargs, **kwargs)
    finally:
        tokenizer.padding_side = previous_side
    input_ids = encoded["input_ids"]
    audio_spans = [_spans(row == processor.audio_token_id) for row in input_ids]
    _check_splice(audio_spans, waveforms)
    return AudioBatch(
        input_ids=input_ids,
        attention_mask=encoded["attention_mask"],
        input_features=encoded.get("input_features"),
        feature_attention_mask=encoded.get("feature_attention_mask", encoded.get("input_features_mask")),
        audio_spans=audio_spans,
        waveforms=waveforms,
        texts=rendered,
        padding_side=padding_side,
        processor=processor,
    )


def _render(processor: Any, question: Any, prompt: Any, texts: list[str], waveforms: list[list[np.ndarray]],
            system_prompt: str | None, parse_special_tokens: bool = True) -> list[str]:
    """The prompts' text with one placeholder per clip: the chat template's, or the raw prompts checked."""
    if question is not None:
        return [render_chat(processor, q, len(w), system_prompt, i, refuse_placeholder=parse_special_tokens)
                for i, (q, w) in enumerate(zip(texts, waveforms))]
    placeholder = getattr(processor, "audio_token", AUDIO_PLACEHOLDER)
    for i, (p, w) in enumerate(zip(texts, waveforms)):
        if p.count(placeholder) != len(w):
            raise ValueError(
                f"prompt {i} holds {p.count(placeholder)} {placeholder} placeholder(s) but has "
                f"{len(w)} clip(s); put one {placeholder} per clip (Qwen2-Audio: inside "
                "<|audio_bos|>...<|audio_eos|>)."
            )
    return texts


def render_chat(processor: Any, question: str, n_clips: int, system_prompt: str | None = None, index: int = 0,
                refuse_placeholder: bool = True) -> str:
    """The chat-template text of one user turn: one `Audio i:` placeholder line per clip, then `question`.

    With `refuse_placeholder`, a question or system prompt holding an audio marker is refused
    (`plain_text.refuse_audio_markers`): parsed, it would add an audio slot with no clip.
    """
    if refuse_placeholder:
        refuse_audio_markers(processor, [question], system_prompt, first=index)
    messages: list[dict[str, Any]] = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    content = [{"type": "audio", "audio_url": f"clip-{j}"} for j in range(n_clips)] + [
        {"type": "text", "text": question}
    ]
    messages.append({"role": "user", "content": content})
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def _render_marked(processor: Any, texts: list[str], waveforms: list[list[np.ndarray]],
                   system_prompt: str | None) -> list[str]:
    """The chat texts with a sentinel for each user text (questions 0..n-1, then the system prompt as n)."""
    system = None if system_prompt is None else SENTINEL.format(len(texts))
    marked = [render_chat(processor, SENTINEL.format(i), len(w), system, i) for i, w in enumerate(waveforms)]
    for i, text in enumerate(marked):
        wanted = [SENTINEL.format(i)] + ([system] if system is not None else [])
        if any(text.count(s) != 1 for s in wanted):
            raise ValueError(
                "this processor's chat template changes the user text it is given, so it cannot be kept as plain "
                "text; pass parse_special_tokens=True (special-token strings in it then become control tokens)."
            )
    return marked


@contextlib.contextmanager
def _tokenizer_replaced(processor: Any, tokenizer: Any) -> Iterator[None]:
    original = processor.tokenizer
    processor.tokenizer = tokenizer
    try:
        yield
    finally:
        processor.tokenizer = original


def _check_splice(audio_spans: list[list[tuple[int, int]]], waveforms: list[list[np.ndarray]]) -> None:
    """Every example holds exactly one run of audio tokens per clip: the placeholders the template put there."""
    for row, (spans, clips) in enumerate(zip(audio_spans, waveforms)):
        if len(spans) != len(clips):
            raise ValueError(
                f"example {row} holds {len(spans)} run(s) of audio tokens for {len(clips)} clip(s); its text adds or "
                "merges audio placeholders (with parse_special_tokens=True or a raw prompt=, special-token strings "
                "in the text are parsed)."
            )


def _prepare_clip(processor: Any, clip: AudioSource, sampling_rate: int | None, label: str, on_long: str) -> np.ndarray:
    """One clip as the model will see it: 16 kHz mono, cut to the audio window, long enough for one audio token."""
    extractor = processor.feature_extractor
    waveform = fit_to_window(load_audio(clip, sampling_rate, name=label), int(extractor.n_samples), label, on_long)
    return refuse_too_short(waveform, int(extractor.hop_length), label)


def _as_clip_list(audio: Any, example: int = 0) -> list[AudioSource]:
    if is_number_list(audio):
        raise AudioError(
            f"example {example}: its audio is a Python list of {len(audio)} numbers, which would be read as that many "
            "clips; pass the samples as a numpy array, np.asarray(samples, dtype=np.float32), with sampling_rate=."
        )
    if isinstance(audio, (list, tuple)):
        return list(audio)
    return [audio]


def _per_example(audio: Any, n_examples: int) -> list[list[AudioSource]]:
    if not isinstance(audio, (list, tuple)) or len(audio) != n_examples:
        got = len(audio) if isinstance(audio, (list, tuple)) else "one clip"
        raise ValueError(
            f"{n_examples} questions/prompts need a list of {n_examples} audio items (one clip or a list of clips "
            f"each); got {got}."
        )
    return [_as_clip_list(item, i) for i, item in enumerate(audio)]


def _clip_name(clip: Any, example: int, index: int) -> str:
    if isinstance(clip, (np.ndarray, torch.Tensor)):
        return f"example {example}, clip {index} (array)"
    return str(clip) if isinstance(clip, (str, Path)) else f"example {example}, clip {index} ({type(clip).__name__})"


def _spans(is_audio: Bool[Tensor, " pos"]) -> list[tuple[int, int]]:
    """Contiguous runs of True: one per clip."""
    flags = is_audio.tolist()
    spans, start = [], None
    for pos, flag in enumerate(flags + [False]):
        if flag and start is None:
            start = pos
        elif not flag and start is not None:
            spans.append((start, pos))
            start = None
    return spans
