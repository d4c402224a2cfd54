"""Activations for SAEs: one hook point at chosen positions, streamed over a benchmark or a folder of audio.

`collect_activations(model, items, hook_names, positions)` runs the items in batches through
`run_with_cache(names_filter=hook_names, stop_at_layer=...)` (nothing past the deepest hooked block runs) and
keeps, per hook, the rows at the chosen positions with where each came from (item, prompt position, clip, token
within the clip, token id), so a dashboard can find the sound behind any row. `ActivationSet.save` / `load`
keep them on disk (safetensors) so they are computed once.

Positions (decoder hooks `blocks.{L}...`, `[batch, pos, d]`): "audio" (audio-token positions), "text" (every other
real token), "final" (the final prompt position), "all" (every real token). Audio-encoder hooks
(`audio....`, `[clips, frames, d]`) take "all": each clip's valid frames (past its end the encoder sees padding).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from lens_audio.benchmark.prompts import render_prompt
from lens_audio.inputs.frames import conv_frames, n_audio_tokens
from lens_audio.sae.sae import POSITIONS

if TYPE_CHECKING:
    from lens_audio.inputs.batch import AudioBatch
    from lens_audio.model.hooked_audio_lm import HookedAudioLM

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")
INDEX_FIELDS = ("item", "position", "clip", "token_in_clip", "token_id")


@dataclass
class ActivationSet:
    """Rows of one hook's activations and where each came from (`-1` where a field does not apply)."""

    hook_name: str
    positions: str
    acts: Float[Tensor, "row d"]
    item: Int[Tensor, " row"]  # index into item_ids
    position: Int[Tensor, " row"]  # position in the prompt, padding not counted (decoder hooks), or frame (encoder)
    clip: Int[Tensor, " row"]  # clip of the prompt (audio rows), else -1
    token_in_clip: Int[Tensor, " row"]  # audio token / frame within that clip, else -1
    token_id: Int[Tensor, " row"]  # the prompt's token at that position (decoder hooks), else -1
    item_ids: list[str]

    def __len__(self) -> int:
        return self.acts.shape[0]

    def fingerprint(self) -> str:
        """A short hash of the rows' values (what a training checkpoint was made from)."""
        digest = hashlib.sha256(self.acts.float().contiguous().numpy().tobytes())
        digest.update(json.dumps([self.hook_name, self.positions, self.item_ids]).encode())
        return digest.hexdigest()[:16]

    def select(self, rows: Tensor) -> "ActivationSet":
        fields = {name: getattr(self, name)[rows] for name in ("acts", *INDEX_FIELDS)}
        return ActivationSet(self.hook_name, self.positions, item_ids=self.item_ids, **fields)

    def of_items(self, keep: Callable[[str], bool]) -> "ActivationSet":
        """The rows of the items whose id passes `keep`."""
        wanted = torch.tensor([keep(i) for i in self.item_ids], dtype=torch.bool)
        return self.select(wanted[self.item])

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {name: getattr(self, name).contiguous() for name in ("acts", *INDEX_FIELDS)}
        meta = {"hook_name": self.hook_name, "positions": self.positions, "item_ids": json.dumps(self.item_ids)}
        tmp = path.with_name(path.name + ".partial")
        save_file(tensors, str(tmp), metadata=meta)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ActivationSet":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
        tensors = load_file(str(path))
        return cls(meta["hook_name"], meta["positions"], item_ids=json.loads(meta["item_ids"]), **tensors)


def items_from_folder(folder: str | Path, question: str = "What do you hear?") -> list[dict[str, Any]]:
    """One item per audio file of `folder` (sorted), asking `question`; use with `prompt=lambda i: i["question"]`."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES) if folder.is_dir() else []
    if not files:
        raise ValueError(f"{folder} holds no audio files ({', '.join(AUDIO_SUFFIXES)}); give a folder of clips.")
    return [{"id": p.stem, "audio_path": str(p), "question": question} for p in files]


def unique_by_audio(items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first item of each distinct clip (or clip list). With the question after the audio (as in the workshop
    prompts), the audio positions' activations do not depend on the question, so items sharing their clips
    would only repeat rows."""
    seen, out = set(), []
    for item in items:
        key = tuple(item["audio_path"]) if isinstance(item["audio_path"], list) else (item["audio_path"],)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def check_hook(model: "HookedAudioLM", hook_name: str, positions: str) -> None:
    """Refuse hooks the model does not have and scopes the hook cannot take, naming the fix."""
    if hook_name not in model.hook_dict:
        raise ValueError(f"no hook point {hook_name!r}; see model.hook_names() or `lens-audio hooks`.")
    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {POSITIONS}, not {positions!r}.")
    if hook_name.startswith("audio.") and positions != "all":
        raise ValueError(f"{hook_name} is an audio-encoder hook, where every position is audio: use positions='all'.")
    if hook_name == "audio.hook_mel":
        raise ValueError("audio.hook_mel is [clips, mels, frames] (features first); train on a later audio hook.")


def _stop_layer(model: "HookedAudioLM", hook_names: Sequence[str]) -> int | None:
    """Run the decoder only as far as the deepest hooked block (None: some hook is past the blocks)."""
    layers = []
    for name in hook_names:
        if name.startswith("audio.") or name == "hook_embed":
            layers.append(-1)
        elif name.startswith("blocks."):
            layers.append(int(name.split(".")[1]))
        else:
            return None
    return max(layers) + 1


def position_mask(batch_ids: Tensor, attention_mask: Tensor, audio_token_id: int, positions: str) -> Tensor:
    """`[batch, pos]` True where an SAE of scope `positions` reads (shared with splicing)."""
    real = attention_mask.bool()
    if positions == "all":
        return real
    audio = (batch_ids == audio_token_id) & real
    if positions == "audio":
        return audio
    if positions == "text":
        return real & ~audio
    index = torch.arange(real.shape[1], device=real.device)
    final = (index * real).max(dim=1).values
    return index[None, :] == final[:, None]


@torch.no_grad()
def collect_activations(
    model: "HookedAudioLM",
    items: Sequence[dict[str, Any]],
    hook_names: Sequence[str],
    positions: str,
    prompt: str | Callable[[dict[str, Any]], str] | None = None,
    batch_size: int = 16,
    silence: bool = False,
    progress: bool = True,
) -> dict[str, ActivationSet]:
    """Per hook, the activations of `items` at `positions` (see the module docstring), on the CPU in float32.

    `prompt`: the items' template (name or function item -> text), default the model's profile's; `silence`: use
    each batch's silence twin instead of the audio.
    """
    from lens_audio.paper.profile import profile_for

    hook_names = list(dict.fromkeys(hook_names))
    if not hook_names:
        raise ValueError("give at least one hook name (e.g. 'blocks.1.hook_resid_post').")
    for name in hook_names:
        check_hook(model, name, positions)
    template = prompt if prompt is not None else profile_for(model.cfg.model_name).prompt
    stop = _stop_layer(model, hook_names)
    parts: dict[str, list[dict[str, Tensor]]] = {name: [] for name in hook_names}
    for start in tqdm(range(0, len(items), batch_size), desc=f"activations ({positions})", disable=not progress,
                      unit="batch"):
        chunk = items[start : start + batch_size]
        texts = [render_prompt(item, template) for item in chunk]
        batch = model.to_batch([item["audio_path"] for item in chunk], texts)
        if silence:
            batch = batch.silence_twin()
        _, cache = model.run_with_cache(batch, names_filter=hook_names, stop_at_layer=stop, return_cache_object=False)
        for name in hook_names:
            parts[name].append(_rows(model, batch, cache[name], name, positions, start))
    ids = [str(item["id"]) for item in items]
    out = {}
    for name in hook_names:
        merged = {field: torch.cat([p[field] for p in parts[name]]) for field in ("acts", *INDEX_FIELDS)}
        out[name] = ActivationSet(name, positions, item_ids=ids, **merged)
    return out


def _rows(model, batch: "AudioBatch", value: Tensor, name: str, positions: str, first_item: int) -> dict[str, Tensor]:
    value = value.detach().float().cpu()
    if name.startswith("audio."):
        return _encoder_rows(batch, value, first_item)
    mask = position_mask(batch.input_ids, batch.attention_mask, model.cfg.audio_token_id, positions).cpu()
    rows, pos = mask.nonzero(as_tuple=True)
    clip = torch.full_like(rows, -1)
    within = torch.full_like(rows, -1)
    for r, spans in enumerate(batch.audio_spans):
        for k, (s, e) in enumerate(spans):
            hit = (rows == r) & (pos >= s) & (pos < e)
            clip[hit], within[hit] = k, pos[hit] - s
    first_real = batch.attention_mask.cpu().long().argmax(dim=1)  # left padding: positions count from the prompt
    return {"acts": value[rows, pos], "item": rows + first_item, "position": pos - first_real[rows], "clip": clip,
            "token_in_clip": within, "token_id": batch.input_ids.cpu()[rows, pos]}


def _encoder_rows(batch: "AudioBatch", value: Tensor, first_item: int) -> dict[str, Tensor]:
    """Encoder hooks hold one row per clip (clips in prompt order, examples in batch order): keep valid frames."""
    owners = [(r, k) for r, spans in enumerate(batch.audio_spans) for k in range(len(spans))]
    frames = batch.feature_attention_mask.sum(-1).cpu()
    full = int(batch.feature_attention_mask.shape[-1])
    valid = conv_frames(frames) if value.shape[1] == conv_frames(full) else n_audio_tokens(frames)
    out: dict[str, list[Tensor]] = {field: [] for field in ("acts", *INDEX_FIELDS)}
    for j, (r, k) in enumerate(owners):
        n = int(valid[j])
        idx = torch.arange(n)
        out["acts"].append(value[j, :n])
        out["item"].append(torch.full((n,), r + first_item))
        out["position"].append(idx)
        out["clip"].append(torch.full((n,), k))
        out["token_in_clip"].append(idx)
        out["token_id"].append(torch.full((n,), -1))
    return {field: torch.cat(v) for field, v in out.items()}


__all__ = ["ActivationSet", "collect_activations", "items_from_folder", "position_mask",
           "unique_by_audio"]
