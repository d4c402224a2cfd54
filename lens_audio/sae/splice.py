"""Splicing SAEs into `HookedAudioLM` through their hook points, as SAELens's `HookedSAETransformer.add_sae` does.

`with splice(model, sae, use_error_term=False): ...` swaps the model's hook point `sae.cfg.hook_name` for a
`SplicedHookPoint` that holds the SAE's own hook points as children, so while spliced the model's `hook_dict`
also has `{hook_name}.hook_sae_input`, `.hook_sae_acts_pre`, `.hook_sae_acts_post`, `.hook_sae_recons`,
`.hook_sae_error`, `.hook_sae_output` (SAELens's names), which `run_with_cache`, `run_with_hooks` and `hooks()` see.

What flows on from the hook is the reconstruction (plus the error term `x - reconstruction` with
`use_error_term=True`, which gives back the clean model's numbers while the latents are still computed and
hookable). One difference from SAELens: the original name stays a hook point, and fires on what flows on (the
spliced value), so caching `blocks.3.hook_resid_post` or steering there still works while spliced.

An SAE trained at some positions (`cfg.positions`: "audio", "text", "final") is applied at those positions only;
elsewhere the activation passes unchanged and the latents are zero. The positions are read from the token ids and mask
each forward (and generation's prefill) starts the decoder with; during generation the new tokens are text and
each step's last token is its final position. A forward started from a residual stream (`start_at_layer`) has no
token ids, so an SAE of a position scope refuses it.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lens_audio.benchmark.fingerprint import tensor_digest
from lens_audio.model.hook_point import HookPoint
from lens_audio.sae.activations import position_mask
from lens_audio.sae.sae import SparseAutoencoder

if TYPE_CHECKING:
    from lens_audio.model.hooked_audio_lm import HookedAudioLM


class SplicedHookPoint(HookPoint):
    """A hook point whose value is replaced by an SAE's output at the SAE's positions; see the module docstring."""

    def __init__(self, sae: SparseAutoencoder, audio_token_id: int) -> None:
        super().__init__()
        object.__setattr__(self, "sae", sae)  # not a child: the SAE's hook points are, directly
        for name, point in sae.hook_points().items():
            self.add_module(name, point)
        self.audio_token_id = audio_token_id
        self.inputs: tuple[Tensor, Tensor] | None = None  # (input_ids, attention_mask) of the current forward

    def manifest_description(self) -> str:
        """The SAE's settings and its weights' digest: what a run manifest records of a splice (a change of either,
        or of `use_error_term`, is another run)."""
        sae: SparseAutoencoder = self.sae  # type: ignore[assignment]
        cfg = sae.cfg
        weights = hashlib.sha256("".join(f"{n}:{tensor_digest(p)};" for n, p in sae.named_parameters()).encode())
        return (f"SAE spliced ({cfg.architecture}, d_in {cfg.d_in}, d_sae {cfg.d_sae}, k {cfg.k}, positions "
                f"{cfg.positions}, dtype {cfg.dtype}, use_error_term {sae.use_error_term}, weights "
                f"{weights.hexdigest()[:16]})")

    def forward(self, x: Tensor) -> Tensor:
        sae: SparseAutoencoder = self.sae  # type: ignore[assignment]
        scope = sae.cfg.positions
        on_sae = x.to(sae.device)
        if scope == "all":
            return sae(on_sae).to(x.device)
        if self.inputs is None:
            raise ValueError(
                f"the SAE at {sae.cfg.hook_name} reads {scope} positions, but this forward's token ids are unknown "
                "(start_at_layer or a hand-made call): run the model on an AudioBatch or input_ids."
            )
        ids, mask = self.inputs
        where = position_mask(ids, mask, self.audio_token_id, scope).to(sae.device)
        if where.shape != x.shape[:2]:
            raise ValueError(f"the SAE at {sae.cfg.hook_name} expected activations for {tuple(where.shape)} "
                             f"positions but got {tuple(x.shape[:2])}.")
        return sae(on_sae, where).to(x.device)


def _locate(model: "HookedAudioLM", name: str) -> tuple[torch.nn.Module, str]:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    return parent, attr


_RESIDUAL = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out")


def _residual_width(model: "HookedAudioLM", name: str) -> int | None:
    """The width of a decoder block's residual-stream hook (d_model), or None for another hook."""
    parts = name.split(".")
    return model.cfg.d_model if len(parts) == 3 and parts[0] == "blocks" and parts[2] in _RESIDUAL else None


@contextlib.contextmanager
def splice(
    model: "HookedAudioLM", saes: SparseAutoencoder | Sequence[SparseAutoencoder], use_error_term: bool | None = None
) -> Iterator["HookedAudioLM"]:
    """Run `model` with `saes` spliced in at their hook points (see the module docstring); restored on exit.

    `use_error_term`: None keeps each SAE's own setting; True adds the reconstruction error back (the clean
    model's numbers), False leaves only the reconstruction.
    """
    saes = [saes] if isinstance(saes, SparseAutoencoder) else list(saes)
    names = [sae.cfg.hook_name for sae in saes]
    if len(set(names)) != len(names):
        raise ValueError(f"two SAEs for one hook point in {names}: splice one SAE per hook.")
    for sae in saes:
        if sae.cfg.hook_name not in model.hook_dict or isinstance(model.hook_dict[sae.cfg.hook_name], SplicedHookPoint):
            raise ValueError(f"cannot splice at {sae.cfg.hook_name!r}: the model has no free hook point of that name "
                             "(see model.hook_names()).")
        if sae.cfg.model_name and model.cfg.model_name and sae.cfg.model_name != model.cfg.model_name:
            raise ValueError(f"{sae.label} was trained on {sae.cfg.model_name!r}, not on "
                             f"{model.cfg.model_name!r}.")
        width = _residual_width(model, sae.cfg.hook_name)
        if width is not None and width != sae.cfg.d_in:
            raise ValueError(f"{sae.label} reads width {sae.cfg.d_in} (cfg.json d_in), but {sae.cfg.hook_name} carries "
                             f"width {width} in {model.cfg.model_name!r}: use an SAE trained on this model's hook.")
        sae.check_finite()  # NaN weights would make every logit NaN, reported as an overflow
    originals, previous_terms, spliced = [], [], []
    for sae in saes:
        parent, attr = _locate(model, sae.cfg.hook_name)
        point = SplicedHookPoint(sae, model.cfg.audio_token_id)
        originals.append((parent, attr, getattr(parent, attr)))
        previous_terms.append(sae.use_error_term)
        if use_error_term is not None:
            sae.use_error_term = use_error_term
        setattr(parent, attr, point)
        spliced.append(point)

    # Every forward and generation's prefill go through start_decoder with the prompt's token ids and mask; a
    # forward from a residual stream (start_at_layer) does not, so each forward first forgets the last ones.
    start_decoder = model.start_decoder

    def capture(input_ids, attention_mask, *args, **kwargs):
        for point in spliced:
            point.inputs = (input_ids, attention_mask)
        return start_decoder(input_ids, attention_mask, *args, **kwargs)

    def forget(module, args):
        for point in spliced:
            point.inputs = None

    capture.manifest_description = forget.manifest_description = ""  # the spliced points describe the splice
    model.start_decoder = capture
    handle = model.register_forward_pre_hook(forget)
    model.setup()
    try:
        yield model
    finally:
        handle.remove()
        del model.start_decoder  # the class's method again
        for (parent, attr, original), sae, term in zip(originals, saes, previous_terms):
            setattr(parent, attr, original)
            sae.use_error_term = term
        model.setup()
