"""What the explorer shows about one prompt, computed once: attention of every head, residuals for steering, clips.

`explorer_data(model, item_or_batch)` runs ONE forward of the prompt and its silence twin (a batch of two
rows) through `listening_signal` with every head's final-row attention kept, while a hook keeps each
layer's `resid_post` at the final prompt position. Everything the controls need afterwards is a slice
or a small product of what that forward left:

- a head's attention over the clips' time axis and over the prompt's text tokens: a row of `rows`;
- the adaptive direction of any set of source layers: the mean over those layers of
  (resid_post with audio - resid_post with silence) at the final position, as `adaptive_direction`;
- the option probabilities under steering strength beta: since steering adds `beta * direction` to the
  last block's `resid_post` at the final position, the steered next-token logits are
  `unembed(ln_final(h_final + beta * direction))`, with no new forward.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import soundfile as sf
import torch
from jaxtyping import Float
from torch import Tensor

from lens_audio.analysis.listening import listening_signal
from lens_audio.analysis.steering.push import checked_push, steered
from lens_audio.inputs.audio import TARGET_SAMPLE_RATE
from lens_audio.inputs.batch import AudioBatch
from lens_audio.inputs.plain_text import encode_text
from lens_audio.model.dispatch import materialized
from lens_audio.model.hook_point import block_hook_name

if TYPE_CHECKING:
    from lens_audio.model.hooked_audio_lm import HookedAudioLM

ITEM_KEYS = ("id", "question", "choices", "answer", "hint", "hinted_choice", "target_clip", "sub-category", "task")
TOP_TOKENS = 5  # options shown for a bare batch: the model's most likely next tokens


@dataclass
class ClipView:
    """One clip of the prompt: its waveform, log-mel spectrogram and where its audio tokens sit."""

    waveform: np.ndarray  # 16 kHz mono, as the model heard it
    mel: np.ndarray  # [mels, frames], the model's input features
    frame_seconds: float
    span: tuple[int, int]  # [start, end) audio-token positions in the prompt

    @property
    def seconds(self) -> float:
        return self.mel.shape[1] * self.frame_seconds

    @property
    def token_times(self) -> np.ndarray:
        """Centre of each audio token's stretch of the clip, in seconds."""
        n = self.span[1] - self.span[0]
        return (np.arange(n) + 0.5) * self.seconds / n

    def wav_bytes(self) -> bytes:
        buffer = io.BytesIO()
        sf.write(buffer, np.clip(self.waveform, -1, 1), TARGET_SAMPLE_RATE, format="WAV", subtype="PCM_16")
        return buffer.getvalue()


@dataclass
class ExplorerData:
    """One prompt, seen from every head and every steering setting; see the module docstring.

    Attributes:
        audio_mass / silence_mass: `[layer, head]` listening signal with the audio / with the silence twin.
        rows: `[layer, head, pos]` final-token attention of every head over the prompt (with the audio).
        points_audio / points_silence: `[layer, d_model]` `resid_post` of each block at the final position.
        option_ids / options: the answer options' first tokens and their texts.
    """

    model: "HookedAudioLM" = field(repr=False)
    batch: AudioBatch = field(repr=False)
    item: dict[str, Any] | None
    tokens: list[str]
    clips: list[ClipView]
    audio_mass: Float[Tensor, "layer head"]
    silence_mass: Float[Tensor, "layer head"]
    rows: Float[Tensor, "layer head pos"]
    points_audio: Float[Tensor, "layer d_model"]
    points_silence: Float[Tensor, "layer d_model"]
    option_ids: list[int]
    options: list[str]

    @property
    def n_layers(self) -> int:
        return self.audio_mass.shape[0]

    @property
    def n_heads(self) -> int:
        return self.audio_mass.shape[1]

    @property
    def target_clip(self) -> int | None:
        """0-based index of the clip the question asks about (items with `target_clip`), else None."""
        target = (self.item or {}).get("target_clip")
        return None if target is None else int(target) - 1

    def check_head(self, layer: int, head: int) -> None:
        if not (0 <= layer < self.n_layers and 0 <= head < self.n_heads):
            raise ValueError(
                f"head L{layer}H{head} does not exist: choose a layer in 0-{self.n_layers - 1} and a head in "
                f"0-{self.n_heads - 1}."
            )

    def attention(self, layer: int, head: int) -> Float[Tensor, " pos"]:
        """Head (layer, head)'s attention from the final prompt token over every position."""
        self.check_head(layer, head)
        return self.rows[layer, head]

    def clip_attention(self, layer: int, head: int) -> list[np.ndarray]:
        """Per clip, the head's attention to each of the clip's audio tokens (in time order)."""
        row = self.attention(layer, head)
        return [row[start:end].numpy() for start, end in (clip.span for clip in self.clips)]

    def token_groups(self) -> list[tuple[str, int, int]]:
        """The prompt as (text, start, end) position ranges: one per text token, one `[Audio k]` per clip."""
        groups, audio = [], self.batch.audio_mask[0].cpu()
        starts = {clip.span[0]: k for k, clip in enumerate(self.clips)}
        for pos, text in enumerate(self.tokens):
            if pos in starts:
                start, end = self.clips[starts[pos]].span
                groups.append((f"[Audio {starts[pos] + 1}: {end - start} tokens]", start, end))
            elif not audio[pos]:
                groups.append((text, pos, pos + 1))
        return groups

    def text_attention(self, layer: int, head: int) -> list[tuple[str, float]]:
        """The head's attention to each entry of `token_groups()` (a clip's entry sums its audio tokens)."""
        row = self.attention(layer, head)
        return [(text, float(row[start:end].sum())) for text, start, end in self.token_groups()]

    def check_layers(self, layers: Sequence[int]) -> list[int]:
        layers = sorted({int(layer) for layer in layers})
        if not layers or not all(0 <= layer < self.n_layers for layer in layers):
            raise ValueError(f"source layers {layers} must be a non-empty selection of 0-{self.n_layers - 1}.")
        return layers

    def direction(self, layers: Sequence[int]) -> Float[Tensor, " d_model"]:
        """`adaptive_direction(model, batch, layers)[0]`: mean over `layers` of audio minus silence at the final
        position."""
        index = self.check_layers(layers)
        return (self.points_audio[index] - self.points_silence[index]).mean(dim=0)

    @torch.no_grad()
    def option_probabilities(
        self, beta: float, layers: Sequence[int]
    ) -> tuple[Float[Tensor, " option"], Float[Tensor, " option"]]:
        """Softmax over the options of the steered next-token logits: (with the audio, with the silence twin).

        Both rows get the same push `beta * direction(layers)` (the audio's direction; the silence twin's own
        audio-minus-silence direction is zero), so the silence row shows what the push does without the audio.
        """
        model = self.model
        direction = self.direction(layers).to(model.device)
        checked_push(beta, direction, model.dtype)
        h = steered(torch.stack([self.points_audio[-1], self.points_silence[-1]]).to(model.device), beta, direction)
        logits = model.unembed(model.ln_final(h[:, None]))[:, 0, self.option_ids]
        probs = logits.float().softmax(-1).cpu()
        return probs[0], probs[1]

    def page_payload(self) -> dict[str, Any]:
        """What the standalone page's JavaScript needs to redo the controls' arithmetic (numpy arrays stay numpy)."""
        model = self.model
        w = materialized(model.ln_final, "w")  # offloaded modules' weights are loaded (accelerate)
        d_model = self.points_audio.shape[1]
        return {
            "rows": self.rows.float().numpy(),
            "audio_mass": self.audio_mass.float().numpy(),
            "spans": [list(clip.span) for clip in self.clips],
            "h_audio": self.points_audio[-1].float().numpy(),
            "h_silence": self.points_silence[-1].float().numpy(),
            "deltas": (self.points_audio - self.points_silence).float().numpy(),
            "unembed": materialized(model.unembed)[self.option_ids].detach().float().cpu().numpy(),
            "b_U": model.b_U[self.option_ids].detach().float().cpu().numpy(),
            "ln_w": (np.ones(d_model, np.float32) if w is None else w.detach().float().cpu().numpy()),
            "eps": float(model.ln_final.eps),
        }


@torch.no_grad()
def explorer_data(
    model: "HookedAudioLM",
    item_or_batch: dict[str, Any] | AudioBatch,
    prompt: str | Callable[[dict[str, Any]], str] | None = None,
    options: Sequence[str] | None = None,
) -> ExplorerData:
    """Everything the explorer shows about one prompt, from one forward of it and its silence twin.

    Args:
        item_or_batch: an MMAU-format item (from `load_mmau`: `audio_path` one clip or a list) or an
            `AudioBatch` of one example (`model.to_batch(clips, question)`).
        prompt: for an item, the template (name or function item -> text); default the model's profile's.
        options: for a batch, the answer options to track (default: the model's top next tokens).
    """
    item, batch = _as_batch(model, item_or_batch, prompt)
    batch.require_audio("explore")
    batch = batch.to(model.device)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    both = AudioBatch.concat([batch, batch.silence_twin()])
    final = both.final_position
    points: dict[int, Tensor] = {}

    def keep(resid: Tensor, hook) -> None:
        points[hook.layer()] = resid[torch.arange(2, device=resid.device), final.to(resid.device)].detach()

    heads = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    with model.hooks(fwd_hooks=[(block_hook_name(layer, "hook_resid_post"), keep) for layer in range(n_layers)]):
        signal = listening_signal(model, both, heads=heads)
    stacked = torch.stack([points[layer] for layer in range(n_layers)], dim=1).cpu()  # [2, layer, d_model]
    option_ids, names = _options(model, item, options, stacked[0, -1])
    return ExplorerData(
        model=model, batch=batch, item={k: item[k] for k in ITEM_KEYS if k in item} if item else None,
        tokens=[model.tokenizer.decode([t]) for t in batch.input_ids[0].tolist()],
        clips=clip_views(model, batch), audio_mass=signal.audio_mass[0], silence_mass=signal.audio_mass[1],
        rows=signal.rows[0].reshape(n_layers, n_heads, -1),
        points_audio=stacked[0], points_silence=stacked[1], option_ids=option_ids, options=names,
    )


def _as_batch(model: "HookedAudioLM", item_or_batch: Any, prompt: Any) -> tuple[dict[str, Any] | None, AudioBatch]:
    if isinstance(item_or_batch, AudioBatch):
        if item_or_batch.batch_size != 1:
            raise ValueError(
                f"explore shows one prompt, but this batch holds {item_or_batch.batch_size}; pass a batch of one "
                "example."
            )
        return None, item_or_batch
    if not isinstance(item_or_batch, dict) or "audio_path" not in item_or_batch:
        raise ValueError(
            "explore takes an AudioBatch of one example or an MMAU-format item loaded with load_mmau (it needs "
            "'audio_path')."
        )
    from lens_audio.benchmark.prompts import render_prompt
    from lens_audio.paper.profile import profile_for

    item = item_or_batch
    text = render_prompt(item, prompt if prompt is not None else profile_for(model.cfg.model_name).prompt)
    return item, model.to_batch(item["audio_path"], text)


def _options(
    model: "HookedAudioLM", item: dict | None, options: Sequence[str] | None, h_final: Tensor
) -> tuple[list[int], list[str]]:
    """The tracked options' first-token ids and names: the item's choices, `options`, or the top next tokens."""
    names = list(options) if options is not None else list(item["choices"]) if item and item.get("choices") else None
    tok = model.tokenizer
    if names is None:
        logits = model.unembed(model.ln_final(h_final.to(model.device)[None, None]))[0, 0]
        ids = logits.float().topk(TOP_TOKENS).indices.tolist()
        return ids, [tok.decode([i]) for i in ids]
    ids = [encode_text(tok, name)[:1] for name in names]
    if any(not i for i in ids) or len({i[0] for i in ids}) < len(ids):
        raise ValueError(
            f"options {names} must each start with a different token to be told apart by the next token's probability."
        )
    return [i[0] for i in ids], names


def clip_views(model: "HookedAudioLM", batch: AudioBatch) -> list[ClipView]:
    extractor = model.processor.feature_extractor
    frame_seconds = float(extractor.hop_length) / float(extractor.sampling_rate)
    views = []
    for j, (span, waveform) in enumerate(zip(batch.audio_spans[0], batch.waveforms[0])):
        frames = int(batch.feature_attention_mask[j].sum())
        mel = batch.input_features[j, :, :frames].float().cpu().numpy()
        views.append(ClipView(np.asarray(waveform, np.float32), mel, frame_seconds, tuple(span)))
    return views
