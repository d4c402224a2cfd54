"""Training a TopK SAE on a tensor of activations: small, deterministic, resumable.

Why not SAELens's trainer: it draws activations from its own `ActivationsStore` over a text dataset and a
`HookedTransformer` (no hook for an arbitrary activation iterator or an audio model), and SAELens cannot be
installed beside TransformerLens 4. The objective is SAELens's TopK one (and OpenAI's): normalised MSE of the
reconstruction plus the AuxK loss (dead latents, those silent for `dead_after` steps, reconstruct the residual
with their own top `aux_k`), Adam, decoder rows kept at unit norm.

Training goes through the one loop of `lens_audio.train` (Adam as AdamW without weight decay, a constant
learning rate, no clipping). Every step's minibatch is drawn from a generator seeded by (seed, step), so a run
resumed from its run folder (SAE, Adam moments, dead-latent counters, step; a state every `checkpoint_every`
steps in `out/checkpoint/`) is the same run as one never interrupted.
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from lens_audio.sae.activations import ActivationSet
from lens_audio.sae.sae import SAEConfig, SparseAutoencoder
from lens_audio.train.loop import Phase, StepOutput, Trainer
from lens_audio.train.run_folder import LoopState, RunFolder

CHECKPOINT = "checkpoint"  # the run folder, inside the SAE's output folder while training
RECIPE = "sae"


@dataclass(frozen=True)
class SAETrainSettings:
    d_sae: int = 256
    k: int = 8
    steps: int = 3000
    batch_size: int = 256
    lr: float = 2e-3
    seed: int = 0
    aux_k: int = 32
    aux_coefficient: float = 1 / 32
    dead_after: int = 300  # steps without firing before a latent counts as dead (AuxK)
    checkpoint_every: int = 500


@dataclass
class SAEMetrics:
    """Reconstruction quality on a set of activations."""

    fraction_variance_explained: float  # 1 - sum |x - x_hat|^2 / sum |x - mean x|^2
    l0: float  # mean number of active latents per row
    dead_fraction: float  # latents that never fire on these rows
    n_rows: int

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "SAEMetrics":
        return cls(**data)


@dataclass
class TrainResult:
    sae: SparseAutoencoder
    settings: SAETrainSettings
    losses: list[float] = field(default_factory=list)  # normalised MSE per step (this process's steps)
    resumed_from: int = 0


@torch.no_grad()
def evaluate_sae(sae: SparseAutoencoder, acts: Float[Tensor, "row d"], chunk: int = 8192) -> SAEMetrics:
    """Fraction of variance explained, L0 and dead fraction of `sae` on `acts`."""
    acts = acts.to(sae.device, sae.W_enc.dtype)
    mean = acts.mean(0)
    err = total = l0 = 0.0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool, device=sae.device)
    for start in range(0, len(acts), chunk):
        x = acts[start : start + chunk]
        latents = sae.activation(sae.pre_activations(x))
        err += float(((sae.decode(latents) - x) ** 2).sum())
        total += float(((x - mean) ** 2).sum())
        active = latents > 0
        l0 += float(active.sum())
        fired |= active.any(0)
    return SAEMetrics(1 - err / total, l0 / len(acts), float((~fired).float().mean()), len(acts))


def _init(cfg: SAEConfig, acts: Tensor, seed: int) -> SparseAutoencoder:
    sae = SparseAutoencoder(cfg)
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(cfg.d_sae, cfg.d_in, generator=gen)
    with torch.no_grad():
        sae.W_dec.copy_(w / w.norm(dim=1, keepdim=True))
        sae.W_enc.copy_(sae.W_dec.T)
        sae.b_dec.copy_(acts.mean(0))
    return sae


def _batch(acts: Tensor, settings: SAETrainSettings, step: int) -> Tensor:
    gen = torch.Generator().manual_seed(settings.seed * 1_000_003 + step)
    return acts[torch.randint(len(acts), (settings.batch_size,), generator=gen)]


def _loss(sae: SparseAutoencoder, x: Tensor, variance: Tensor, dead: Tensor, settings: SAETrainSettings):
    pre = sae.pre_activations(x)
    latents = sae.activation(pre)
    recon = sae.decode(latents)
    residual = x - recon
    mse = (residual**2).sum(-1).mean() / variance
    loss = mse
    n_dead = int(dead.sum())
    if n_dead:
        k = min(settings.aux_k, n_dead)
        dead_pre = pre.masked_fill(~dead, float("-inf"))
        values, indices = dead_pre.topk(k, dim=-1)
        aux = torch.zeros_like(pre).scatter_(-1, indices, values.relu()) @ sae.W_dec
        target = residual.detach()
        loss = loss + settings.aux_coefficient * ((target - aux) ** 2).sum(-1).mean() / variance
    return loss, mse, latents


def train_sae(
    activations: ActivationSet,
    settings: SAETrainSettings = SAETrainSettings(),
    model_name: str = "",
    out: str | Path | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> TrainResult:
    """Train a TopK SAE on `activations`; with `out`, keep a run folder in `out/checkpoint/` and resume from it.

    `stop_after` ends the process after that many steps in total (a state is written there), as an
    interruption would; calling again with the same `out` continues. The finished SAE is written to `out`
    (SAELens's format) and the run folder removed.
    """
    acts = activations.acts.float()
    if len(acts) < settings.batch_size:
        raise ValueError(f"{len(acts)} activation rows are fewer than one batch ({settings.batch_size}); collect "
                         "more items or lower batch_size.")
    cfg = SAEConfig("topk", d_in=acts.shape[1], d_sae=settings.d_sae, hook_name=activations.hook_name,
                    model_name=model_name, k=settings.k, positions=activations.positions,
                    metadata={"training_rows": len(acts), "activations": activations.fingerprint(),
                              "train_settings": asdict(settings)})
    sae = _init(cfg, acts, settings.seed)
    since_fired = torch.zeros(settings.d_sae, dtype=torch.long)  # steps since each latent last fired
    checkpoint = Path(out) / CHECKPOINT if out is not None else None
    if checkpoint is not None and (checkpoint / "trainer.json").is_file():
        warnings.warn(f"{checkpoint} holds a checkpoint of an older lens_audio's SAE trainer, which this one does "
                      "not read; training starts again.", stacklevel=2)
        shutil.rmtree(checkpoint)
    run = RunFolder(checkpoint, RECIPE, asdict(settings)) if checkpoint is not None else None
    trainer = Trainer(run, activations.fingerprint(), progress=progress, checkpoint_every=settings.checkpoint_every,
                      log_every=100, stop_at=stop_after, total_steps=settings.steps,
                      inputs=f"the activations ({activations.hook_name})",
                      mismatch_advice=f"delete {checkpoint} to start again on these.")
    variance = ((acts - acts.mean(0)) ** 2).sum(-1).mean()
    losses: list[float] = []

    def step(loop: LoopState) -> StepOutput:
        x = _batch(acts, settings, loop.step)
        loss, mse, latents = _loss(sae, x, variance, since_fired >= settings.dead_after, settings)
        losses.append(float(mse.detach()))
        return StepOutput(loss, {"loss": losses[-1]}, extra=latents)

    def after_update(output: StepOutput) -> None:  # decoder rows back to unit norm; dead-latent counters
        sae.W_dec.div_(sae.W_dec.norm(dim=1, keepdim=True))
        fired = (output.extra > 0).any(0)
        since_fired.copy_(torch.where(fired, torch.zeros_like(since_fired), since_fired + 1))

    # Adam: AdamW without weight decay is the same update
    phase = Phase(settings.steps, settings.lr, warmup_steps=None, weight_decay=0.0, max_grad_norm=None,
                  label=f"SAE {activations.hook_name}")
    trainer.run_phase(0, phase, {"sae": sae}, step, after_update=after_update,
                      extra_tensors={"since_fired": since_fired})
    if out is not None and trainer.loop.step >= settings.steps:
        sae.save(out)
        shutil.rmtree(checkpoint, ignore_errors=True)
    return TrainResult(sae, settings, losses, trainer.resumed_from)
