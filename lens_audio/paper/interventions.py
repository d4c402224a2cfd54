"""The rivals of adaptive steering, each one object the runner takes as its `steering` (as `paper.spec.SteeringSpec`
is): it gives the hooks of a forward (`__call__(model, batch, start)`), or scores the options itself
(`score_options`), and the fields its run manifest records (`settings`). `forwards` is its cost in forwards per
item, beside the baseline's one.

- `ContrastiveCorrection(alpha)`: audio-contrastive logit correction, the contrastive-decoding family used for
  vision-language models and 2026's GACL (arXiv 2606.05161) for audio: each option's log-likelihood with the audio,
  contrasted with the same prompt's on the silence twin, `(1 + alpha) * audio - alpha * silence`. Where we had to
  choose: the contrast is on the options' log-likelihoods under the run's choice scoring (for one-token options it
  ranks as the logit contrast does: the log-softmax normaliser is the same for every option of a row), the audio
  and silence rows in one stacked pass; GACL's
  published gate is not described in enough detail to reproduce, so no gate is applied. In generate mode it decodes
  greedily, contrasting the two rows' next-token log-probabilities at every step (contrastive decoding).
- `FixedSteering(direction)`: the paper's audio-minus-silence direction averaged once over calibration items
  (`FixedDirection`) and pushed at every item's final representation, the fixed rival of adaptive steering.
- `BackPatch(source, target)`: the residual stream after block `source` at the audio positions, written over the
  stream entering block `target` at the same positions (arXiv 2606.18924's back-patching of late audio
  representations into earlier layers); `source = target - 1` writes a stream onto itself and changes nothing.
- `AudioAttentionScale(heads, scale)`: in the chosen heads, the attention of the text positions after the audio to
  the audio tokens multiplied by `scale` and each row renormalised; `scale = 1` changes nothing (to rounding).
- `HeadMask(heads, label)`: the chosen heads' outputs switched off (AHAMask, arXiv 2509.01787: a mask trained on
  calibration items, `analysis.head_mask.train_head_mask`); an empty mask changes nothing, bit for bit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lens_audio.analysis.head_mask import head_mask_hooks
from lens_audio.analysis.steering.direction import FixedDirection
from lens_audio.benchmark.runner import choice_log_likelihoods
from lens_audio.model.hook_point import block_hook_name

if TYPE_CHECKING:
    from lens_audio.inputs.batch import AudioBatch
    from lens_audio.model.hooked_audio_lm import HookedAudioLM

Hooks = list[tuple[str, Callable]]


def _finite(name: str, value: float, minimum: float = 0.0) -> float:
    value = float(value)
    if not (value == value and abs(value) != float("inf")) or value < minimum:
        raise ValueError(f"{name} must be a finite number >= {minimum:g}, not {value!r}.")
    return value


@dataclass(frozen=True)
class ContrastiveCorrection:
    """Options ranked by `(1 + alpha) * log-likelihood(audio) - alpha * log-likelihood(silence twin)`."""

    alpha: float
    forwards: int = 2

    def __post_init__(self) -> None:
        _finite("alpha", self.alpha)

    def settings(self) -> dict[str, Any]:
        return {"method": "audio-contrastive", "alpha": self.alpha}

    @property
    def label(self) -> str:
        return f"alpha {self.alpha:g}"

    def contrast(self, audio: Tensor, silence: Tensor) -> Tensor:
        """`(1 + alpha) * audio - alpha * silence` in float32, where `audio` is finite (an absent option, -inf,
        stays absent)."""
        audio, silence = audio.float(), silence.float()
        return torch.where(torch.isfinite(audio), (1 + self.alpha) * audio - self.alpha * silence, audio)

    def score_options(self, model: "HookedAudioLM", batch: "AudioBatch", choices: Sequence[Sequence[str]],
                      scoring: str) -> Float[Tensor, "batch max_choices"]:
        if self.alpha == 0:  # the baseline's scores, bit for bit (no silence pass)
            return choice_log_likelihoods(model, batch, choices, scoring=scoring)
        both = batch.concat([batch, batch.silence_twin()])  # one pass: the batch and its silence twin stacked
        scores = choice_log_likelihoods(model, both, [*choices, *choices], scoring=scoring)
        return self.contrast(scores[: batch.batch_size], scores[batch.batch_size :])

    def generate(self, model: "HookedAudioLM", batch: "AudioBatch", max_new_tokens: int = 10,
                 do_sample: bool = False, **kwargs: Any) -> Int[Tensor, "batch prompt_plus_new"]:
        """Greedy contrastive decoding: the batch and its silence twin decoded together, each step's next token the
        argmax of `(1 + alpha) * log-softmax(audio) - alpha * log-softmax(silence)`, appended to both."""
        if do_sample:
            raise ValueError("audio-contrastive decoding is greedy here: generate with do_sample=False.")
        if self.alpha == 0:  # plain greedy decoding, bit for bit (no silence pass)
            return model.generate(batch, max_new_tokens=max_new_tokens, do_sample=False, **kwargs)
        n = batch.batch_size

        def contrasted(module, inputs, logits: Tensor) -> Tensor:  # [2n, pos, d_vocab]: audio rows, silence rows
            mixed = self.contrast(logits[:n].float().log_softmax(-1), logits[n:].float().log_softmax(-1))
            return torch.cat([mixed, mixed])  # float32; both halves pick the same token, so they stay one prompt apart

        handle = model.unembed.register_forward_hook(contrasted)
        try:
            both = batch.concat([batch, batch.silence_twin()])
            tokens = model.generate(both, max_new_tokens=max_new_tokens, do_sample=False, **kwargs)
        finally:
            handle.remove()
        return tokens[:n]


@dataclass(frozen=True, eq=False)
class FixedSteering:
    """The paper's direction averaged once over calibration items (`FixedDirection`), pushed at the final
    representation of every item: no silence pass at run time."""

    direction: FixedDirection
    forwards: int = 1

    def settings(self) -> dict[str, Any]:
        vector = self.direction.vector.detach().float().cpu().numpy().tobytes()
        return {"method": "fixed-direction", "layers": list(self.direction.layers), "beta": self.direction.beta,
                "direction": hashlib.sha256(vector).hexdigest()[:16]}

    def manifest_fields(self) -> dict[str, Any]:
        """What its run manifest records: the layers, beta and the direction by digest (the vector is too long)."""
        settings = self.settings()
        return {"layers": settings["layers"], "beta": settings["beta"],
                "steering": f"FixedDirection(sha256 {settings['direction']})"}

    @property
    def label(self) -> str:
        return f"beta {self.direction.beta:g}"

    def __call__(self, model: "HookedAudioLM", batch: "AudioBatch", start: int = -1) -> Hooks:
        return self.direction.hooks(model, None, start)


@dataclass(frozen=True)
class BackPatch:
    """The stream after block `source` at the audio positions written into the stream entering block `target`."""

    source: int
    target: int
    forwards: int = 2

    def settings(self) -> dict[str, Any]:
        return {"method": "back-patching", "source": self.source, "target": self.target}

    @property
    def label(self) -> str:
        return f"L{self.source} -> L{self.target}"

    def __call__(self, model: "HookedAudioLM", batch: "AudioBatch", start: int = -1) -> Hooks:
        for name, layer in (("source", self.source), ("target", self.target)):
            if not 0 <= layer < model.cfg.n_layers:
                raise ValueError(f"back-patching {name} layer {layer} is not one of the model's layers "
                                 f"0-{model.cfg.n_layers - 1}.")
        source = block_hook_name(self.source, "hook_resid_post")
        with torch.no_grad():
            _, cache = model.run_with_cache(batch, names_filter=[source], return_cache_object=False)
        late, audio = cache[source], batch.audio_mask

        def put(resid: Tensor, hook) -> Tensor:
            n = audio.shape[1]
            if resid.shape[1] < n:  # a decoding step after the prompt: no audio positions in it
                return resid
            resid = resid.clone()
            mask = audio.to(resid.device)
            resid[:, :n][mask] = late.to(resid.device, resid.dtype)[mask]
            return resid

        return [(block_hook_name(self.target, "hook_resid_pre"), put)]


@dataclass(frozen=True)
class AudioAttentionScale:
    """In `heads`, attention from the text after the audio to the audio tokens times `scale`, rows renormalised."""

    heads: tuple[tuple[int, int], ...]
    scale: float
    role: str = "specialists"  # whose heads: the specialists, or a random control's
    forwards: int = 1

    def __post_init__(self) -> None:
        _finite("scale", self.scale)
        object.__setattr__(self, "heads", tuple((int(l), int(h)) for l, h in self.heads))
        if not self.heads:
            raise ValueError("attention scaling needs at least one (layer, head).")

    def settings(self) -> dict[str, Any]:
        return {"method": "audio-attention-scale", "heads": [list(h) for h in self.heads], "scale": self.scale,
                "role": self.role}

    @property
    def label(self) -> str:
        return f"x{self.scale:g}"

    def __call__(self, model: "HookedAudioLM", batch: "AudioBatch", start: int = -1) -> Hooks:
        audio = batch.audio_mask
        after = torch.zeros_like(audio)  # query positions after each row's last audio token
        for row in range(audio.shape[0]):
            found = torch.nonzero(audio[row]).flatten()
            if len(found):
                after[row, int(found[-1]) + 1 :] = True
        by_layer: dict[int, list[int]] = {}
        for layer, head in self.heads:
            by_layer.setdefault(layer, []).append(head)

        def scale(pattern: Tensor, hook, heads: list[int]) -> Tensor:  # [batch, head, query, key]
            n_query, n_key = pattern.shape[-2:]
            keys = torch.zeros(pattern.shape[0], n_key, dtype=torch.bool, device=pattern.device)
            keys[:, : min(n_key, audio.shape[1])] = audio[:, :n_key].to(pattern.device)
            queries = torch.ones(pattern.shape[0], n_query, dtype=torch.bool, device=pattern.device)
            if n_query == n_key:  # the prompt's forward (a decoding step's one query comes after the audio)
                queries[:, : min(n_query, after.shape[1])] = after[:, :n_query].to(pattern.device)
            weight = torch.where(keys, self.scale, 1.0).to(pattern.dtype)[:, None, None, :]
            picked = pattern[:, heads] * weight
            picked = picked / picked.sum(-1, keepdim=True).clamp_min(torch.finfo(pattern.dtype).tiny)
            rows = queries[:, None, :, None]
            pattern = pattern.clone()
            pattern[:, heads] = torch.where(rows, picked, pattern[:, heads])
            return pattern

        return [(block_hook_name(layer, "attn.hook_pattern"), lambda p, hook, hs=heads: scale(p, hook, hs))
                for layer, heads in sorted(by_layer.items())]


@dataclass(frozen=True)
class HeadMask:
    """The outputs of `heads` switched off at every position (`analysis.head_mask`): a mask trained on calibration
    (AHAMask's recipe; `role="trained"`, `label` its training length) or, as its control, as many random heads."""

    heads: tuple[tuple[int, int], ...]
    label: str
    role: str = "trained"
    forwards: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", tuple((int(l), int(h)) for l, h in self.heads))

    def settings(self) -> dict[str, Any]:
        return {"method": "head-mask", "heads": [list(h) for h in self.heads], "role": self.role,
                "label": self.label}

    def __call__(self, model: "HookedAudioLM", batch: "AudioBatch", start: int = -1) -> Hooks:
        return head_mask_hooks(model, self.heads)
