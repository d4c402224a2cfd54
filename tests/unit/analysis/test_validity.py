"""Validity controls: each against a hand computation (numpy/scipy regressions, plain hooked forwards)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats

from lens_audio.analysis.ablation import option_margins
from lens_audio.analysis.heads import correlate_heads
from lens_audio.analysis.statistics import mcnemar_p, min_detectable_difference
from lens_audio.analysis.validity import (
    ClusteredR,
    NoisePoint,
    NoiseSweep,
    ValidityControls,
    asked_clip_share,
    between_stratum_r,
    clustered_r,
    silence_output_attribution,
    silence_output_effects,
    within_stratum_r,
)
from lens_audio.benchmark.report import accuracy_with_ci
from lens_audio.benchmark.run_result import RunResult
from lens_audio.benchmark.runner import noisy_clips
from lens_audio.inputs.audio import add_white_noise
from lens_audio.inputs.batch import make_batch
from lens_audio.paper.controls import selection_scores
from lens_audio.paper.profile import ExperimentProfile
from tests.helpers.reference import waveform


def two_kinds_of_head(seed: int = 0, n: int = 600):
    """Items of three question types with different accuracy, and two heads' audio mass (and silence-run mass).

    The question-type head attends to audio by type only (the same with silence); the listening head's mass is higher
    when the model hears and answers right, within every type, and near zero with silence.
    """
    rng = np.random.default_rng(seed)
    task = rng.choice(["sound", "music", "speech"], n)
    accuracy = {"sound": 0.95, "music": 0.7, "speech": 0.5}
    correct = rng.random(n) < np.array([accuracy[t] for t in task])
    by_type = np.array([{"sound": 0.9, "music": 0.5, "speech": 0.2}[t] for t in task])
    question_type = by_type + 0.02 * rng.standard_normal(n)
    question_type_silence = by_type + 0.02 * rng.standard_normal(n)
    listening = 0.3 + 0.3 * correct + 0.1 * rng.standard_normal(n)
    listening_silence = 0.02 * rng.random(n)
    return task, correct, question_type, question_type_silence, listening, listening_silence


def test_question_type_head_loses_its_r_within_strata_and_keeps_it_with_silence():
    task, correct, qt, qt_silence, listen, listen_silence = two_kinds_of_head()
    r = lambda x: stats.pearsonr(x, correct).statistic  # noqa: E731
    assert r(qt) > 0.3 and r(qt_silence) > 0.3  # looks like a listening signal, and still does with silence
    assert abs(within_stratum_r(qt, correct, task)[0]) < 0.1  # ... but not within a question type
    assert between_stratum_r(qt, correct, task)[0] > 0.3  # the type's average alone carries the r
    assert r(listen) > 0.4 and abs(r(listen_silence)) < 0.1  # a listening head loses r with silence
    assert within_stratum_r(listen, correct, task)[0] > 0.4  # and keeps it within types


def test_within_stratum_r_is_the_partial_correlation_given_the_strata():
    task, correct, qt, _, listen, _ = two_kinds_of_head(seed=1, n=200)
    dummies = (task[:, None] == np.unique(task)[None]).astype(float)
    residual = lambda v: v - dummies @ np.linalg.lstsq(dummies, v, rcond=None)[0]  # noqa: E731
    for signal in (qt, listen):
        expected = stats.pearsonr(residual(signal), residual(correct.astype(float))).statistic
        assert within_stratum_r(signal, correct, task)[0] == pytest.approx(expected, abs=1e-10)
    both = within_stratum_r(np.stack([qt, listen], 1), correct, task)  # columns at once
    assert both == pytest.approx([within_stratum_r(qt, correct, task)[0], within_stratum_r(listen, correct, task)[0]])
    assert np.isnan(within_stratum_r(qt, np.repeat([True, False], 100), np.repeat(["a", "b"], 100))[0])


def test_clustered_r_resamples_clips():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal(60), rng.random(60) < 0.6
    x = x + y  # a real r
    tripled = lambda v: np.repeat(v, 3)  # noqa: E731  each clip asked three times
    clusters = np.repeat(np.arange(60), 3)
    by_clip = clustered_r(tripled(x), tripled(y), clusters, n_bootstrap=800)
    by_item = clustered_r(tripled(x), tripled(y), None, n_bootstrap=800)
    once = clustered_r(x, y, None, n_bootstrap=800)
    assert by_clip.r == pytest.approx(stats.pearsonr(x, y).statistic) == pytest.approx(by_item.r)
    assert (by_clip.ci_unit, by_clip.n_clusters, by_item.ci_unit) == ("clip", 60, "item")
    width = lambda c: c.ci[1] - c.ci[0]  # noqa: E731
    assert width(by_clip) > 1.4 * width(by_item)  # item resampling pretends 180 independent items
    assert width(by_clip) == pytest.approx(width(once), rel=0.25)  # ... resampling clips gives back the 60
    assert ClusteredR.from_json(by_clip.to_json()) == by_clip


def test_min_detectable_difference_against_the_binomial_test():
    assert mcnemar_p(6, 0) < 0.05 < mcnemar_p(5, 0)
    assert min_detectable_difference(120) == pytest.approx(100 * 6 / 120)
    # 10 discordant items: 9-1 reaches p < 0.05 (|a - b| = 8), 8-2 does not
    assert stats.binomtest(9, 10).pvalue < 0.05 < stats.binomtest(8, 10).pvalue
    assert min_detectable_difference(120, 10) == pytest.approx(100 * 8 / 120)
    assert min_detectable_difference(120, 3) == pytest.approx(5.0)  # too few discordant: the bound for 6
    with pytest.raises(ValueError, match="positive"):
        min_detectable_difference(0)


def test_accuracy_and_head_intervals_resample_clips_where_clips_repeat():
    rng = np.random.default_rng(3)
    correct = np.repeat(rng.random(40) < 0.7, 3)
    clusters = np.repeat(np.arange(40), 3)
    by_clip, by_item = accuracy_with_ci(correct, clusters=clusters), accuracy_with_ci(correct)
    assert (by_clip["ci_unit"], by_item["ci_unit"]) == ("clip", "item") and by_clip["accuracy"] == by_item["accuracy"]
    assert by_clip["ci"][1] - by_clip["ci"][0] > 1.4 * (by_item["ci"][1] - by_item["ci"][0])
    assert accuracy_with_ci(correct[:40], clusters=np.arange(40))["ci_unit"] == "item"  # no clip repeats
    mass = np.repeat(rng.random((40, 2, 2)), 3, axis=0) + correct[:, None, None]
    clip = correlate_heads(mass, correct, n_bootstrap=300, clusters=clusters)
    item = correlate_heads(mass, correct, n_bootstrap=300)
    assert np.allclose(clip.r, item.r)
    assert ((clip.ci_high - clip.ci_low) > (item.ci_high - item.ci_low)).all()


def test_selection_rule_within_stratum_prefers_the_listening_head():
    task, correct, qt, _, listen, _ = two_kinds_of_head(seed=4, n=300)
    records = [{"id": str(i), "correct": bool(c), "task": t, "sub-category": "x"} for i, (c, t) in
               enumerate(zip(correct, task))]
    mass = np.stack([qt, listen], 1)[:, None, :]  # [item, layer 0, heads: question-type, listening]
    run = RunResult(records, mass.astype(np.float32))
    fake = lambda rule: SimpleNamespace(profile=ExperimentProfile(selection_rule=rule), split=lambda name: records)  # noqa: E731
    scores = selection_scores(fake("within_stratum_r"), run)
    assert scores[0, 1] > 0.4 > abs(scores[0, 0]) and selection_scores(fake("r"), run) is None
    with pytest.raises(ValueError, match="selection_rule"):
        ExperimentProfile(selection_rule="best")


def test_white_noise_has_the_asked_snr_and_is_seeded():
    clean = waveform(1.0, 1)
    noisy = add_white_noise(clean, -10.0, [7, 0])
    snr = 10 * np.log10(np.mean(clean.astype(float) ** 2) / np.mean((noisy - clean).astype(float) ** 2))
    assert snr == pytest.approx(-10.0, abs=0.1)
    assert np.array_equal(noisy, add_white_noise(clean, -10.0, [7, 0]))
    assert not np.array_equal(noisy, add_white_noise(clean, -10.0, [7, 1]))
    with pytest.raises(ValueError, match="snr_db"):
        add_white_noise(clean, float("nan"))


def test_noisy_clips_depend_on_the_item_and_clip(tmp_path):
    import soundfile

    for k in (1, 2):
        soundfile.write(tmp_path / f"{k}.wav", waveform(0.5, k), 16000)
    item = {"id": "a", "audio_path": [str(tmp_path / "1.wav"), str(tmp_path / "2.wav")]}
    first, again = noisy_clips(item, 0.0), noisy_clips(item, 0.0)
    assert len(first) == 2 and all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(noisy_clips({**item, "id": "b"}, 0.0)[0], first[0])


def test_top_causal_ranks_by_the_exact_drop_where_measured():
    causal = np.array([[0.9, 0.1, 0.5], [0.7, 0.0, 0.2]])  # attribution: L0H0 > L1H0 > L0H2 > L1H2 > L0H1 > L1H1
    controls = SimpleNamespace(causal=causal, causal_exact={"L0H0": 0.2, "L1H0": 0.8, "L1H1": 0.4})
    top = ValidityControls.top_causal(controls, 4)  # the measured heads by their exact drop, then by the estimate
    assert top == [(1, 0), (1, 1), (0, 0), (0, 2)]
    assert ValidityControls.top_causal(SimpleNamespace(causal=causal, causal_exact={}), 2) == [(0, 0), (1, 0)]


def test_noise_sweep_round_trips():
    point = NoisePoint(None, {"all": 90.0}, 0.5, 0.6, float("nan"), ClusteredR(0.3, [0.1, 0.5], 10, 5, "clip"))
    sweep = NoiseSweep("test", "conflicting", [(1, 0)], [point, NoisePoint(-10.0, {"all": 60.0}, 0.55, 0.5, 0.6,
                                                                             point.r, 3, 0.52, 0.58)])
    back = NoiseSweep.from_json(sweep.to_json())
    assert back.points[1] == sweep.points[1] and np.isnan(back.points[0].mass_wrong)
    assert "-10 dB" in "\n".join(back.describe())


# --- model-side controls, against plain hooked forwards -----------------------------------------------------------
@pytest.fixture
def setup(tiny_pair, two_example_batch):
    _, model = tiny_pair(n_heads=4, n_kv_heads=2, n_layers=2, seed=3)
    return model, two_example_batch, [[5, 9, 13, 21], [5, 9, 13, 21]], [0, 2]


@torch.no_grad()
def margins_with(model, batch, choices, answers, layer, head, fraction=1.0):
    """Mean answer margin with head (layer, head)'s final-position output moved `fraction` of the way to silence."""
    name = f"blocks.{layer}.attn.hook_z"
    _, silence = model.run_with_cache(batch.silence_twin(), names_filter=[name])
    final = batch.final_position

    def patch(z, hook):
        z = z.clone()
        rows = torch.arange(z.shape[0])
        own = z[rows, final, head]
        z[rows, final, head] = own + fraction * (silence[name][rows, final, head] - own)
        return z

    with torch.no_grad():
        logits = model.run_with_hooks(batch, fwd_hooks=[(name, patch)])
    last = logits[torch.arange(batch.batch_size), final]
    return float(option_margins(last, torch.tensor(choices), torch.tensor(answers))[0].mean())


def test_silence_output_effect_equals_a_hooked_forward(setup):
    model, batch, choices, answers = setup
    heads = [(0, 1), (1, 3), (1, 0)]
    exact = silence_output_effects(model, batch, choices, answers, heads, heads_per_pass=2)
    base = margins_with(model, batch, choices, answers, 0, 0, fraction=0.0)
    for (layer, head), value in zip(heads, exact):
        assert float(value) == pytest.approx(base - margins_with(model, batch, choices, answers, layer, head), abs=1e-4)


def test_silence_output_attribution_is_the_directional_derivative(setup):
    model, batch, choices, answers = setup
    attribution = silence_output_attribution(model, batch, choices, answers)
    base = margins_with(model, batch, choices, answers, 0, 0, fraction=0.0)
    eps = 1e-3
    for layer, head in [(0, 2), (1, 1)]:
        slope = (base - margins_with(model, batch, choices, answers, layer, head, fraction=eps)) / eps
        assert float(attribution[layer, head]) == pytest.approx(slope, rel=0.05, abs=1e-3)


def test_asked_clip_share_from_the_cached_pattern(tiny_pair, processor):
    _, model = tiny_pair(n_heads=4, n_kv_heads=2, n_layers=2, seed=3)
    batch = make_batch(processor, [[waveform(0.6, 1), waveform(0.9, 2)], [waveform(0.5, 3), waveform(0.4, 4)]],
                       ["Which is higher?", "Is Audio 2 music?"], sampling_rate=16000)
    share = asked_clip_share(model, batch, [0, 1])
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(2)]
    _, cache = model.run_with_cache(batch, names_filter=names)
    for row, target in enumerate([0, 1]):
        final = int(batch.final_position[row])
        for layer in range(2):
            pattern = cache[names[layer]][row, :, final]  # [head, key]
            start, end = batch.audio_spans[row][target]
            expected = pattern[:, start:end].sum(-1) / pattern[:, batch.audio_mask[row]].sum(-1)
            assert torch.allclose(share[row, layer], expected, atol=1e-5)
    with pytest.raises(ValueError, match="target_clip"):
        asked_clip_share(model, batch, [0, 2])


def test_option_tokens_for_the_margin():
    from lens_audio.paper.controls import batches

    ids = {"A": 1, "B": 2, "C": 3, "dog": 10, "cat": 11, "doge": 10}
    model = SimpleNamespace(tokenizer=SimpleNamespace(encode=lambda text, add_special_tokens: [ids[text]]),
                            to_batch=lambda audio, prompts: ("batch", len(prompts)))
    items = [{"id": "1", "question": "q", "choices": ["dog", "cat"], "answer": "cat", "audio_path": "a.wav"},
             {"id": "2", "question": "q", "choices": ["cat", "dog"], "answer": "cat", "audio_path": "b.wav"}]
    three = {"id": "3", "question": "q", "choices": ["A", "B", "C"], "answer": "C", "audio_path": "c.wav"}
    experiment = lambda prompt: SimpleNamespace(  # noqa: E731
        model=model, profile=ExperimentProfile(prompt=prompt, batch_size=8)
    )
    (batch, options, answer), = batches(experiment("instruct"), [*items, three])
    assert batch == ("batch", 3) and answer == [1, 0, 2]
    # shorter option lists are padded with another option of the same item (never the answer: margins unchanged)
    assert options == [[10, 11, 10], [11, 10, 10], [1, 2, 3]]
    (_, letters, _), = batches(experiment("letters"), items)
    assert letters == [[1, 2], [1, 2]]  # under the letters template the options are their letters
    clash = {"id": "4", "question": "q", "choices": ["dog", "doge"], "answer": "dog", "audio_path": "d.wav"}
    with pytest.raises(ValueError, match="distinct first tokens"):
        list(batches(experiment("instruct"), [clash]))
