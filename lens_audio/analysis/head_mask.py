"""Attention-head masks: some heads' outputs switched off, and a mask trained to choose them (AHAMask's recipe,
arXiv 2509.01787: one trainable number per head of the language model, binary in the forward).

- `head_mask_hooks(model, heads)`: hooks that zero the chosen heads' outputs (`attn.hook_z`, before the output
  projection) at every position: the mask applied, one forward, no other change;
- `train_head_mask(model, batches, steps, checkpoints)`: a mask learned on labelled batches (`(batch, option_ids,
  answer_index)` as `paper.controls.batches` yields them) through the one training loop (`train.Trainer`). Each
  head has a logit; the forward keeps the head where the logit plus logistic noise is above 0 (a hard Gumbel-sigmoid
  sample) and the gradient passes through the sigmoid (straight-through); the loss is the cross-entropy of the
  answer among the item's options, each by its first token. Every logit starts at `init` (every head kept); the
  model's own weights are frozen and restored as they were. The mask at each of `checkpoints` is the heads whose
  logit is below 0 (no noise).

Where we had to choose (AHAMask trains masks to select a task without instructions; here the task is the
benchmark's own, answered from the audio): the loss is on the first tokens of the options, as the answer margin
is (`analysis.ablation.option_margins`); there is no sparsity penalty, and the training length is the setting a
caller chooses on held-out items (the mask at each checkpoint).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from lens_audio.model.generation import last_logits
from lens_audio.model.hook_point import block_hook_name
from lens_audio.train.loop import Phase, StepOutput, Trainer

if TYPE_CHECKING:
    from lens_audio.inputs.batch import AudioBatch
    from lens_audio.model.hooked_audio_lm import HookedAudioLM

LabelledBatch = tuple["AudioBatch", Sequence[Sequence[int]], Sequence[int]]  # batch, option ids, answer index


def head_mask_hooks(model: "HookedAudioLM", heads: Sequence[tuple[int, int]]) -> list[tuple[str, object]]:
    """Hooks zeroing the outputs of `heads` ((layer, head) pairs) at every position."""
    model.cfg.check_heads(heads, "head_mask_hooks")
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(int(layer), []).append(int(head))

    def zero(z: Tensor, hook, heads: list[int]) -> Tensor:  # [batch, pos, head, d_head]
        z = z.clone()
        z[:, :, heads] = 0
        return z

    return [(block_hook_name(layer, "attn.hook_z"), lambda z, hook, hs=hs: zero(z, hook, hs))
            for layer, hs in sorted(by_layer.items())]


class HeadMaskLogits(torch.nn.Module):
    """One logit per head of the language model: kept where above 0."""

    def __init__(self, n_layers: int, n_heads: int, init: float, device: torch.device | str | None = None):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.full((n_layers, n_heads), float(init), device=device))

    def sample(self, generator: torch.Generator | None) -> Float[Tensor, "layer head"]:
        """A hard 0/1 sample (logit plus logistic noise above 0) whose gradient is the sigmoid's."""
        u = torch.rand(self.logits.shape, generator=generator).clamp(1e-6, 1 - 1e-6).to(self.logits.device)
        soft = torch.sigmoid(self.logits + torch.log(u) - torch.log1p(-u))
        return (soft > 0.5).to(soft.dtype) - soft.detach() + soft

    def masked(self) -> list[tuple[int, int]]:
        """The heads switched off (logit below 0), in (layer, head) order."""
        return [(int(l), int(h)) for l, h in torch.nonzero(self.logits.detach() < 0).tolist()]


@dataclass
class HeadMaskTraining:
    """The heads masked at each checkpoint (steps -> (layer, head) list), and the loss's history (the training
    loop's running average, `train.Trainer`)."""

    masked: dict[int, list[tuple[int, int]]]
    history: list[dict[str, float]]
    steps: int
    learning_rate: float
    seed: int

    def to_json(self) -> dict:
        return {"masked": {str(s): [list(h) for h in heads] for s, heads in self.masked.items()},
                "history": self.history, "steps": self.steps, "learning_rate": self.learning_rate, "seed": self.seed}

    @classmethod
    def from_json(cls, data: dict) -> "HeadMaskTraining":
        return cls({int(s): [tuple(h) for h in heads] for s, heads in data["masked"].items()}, data["history"],
                   data["steps"], data["learning_rate"], data["seed"])


@contextlib.contextmanager
def frozen(model: torch.nn.Module) -> Iterator[None]:
    """The model's parameters without gradients for the block, then as they were."""
    before = {name: p.requires_grad for name, p in model.named_parameters()}
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        yield
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(before[name])


def option_loss(final_logits: Float[Tensor, "batch d_vocab"], option_ids: Sequence[Sequence[int]],
                answer: Sequence[int]) -> Float[Tensor, ""]:
    """Cross-entropy of the answer among each row's options (first tokens; a repeated id, e.g. padding, counts
    once)."""
    ids = torch.tensor([list(map(int, row)) for row in option_ids], device=final_logits.device)
    logits = final_logits.float().gather(1, ids)
    repeated = torch.zeros_like(ids, dtype=torch.bool)
    for j in range(1, ids.shape[1]):
        repeated[:, j] = (ids[:, :j] == ids[:, j : j + 1]).any(1)
    logits = logits.masked_fill(repeated, float("-inf"))
    target = torch.tensor(list(map(int, answer)), device=final_logits.device)
    return torch.nn.functional.cross_entropy(logits, target)


def train_head_mask(model: "HookedAudioLM", batches: Sequence[LabelledBatch], steps: int,
                    checkpoints: Sequence[int], learning_rate: float = 0.1, init: float = 3.0, seed: int = 0,
                    progress: bool = True) -> HeadMaskTraining:
    """A head mask learned on `batches` (drawn at random, seeded) for `steps` steps; the heads masked at each of
    `checkpoints` (see the module docstring)."""
    if not batches:
        raise ValueError("training a head mask needs at least one labelled batch.")
    checkpoints = {int(c) for c in checkpoints}
    bad = sorted(c for c in checkpoints if not 0 < c <= steps)
    if steps < 1 or bad or not checkpoints:
        raise ValueError(f"head-mask checkpoints must lie in 1..steps ({steps}); got {bad or sorted(checkpoints)}.")
    cfg = model.cfg
    mask = HeadMaskLogits(cfg.n_layers, cfg.n_heads, init, device=model.device)
    generator = torch.Generator().manual_seed(seed)

    sampler = SimpleNamespace(rng=np.random.default_rng(seed))  # draws the batches
    masked: dict[int, list[tuple[int, int]]] = {}

    def step(loop) -> StepOutput:
        batch, options, answer = batches[int(sampler.rng.integers(len(batches)))]
        sample = mask.sample(generator)

        def scale(z: Tensor, hook, layer: int) -> Tensor:  # [batch, pos, head, d_head]
            return z * sample[layer].to(device=z.device, dtype=z.dtype)[None, None, :, None]

        hooks = [(block_hook_name(layer, "attn.hook_z"), lambda z, hook, l=layer: scale(z, hook, l))
                 for layer in range(cfg.n_layers)]
        with model.hooks(fwd_hooks=hooks):
            logits = last_logits(model, model(batch, stop_at_layer=cfg.n_layers))
        loss = option_loss(logits, options, answer)
        return StepOutput(loss, {"loss": float(loss.detach()), "kept": float(sample.detach().mean())})

    def record(loop) -> None:
        if loop.step in checkpoints:
            masked[loop.step] = mask.masked()

    trainer = Trainer(run=None, sampler=sampler, progress=progress)
    phase = Phase(steps, learning_rate, weight_decay=0.0, max_grad_norm=None, history_every=max(1, steps // 20),
                  label="head mask")
    with frozen(model):
        trainer.run_phase(0, phase, {"head_mask": mask}, step, on_step_end=record)
    return HeadMaskTraining(dict(sorted(masked.items())), trainer.loop.history, steps, learning_rate, seed)

