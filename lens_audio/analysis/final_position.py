"""The final prompt position: keep its residual stream at every layer, patch it layer by layer, read choices from it.

The final prompt position predicts the first answer token, so for single-token answers everything the model answers
with passes through its residual stream there. Three pieces for any model (the workshop organisms or a 7B):

- `final_state_hooks`: hooks that keep that position's residual stream at every block input and the last block's
  output (and, optionally, each head's output) during any forward, memory independent of the sequence length;
  `final_states_and_listening` runs one forward that keeps them beside every head's listening signal;
- `final_resid_patch_logits`: for every layer L at once, the final logits of a corrupted run (e.g. the silence
  twin) whose final-position `blocks.L.hook_resid_post` is set to the clean run's, restarting from block L + 1;
- `best_options`: each item's best option by its first token's logit (multiple-choice scoring at that position);
- `restore_by_layer` and `AudioArrival`: where the audio's content arrives at that position (the patching restore
  by layer, `arrival_layer` the first layer from which every patched layer restores the audio's effect, beside
  the linear probe of `analysis.probes.answer_probe`), the stage `Experiment.audio_arrival` runs for any model and
  the depth-matched random-head control draws from.

The layout of the kept points (`[batch, n_layers + 1, d_model]`): p = L is block L's input (`resid_pre`),
p = L + 1 its output (`resid_post`), so p = 0 is the embeddings and p = n_layers the final residual before
`ln_final`. `lens_audio.paper.fast_steering.FastSteering` stores states in this layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from lens_audio.analysis.listening import listening_signal
from lens_audio.model.hook_point import block_hook_name

if TYPE_CHECKING:
    from lens_audio.inputs.batch import AudioBatch
    from lens_audio.model.hooked_audio_lm import HookedAudioLM


def final_state_hooks(
    model: HookedAudioLM, batch: AudioBatch, heads: bool = False
) -> tuple[list[tuple[str, Callable]], Callable[[], tuple[Tensor, Tensor | None]]]:
    """Hooks that keep the final prompt position's residual points (the layout above) and, with `heads`, each
    head's output (`attn.hook_result`); run any forward of `batch` under them, then call the second value for
    `(points [batch, n_layers + 1, d_model], heads [batch, layer, head, d_model] or None)`, on the model's device.
    Only the final position is kept, so memory does not grow with the sequence."""
    n = model.cfg.n_layers
    final = batch.final_position
    kept: dict[str, Tensor] = {}

    def keep(act: Tensor, hook) -> None:
        rows = torch.arange(act.shape[0], device=act.device)
        kept[hook.name] = act[rows, final.to(act.device)].detach().to(model.device)

    names = [block_hook_name(layer, "hook_resid_pre") for layer in range(n)] + [
        block_hook_name(n - 1, "hook_resid_post")
    ]
    head_names = [block_hook_name(layer, "attn.hook_result") for layer in range(n)] if heads else []

    def collected() -> tuple[Tensor, Tensor | None]:
        points = torch.stack([kept[name] for name in names], dim=1)
        return points, torch.stack([kept[name] for name in head_names], dim=1) if heads else None

    return [(name, keep) for name in names + head_names], collected


@torch.no_grad()
def final_states_and_listening(
    model: HookedAudioLM, batch: AudioBatch
) -> tuple[Float[Tensor, "batch point d_model"], Float[Tensor, "batch layer head"]]:
    """One forward of `batch` that keeps the final position's residual points (`final_state_hooks`) and every
    head's listening signal (`listening_signal(...).audio_mass`, on the CPU, float32)."""
    hooks, collected = final_state_hooks(model, batch)
    with model.hooks(fwd_hooks=hooks):  # under listening_signal's own hooks: one forward for both
        mass = listening_signal(model, batch).audio_mass.float()
    return collected()[0], mass


@torch.no_grad()
def final_resid_patch_logits(
    model: HookedAudioLM, corrupted: AudioBatch, clean_final: Float[Tensor, "batch layer d_model"]
) -> Float[Tensor, "layer batch d_vocab"]:
    """Final-position logits of `corrupted` with, for each layer L, the final prompt position's
    `blocks.L.hook_resid_post` replaced by `clean_final[:, L]` (every other position kept).

    One forward of `corrupted` keeping each layer's `resid_post`, then for each L a restart from block L + 1
    (`decoder_state` / `run_blocks`, as `analysis.patching.patch_residual_by_position` does for `resid_pre`;
    `resid_post` of L is `resid_pre` of L + 1) with only the final position changed. For the last layer no block
    runs: the logits are those of the clean final state itself. `clean_final` is the clean run's points
    `[:, 1:]` in `final_state_hooks`'s layout.
    """
    n = model.cfg.n_layers
    if clean_final.shape[:2] != (corrupted.batch_size, n):
        raise ValueError(f"clean_final must be [batch={corrupted.batch_size}, layer={n}, d_model], not "
                         f"{list(clean_final.shape)}.")
    names = [block_hook_name(layer, "hook_resid_post") for layer in range(n)]
    _, cache = model.run_with_cache(corrupted, names_filter=names, return_cache_object=False)
    mask = corrupted.attention_mask.to(model.device)
    out = []
    for layer, name in enumerate(names):
        resid = cache[name].clone()
        rows = torch.arange(resid.shape[0], device=resid.device)
        final = corrupted.final_position.to(resid.device)
        resid[rows, final] = clean_final[:, layer].to(resid)
        resid = model.run_blocks(model.decoder_state(resid, mask.to(resid.device)), layer + 1)
        rows, final = rows.to(resid.device), final.to(resid.device)
        out.append(model.unembed(model.ln_final(resid[rows, final])).float().to(model.device))
    return torch.stack(out)


def best_options(
    logits: Float[Tensor, "*lead batch d_vocab"], option_ids: Sequence[Sequence[int]]
) -> Int[np.ndarray, "*lead batch"]:
    """Each row's best option: the index into its `option_ids` (each option's first token) of the highest logit.
    Leading dimensions are kept, e.g. `[layer, batch]` from `final_resid_patch_logits`."""
    if logits.shape[-2] != len(option_ids):
        raise ValueError(f"option_ids must list the options of each of the {logits.shape[-2]} rows, not "
                         f"{len(option_ids)}.")
    picked = [logits[..., row, list(ids)].argmax(-1) for row, ids in enumerate(option_ids)]
    return torch.stack(picked, -1).cpu().numpy().astype(int)


@torch.no_grad()
def final_resid_logits(
    model: HookedAudioLM, final_resid: Float[Tensor, "batch d_model"]
) -> Float[Tensor, "batch d_vocab"]:
    """The logits a final residual (before `ln_final`, the points' last entry) gives."""
    return model.unembed(model.ln_final(final_resid))


@torch.no_grad()
def restore_by_layer(
    model: HookedAudioLM, batch: AudioBatch, option_ids: Sequence[Sequence[int]], answer: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Float[Tensor, "batch point d_model"]]:
    """The patching restore of one batch: whether each item's best option (by its first token, `option_ids`) is the
    answer (`answer`: its index) in the audio run, in the silence twin's run, and in the silence run with layer L's
    final-position `resid_post` from the audio run (`final_resid_patch_logits`), as `([item], [item],
    [layer, item], points)`; `points` are the audio run's final-position residual points (`final_state_hooks`'s
    layout, on the CPU, float32), what a probe reads. Three forwards and a restart per layer."""
    answer, twin = np.asarray(answer), batch.silence_twin()
    states = []
    for run in (batch, twin):
        hooks, collected = final_state_hooks(model, run)
        with model.hooks(fwd_hooks=hooks):
            model(run, return_type=None)
        states.append(collected()[0])
    audio, silence = (best_options(final_resid_logits(model, s[:, -1]), option_ids) == answer for s in states)
    patched = best_options(final_resid_patch_logits(model, twin, states[0][:, 1:]), option_ids)
    return audio, silence, patched == answer[None], states[0].float().cpu()


def arrival_layer(restored: Sequence[float], threshold: float) -> int | None:
    """The first layer from which every layer's restored share reaches `threshold` (None: undefined shares)."""
    values = np.asarray(restored, dtype=float)
    if values.size == 0 or not np.isfinite(values).all():
        return None
    below = np.nonzero(values < threshold)[0]
    if below.size == 0:
        return 0
    return int(below[-1]) + 1 if below[-1] + 1 < values.size else None


@dataclass
class AudioArrival:
    """Where the audio's content reaches the final prompt position, measured on `n` items (`items`: which) of
    `split`: accuracy (percent) of the audio run, of the silence twin's run, and of the silence run with layer L's
    final-position `resid_post` patched in from the audio run (`by_layer[L]`); `restored[L]` the share of the
    audio's effect that restores, (by_layer - silence) / (audio - silence); `arrival` the first layer from which
    every layer restores at least `threshold` of it (the last layer always restores all: its patched state is the
    audio run's). `probe[p]`: held-out accuracy (percent) of a linear probe for the answer's class at point p
    (0 the embeddings, L + 1 layer L's `resid_post`; `analysis.probes.answer_probe`), None where not fitted."""

    split: str
    items: str
    n: int
    audio: float
    silence: float
    by_layer: list[float]
    threshold: float
    probe: list[float] | None = None
    probe_chance: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def restored(self) -> list[float]:
        effect = self.audio - self.silence
        return [(v - self.silence) / effect if effect else math.nan for v in self.by_layer]

    @property
    def arrival(self) -> int | None:
        return arrival_layer(self.restored, self.threshold)

    @property
    def layers(self) -> list[int]:
        """The layers the audio has reached (`arrival` to the last); empty when the audio changes nothing here."""
        return [] if self.arrival is None else list(range(self.arrival, len(self.by_layer)))

    def describe(self) -> str:
        where = (f"from layer {self.arrival} on (every later layer restores >= {self.threshold:.0%} of the audio's "
                 "effect)" if self.arrival is not None else "undefined (the audio does not change the accuracy here)")
        lines = [f"where the audio arrives ({self.split} {self.items} items, n = {self.n}): audio {self.audio:.1f}%, "
                 f"silence {self.silence:.1f}%; arrived {where}",
                 "  patched accuracy by layer (the final position's residual after layer L, resid_post): "
                 + ", ".join(f"L{i} {v:.1f}" for i, v in enumerate(self.by_layer))]
        if self.probe is not None:
            lines.append(f"  linear probe of the answer's class (chance {self.probe_chance:.1f}%): "
                         + ", ".join(f"{'emb' if p == 0 else f'L{p - 1}'} {v:.1f}" for p, v in enumerate(self.probe)))
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "restored": self.restored, "arrival": self.arrival}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AudioArrival:
        return cls(**{k: v for k, v in data.items() if k not in ("restored", "arrival")})


def audio_arrival(
    split: str, items: str, audio: np.ndarray, silence: np.ndarray, patched: np.ndarray, threshold: float = 0.9,
    probe: Sequence[float] | None = None, probe_chance: float | None = None, notes: Sequence[str] = (),
) -> AudioArrival:
    """`AudioArrival` from `restore_by_layer`'s correctness arrays over all items (`[item]`, `[item]`,
    `[layer, item]`)."""
    percent = lambda values: float(100 * np.asarray(values, dtype=float).mean())  # noqa: E731
    return AudioArrival(split, items, int(np.asarray(audio).size), percent(audio), percent(silence),
                        [percent(row) for row in np.asarray(patched)], float(threshold),
                        None if probe is None else [float(v) for v in probe], probe_chance, list(notes))
