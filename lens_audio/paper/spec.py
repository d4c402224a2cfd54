"""`SteeringSpec`: the one place the experiment's steering options are read.

A spec holds what steers a run (the heads, beta, the source, the layer convention and the gate with what the gate
reads) and yields everything the experiment needs from those options:

- the runner's steering object: the spec itself. Called as `spec(model, batch, start)` it gives hooks (the
  direction by separate passes, `direction.gated_direction`); its `generate` and `logits` run the direction's
  pass and the steered pass as one forward (`steered_generate`, `steered_logits`), for any source, with or
  without the gate, so a steered run makes no more decoder prefills than a plain one;
- the fast path's direction and strength from a `FastSteering` (`fast_push`);
- the run file's manifest fields (`settings`) and its name (`run_name`), as the experiment has always written
  them, so existing run files resume.

    spec = SteeringSpec.from_profile(profile, selection.specialists, beta=1.5, selection=selection)
    run_benchmark(model, items, "run.jsonl", steering=spec, settings=spec.settings())
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lens_audio.analysis.steering.direction import gated_direction, layers_of, steered_generate
from lens_audio.analysis.steering.push import check_beta, steering_hooks
from lens_audio.analysis.steering.sources import SignalGate, gated_beta
from lens_audio.analysis.steering.steered_pass import steered_logits
from lens_audio.paper.controls import specialist_mass
from lens_audio.paper.profile import LAYER_CONVENTIONS, ExperimentProfile
from lens_audio.paper.results import head_label

if TYPE_CHECKING:
    from lens_audio.benchmark.run_result import RunResult
    from lens_audio.inputs.batch import AudioBatch
    from lens_audio.model.hooked_audio_lm import HookedAudioLM
    from lens_audio.paper.fast_steering import FastSteering
    from lens_audio.paper.results import HeadSelection

Head = tuple[int, int]
SOURCES = ("residual", "head_outputs")
RUN_ROLES = ("steered", "random")  # the sweep's and test's run names: `{split}-{role}-beta{beta}{tag}`


@dataclass(frozen=True)
class SteeringSpec:
    """Adaptive audio-minus-silence steering from `heads` at `beta` (see the module docstring).

    `source`: "residual" (the paper: the residual stream at the heads' layers under `layer_convention`) or
    "head_outputs" (the heads' own outputs, summed). `gate`: None (a fixed beta) or "signal" (each item's push
    scaled by `gated_beta` from the mean final-token audio mass of `specialists`, against `reference_mass`, the
    calibration m0). `tag`: the run-name suffix of a non-default head selection rule (`Experiment.tag`).
    `beta` is kept as given (run names print it). Heads keep their order: the head-output sum runs in it.
    """

    heads: tuple[Head, ...]
    beta: float
    source: Literal["residual", "head_outputs"] = "residual"
    layer_convention: Literal["resid_post", "hf_hidden_states"] = "resid_post"
    gate: Literal["signal"] | None = None
    specialists: tuple[Head, ...] = ()
    reference_mass: float | None = None
    tag: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", tuple((int(layer), int(head)) for layer, head in self.heads))
        object.__setattr__(self, "specialists", tuple((int(layer), int(head)) for layer, head in self.specialists))
        if not self.heads:
            raise ValueError("a steering spec needs at least one (layer, head) to steer from.")
        check_beta(self.beta)
        if self.source not in SOURCES:
            raise ValueError(f"steering source must be one of {list(SOURCES)}, not {self.source!r}.")
        if self.layer_convention not in LAYER_CONVENTIONS:
            raise ValueError(
                f"layer_convention must be one of {sorted(LAYER_CONVENTIONS)}, not {self.layer_convention!r}."
            )
        if self.gate not in (None, "signal"):
            raise ValueError(f"gate must be None or 'signal', not {self.gate!r}.")
        if self.gate == "signal" and (not self.specialists or self.reference_mass is None):
            raise ValueError(
                "the signal gate reads the specialists' audio mass against the calibration reference: give "
                "specialists and reference_mass (SteeringSpec.from_profile(..., selection=experiment.select_heads()))."
            )

    @classmethod
    def from_profile(
        cls,
        profile: ExperimentProfile,
        heads: Sequence[Sequence[int]],
        beta: float,
        selection: HeadSelection | None = None,
        tag: str = "",
    ) -> SteeringSpec:
        """The spec of steering from `heads` at `beta` under `profile`'s options; `selection` (the calibration's
        specialists and reference mass) is read only by the signal gate."""
        gated = profile.gate == "signal"
        if gated and selection is None:
            raise ValueError("the profile's signal gate needs the head selection (experiment.select_heads()).")
        return cls(
            heads=tuple(tuple(h) for h in heads),
            beta=beta,
            source=profile.steering_source,
            layer_convention=profile.layer_convention,
            gate=profile.gate,
            specialists=tuple(selection.specialists) if gated else (),
            reference_mass=selection.reference_mass if gated else None,
            tag=tag,
        )

    # --- what the options mean --------------------------------------------------------------------------------
    @property
    def residual(self) -> bool:
        return self.source == "residual"

    @property
    def layers(self) -> list[int]:
        """The distinct layers of the heads (what the residual source reads; the head-output source runs to them)."""
        return layers_of(self.heads)

    @property
    def site(self) -> str:
        """The block hook that "layer L" names under the layer convention."""
        return LAYER_CONVENTIONS[self.layer_convention]

    @property
    def signal_gate(self) -> SignalGate | None:
        return SignalGate(self.specialists, self.reference_mass) if self.gate == "signal" else None

    @property
    def key(self) -> str:
        """What the direction depends on among the heads: their layers (residual) or the heads (head outputs)."""
        if self.residual:
            return "L" + "-".join(map(str, self.layers))
        return "-".join(map(head_label, sorted(self.heads)))

    def settings(self) -> dict[str, Any]:
        """The manifest fields of this steering: what its records depend on, nothing else (residual steering reads
        only the heads' layers; the gate reads the specialists' audio mass, chosen as the top k_heads)."""
        return {
            "heads": None if self.residual else sorted(self.heads),
            "layers": self.layers if self.residual else None,
            "beta": self.beta,
            "gate": self.gate,
            "steering_source": self.source,
            "layer_convention": self.layer_convention if self.residual else None,
            "k_heads": len(self.specialists) if self.gate == "signal" else None,
        }

    def run_name(self, split: str, role: str | None = None) -> str:
        """The run file's name: with `role` ("steered": the specialists' sweep and test runs, "random": the seeded
        control's test run) `{split}-{role}-beta{beta}`, else one name per distinct direction and option set."""
        if role is not None:
            if role not in RUN_ROLES:
                raise ValueError(f"run role must be one of {list(RUN_ROLES)} or None, not {role!r}.")
            return f"{split}-{role}-beta{self.beta}{self.tag}"
        options = f"{self.source}-{self.layer_convention}-{self.gate or 'fixed'}"
        return f"{split}-steered-{self.key}-{options}-beta{self.beta}{self.tag}"

    # --- the runner's steering object -----------------------------------------------------------------------
    def direction(self, model: HookedAudioLM, batch: AudioBatch) -> Float[Tensor, "batch d_model"]:
        """Each row's direction (gated if the gate is on) by separate passes, before beta."""
        return gated_direction(model, batch, self.layers, self.site, self._head_outputs, self.signal_gate)

    def __call__(self, model: HookedAudioLM, batch: AudioBatch, start: int = -1) -> list[tuple[str, Callable]]:
        """Hooks pushing `beta * direction` at the final representation, positions `start:` (multi-token choices)."""
        return steering_hooks(model, self.direction(model, batch), self.beta, None, start)

    def generate(self, model: HookedAudioLM, batch: AudioBatch, **generate_kwargs) -> Int[Tensor, "batch total"]:
        """Steered `model.generate(batch, **generate_kwargs)` with the direction formed inside the prefill."""
        return steered_generate(
            model, batch, self.layers, self.beta, site=self.site, heads=self._head_outputs, gate=self.signal_gate,
            **generate_kwargs,
        )

    def logits(self, model: HookedAudioLM, batch: AudioBatch) -> Float[Tensor, "batch d_vocab"]:
        """Steered final-position logits in one pass (single-token choice scoring)."""
        return steered_logits(
            model, batch, self.layers, self.beta, site=self.site, heads=self._head_outputs, gate=self.signal_gate
        ).logits

    @property
    def _head_outputs(self) -> tuple[Head, ...] | None:
        return None if self.residual else self.heads

    # --- the fast path ----------------------------------------------------------------------------------------
    def fast_push(
        self, fast: FastSteering, baseline: Callable[[], RunResult] | None = None
    ) -> tuple[Float[Tensor, "item d_model"], float | Float[Tensor, " item"]]:
        """The direction and strength the fast path pushes `fast`'s items with (`fast.correct(*spec.fast_push(...))`).
        `baseline()` gives the items' baseline run with listening signals, called only by the gate (each item's
        strength is `gated_beta` of the specialists' mass there)."""
        direction = fast.layer_direction(self.layers, self.site) if self.residual else fast.head_direction(self.heads)
        if self.gate is None:
            return direction, self.beta
        if baseline is None:
            raise ValueError("the signal gate's fast path needs the items' baseline run (its listening signals).")
        mass = torch.as_tensor(specialist_mass(baseline(), self.specialists)).to(direction)
        return direction, gated_beta(self.beta, mass, self.reference_mass)
