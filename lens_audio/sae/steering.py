"""The paper's adaptive audio-minus-silence direction, decomposed into SAE features at its layers.

At each layer L of the direction the final-position residual with the audio, `h_audio`, and with the silence twin,
`h_silence`, differ by `delta_L` (the direction is the mean of `delta_L` over the layers; `adaptive_direction`).
An SAE at `blocks.{L}.hook_resid_post` trained on text positions (which include the final one) encodes both; the
features steering pushes are those whose activation the audio raises, `push_L = encode(h_audio) - encode(h_silence)`,
and `delta_L = push_L @ W_dec + (error with audio - error with silence)`.

Whether a pushed feature names the audio's class is read from its decoder direction through the unembedding: the
option its `W_dec[f] @ W_U` ranks highest among the item's choices (`named_option`), compared with the item's answer
(the asked clip's class).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from lens_audio.analysis.steering.direction import final_residuals
from lens_audio.benchmark.prompts import render_prompt
from lens_audio.sae.sae import SparseAutoencoder

if TYPE_CHECKING:
    from lens_audio.model.hooked_audio_lm import HookedAudioLM


def _layer_of(sae: SparseAutoencoder) -> int:
    parts = sae.cfg.hook_name.split(".")
    if len(parts) != 3 or parts[0] != "blocks" or parts[2] != "hook_resid_post":
        raise ValueError(f"the direction lives in blocks.L.hook_resid_post; this SAE reads {sae.cfg.hook_name}.")
    if sae.cfg.positions not in ("text", "final", "all"):
        raise ValueError(f"the direction is at the final prompt position; this SAE was trained on "
                         f"{sae.cfg.positions} positions.")
    return int(parts[1])


@dataclass
class DirectionDecomposition:
    """Per item and layer: the features the audio pushes at the final position, and what they explain."""

    layers: list[int]
    item_ids: list[str]
    answers: list[str]
    choices: list[list[str]]
    push: Float[Tensor, "item layer d_sae"]  # encode(h_audio) - encode(h_silence)
    delta: Float[Tensor, "item layer d_model"]  # h_audio - h_silence
    explained: Float[Tensor, "item layer d_model"]  # push @ W_dec

    @property
    def direction(self) -> Float[Tensor, "item d_model"]:
        """The adaptive direction (mean of delta over the layers), as `adaptive_direction` gives it."""
        return self.delta.mean(dim=1)

    def fraction_explained(self) -> Float[Tensor, " layer"]:
        """Per layer, 1 - |delta - push @ W_dec|^2 / |delta|^2 summed over items: how much of the direction the
        features' change accounts for."""
        return 1 - ((self.delta - self.explained) ** 2).sum((0, 2)) / (self.delta**2).sum((0, 2))

    def top_pushed(self, layer_index: int, n: int = 5) -> list[list[tuple[int, float]]]:
        """Per item, the `n` features the audio raises most at layer `layers[layer_index]`."""
        values, indices = self.push[:, layer_index].topk(n, dim=-1)
        return [list(zip(i.tolist(), v.tolist())) for i, v in zip(indices, values)]

    def mean_push(self, layer_index: int, n: int = 10) -> list[tuple[int, float]]:
        """The features of the averaged direction: the `n` largest mean pushes over items."""
        values, indices = self.push[:, layer_index].mean(0).topk(n)
        return list(zip(indices.tolist(), values.tolist()))


@torch.no_grad()
def decompose_direction(
    model: "HookedAudioLM",
    saes: Sequence[SparseAutoencoder],
    items: Sequence[dict[str, Any]],
    prompt: str | Callable[[dict[str, Any]], str] | None = None,
    batch_size: int = 16,
) -> DirectionDecomposition:
    """The adaptive direction of each item at the SAEs' layers (one SAE per layer), in SAE features."""
    from lens_audio.paper.profile import profile_for

    layers = [_layer_of(sae) for sae in saes]
    if len(set(layers)) != len(layers):
        raise ValueError(f"one SAE per layer, please (got layers {layers}).")
    template = prompt if prompt is not None else profile_for(model.cfg.model_name).prompt
    pushes, deltas, explained = [], [], []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        batch = model.to_batch([i["audio_path"] for i in chunk], [render_prompt(i, template) for i in chunk])
        batch.require_audio("decompose_direction")
        h_audio = final_residuals(model, batch, layers)
        h_silence = final_residuals(model, batch.silence_twin(), layers)
        push = torch.stack([sae.encode(h_audio[:, j].to(sae.device)) - sae.encode(h_silence[:, j].to(sae.device))
                            for j, sae in enumerate(saes)], dim=1).float().cpu()
        pushes.append(push)
        deltas.append((h_audio - h_silence).float().cpu())
        explained.append(torch.stack([push[:, j] @ sae.W_dec.float().cpu() for j, sae in enumerate(saes)], dim=1))
    return DirectionDecomposition(layers, [str(i["id"]) for i in items], [i["answer"] for i in items],
                                  [list(i["choices"]) for i in items], torch.cat(pushes), torch.cat(deltas),
                                  torch.cat(explained))


def named_option(model: "HookedAudioLM", vector: Float[Tensor, " d_model"], choices: Sequence[str]) -> str:
    """The choice whose first token `vector @ W_U` ranks highest: the option a direction (or a feature's decoder
    row) names."""
    ids = [model.tokenizer.encode(c, add_special_tokens=False)[0] for c in choices]
    logits = vector.to(model.W_U.device, model.W_U.dtype) @ model.W_U[:, ids]
    return choices[int(logits.argmax())]


def naming_rate(model: "HookedAudioLM", saes: Sequence[SparseAutoencoder], result: DirectionDecomposition,
                layer_index: int) -> dict[str, float]:
    """On how many items (share) the most-pushed feature at `layers[layer_index]` names the answer, against the
    whole layer difference `delta` naming it, and chance (one over the number of choices)."""
    sae = saes[layer_index]
    top = result.push[:, layer_index].argmax(dim=-1)
    feature_hits = [named_option(model, sae.W_dec[int(f)], c) == a
                    for f, c, a in zip(top, result.choices, result.answers)]
    delta_hits = [named_option(model, d, c) == a
                  for d, c, a in zip(result.delta[:, layer_index], result.choices, result.answers)]
    n = len(result.answers)
    return {"top_feature_names_answer": sum(feature_hits) / n, "delta_names_answer": sum(delta_hits) / n,
            "chance": sum(1 / len(c) for c in result.choices) / n, "n_items": n}
