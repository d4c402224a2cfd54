"""`HookedAudioLM`: an audio-language model (audio encoder + projector + decoder) as a TransformerLens root module.

One class for every family in `lens_audio.model.family` (Qwen2-Audio, AudioFlamingo3, Voxtral): the
checkpoint's config chooses the encoder's downsampling, the projector and the decoder's biases.

It is a `transformer_lens.HookedRootModule`, so `run_with_hooks`, `hooks()`,
`add_hook`, `reset_hooks` and `run_with_cache` behave as in TransformerLens,
and `run_with_cache` returns a `transformer_lens.ActivationCache` whose
helpers (`accumulated_resid`, `decompose_resid`, `stack_head_results`,
`logit_attrs`, `apply_ln_to_stack`) work because the decoder uses
TransformerLens's hook names and config fields.

Forward takes what Hugging Face's `Qwen2AudioForConditionalGeneration`
takes (`input_ids`, `attention_mask`, `input_features`,
`feature_attention_mask`; AudioFlamingo3's name `input_features_mask` is
accepted too, and Voxtral needs no mask) or one `AudioBatch`, and returns logits
`[batch, pos, d_vocab]`. Position ids default to "count of real tokens so
far" (what Hugging Face's `generate` uses), so a left-padded row gives the
same numbers as the same prompt unpadded.

Why this file passes ~500 lines: it is the one class a TransformerLens user reads to find `forward`,
`run_with_cache`, `generate` and the `set_use_*` switches, as `HookedTransformer` is one file; everything that can
live apart already does (`generation`, `loss`, `loading`, `processing`, `dispatch`, `tl_text`, `tl_weights`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from transformer_lens import ActivationCache, HookedRootModule

from lens_audio.inputs.batch import AudioBatch, make_batch
from lens_audio.model import dispatch, generation, loading, processing
from lens_audio.model import loss as lm_loss
from lens_audio.model.attention import causal_mask
from lens_audio.model.audio_encoders import make_audio_encoder
from lens_audio.model.config import AudioLMConfig
from lens_audio.model.decoder import (  # position_ids_from_mask stays importable from here
    DecoderBlock,
    Embed,
    RMSNorm,
    Unembed,
    position_ids_from_mask,
    weighted_norms,
)
from lens_audio.model.hook_point import HookPoint, names_predicate
from lens_audio.model.kv_cache import KVCache, as_kv_cache
from lens_audio.model.memory import require_cache
from lens_audio.model.mrope import make_rotary
from lens_audio.model.tl_forward import TLForwardMixin
from lens_audio.model.tl_text import TLTextMixin, adopt_tokenizer
from lens_audio.model.tl_weights import TLWeightsMixin

ReturnType = Literal["logits", "loss", "both"] | None


@dataclass
class DecoderState:
    """The decoder's running state between blocks: residual stream, rotary angles, key mask and KV cache."""

    resid: Float[Tensor, "batch pos d_model"]
    cos_sin: tuple[Tensor, Tensor]
    allowed: Bool[Tensor, "batch 1 query key"] | None
    past_kv_cache: KVCache | None

    def select_rows(self, rows: slice) -> "DecoderState":
        """The same state for a slice of the batch (the KV cache is sliced in place)."""
        if self.past_kv_cache is not None:
            self.past_kv_cache.select_rows(rows)
        allowed = None if self.allowed is None else self.allowed[rows]
        return DecoderState(
            self.resid[rows], (self.cos_sin[0][rows], self.cos_sin[1][rows]), allowed, self.past_kv_cache
        )


class HookedAudioLM(TLWeightsMixin, TLTextMixin, TLForwardMixin, HookedRootModule):
    """A hooked port of Qwen2-Audio, AudioFlamingo3 and Voxtral; see the module docstring.

    Build one with `HookedAudioLM.from_pretrained(name_or_path)` or
    `HookedAudioLM.from_hf_model(hf_model)`; the constructor makes a model
    with freshly initialised weights.
    """

    # Prompts longer than cfg.n_ctx are refused; set True to run them anyway (with a warning).
    allow_long_context: bool = False
    # Why `from_pretrained` left `processor` unset (e.g. Voxtral's tekken.json without mistral-common), or None.
    processor_problem: str | None = None

    def __init__(self, cfg: AudioLMConfig, processor: Any = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.processor = processor
        self.audio = make_audio_encoder(cfg)  # the family's (lens_audio.model.family)
        self.embed = Embed(cfg.d_vocab, cfg.d_model)
        self.hook_embed = HookPoint()  # token embeddings with the audio embeddings spliced in
        self.blocks = nn.ModuleList(DecoderBlock(cfg, layer) for layer in range(cfg.n_layers))  # layer: dense or MoE
        self.ln_final = RMSNorm(cfg.d_model, cfg.eps, weighted_norms(cfg))
        # Never tied to the embedding: the *ForConditionalGeneration classes of all three families keep their own
        # lm_head, whatever text_config.tie_word_embeddings says.
        self.unembed = Unembed(cfg.d_model, cfg.d_vocab, bias=False)
        self.rotary = make_rotary(cfg.d_head, cfg.rotary_base, cfg.mrope_section, cfg.mrope_interleaved)  # Omni: TMRoPE
        self.setup()
        if cfg.dtype != torch.float32:  # built as the config says (TransformerLens's constructor does the same)
            nn.Module.to(self, cfg.dtype)
            if cfg.audio.fp32_positions:
                self.audio.W_pos.data = self.audio.W_pos.data.float()

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        dtype: torch.dtype | str = torch.float32,
        device: str | torch.device = "cpu",
        attn_implementation: str = "auto",
        local_files_only: bool | None = None,
        *,
        fold_ln: bool = True,
        center_writing_weights: bool = True,
        center_unembed: bool = False,
        fold_value_biases: bool = False,
        device_map: "str | dict[str, Any] | None" = None,
        max_memory: dict | None = None,
        offload_folder: str | Path | None = None,
    ) -> "HookedAudioLM":
        """Load a Qwen2-Audio, AudioFlamingo3 or Voxtral checkpoint from a local directory or a Hub id.

        Weights are read from safetensors tensor by tensor and converted on
        the fly into a model allocated without memory, so loading peaks near
        the size of the weights. Hub ids resolve through the local Hugging
        Face cache (downloading only when online and allowed). Parameters
        are trainable, as in TransformerLens (wrap inference in
        `torch.no_grad()`). The weight-processing flags are TransformerLens's
        (see `process_weights_`); by default the decoder's RMSNorm weights
        are folded, so `W_U[:, t]` is token t's residual direction and the
        logits still equal transformers'. `from_pretrained_no_processing`
        keeps the weights as the checkpoint has them.

        For models larger than one device, `device_map` ("auto", or a dict such as `{"audio": 0, "embed": 0,
        "blocks.0": 0, ..., "unembed": "cpu"}`; `device` is then ignored) places the modules with Hugging Face
        accelerate (`lens_audio.model.dispatch`): "auto" fills the GPUs, then the CPU, then the disk, within
        `max_memory` (e.g. `{0: "70GiB", "cpu": "100GiB"}`); modules mapped to "disk" are offloaded to
        `offload_folder`.
        """
        model, device_map = loading.load_pretrained(
            cls, name_or_path, dtype, device, attn_implementation, local_files_only, device_map, max_memory
        )
        model = processing.process_weights_(
            model, fold_ln, center_writing_weights, center_unembed, fold_value_biases, overwrite=True
        ).eval()  # no dropout anywhere: eval mode, as Hugging Face loads (TransformerLens 4.x's tools require it)
        return model if device_map is None else dispatch.dispatch(model, device_map, offload_folder)

    @classmethod
    def from_pretrained_no_processing(cls, name_or_path: str | Path, **kwargs: Any) -> "HookedAudioLM":
        """`from_pretrained` with every weight as the checkpoint has it (norm weights unfolded)."""
        flags = dict(fold_ln=False, center_writing_weights=False, center_unembed=False, fold_value_biases=False)
        return cls.from_pretrained(name_or_path, **{**flags, **kwargs})

    @classmethod
    def from_hf_model(
        cls,
        hf_model: nn.Module,
        processor: Any = None,
        *,
        fold_ln: bool = True,
        center_writing_weights: bool = True,
        center_unembed: bool = False,
        fold_value_biases: bool = False,
    ) -> "HookedAudioLM":
        """Wrap a `Qwen2AudioForConditionalGeneration` (or AudioFlamingo3's, Voxtral's) already in memory.

        The port shares the Hugging Face model's weight tensors (no copy)
        except those weight processing changes (with the default `fold_ln`,
        the decoder's q/k/v, gate/up and lm_head weights, which become new
        tensors): editing a shared weight in one edits the other. Pass
        `fold_ln=False` to share every weight; `copy.deepcopy` first if you
        need them apart.
        """
        model = loading.load_from_hf_model(cls, hf_model, processor)
        return model.process_weights_(fold_ln, center_writing_weights, center_unembed, fold_value_biases).eval()

    def process_weights_(
        self,
        fold_ln: bool = True,
        center_writing_weights: bool = True,
        center_unembed: bool = False,
        fold_value_biases: bool = False,
    ) -> "HookedAudioLM":
        """TransformerLens's weight processing of the decoder, in place; see `lens_audio.model.processing`."""
        return processing.process_weights_(self, fold_ln, center_writing_weights, center_unembed, fold_value_biases)

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        input_ids: "Int[Tensor, 'batch pos'] | AudioBatch",
        attention_mask: Int[Tensor, "batch pos"] | None = None,
        input_features: Float[Tensor, "clips mels frames"] | None = None,
        feature_attention_mask: Int[Tensor, "clips frames"] | None = None,
        *,
        position_ids: Int[Tensor, "batch pos"] | None = None,
        return_type: ReturnType = "logits",
        loss_per_token: bool = False,
        tokens: Int[Tensor, "batch pos"] | None = None,
        start_at_layer: int | None = None,
        stop_at_layer: int | None = None,
        past_kv_cache: Any = None,
        input_features_mask: Int[Tensor, "clips frames"] | None = None,
        prepend_bos: bool | None = None,
        padding_side: Literal["left", "right"] | None = None,
    ) -> Any:
        """Run the model; returns logits, the loss, both, or the residual stream before block `stop_at_layer`.

        `input_ids` may also be a string or a list of strings (a text-only prompt, tokenised and left-padded).
        `return_type="loss"` is the mean next-token loss over text targets (padding and audio positions skipped;
        see `lens_audio.model.loss`), `"both"` returns `(logits, loss)`. With `start_at_layer`, `input_ids` is the
        residual stream `[batch, pos, d_model]` entering that block (`tokens` are then needed for the loss).
        `prepend_bos` and `padding_side` apply to text input, as in TransformerLens; `past_kv_cache` is a `KVCache`
        or TransformerLens's `TransformerLensKeyValueCache` (see `lens_audio.model.kv_cache`).
        """
        past_kv_cache = as_kv_cache(past_kv_cache, self.cfg.n_layers)
        if stop_at_layer is not None and past_kv_cache is not None:
            raise ValueError("stop_at_layer cannot be combined with past_kv_cache: later layers would miss their keys.")
        if feature_attention_mask is None:
            feature_attention_mask = input_features_mask  # AudioFlamingo3's name for the same mask
        if start_at_layer is None:
            input_ids, attention_mask, input_features, feature_attention_mask = self._unpack_inputs(
                input_ids, attention_mask, input_features, feature_attention_mask, prepend_bos, padding_side
            )
            state = self.start_decoder(
                input_ids, attention_mask, input_features, feature_attention_mask, position_ids, past_kv_cache
            )
        else:
            state = self.decoder_state(input_ids, attention_mask, position_ids, past_kv_cache)
            input_ids = tokens
        resid = self.run_blocks(state, start_at_layer or 0, stop_at_layer)
        if stop_at_layer is not None or return_type is None:
            return resid if stop_at_layer is not None else None
        logits = self.unembed(self.ln_final(resid))
        if return_type == "logits":
            return logits
        if input_ids is None:
            raise ValueError(
                f"return_type={return_type!r} with start_at_layer needs the prompt's token ids: pass tokens=."
            )
        loss = self._loss(logits, input_ids, attention_mask, loss_per_token)
        return loss if return_type == "loss" else (logits, loss)

    def _loss(self, logits, input_ids, attention_mask, per_token: bool) -> Tensor:
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        targets = lm_loss.text_targets(input_ids.to(logits.device), mask.to(logits.device), self.cfg.audio_token_id)
        return lm_loss.lm_cross_entropy_loss(logits, input_ids, targets, per_token, mask.to(logits.device))

    def loss_fn(
        self,
        logits: Float[Tensor, "batch pos d_vocab"],
        tokens: Int[Tensor, "batch pos"],
        attention_mask: Int[Tensor, "batch pos"] | None = None,
        per_token: bool = False,
    ) -> Tensor:
        """TransformerLens's `loss_fn`: next-token cross-entropy, skipping padding and audio targets."""
        return self._loss(logits, tokens, attention_mask, per_token)

    def answer_loss(self, batch: "AudioBatch", answers: str | Sequence[str], per_token: bool = False) -> Tensor:
        """Loss of each row's answer after its prompt only (MMAU-style items); see
        `lens_audio.model.loss.answer_loss`."""
        return lm_loss.answer_loss(self, batch, answers, per_token)

    def start_decoder(
        self,
        input_ids: Int[Tensor, "batch pos"],
        attention_mask: Int[Tensor, "batch pos"],
        input_features: Float[Tensor, "clips mels frames"] | None = None,
        feature_attention_mask: Int[Tensor, "clips frames"] | None = None,
        position_ids: Int[Tensor, "batch pos"] | None = None,
        past_kv_cache: KVCache | None = None,
    ) -> DecoderState:
        """The embeddings (audio spliced in, `hook_embed` fired) and what every block needs; see `run_blocks`."""
        self._check_context(attention_mask, past_kv_cache)
        resid = self.hook_embed(
            self._embed_with_audio(input_ids, input_features, feature_attention_mask, past_kv_cache)
        )
        return self.decoder_state(resid, attention_mask, position_ids, past_kv_cache)

    def decoder_state(
        self,
        resid: Float[Tensor, "batch pos d_model"],
        attention_mask: Int[Tensor, "batch pos"] | None = None,
        position_ids: Int[Tensor, "batch pos"] | None = None,
        past_kv_cache: KVCache | None = None,
    ) -> DecoderState:
        """What every block needs besides the residual stream: rotary angles and the key mask (all real if no mask)."""
        if attention_mask is None:
            attention_mask = torch.ones(resid.shape[:2], dtype=torch.long, device=resid.device)
        mask = attention_mask.to(device=resid.device, dtype=torch.bool)
        if position_ids is None:
            position_ids = self._position_ids(mask, past_kv_cache)
        allowed = self._allowed_keys(mask, past_kv_cache)
        cos_sin = self.rotary.cos_sin(position_ids.to(resid.device), resid.dtype)
        return DecoderState(resid, cos_sin, allowed, past_kv_cache)

    def run_blocks(
        self, state: DecoderState, start: int = 0, stop: int | None = None
    ) -> Float[Tensor, "batch pos d_model"]:
        """Run blocks `start:stop` on `state.resid` (updated in place), e.g. to change the batch between two spans."""
        cache = state.past_kv_cache
        for i, block in enumerate(self.blocks[start:stop], start=start):
            state.resid = block(state.resid, state.cos_sin, state.allowed, None if cache is None else cache[i])
        return state.resid

    def _unpack_inputs(
        self, input_ids, attention_mask, input_features, feature_attention_mask, prepend_bos=None, padding_side=None
    ):
        if isinstance(attention_mask, str):
            raise ValueError(
                f"forward's second argument is attention_mask, not {attention_mask!r}: pass TransformerLens's options "
                f"by keyword (model(tokens, return_type={attention_mask!r}))."
            )
        if isinstance(input_ids, AudioBatch):
            b = input_ids
            return b.input_ids, b.attention_mask, b.input_features, b.feature_attention_mask
        if isinstance(input_ids, str) or (isinstance(input_ids, list) and input_ids and isinstance(input_ids[0], str)):
            return *self._tokenize(input_ids, prepend_bos, padding_side), None, None
        if not isinstance(input_ids, Tensor) or input_ids.ndim != 2:
            raise ValueError(
                "input_ids must be a [batch, pos] tensor of token ids (or pass an AudioBatch from model.to_batch); "
                f"got {type(input_ids).__name__} with shape {getattr(input_ids, 'shape', None)}."
            )
        if attention_mask is None:
            attention_mask = self._infer_attention_mask(input_ids, prepend_bos, padding_side)
        mask_missing = input_features is not None and feature_attention_mask is None and self.cfg.audio.mask_padding
        if mask_missing or (input_features is None and feature_attention_mask is not None):
            raise ValueError("input_features and feature_attention_mask go together: pass both or neither.")
        return input_ids, attention_mask, input_features, feature_attention_mask

    def _embed_with_audio(
        self,
        input_ids: Int[Tensor, "batch pos"],
        input_features: Tensor | None,
        feature_attention_mask: Tensor | None,
        past_kv_cache: KVCache | None,
    ) -> Float[Tensor, "batch pos d_model"]:
        """Token embeddings with each clip's audio embeddings written over its audio placeholder tokens."""
        input_ids = input_ids.to(self.device)
        embeds = self.embed(input_ids)
        audio_slots = input_ids == self.cfg.audio_token_id
        n_slots = int(audio_slots.sum())
        token = getattr(self.processor, "audio_token", None) or f"audio placeholder (id {self.cfg.audio_token_id})"
        if input_features is None:
            if n_slots and (past_kv_cache is None or past_kv_cache.length == 0):
                raise ValueError(
                    f"The prompt holds {n_slots} {token} tokens but no input_features were given: "
                    "pass the clips' features (model.to_batch builds both), or the AudioBatch itself (TransformerLens's"
                    " patching functions take it, or BoundAudioModel(model, batch) with batch.input_ids)."
                )
            return embeds
        frames_mask = None if feature_attention_mask is None else feature_attention_mask.to(embeds.device)
        extra = {"input_ids": input_ids} if self.audio.needs_input_ids else {}  # Music Flamingo's time rotation
        audio_embeds, n_tokens = self.audio(input_features.to(embeds.device), frames_mask, **extra)
        audio_embeds, n_tokens = audio_embeds.to(embeds.device), n_tokens.to(embeds.device)
        if n_slots != int(n_tokens.sum()):
            raise ValueError(
                f"The prompt holds {n_slots} {token} tokens but the {len(n_tokens)} clip(s) give "
                f"{int(n_tokens.sum())} audio embeddings ({n_tokens.tolist()} per clip). Build inputs with the "
                "model's processor, which expands each audio placeholder into one token per audio frame, "
                "and give exactly one clip per placeholder."
            )
        keep = torch.arange(audio_embeds.shape[1], device=embeds.device)[None, :] < n_tokens[:, None]
        return embeds.masked_scatter(audio_slots[..., None], audio_embeds[keep].to(embeds.dtype))

    def _check_context(self, attention_mask: Int[Tensor, "batch pos"], past_kv_cache: KVCache | None) -> None:
        """Refuse (or, with `allow_long_context`, warn about) positions beyond the model's context `cfg.n_ctx`."""
        cached = past_kv_cache.length if past_kv_cache is not None else 0
        if cached + attention_mask.shape[-1] <= self.cfg.n_ctx:  # a bound from shapes alone: no device sync per step
            return
        n_past = past_kv_cache.n_valid() if past_kv_cache is not None and past_kv_cache.length else None
        lengths = attention_mask.long().sum(-1).cpu() + (0 if n_past is None else n_past.cpu())
        longest = int(lengths.max()) if lengths.numel() else 0
        if longest <= self.cfg.n_ctx:
            return
        message = (
            f"the input reaches {longest} tokens but {self.cfg.model_name!r} was trained on at most cfg.n_ctx = "
            f"{self.cfg.n_ctx} positions"
        )
        if not self.allow_long_context:
            raise ValueError(
                f"{message}; shorten the prompt or audio (or set model.allow_long_context = True to run anyway)."
            )
        warnings.warn(f"{message}; positions beyond it are untrained, so treat the outputs with care.", stacklevel=3)

    @staticmethod
    def _position_ids(mask: torch.Tensor, past_kv_cache: KVCache | None) -> Int[Tensor, "batch pos"]:
        n_past = past_kv_cache.n_valid() if past_kv_cache is not None and past_kv_cache.length else None
        return position_ids_from_mask(mask, n_past)

    @staticmethod
    def _allowed_keys(
        mask: Int[Tensor, "batch pos"], past_kv_cache: KVCache | None
    ) -> Bool[Tensor, "batch 1 query key"] | None:
        """Which keys each query sees (causal and not padding), from the [batch, pos] padding mask.

        None means plain causal (the fast case). Not an attention mask in Hugging Face's [batch, pos] sense.
        """
        past = 0 if past_kv_cache is None else past_kv_cache.length
        key_valid = mask if past_kv_cache is None else past_kv_cache.extend_mask(mask)
        if past == 0 and bool(key_valid.all()):
            return None
        allowed = causal_mask(mask.shape[1], key_valid.shape[1], mask.device)
        return allowed[None, None] & key_valid[:, None, None, :]

    # ------------------------------------------------------------------ TransformerLens surface

    def run_with_cache(
        self, *model_args: Any, return_cache_object: bool = True, **kwargs: Any
    ) -> tuple[Any, ActivationCache | dict[str, Tensor]]:
        """Run and cache activations; returns `(logits, ActivationCache)` as TransformerLens does.

        Per-head `attn.hook_result` ([batch, pos, head, d_model] per layer) is
        cached only when `cfg.use_attn_result` is set or `names_filter` asks
        for it by name, since it is `n_heads` times larger than the residual
        stream; `cache.stack_head_results()` recomputes it from `hook_z` otherwise.
        """
        if kwargs.get("names_filter") is None and not self.cfg.use_attn_result:
            kwargs["names_filter"] = names_predicate(None)
        require_cache(self, model_args[0] if model_args else kwargs.get("input"), kwargs.get("names_filter"))
        out, cache_dict = super().run_with_cache(*model_args, **kwargs)
        if not return_cache_object:
            return out, cache_dict
        return out, ActivationCache(cache_dict, self, has_batch_dim=not kwargs.get("remove_batch_dim", False))

    def set_use_attn_result(self, use_attn_result: bool) -> None:
        """Always compute (and cache) per-head outputs `blocks.{L}.attn.hook_result`."""
        self.cfg.use_attn_result = use_attn_result

    def set_use_split_qkv_input(self, use_split_qkv_input: bool) -> None:
        """Fire `blocks.{L}.hook_q_input/hook_k_input/hook_v_input`: one copy of the residual stream per head."""
        self.cfg.use_split_qkv_input = use_split_qkv_input

    def set_use_hook_mlp_in(self, use_hook_mlp_in: bool) -> None:
        """Fire `blocks.{L}.hook_mlp_in`: the MLP's input (resid_mid, before ln2), patchable per MLP."""
        self.cfg.use_hook_mlp_in = use_hook_mlp_in

    def set_ungroup_grouped_query_attention(self, ungroup: bool) -> None:
        """Repeat key/value heads per query head before `hook_k`/`hook_v` (then `[batch, pos, head, d_head]`)."""
        self.cfg.ungroup_grouped_query_attention = ungroup

    def set_attn_implementation(self, implementation: Literal["auto", "sdpa", "eager"]) -> None:
        """ "auto": SDPA unless a hook needs the pattern; "eager": always explicit; "sdpa": never explicit (pattern
        hooks don't fire)."""
        if implementation not in ("auto", "sdpa", "eager"):
            raise ValueError(f"attn_implementation must be 'auto', 'sdpa' or 'eager', not {implementation!r}.")
        self.cfg.attn_implementation = implementation
        for block in self.audio.blocks:
            block.attn.implementation = implementation

    @property
    def W_E(self) -> Float[Tensor, "d_vocab d_model"]:
        return self.embed.W_E

    @property
    def W_U(self) -> Float[Tensor, "d_model d_vocab"]:
        return self.unembed.W_U

    @property
    def b_U(self) -> Float[Tensor, " d_vocab"]:
        return self.unembed.b_U

    def tokens_to_residual_directions(self, tokens: "int | str | Int[Tensor, '...']") -> Float[Tensor, "... d_model"]:
        """Residual directions whose dot product with the normalised stream gives each token's logit.

        `W_U[:, tokens]` once `fold_ln` has folded the final RMSNorm weight into
        `W_U` (the default); on an unfolded model that weight is multiplied in
        here, so `ActivationCache.logit_attrs` is exact either way.
        """
        if isinstance(tokens, str):
            tokens = self.to_single_token(tokens)
        weight = dispatch.materialized(self.unembed)  # loaded from accelerate's offload store if offloaded
        directions = weight[torch.as_tensor(tokens, device=weight.device)]
        norm = dispatch.materialized(self.ln_final, "w")
        return directions if norm is None else directions * norm.to(directions.device)

    # ------------------------------------------------------------------ tokens and text

    @property
    def processor(self) -> Any:
        """The Hugging Face processor (tokenizer and feature extractor), or None. Setting it records
        `cfg.tokenizer_prepends_bos` and, for a tokenizer without BOS, makes its `bos_token` the EOS token (as
        `HookedTransformer.set_tokenizer` does)."""
        return self._processor

    @processor.setter
    def processor(self, processor: Any) -> None:
        self._processor = processor
        adopt_tokenizer(self.cfg, processor)

    def _require_processor(self) -> Any:
        if self.processor is None:
            raise ValueError(
                "This model has no processor (tokenizer and feature extractor)"
                + (f": {self.processor_problem}" if self.processor_problem else ".")
                + " Load it from a checkpoint folder that holds the processor files, or set model.processor "
                "(e.g. AutoProcessor.from_pretrained(path))."
            )
        return self.processor

    @property
    def tokenizer(self) -> Any:
        return self._require_processor().tokenizer

    def to_single_token(self, string: str) -> int:
        ids = self.tokenizer.encode(string, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"{string!r} is {len(ids)} tokens, not one: {ids}.")
        return ids[0]

    def to_batch(self, audio: Any, question: Any = None, **kwargs: Any) -> "AudioBatch":
        """Build an `AudioBatch` with this model's processor; see `lens_audio.make_batch`."""
        return make_batch(self._require_processor(), audio, question, **kwargs)

    # ------------------------------------------------------------------ generation

    def generate(
        self,
        input: "str | list[str] | Int[Tensor, 'batch pos'] | AudioBatch",
        attention_mask: Int[Tensor, "batch pos"] | None = None,
        input_features: Float[Tensor, "clips mels frames"] | None = None,
        feature_attention_mask: Int[Tensor, "clips frames"] | None = None,
        *,
        max_new_tokens: int = 10,
        stop_at_eos: bool = True,
        eos_token_id: int | Sequence[int] | None = None,
        do_sample: bool = True,
        top_k: int | None = None,
        top_p: float | None = None,
        temperature: float = 1.0,
        freq_penalty: float = 0.0,
        use_past_kv_cache: bool = True,
        prepend_bos: bool | None = None,
        padding_side: Literal["left"] | None = None,
        return_type: Literal["input", "tokens", "str"] = "input",
        verbose: bool = False,
        pad_token_id: int | None = None,
        fwd_hooks: Sequence[tuple[Any, Callable[..., Any]]] = (),
        generator: torch.Generator | None = None,
    ) -> "Int[Tensor, 'batch total'] | str | list[str]":
        """Sample (or, with `do_sample=False`, greedily decode) with a KV cache; see `lens_audio.model.generation`.

        TransformerLens's arguments and defaults: `max_new_tokens=10`, `do_sample=True` at `temperature=1.0`
        (`temperature=0` is greedy), `top_k`, `top_p`, `freq_penalty`; pass `do_sample=False` for reproducible
        greedy output (every evaluation in lens_audio does). `stop_at_eos=False` generates exactly `max_new_tokens`;
        `verbose` shows a progress bar (off by default here); `return_type="str"` decodes prompt plus continuation
        (special tokens such as the audio placeholders dropped), `"tokens"` returns ids, and `"input"` (the default)
        returns what came in: a string for a string, a list of strings for a list of strings, ids otherwise.
        Sampling draws from torch's global generator unless `generator` is given; batches are left-padded.
        """
        if padding_side not in (None, "left"):
            raise ValueError("generate pads batched prompts on the left (padding_side='left' or None).")
        text = isinstance(input, (str, list))
        if prepend_bos is not None and not text:
            raise ValueError("prepend_bos applies to text input (a string or a list of strings) only.")
        extras = (attention_mask, input_features, feature_attention_mask)
        given = [x for x in extras if x is not None]
        if (text and given) or not all(isinstance(x, Tensor) for x in given):
            raise ValueError(
                "generate's arguments after input are Hugging Face's attention_mask, input_features and "
                "feature_attention_mask (tensors; none for text), and max_new_tokens is keyword-only: "
                "generate(input, max_new_tokens=20)."
            )
        if return_type not in ("input", "tokens", "str"):
            raise ValueError(f"return_type must be 'input', 'tokens' or 'str', not {return_type!r}.")
        hooks = list(fwd_hooks)
        if verbose:
            from tqdm.auto import tqdm

            bar = tqdm(total=max_new_tokens)
            hooks.append(("ln_final.hook_scale", lambda x, hook: bar.update(1)))  # one final norm per step
        inputs = (
            (*self._tokenize(input, prepend_bos, "left"), None, None)
            if text
            else self._unpack_inputs(input, attention_mask, input_features, feature_attention_mask)
        )
        tokens = generation.generate(
            self, *inputs,
            max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
            freq_penalty=freq_penalty, eos_token_id=eos_token_id if stop_at_eos else [], pad_token_id=pad_token_id,
            fwd_hooks=hooks, generator=generator, use_past_kv_cache=use_past_kv_cache,
        )
        if verbose:
            bar.close()
        if return_type == "str" or (return_type == "input" and text):
            texts = self.tokenizer.batch_decode(tokens, skip_special_tokens=True)
            return texts[0] if isinstance(input, str) else texts
        return tokens

    def hook_names(self, filter_fn: Callable[[str], bool] | None = None) -> list[str]:
        """Names of all hook points (decoder hooks follow TransformerLens naming; audio ones start with `audio.`)."""
        return [n for n in self.hook_dict if filter_fn is None or filter_fn(n)]

    @property
    def device(self) -> torch.device:
        """Where inputs go: the token embedding's device (its execution device when accelerate dispatched it)."""
        hook = getattr(self.embed, "_hf_hook", None)
        execution = getattr(hook, "execution_device", None)
        return torch.device(execution) if execution is not None else self.embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype
