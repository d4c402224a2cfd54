"""Steered choice scoring without a steered forward: one audio and one silence pass per item, then any layer set.

With the paper's injection site (the last block's `resid_post`) at the final prompt position and
single-token options, the steered logits of the first answer token are

    unembed(ln_final(h_final + beta * mean_{L in layers} (h_L(audio) - h_L(silence))))

where every h is the residual stream at the final prompt position. So one pass with the audio and
one with its silence twin, keeping each layer's final-position residual (and each head's output,
for head-output steering), gives the steered prediction of *every* layer set, beta and per-item
gate by a norm and an unembedding: 200 random-head draws cost seconds, not 200 benchmark runs.
`tests/unit/paper/test_fast_steering.py` checks it against the hook-based steered forward of the runner.

Only choice mode with single-token options qualifies (`FastSteering.applies`); otherwise
(generation, multi-token options) the experiment falls back to real steered runs: one run of
the evaluated items per *distinct layer set* among the draws (in generate mode the direction's
audio and silence rows and the steered prefill are one forward, `SteeringSpec.generate`; multi-token
options take a direction pass, then the steered scoring). `SteeringSpec.fast_push` gives the
direction and strength of a spec here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from lens_audio.analysis.final_position import final_state_hooks
from lens_audio.analysis.steering.push import steered
from lens_audio.benchmark.parallel import sharded_map
from lens_audio.benchmark.prompts import render_prompt
from lens_audio.benchmark.scoring import asks_for_letters, scored_options
from lens_audio.inputs.plain_text import encode_text

if TYPE_CHECKING:
    from lens_audio.model.hooked_audio_lm import HookedAudioLM


@dataclass
class FastSteering:
    """Final-position states of a list of items with their audio and with silence.

    `points_*[item, p]`: residual stream at the final prompt position, p = 0..n_layers:
    p = L is block L's input (`resid_pre`), p = L + 1 its output (`resid_post`).
    `head_delta[item, layer, head]`: each head's output (`attn.hook_result`) there, audio minus silence.
    """

    model: HookedAudioLM
    points_audio: Float[Tensor, "item point d_model"]
    points_silence: Float[Tensor, "item point d_model"]
    head_delta: Float[Tensor, "item layer head d_model"] | None
    option_ids: list[list[int]]
    answer_index: np.ndarray

    @staticmethod
    def applies(model: HookedAudioLM, items: Sequence[dict[str, Any]], mode: str) -> bool:
        """True in choice mode when every option of every item is a single token."""
        tok = model.tokenizer
        return mode == "choice" and all(
            len(encode_text(tok, c)) == 1 for i in items for c in i["choices"]
        )

    @classmethod
    @torch.no_grad()
    def collect(
        cls,
        model: HookedAudioLM,
        items: Sequence[dict[str, Any]],
        prompt: str | Callable,
        batch_size: int = 16,
        heads: bool = True,
    ) -> FastSteering:
        """One audio and one silence pass over `items`; `heads=False` skips the per-head outputs (large for 7B).

        Under `accelerate launch` or `torchrun` the batches are dealt out to the processes (`sharded_map`) and
        every rank gets all the states, equal to one process's (each batch holds the same items as there)."""
        if not cls.applies(model, items, "choice"):
            raise ValueError("the fast steering path needs single-token options; score with real steered runs instead.")

        def states(start: int) -> tuple[Tensor, Tensor, Tensor | None]:
            chunk = items[start : start + batch_size]
            batch = model.to_batch([i["audio_path"] for i in chunk], [render_prompt(i, prompt) for i in chunk])
            a_points, a_heads = _final_states(model, batch, heads)
            s_points, s_heads = _final_states(model, batch.silence_twin(), heads)
            return a_points, s_points, a_heads - s_heads if heads else None

        parts = sharded_map(states, range(0, len(items), batch_size))
        audio, silence, deltas = (
            [part[k].to(model.device) if part[k] is not None else None for part in parts] for k in range(3)
        )
        tok = model.tokenizer
        letters = asks_for_letters(prompt)  # the letters template: its letters are the options, as in the runner
        option_ids = [[encode_text(tok, c)[0] for c in scored_options(i, letters)] for i in items]
        answers = np.array([i["choices"].index(i["answer"]) for i in items])
        return cls(
            model, torch.cat(audio), torch.cat(silence), torch.cat(deltas) if heads else None, option_ids, answers
        )

    def layer_direction(self, layers: Sequence[int], site: str = "hook_resid_post") -> Float[Tensor, "item d_model"]:
        """`adaptive_direction(model, batch, layers, site)` for every item, from the stored states."""
        if not layers:
            raise ValueError("a steering direction needs at least one layer.")
        offset = {"hook_resid_post": 1, "hook_resid_pre": 0}[site]
        index = [layer + offset for layer in layers]
        return (self.points_audio[:, index] - self.points_silence[:, index]).mean(1)

    def head_direction(self, heads: Sequence[tuple[int, int]]) -> Float[Tensor, "item d_model"]:
        """`head_output_direction(model, batch, heads)` for every item."""
        if self.head_delta is None:
            raise ValueError("collect with heads=True to steer from head outputs.")
        return sum(self.head_delta[:, layer, head] for layer, head in heads)

    @torch.no_grad()
    def option_scores(self, direction: Tensor | None = None, beta: float | Tensor = 0.0) -> list[Tensor]:
        """Log-probabilities of each item's options with `beta * direction` added to the final representation."""
        h = self.points_audio[:, -1]
        if direction is not None:
            scale = torch.as_tensor(beta, dtype=h.dtype, device=h.device)
            h = steered(h, scale[:, None] if scale.ndim == 1 else scale, direction)
        logprobs = self.model.unembed(self.model.ln_final(h)).log_softmax(-1)
        return [logprobs[row, ids] for row, ids in enumerate(self.option_ids)]

    def correct(self, direction: Tensor | None = None, beta: float | Tensor = 0.0) -> np.ndarray:
        """`[item]` whether the steered prediction (the best-scoring option) is the answer."""
        predicted = [int(scores.argmax()) for scores in self.option_scores(direction, beta)]
        return np.array(predicted) == self.answer_index


def _final_states(model: HookedAudioLM, batch, heads: bool) -> tuple[Tensor, Tensor | None]:
    """Final-position residual points `[batch, n_layers + 1, d]` and head outputs `[batch, layer, head, d]`, one
    forward."""
    hooks, collected = final_state_hooks(model, batch, heads)
    with model.hooks(fwd_hooks=hooks):
        model(batch, return_type=None)
    return collected()
