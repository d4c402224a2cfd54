"""MMAU's ragged choice lists (2-8 choices) in the figures' head scan and the causal control, items whose options share
a first token skipped and counted (not the whole control switched off), and the specialists' own test run made once.
Each checked a second way: item by item, unpadded."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lens_audio.analysis import scan_heads
from lens_audio.analysis.ablation import option_margins
from lens_audio.analysis.heads import pad_options
from lens_audio.analysis.validity import ValidityControls, silence_output_attribution
from lens_audio.benchmark.prompts import render_prompt
from lens_audio.figures import ablation_scan, by_condition, item_label
from lens_audio.paper import Experiment
from lens_audio.paper.controls import head_effects, validity_controls
from lens_audio.paper.profile import ExperimentProfile

PROFILE = ExperimentProfile(prompt="instruct", mode="choice", k_heads=1, betas=(1.0,), n_random_draws=3,
                            n_bootstrap=20, n_permutations=10, batch_size=8, depth_matched_control=False,
                            beta_matched_control=False)


def first_tokens(model, item) -> list[int]:
    return [model.tokenizer.encode(c, add_special_tokens=False)[0] for c in item["choices"]]


def test_padding_keeps_every_items_margin_and_answer():
    logits = torch.randn(3, 50)
    ragged, answers = [[3, 7], [1, 2, 5, 9], [4, 8, 11, 12, 13, 20]], [1, 0, 4]
    padded = pad_options(ragged, answers)
    margin, correct = option_margins(logits, torch.tensor(padded), torch.tensor(answers))
    for row, (ids, a) in enumerate(zip(ragged, answers)):
        alone = option_margins(logits[row : row + 1], torch.tensor([ids]), torch.tensor([a]))
        assert margin[row] == pytest.approx(float(alone[0][0])) and bool(correct[row]) == bool(alone[1][0])
    with pytest.raises(ValueError, match="at least two options"):
        pad_options([[3]], [0])


def test_the_figures_head_scan_takes_2_4_and_6_choices(tiny, mmau_like):
    test = [i for i in mmau_like if i["split"] == "test"][:6]
    assert sorted({len(i["choices"]) for i in test}) == [2, 4, 6]
    scan, (n, which) = ablation_scan(tiny, test, "instruct")
    assert n == len(test) and which == "items"  # no hint conditions: the split's first items, named plainly
    # a second way: each item scanned alone (one row, nothing ragged), then averaged
    alone = []
    for item in test:
        batch = tiny.to_batch(item["audio_path"], render_prompt(item, "instruct"))
        answer = item["choices"].index(item["answer"])
        alone.append(scan_heads(tiny, batch, [first_tokens(tiny, item)], [answer], kind="zero",
                                heads_per_pass=4).margin_change)
    assert torch.allclose(scan.margin_change, torch.stack(alone).mean(0), atol=1e-4)


def test_the_figures_name_items_by_the_benchmarks_own_fields(mmau_like):
    item = mmau_like[0]
    assert item_label(item) == f"answer {item['answer']} ({item['task']} / Acoustic scene / {item['difficulty']})"
    tables = {"total": {"accuracy": 50.0}, "task": {"sound": {"accuracy": 40.0}}}
    assert by_condition(tables) == tables["task"]  # no hint table: the steering figure is by task


def test_the_causal_control_skips_only_items_whose_options_share_a_first_token(tiny, mmau_like, tmp_path):
    items = copy.deepcopy(mmau_like)
    test = [i for i in items if i["split"] == "test"]
    shared = test[:2]
    for item in shared:  # "10" and "15" share their first token with the test tokenizer
        item["choices"], item["answer"] = ["10", "15", "cat"], "15"
    e = Experiment(tiny, items, PROFILE, tmp_path, progress=False)
    e._heads = SimpleNamespace(specialists=[(0, 0), (1, 1)])  # the controls read only the specialists
    controls = validity_controls(e, "test", n_exact=2)
    assert controls.causal is not None and controls.causal_skipped == 2
    assert any("2 of 8 items skipped" in n and repr(shared[0]["id"]) in n for n in controls.notes)
    assert ValidityControls.from_json(controls.to_json()).causal_skipped == 2
    # a second way: the attribution over the other items alone, unfiltered, padded by hand
    kept = test[2:]
    batch = tiny.to_batch([i["audio_path"] for i in kept], [render_prompt(i, "instruct") for i in kept])
    answers = [i["choices"].index(i["answer"]) for i in kept]
    width = max(len(i["choices"]) for i in kept)
    options = [first_tokens(tiny, i) + [first_tokens(tiny, i)[1 if a == 0 else 0]] * (width - len(i["choices"]))
               for i, a in zip(kept, answers)]
    expected = silence_output_attribution(tiny, batch, options, answers).numpy()
    assert np.allclose(controls.causal, expected, atol=1e-5)
    assert np.allclose(head_effects(e, test).attribution, expected, atol=1e-5)


def test_the_specialists_test_run_is_made_once(tiny, mmau_like, tmp_path):
    e = Experiment(tiny, mmau_like, PROFILE, tmp_path, progress=False)
    e._heads = SimpleNamespace(specialists=[(0, 0)], control=[(1, 2)], correlation=SimpleNamespace(shape=(2, 4)))
    assert e.fast("test") is None  # multi-token options: real steered runs
    runs, _ = e.evaluate(1.0)
    controls = e.control_distributions(1.0)
    mine = e.spec([(0, 0)], 1.0)
    files = sorted(p.name for p in tmp_path.glob("test-steered*.jsonl"))
    assert f"{mine.run_name('test', 'steered')}.jsonl" in files
    assert f"{mine.run_name('test')}.jsonl" not in files  # not run again under its other name
    assert controls.random.specialists_accuracy == pytest.approx(100 * runs["steered"].correct.mean())
