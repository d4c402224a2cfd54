"""`ExperimentProfile`: every choice of the paper's experiment in one typed object, and the profiles of named models.

A profile names the prompt (a template name from `evaluation.prompts` or any function
item -> user turn), the scoring mode, how many heads, which betas, the seed, the splits, the
random-head controls (plain, layer-matched, depth-matched, beta-matched: `lens_audio.paper.head_controls`, with
the arrival stage's `arrival_share` and `arrival_items`) and the method options the paper leaves open:

- `layer_convention`: which residual stream "layer L" means for a head in layer L.
  `"resid_post"` (default) is the output of block L (`blocks.{L}.hook_resid_post`);
  `"hf_hidden_states"` is Hugging Face's `hidden_states[L]`, the *input* of block L
  (`blocks.{L}.hook_resid_pre`, the embeddings for L = 0).
- `steering_source`: `"residual"` (the paper: audio minus silence of the residual stream at the
  specialists' layers, averaged) or `"head_outputs"` (the specialists' own outputs,
  `attn.hook_result`, audio minus silence, summed over the heads).
- `selection_rule`: how calibration ranks heads for the specialists. `"r"` (the paper, default): r of the
  head's audio mass with correctness; `"within_stratum_r"`: the same r pooled within task x sub-category
  (so a head whose audio attention only tracks the question type ranks low); `"margin_r"`: r with the answer
  margin (answer logit minus the best other option's) instead of 0/1 correctness; `"causal"`: the drop of the
  answer margin when the head's final-position output takes its silence-run value (attribution patching).
- `splits`: the benchmark's `split` value of each stage (calibration, dev, test; every one named, and test's
  value neither calibration's nor dev's: heads and beta are never chosen on the items reported on). A benchmark
  with none of the three values gets a seeded split of `split_sizes` (default 0.25 / 0.25 / 0.5) stratified by
  `split_stratify` (default: task), clip groups whole (`lens_audio.benchmark.splits`).
- `gate`: `None` (a fixed beta) or `"signal"`: each item's push is scaled by how little the model
  listens, beta * clip((m0 - mass) / m0, 0, 1), with mass the specialists' mean final-token audio
  mass on that item and m0 the same mean over the calibration items answered correctly.

Named models bring their own profile through `profile_for(model_name)`, read from the model's entry in the one
registry (`lens_audio.model.registry`); a name with no registered profile gets the default (Qwen2-Audio-Instruct:
generate mode, the "instruct" template) and a `ProfileFallbackWarning` saying so in one line.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lens_audio.benchmark.scoring import check_choice_scoring
from lens_audio.benchmark.splits import DEFAULT_SIZES, check_sizes, check_stages
from lens_audio.benchmark.templates import TEMPLATES
from lens_audio.checks import UserNote, check_float, check_int, check_seed
from lens_audio.files import write_atomically
from lens_audio.model.registry import ModelEntry, model_entry, register_model, resolve

PromptFn = Callable[[dict[str, Any]], str]
DEFAULT_SPLITS = {"calibration": "calibration", "dev": "dev", "test": "test"}
SELECTION_RULES = ("r", "within_stratum_r", "margin_r", "causal")
LAYER_CONVENTIONS = {"resid_post": "hook_resid_post", "hf_hidden_states": "hook_resid_pre"}


@dataclass(frozen=True)
class ExperimentProfile:
    """The experiment's settings; `dataclasses.replace(profile, k_heads=2)` changes one."""

    prompt: str | PromptFn = "instruct"
    mode: Literal["generate", "choice"] = "generate"
    # choice mode's option scoring (`benchmark.runner`): "mean" log-probability per token (default: a summed one
    # favours short options), "sum", or "first_token"; one-token options score the same under all three
    choice_scoring: Literal["mean", "sum", "first_token"] = "mean"
    # generate mode's answer matching: None, MMAU's string match; or an embedding model (Hub id or folder) whose
    # nearest option is the answer, MMAU-Pro's rule for its closed-ended items (`benchmark.answer_match`)
    answer_embedder: str | None = None
    k_heads: int = 4
    betas: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
    seed: int = 0
    batch_size: int = 16
    max_new_tokens: int = 32
    splits: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_SPLITS))
    # a benchmark with no calibration/dev/test items (MMAU test-mini) gets a seeded split (`benchmark.splits`):
    # these fractions of its items (calibration, dev, test), stratified by these item fields (None: task)
    split_sizes: tuple[float, float, float] = DEFAULT_SIZES
    split_stratify: tuple[str, ...] | None = None
    n_random_draws: int = 200
    layer_matched_control: bool = True
    depth_matched_control: bool = True  # draws from the layers the audio has reached (`paper.head_controls`)
    beta_matched_control: bool = True  # draws each at the beta its own dev sweep picks (fast path only)
    arrival_share: float = 0.9  # the audio has arrived at layer L when patching L restores this share of its effect
    arrival_items: int | None = 400  # the calibration items the arrival stage patches (spread evenly; None: all)
    # item fields the validity controls stratify by, beside task and sub-category (the hinted class by default:
    # a hint the model follows for one class more than another is a confound of its own); absent fields are skipped
    validity_strata: tuple[str, ...] = ("hinted_choice",)
    n_permutations: int = 1000
    n_bootstrap: int = 2000
    layer_convention: Literal["resid_post", "hf_hidden_states"] = "resid_post"
    steering_source: Literal["residual", "head_outputs"] = "residual"
    gate: Literal["signal"] | None = None
    selection_rule: Literal["r", "within_stratum_r", "margin_r", "causal"] = "r"
    focus_condition: str = (
        "conflicting"  # the hint condition the control and spread are measured on (when items have hints)
    )

    def __post_init__(self) -> None:
        if self.mode not in ("generate", "choice"):
            raise ValueError(f"mode must be 'generate' or 'choice', not {self.mode!r}.")
        check_choice_scoring(self.choice_scoring)
        if self.answer_embedder is not None and self.mode != "generate":
            raise ValueError(f"answer_embedder ({self.answer_embedder!r}) matches generated answers to options: it "
                             "needs generate mode (--mode generate); choice mode ranks the options itself.")
        if self.layer_convention not in LAYER_CONVENTIONS:
            raise ValueError(
                f"layer_convention must be one of {sorted(LAYER_CONVENTIONS)}, not {self.layer_convention!r}."
            )
        if self.steering_source not in ("residual", "head_outputs"):
            raise ValueError(f"steering_source must be 'residual' or 'head_outputs', not {self.steering_source!r}.")
        if self.selection_rule not in SELECTION_RULES:
            raise ValueError(f"selection_rule must be one of {list(SELECTION_RULES)}, not {self.selection_rule!r}.")
        if self.gate not in (None, "signal"):
            raise ValueError(f"gate must be None or 'signal', not {self.gate!r}.")
        if not self.betas:
            raise ValueError("betas must hold at least one steering strength.")
        object.__setattr__(self, "betas", tuple(check_float(f"betas[{i}]", b) for i, b in enumerate(self.betas)))
        for name, minimum in (("k_heads", 1), ("batch_size", 1), ("max_new_tokens", 1), ("n_random_draws", 1),
                              ("n_permutations", 1), ("n_bootstrap", 2)):  # the sweep's CIs use n_bootstrap // 2
            check_int(name, getattr(self, name), minimum)
        check_seed("seed", self.seed)
        check_stages(self.splits)
        object.__setattr__(self, "splits", dict(self.splits))
        object.__setattr__(self, "split_sizes", check_sizes(self.split_sizes))
        if self.split_stratify is not None:
            if isinstance(self.split_stratify, str) or not all(isinstance(f, str) and f for f in self.split_stratify):
                raise ValueError(f"split_stratify must be a tuple of item field names, not {self.split_stratify!r}.")
            object.__setattr__(self, "split_stratify", tuple(self.split_stratify))
        check_float("arrival_share", self.arrival_share, 0, 1)
        if isinstance(self.validity_strata, str) or not all(isinstance(f, str) and f for f in self.validity_strata):
            raise ValueError(f"validity_strata must be a tuple of item field names, not {self.validity_strata!r}.")
        object.__setattr__(self, "validity_strata", tuple(self.validity_strata))
        if self.arrival_items is not None:
            check_int("arrival_items", self.arrival_items, 1)

    @property
    def site(self) -> str:
        """The block hook that "layer L" names under this profile's layer convention."""
        return LAYER_CONVENTIONS[self.layer_convention]

    @property
    def prompt_name(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else f"{self.prompt.__module__}.{self.prompt.__qualname__}"

    def replace(self, **changes: Any) -> ExperimentProfile:
        """A copy with `changes`; None values are ignored (so CLI flags left unset keep the profile's)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**data, "prompt": self.prompt_name, "betas": list(self.betas), "splits": dict(self.splits),
                "validity_strata": list(self.validity_strata), "split_sizes": list(self.split_sizes),
                "split_stratify": None if self.split_stratify is None else list(self.split_stratify)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExperimentProfile:
        """The profile back; a prompt function is recorded by name and restored only if it is a template or
        importable."""
        data = dict(data)
        data["prompt"] = _prompt_from_name(data["prompt"])
        data["betas"] = tuple(data["betas"])
        for name in ("validity_strata", "split_sizes", "split_stratify"):
            if data.get(name) is not None:
                data[name] = tuple(data[name])
        return cls(**data)


class ProfileFallbackWarning(UserNote):
    """A model name with no registered profile: the experiment runs with the default profile."""


def register_profile(model_name: str, target: str) -> None:
    """Make `profile_for(model_name)` import `target` ("package.module:ATTRIBUTE"), in the model's registry entry."""
    entry = model_entry(model_name)
    if entry is None:
        raise ValueError(
            f"no registered model {model_name!r}: register it with lens_audio.model.registry.register_model("
            f"ModelEntry({model_name!r}, checkpoint=..., profile={target!r}))."
        )
    register_model(dataclasses.replace(entry, profile=target))


def fallback_note(model_name: str) -> str:
    """The one line said when `model_name` has no registered profile."""
    return (
        f"model {str(model_name)!r} has no registered profile: using the default profile (Qwen2-Audio-Instruct: mode "
        f"'generate', template 'instruct'); give --template/--mode, or register one with register_profile"
    )


def profile_for(model_name: str) -> ExperimentProfile:
    """The registered profile of a named model (imported lazily), else the default with a `ProfileFallbackWarning`."""
    entry: ModelEntry | None = model_entry(model_name)
    if entry is None or entry.profile is None:
        warnings.warn(fallback_note(model_name), ProfileFallbackWarning, stacklevel=2)
        return ExperimentProfile()
    profile = resolve(entry.profile)
    if not isinstance(profile, ExperimentProfile):
        raise TypeError(f"{entry.profile} must be an ExperimentProfile, not {type(profile).__name__}.")
    return profile


SETTINGS_FILE = "experiment.json"  # in an experiment's run folder: what `figures --runs FOLDER` follows


def record_settings(folder: str | Path, model: str, benchmark: str | None, profile: ExperimentProfile,
                    split: str | None) -> Path:
    """Write the experiment's model, benchmark, profile and split (`BenchmarkSplit.label`) to `<folder>/`
    `SETTINGS_FILE`, so the figures and report run under the same settings (`recorded_settings`)."""
    path = Path(folder) / SETTINGS_FILE
    data = {"model": model, "benchmark": benchmark, "profile": profile.to_json(), "split": split}
    write_atomically(path, json.dumps(data, indent=1))
    return path


def recorded_settings(folder: str | Path) -> dict[str, Any] | None:
    """The settings `record_settings` wrote in `folder` (its `profile` an `ExperimentProfile`), or None if none."""
    path = Path(folder) / SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {**data, "profile": ExperimentProfile.from_json(data["profile"])}
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} cannot be read as an experiment's settings ({exc}); remove it, or rerun the "
                         "experiment into this folder.") from exc


def _prompt_from_name(name: str) -> str | PromptFn:
    if name in TEMPLATES or "." not in name:
        return name
    module, _, attribute = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError):
        return name
