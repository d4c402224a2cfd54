"""`SteeringSpec`: its one-pass records equal the experiment's two-pass path (the closure it replaced) for every
source, gate and layer convention in generate and choice mode; its manifest fields, run names and fast-path push
are the experiment's as before; and a steered run makes no more decoder prefills per batch than a plain one."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
import torch

from lens_audio import HookedAudioLM
from lens_audio.analysis.listening import listening_signal
from lens_audio.analysis.steering import (
    adaptive_direction,
    gated_beta,
    head_output_direction,
    layers_of,
    silence_prefix_cache,
    steering_hooks,
)
from lens_audio.analysis.steering.silence_cache import DEFAULT_MAX_BYTES
from lens_audio.benchmark import load_mmau
from lens_audio.benchmark.prompts import render_prompt
from lens_audio.benchmark.runner import one_token_choices, run_benchmark
from lens_audio.organisms import benchmark_for
from lens_audio.paper import Experiment, FastSteering, SteeringSpec, profile_for
from lens_audio.paper.profile import LAYER_CONVENTIONS
from lens_audio.paper.results import head_label

HEADS = ((5, 2), (3, 1))  # layers 3 and 5: the direction is ready well before the last block
SPECIALISTS = ((6, 0), (1, 3))  # the gate reads one layer before the direction's and one after
BETA = 4.0
OPTIONS = [
    ("residual", "resid_post", None),
    ("residual", "hf_hidden_states", None),
    ("residual", "resid_post", "signal"),
    ("residual", "hf_hidden_states", "signal"),
    ("head_outputs", "resid_post", None),
    ("head_outputs", "resid_post", "signal"),
]
IDS = [f"{s}-{c}-{g or 'fixed'}" for s, c, g in OPTIONS]


@pytest.fixture(scope="module")
def setup():
    model = HookedAudioLM.from_pretrained("workshop")
    first = {}  # the first conflicting item of each clip: rows whose silence twins share no prefix, left-padded
    for item in load_mmau(benchmark_for("workshop")):
        if item["split"] == "test" and item["hint"] == "conflicting":
            first.setdefault(item["clip_id"], item)
    items = list(first.values())[:4]
    profile = profile_for("workshop")
    batch = model.to_batch([i["audio_path"] for i in items], [render_prompt(i, profile.prompt) for i in items])
    mass = listening_signal(model, batch).audio_mass
    specialists_mass = torch.stack([mass[:, layer, head] for layer, head in SPECIALISTS]).mean(0)
    reference = 1.5 * float(specialists_mass.mean())  # every row's gate strictly between 0 and 1
    assert bool(((specialists_mass < reference) & (specialists_mass > 0)).all())
    return model, items, profile, batch, reference


def spec_of(reference: float, source: str, convention: str, gate: str | None, beta: float = BETA) -> SteeringSpec:
    return SteeringSpec(HEADS, beta, source, convention, gate, SPECIALISTS if gate else (), reference if gate else None)


def todays_direction(spec: SteeringSpec, model: HookedAudioLM, batch) -> torch.Tensor:
    """The direction of the experiment's steering before `SteeringSpec` (its `Experiment.steering` closure), written
    out: a direction pass, and with the gate a listening pass."""
    if spec.source == "head_outputs":
        direction = head_output_direction(model, batch, list(spec.heads))
    else:
        direction = adaptive_direction(model, batch, layers_of(spec.heads), LAYER_CONVENTIONS[spec.layer_convention])
    if spec.gate == "signal":
        mass = listening_signal(model, batch).audio_mass
        mass = torch.stack([mass[:, l, h] for l, h in spec.specialists]).mean(0).to(direction)
        direction = direction * gated_beta(1.0, mass, spec.reference_mass)[:, None]
    return direction


def todays_steering(spec: SteeringSpec) -> Callable:
    """The two-pass path: the closure's hooks for the steered pass (`todays_direction` computed first)."""
    return lambda model, batch, start=-1: steering_hooks(
        model, todays_direction(spec, model, batch), spec.beta, None, start
    )


@contextlib.contextmanager
def silence_cache(model: HookedAudioLM, max_bytes: int) -> Iterator[None]:
    silence_prefix_cache(model, max_bytes=max_bytes)
    try:
        yield
    finally:
        silence_prefix_cache(model, max_bytes=DEFAULT_MAX_BYTES)


@pytest.mark.parametrize("source, convention, gate", OPTIONS, ids=IDS)
def test_one_pass_equals_the_two_pass_path(setup, source, convention, gate):
    model, _, _, batch, reference = setup
    spec = spec_of(reference, source, convention, gate)
    before = todays_steering(spec)
    assert torch.equal(spec.direction(model, batch), todays_direction(spec, model, batch))  # the spec's two passes
    with torch.no_grad():
        plain = model(batch)[:, -1]
        with model.hooks(fwd_hooks=before(model, batch)):
            expected = model(batch)[:, -1]
    # silence rows in the steered forward (cache off, no two rows alike), or from the silence prefix (cache on)
    for max_bytes in (0, DEFAULT_MAX_BYTES):
        with silence_cache(model, max_bytes):
            got = spec.logits(model, batch)  # choice mode's single-token scoring
        assert torch.allclose(got, expected, atol=1e-4, rtol=0)
        assert not torch.allclose(got, plain, atol=1e-2)  # the push really acted
    kwargs = dict(max_new_tokens=4, do_sample=False)
    two_passes = model.generate(batch, fwd_hooks=before(model, batch), **kwargs)
    assert torch.equal(spec.generate(model, batch, **kwargs), two_passes)


@pytest.mark.parametrize("mode", ["generate", "choice"])
@pytest.mark.parametrize("source, convention, gate", [OPTIONS[1], OPTIONS[2], OPTIONS[5]], ids=[IDS[1], IDS[2], IDS[5]])
def test_the_runners_records_equal_the_two_pass_path(setup, source, convention, gate, mode):
    model, items, profile, _, reference = setup
    spec = spec_of(reference, source, convention, gate)
    assert one_token_choices(model, [item["choices"] for item in items])  # so choice mode scores with `spec.logits`
    kwargs = dict(template=profile.prompt, mode=mode, batch_size=4, max_new_tokens=4, listening=False, progress=False)
    one_pass = run_benchmark(model, items, None, steering=spec, **kwargs)
    two_passes = run_benchmark(model, items, None, steering=todays_steering(spec), **kwargs)
    keys = ("id", "output", "extracted", "correct")
    assert [[r[k] for k in keys] for r in one_pass] == [[r[k] for k in keys] for r in two_passes]


def test_manifest_fields_and_run_names_are_the_experiments(setup):
    *_, reference = setup
    for source, convention, gate in OPTIONS + [("head_outputs", "hf_hidden_states", None)]:
        spec = spec_of(reference, source, convention, gate)
        residual, heads = source == "residual", list(HEADS)
        assert spec.settings() == {  # `Experiment.steering_settings` before the spec, written out
            "heads": None if residual else sorted(heads),
            "layers": layers_of(heads) if residual else None,
            "beta": BETA,
            "gate": gate,
            "steering_source": source,
            "layer_convention": convention if residual else None,
            "k_heads": len(SPECIALISTS) if gate == "signal" else None,
        }
        key = "-".join(map(head_label, sorted(heads))) if not residual else "L" + "-".join(map(str, layers_of(heads)))
        assert spec.run_name("dev") == f"dev-steered-{key}-{source}-{convention}-{gate or 'fixed'}-beta{BETA}"
    tagged = SteeringSpec(HEADS, 1.5, tag="-causal")
    assert tagged.run_name("dev", "steered") == "dev-steered-beta1.5-causal"
    assert tagged.run_name("test", "random") == "test-random-beta1.5-causal"
    assert SteeringSpec(HEADS, 1).run_name("test", "steered") == "test-steered-beta1"  # beta printed as given
    with pytest.raises(ValueError, match="specialists and reference_mass"):
        SteeringSpec(HEADS, 1.0, gate="signal")
    with pytest.raises(ValueError, match="steering source"):
        SteeringSpec(HEADS, 1.0, source="heads")


def test_fast_push_is_the_experiments(setup):
    model, items, profile, _, reference = setup
    fast = FastSteering.collect(model, items, profile.prompt, batch_size=4)
    baseline = run_benchmark(model, items, None, template=profile.prompt, mode="choice", batch_size=4, progress=False)
    for source, convention, gate in OPTIONS:
        spec = spec_of(reference, source, convention, gate)
        direction, scale = spec.fast_push(fast, lambda: baseline)
        site = LAYER_CONVENTIONS[convention]
        expected = fast.head_direction(HEADS) if source == "head_outputs" else fast.layer_direction([3, 5], site)
        assert torch.equal(direction, expected)
        if gate is None:
            assert scale == BETA
        else:  # `Experiment.fast_correct` before the spec: the specialists' mass in the baseline run's records
            mass = torch.as_tensor(baseline.listening[:, [l for l, _ in SPECIALISTS], [h for _, h in SPECIALISTS]])
            assert torch.allclose(scale, gated_beta(BETA, mass.mean(1).to(direction), reference))


class PrefillCounter:
    """Counts decoder forwards over more than one position (prefills; generation steps run one) at block 0."""

    def __init__(self, model: HookedAudioLM, hooked: bool) -> None:
        self.model, self.hooked, self.lengths = model, hooked, []

    @contextlib.contextmanager
    def counting(self) -> Iterator[list[int]]:
        """With `hooked`, by a forward hook on `blocks.0` (which turns the silence-prefix sharing off: hooks are
        active); else by wrapping the block's `forward` (no hook, so every path runs as it does unobserved)."""
        block, self.lengths = self.model.blocks[0], []
        if self.hooked:
            handle = block.register_forward_hook(lambda module, args, output: self.lengths.append(args[0].shape[1]))
            try:
                yield self.lengths
            finally:
                handle.remove()
            return
        original = block.forward

        def counted(resid, *args, **kwargs):
            self.lengths.append(resid.shape[1])
            return original(resid, *args, **kwargs)

        block.forward = counted
        try:
            yield self.lengths
        finally:
            del block.forward


@pytest.mark.parametrize("mode", ["generate", "choice"])
def test_a_steered_experiment_run_makes_no_more_prefills_than_a_plain_run(setup, tmp_path, mode):
    model, items, profile, batch, reference = setup
    experiment = Experiment(model, items, profile.replace(mode=mode, max_new_tokens=4, batch_size=4), tmp_path,
                            progress=False)
    gated_heads = SteeringSpec(HEADS, BETA, "head_outputs", gate="signal", specialists=SPECIALISTS,
                               reference_mass=reference)
    width = batch.input_ids.shape[1]  # the four items make one batch
    runs = {
        "plain": lambda: experiment.run(items, None),
        "steered": lambda: experiment.steered_run(items, None, HEADS, BETA),  # the profile's residual steering
        "gated head outputs": lambda: experiment.run(items, None, gated_heads, settings=gated_heads.settings()),
        "two passes": lambda: experiment.run(items, None, todays_steering(experiment.spec(HEADS, BETA)),
                                             settings=experiment.steering_settings(HEADS, BETA)),
    }
    for hooked in (True, False):
        counter, prefills = PrefillCounter(model, hooked), {}
        for name, run in runs.items():
            if name == "two passes" and not hooked:
                continue
            with counter.counting() as lengths:
                run()
            prefills[name] = [n for n in lengths if n > 1]
        if hooked:  # as the issue counted: every multi-position forward of block 0
            assert prefills == {"plain": [width], "steered": [width], "gated head outputs": [width],
                                "two passes": [width, width]}
        else:  # unobserved, silence prefixes are shared: besides the one prompt-wide prefill, the silence rows'
            # text tails (and prefixes not yet in the cache) run on their own, shorter than the prompt
            for name in ("steered", "gated head outputs"):
                assert prefills[name].count(width) == prefills["plain"].count(width) == 1
                assert all(n < width for n in prefills[name] if n != width)
