"""A sparse autoencoder in SAELens's file format: `cfg.json` + `sae_weights.safetensors`.

The weights carry SAELens's names and shapes — `W_enc [d_in, d_sae]`, `b_enc [d_sae]`, `W_dec [d_sae, d_in]`,
`b_dec [d_in]`, and for JumpReLU `threshold [d_sae]` — and the config is SAELens 6's `SAEConfig.to_dict()`
layout (`architecture`, `d_in`, `d_sae`, `dtype`, `device`, `apply_b_dec_to_input`, `normalize_activations`,
`reshape_activations`, `metadata` with `hook_name`, `model_name`, ...; `k` and `rescale_acts_by_decoder_norm`
for TopK), so `sae_lens.SAE.load_from_disk(folder)` reads a folder written here. The arithmetic is SAELens's
inference path:

    pre  = (x - b_dec) @ W_enc + b_enc                       (hook_sae_acts_pre)
    topk:     acts = relu of the k largest entries of pre, zero elsewhere
    jumprelu: acts = relu(pre) * (pre > threshold)           (hook_sae_acts_post)
    recons = acts @ W_dec + b_dec                            (hook_sae_recons)
    output = recons (+ x - recons without hooks, with the error term)   (hook_sae_error, hook_sae_output)

`metadata["positions"]` (a lens_audio key SAELens keeps but does not read) says which positions of the hook
the SAE was trained on: "audio" (audio-token positions), "text" (every other real token), "final" (the final
prompt position) or "all"; splicing applies the SAE there only (`lens_audio.sae.splice`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from lens_audio.model.hook_point import HookPoint

CFG_FILENAME = "cfg.json"  # SAELens's SAE_CFG_FILENAME
WEIGHTS_FILENAME = "sae_weights.safetensors"  # SAELens's SAE_WEIGHTS_FILENAME
FORMAT_VERSION = "6.0.0"  # the SAELens config layout written here (SAELens >= 6 reads it without conversion)
ARCHITECTURES = ("topk", "jumprelu")
POSITIONS = ("audio", "text", "final", "all")
DTYPES = ("float32", "float16", "bfloat16", "float64")  # the weights' dtypes an SAE may have (cfg.json "dtype")
HOOK_NAMES = ("hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_output", "hook_sae_recons",
              "hook_sae_error")  # SAELens's hook names inside an SAE


@dataclass
class SAEConfig:
    """The fields of SAELens's `TopKSAEConfig` / `JumpReLUSAEConfig` that an SAE made here uses."""

    architecture: Literal["topk", "jumprelu"]
    d_in: int
    d_sae: int
    hook_name: str
    model_name: str = ""
    k: int | None = None  # TopK only
    positions: str = "all"
    dtype: str = "float32"
    metadata: dict[str, Any] = field(default_factory=dict)  # anything else kept in SAELens's metadata

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, not {self.architecture!r}.")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, not {self.positions!r}.")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, not {self.dtype!r}.")
        if self.architecture == "topk" and not (self.k and 0 < self.k <= self.d_sae):
            raise ValueError(f"a TopK SAE needs 0 < k <= d_sae ({self.d_sae}), got k={self.k}.")
        if self.hook_name.startswith("audio.") and self.positions not in ("all",):
            raise ValueError(
                f"{self.hook_name} is an audio-encoder hook, where every position is audio: use positions='all'."
            )

    def to_saelens_dict(self) -> dict[str, Any]:
        """`cfg.json` as SAELens 6 writes it."""
        out: dict[str, Any] = {
            "architecture": self.architecture, "d_in": self.d_in, "d_sae": self.d_sae, "dtype": self.dtype,
            "device": "cpu", "apply_b_dec_to_input": True, "normalize_activations": "none",
            "reshape_activations": "none",
            "metadata": {
                **self.metadata, "hook_name": self.hook_name, "model_name": self.model_name,
                "hook_head_index": None, "prepend_bos": False, "positions": self.positions,
                "sae_lens_version": FORMAT_VERSION, "sae_lens_training_version": FORMAT_VERSION,
                "model_class_name": "HookedAudioLM",
            },
        }
        if self.architecture == "topk":
            out.update(k=self.k, rescale_acts_by_decoder_norm=False)
        return out

    @classmethod
    def from_saelens_dict(cls, cfg: dict[str, Any], source: str = "cfg.json") -> "SAEConfig":
        if not isinstance(cfg, dict):
            raise ValueError(f"{source}: an SAE's config must be a JSON object (SAELens's cfg.json), not a "
                             f"{type(cfg).__name__}; write the folder with SparseAutoencoder.save or sae_lens.")
        problems = [f"{name} must be {want!r} (got {cfg.get(name)!r})" for name, want in (
            ("apply_b_dec_to_input", True), ("normalize_activations", "none"), ("reshape_activations", "none"),
            ("rescale_acts_by_decoder_norm", False)) if cfg.get(name, want) != want]
        if cfg.get("architecture") not in ARCHITECTURES:
            problems.append(f"architecture must be one of {ARCHITECTURES} (got {cfg.get('architecture', 'nothing')!r})")
        for name in ("d_in", "d_sae"):
            if name not in cfg:
                problems.append(f"{name} is missing")
            elif isinstance(cfg[name], bool) or not isinstance(cfg[name], int) or cfg[name] < 1:
                problems.append(f"{name} must be a positive whole number (got {cfg[name]!r})")
        if cfg.get("dtype", "float32") not in DTYPES:
            problems.append(f"dtype must be one of {DTYPES} (got {cfg.get('dtype')!r})")
        d_sae = cfg.get("d_sae") if isinstance(cfg.get("d_sae"), int) else 0
        k = cfg.get("k")
        if cfg.get("architecture") == "topk" and not (isinstance(k, int) and not isinstance(k, bool)
                                                       and 0 < k <= max(d_sae, 1)):
            problems.append(f"k must be a whole number in 1..d_sae for a TopK SAE (got {cfg.get('k', 'nothing')!r})")
        meta = cfg.get("metadata") or {}
        if not isinstance(meta, dict):
            problems.append(f"metadata must be a JSON object (got {meta!r})")
            meta = {}
        meta = dict(meta)
        hook = meta.pop("hook_name", None) or cfg.get("hook_name")
        if not hook:
            problems.append("metadata.hook_name is missing")
        if problems:
            raise ValueError(f"{source}: this SAE cannot be read by lens_audio: " + "; ".join(problems) + " (SAELens's "
                             "cfg.json layout: docs/saes.md).")
        for key in ("hook_head_index", "prepend_bos", "sae_lens_version", "sae_lens_training_version",
                    "model_class_name"):
            meta.pop(key, None)
        return cls(architecture=cfg["architecture"], d_in=int(cfg["d_in"]), d_sae=int(cfg["d_sae"]), hook_name=hook,
                   model_name=meta.pop("model_name", "") or "", k=cfg.get("k"),
                   positions=meta.pop("positions", "all"), dtype=cfg.get("dtype", "float32"), metadata=meta)


class SparseAutoencoder(nn.Module):
    """A TopK or JumpReLU SAE with SAELens's parameters and hook points; see the module docstring.

    Its hook points are named `hook_sae_input`, ... inside the SAE; spliced into a model at `blocks.3.hook_resid_post`
    they become `blocks.3.hook_resid_post.hook_sae_acts_post` and so on, as in SAELens's `HookedSAETransformer`.
    """

    def __init__(self, cfg: SAEConfig, use_error_term: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.use_error_term = use_error_term
        self.source: str | None = None  # the folder it was loaded from (named in errors)
        dtype = getattr(torch, cfg.dtype)
        self.W_enc = nn.Parameter(torch.zeros(cfg.d_in, cfg.d_sae, dtype=dtype))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype))
        self.W_dec = nn.Parameter(torch.zeros(cfg.d_sae, cfg.d_in, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in, dtype=dtype))
        if cfg.architecture == "jumprelu":
            self.threshold = nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype))
        for name in HOOK_NAMES:
            setattr(self, name, HookPoint())

    def hook_points(self) -> dict[str, HookPoint]:
        return {name: getattr(self, name) for name in HOOK_NAMES}

    def pre_activations(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        """`(x - b_dec) @ W_enc + b_enc`, through `hook_sae_input` and `hook_sae_acts_pre`."""
        self._check_width(x)
        x = self.hook_sae_input(x.to(self.W_enc.dtype))
        return self.hook_sae_acts_pre((x - self.b_dec) @ self.W_enc + self.b_enc)

    def activation(self, pre: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_sae"]:
        if self.cfg.architecture == "topk":
            values, indices = pre.topk(self.cfg.k, dim=-1, sorted=False)
            return torch.zeros_like(pre).scatter_(-1, indices, values.relu())
        return pre.relu() * (pre > self.threshold).to(pre.dtype)

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        """Feature activations (`hook_sae_acts_post`)."""
        return self.hook_sae_acts_post(self.activation(self.pre_activations(x)))

    def decode(self, acts: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_in"]:
        """Reconstruction `acts @ W_dec + b_dec` (`hook_sae_recons`)."""
        return self.hook_sae_recons(acts @ self.W_dec + self.b_dec)

    def forward(
        self, x: Float[Tensor, "... d_in"], where: Bool[Tensor, "..."] | None = None
    ) -> Float[Tensor, "... d_in"]:
        """The reconstruction, plus the error term `x - reconstruction` (computed without hooks) when
        `use_error_term`; through `hook_sae_output`. With `where` (a mask over the leading axes), only those rows
        are reconstructed: elsewhere the latents are zero and `x` is returned unchanged."""
        keep = None if where is None else where[..., None].to(self.W_enc.device)
        latents = self.activation(self.pre_activations(x))
        latents = self.hook_sae_acts_post(latents if keep is None else latents * keep)
        out = self.decode(latents)
        if self.use_error_term:
            with torch.no_grad():
                error = x.to(self.W_enc.dtype) - self.plain_reconstruction(x)
            out = out + self.hook_sae_error(error if keep is None else error * keep)
        out = self.hook_sae_output(out.to(x.dtype))
        return out if keep is None else torch.where(keep, out, x)

    def plain_reconstruction(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_in"]:
        """The reconstruction with no hook running (what the error term is measured against)."""
        x = x.to(self.W_enc.dtype)
        return self.activation((x - self.b_dec) @ self.W_enc + self.b_enc) @ self.W_dec + self.b_dec

    def _check_width(self, x: Tensor) -> None:
        if x.shape[-1] != self.cfg.d_in:
            raise ValueError(
                f"{self.label} reads width {self.cfg.d_in}, but got activations of width "
                f"{x.shape[-1]}: use it on the hook (and model) it was trained on."
            )

    # ---------------------------------------------------------------- files

    def save(self, folder: str | Path) -> Path:
        """Write `cfg.json` and `sae_weights.safetensors` (SAELens's format) into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {name: p.detach().cpu().contiguous() for name, p in self.named_parameters()}
        save_file(tensors, str(folder / WEIGHTS_FILENAME))
        (folder / CFG_FILENAME).write_text(json.dumps(self.cfg.to_saelens_dict(), indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu",
             use_error_term: bool = False) -> "SparseAutoencoder":
        """Read an SAE in SAELens's format (written here or by SAELens: TopK or JumpReLU, no input normalisation)."""
        folder = Path(folder)
        if not (folder / CFG_FILENAME).is_file() or not (folder / WEIGHTS_FILENAME).is_file():
            raise FileNotFoundError(
                f"{folder} is not an SAE folder: it needs {CFG_FILENAME} and {WEIGHTS_FILENAME} (SAELens's format)."
            )
        cfg_path, weights_path = folder / CFG_FILENAME, folder / WEIGHTS_FILENAME
        try:
            data = json.loads(cfg_path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{cfg_path}: not valid JSON ({exc}); an SAE folder's {CFG_FILENAME} is SAELens's config: "
                             "restore it, or write the folder again (SparseAutoencoder.save, sae_lens).") from None
        cfg = SAEConfig.from_saelens_dict(data, str(cfg_path))
        sae = cls(cfg, use_error_term)
        try:
            state = load_file(str(weights_path))
        except Exception as exc:  # safetensors raises its own error types for damaged files
            raise ValueError(f"{weights_path}: not a readable safetensors file ({exc}); restore it or write the SAE "
                             "folder again.") from None
        expected = {name: tuple(p.shape) for name, p in sae.named_parameters()}
        if set(state) != set(expected):
            raise ValueError(f"{weights_path} holds {sorted(state)}; a {cfg.architecture} SAE needs "
                             f"exactly {sorted(expected)}.")
        wrong = [f"{name} is {list(state[name].shape)}, not {list(shape)}" for name, shape in expected.items()
                 if tuple(state[name].shape) != shape]
        if wrong:
            raise ValueError(f"{weights_path}: the weights do not match {cfg_path} (d_in {cfg.d_in}, d_sae "
                             f"{cfg.d_sae}): {'; '.join(wrong)}; fix d_in / d_sae in {CFG_FILENAME} or use the weights "
                             "written with it.")
        sae.load_state_dict({k: v.to(getattr(torch, cfg.dtype)) for k, v in state.items()})
        sae.source = str(folder)
        sae.check_finite()
        return sae.to(device)

    def check_finite(self) -> None:
        """Refuse weights holding NaN or infinity (a damaged SAE), naming the SAE and the tensor."""
        for name, parameter in self.named_parameters():
            bad = int((~torch.isfinite(parameter.detach())).sum())
            if bad:
                where = f"{self.source}/{WEIGHTS_FILENAME}" if self.source else "in memory, not from a folder"
                raise ValueError(f"the SAE for {self.cfg.hook_name} ({where}): its {name} holds {bad} NaN or infinite "
                                 "values, so every reconstruction would be NaN; retrain it or restore the file.")

    @property
    def label(self) -> str:
        """How errors name this SAE: its hook, and its folder when it was loaded from one."""
        return f"the SAE for {self.cfg.hook_name}" + (f" ({self.source})" if self.source else "")

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    def summary(self) -> dict[str, Any]:
        return {**asdict(self.cfg), "parameters": sum(p.numel() for p in self.parameters())}
