"""Choice mode's option scoring (mean per token, summed, first token), recorded in the manifest, and the `letters`
template scoring the letters: each checked against log-probabilities computed by hand from the model's logits."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from lens_audio.benchmark import load_mmau
from lens_audio.benchmark.manifest import RunMismatchError, read_manifest
from lens_audio.benchmark.prompts import render_prompt
from lens_audio.benchmark.runner import choice_log_likelihoods, choice_rule, run_benchmark
from lens_audio.benchmark.scoring import asks_for_letters
from lens_audio.model.registry import model_entry, registered_names, resolve
from lens_audio.organisms import benchmark_for
from lens_audio.paper.profile import ExperimentProfile, profile_for


@pytest.fixture
def model(own_model):
    return own_model


@pytest.fixture(scope="module")
def items(small_bench):
    """Items whose options differ in token count (1 to 7 tokens with the test tokenizer)."""
    rows = copy.deepcopy(load_mmau(small_bench)[:4])
    lengths = [["cat", "dog bark", "melody", "bell"], ["a", "drums", "dog howl", "chord"]]
    for i, item in enumerate(rows):
        item["choices"] = lengths[i % 2]
        item["answer"] = item["choices"][i % 4]
    return rows


def by_hand(model, item, template="instruct") -> list[list[float]]:
    """Each option's per-token log-probabilities after the prompt: one forward per option, no batching."""
    batch = model.to_batch(item["audio_path"], render_prompt(item, template))
    n, out = batch.input_ids.shape[1], []
    for choice in item["choices"]:
        ids = model.tokenizer.encode(choice, add_special_tokens=False)
        full = torch.cat([batch.input_ids, torch.tensor([ids])], dim=1)
        with torch.no_grad():
            logits = model(full, torch.ones_like(full), batch.input_features, batch.feature_attention_mask)
        out.append(logits[0, n - 1 : -1].log_softmax(-1)[torch.arange(len(ids)), ids].tolist())
    return out


RULES = {"sum": sum, "mean": lambda t: sum(t) / len(t), "first_token": lambda t: t[0]}


def test_each_rule_equals_the_hand_computation(model, items):
    item = items[0]
    tokens = by_hand(model, item)
    assert sorted({len(t) for t in tokens}) == [1, 4, 6, 7]  # options of different lengths
    batch = model.to_batch(item["audio_path"], render_prompt(item, "instruct"))
    for rule, reduce in RULES.items():
        scores = choice_log_likelihoods(model, batch, [item["choices"]], scoring=rule)
        assert scores[0].tolist() == pytest.approx([reduce(t) for t in tokens], abs=1e-4), rule


def test_choice_scoring_unembeds_only_the_positions_it_reads(model, items):
    """A 7B vocabulary over a 30 s prompt is gigabytes per row: the unembedding sees the answer positions only
    (while the scores still equal the hand computation from full logits, above)."""
    item, widths = items[0], []
    batch = model.to_batch(item["audio_path"], render_prompt(item, "instruct"))
    handle = model.unembed.register_forward_pre_hook(lambda module, args: widths.append(args[0].shape[1]))
    try:
        choice_log_likelihoods(model, batch, [item["choices"]], scoring="mean")
        lengths = [len(model.tokenizer.encode(c, add_special_tokens=False)) for c in item["choices"]]
        assert widths == lengths and max(lengths) < batch.input_ids.shape[1]  # one forward per option slot
        widths.clear()
        choice_log_likelihoods(model, batch, [["a", "b"]], scoring="sum")  # one-token options: the last position
        assert widths == [1]
    finally:
        handle.remove()


def test_the_run_predicts_each_rules_best_option_and_records_the_rule(model, items, tmp_path):
    hand = [by_hand(model, item) for item in items]
    predicted = {}
    for rule, reduce in RULES.items():
        run = run_benchmark(model, items, tmp_path / f"{rule}.jsonl", mode="choice", choice_scoring=rule,
                            batch_size=3, listening=False, progress=False)
        expected = [item["choices"][max(range(4), key=lambda j: reduce(t[j]))] for item, t in zip(items, hand)]
        assert [r["output"] for r in run] == expected, rule
        assert read_manifest(tmp_path / f"{rule}.jsonl").choice_scoring == rule
        predicted[rule] = expected
    default = run_benchmark(model, items, None, mode="choice", batch_size=4, listening=False, progress=False)
    assert [r["output"] for r in default] == predicted["mean"]  # the default rule is the length-normalised one
    # resuming under another rule refuses, naming the field
    with pytest.raises(RunMismatchError, match="choice_scoring 'mean' -> 'sum'"):
        run_benchmark(model, items, tmp_path / "mean.jsonl", mode="choice", choice_scoring="sum", batch_size=3,
                      listening=False, progress=False)


def test_first_token_scoring_refuses_options_that_share_a_first_token(model, items):
    shared = copy.deepcopy(items[:3])
    shared[1]["choices"], shared[1]["answer"] = ["10", "15", "cat"], "15"  # "10" and "15" share their first token
    with pytest.raises(ValueError, match=r"1 of 3 items do \(" + repr(shared[1]["id"])):
        run_benchmark(model, shared, None, mode="choice", choice_scoring="first_token", listening=False,
                      progress=False)
    run = run_benchmark(model, shared, None, mode="choice", choice_scoring="mean", listening=False, progress=False)
    assert len(run) == 3


def test_one_token_options_agree_under_every_rule_and_leave_the_manifest_as_before(model, items, tmp_path):
    rows = copy.deepcopy(items)
    for item in rows:
        item["choices"], item["answer"] = ["A", "B", "C", "D"], "C"
    outputs = []
    for rule in RULES:
        run = run_benchmark(model, rows, tmp_path / f"{rule}.jsonl", mode="choice", choice_scoring=rule,
                            listening=False, progress=False)
        outputs.append([r["output"] for r in run])
        manifest = read_manifest(tmp_path / f"{rule}.jsonl")
        assert manifest.choice_scoring is None and "choice_scoring" not in manifest.compared()  # digest as before
    assert outputs[0] == outputs[1] == outputs[2]
    # a run made under one rule resumes under another: its records do not depend on it
    run_benchmark(model, rows, tmp_path / "sum.jsonl", mode="choice", choice_scoring="mean", listening=False,
                  progress=False)


def test_letters_in_choice_mode_scores_the_letter_tokens(model, items):
    run = run_benchmark(model, items, None, template="letters", mode="choice", listening=False, progress=False)
    for item, record in zip(items, run):
        batch = model.to_batch(item["audio_path"], render_prompt(item, "letters"))
        with torch.no_grad():
            final = model(batch)[0, -1].log_softmax(-1)
        letters = [model.tokenizer.encode(chr(65 + j), add_special_tokens=False)[0] for j in range(4)]
        best = int(final[letters].argmax())
        assert record["output"] == "ABCD"[best]
        assert record["extracted"] == item["choices"][best]
        assert record["correct"] == (item["choices"][best] == item["answer"])


def test_the_profile_decides_the_rule_once_and_checks_it():
    assert ExperimentProfile().choice_scoring == "mean"
    assert ExperimentProfile.from_json(ExperimentProfile(choice_scoring="sum").to_json()).choice_scoring == "sum"
    with pytest.raises(ValueError, match="choice_scoring must be one of"):
        ExperimentProfile(choice_scoring="max")


@pytest.mark.parametrize("name", [n for n in registered_names() if model_entry(n).profile is not None])
def test_shipped_organisms_options_are_one_token_so_no_shipped_number_moves(name):
    """The shipped profiles score choices; every option (under their template) is one token, where the three rules
    agree and the manifest leaves the rule out: their numbers and run files are as before."""
    from transformers import AutoTokenizer

    profile = profile_for(name)
    checkpoint = model_entry(name).checkpoint
    tokenizer = AutoTokenizer.from_pretrained(str(resolve(checkpoint) if ":" in str(checkpoint) else checkpoint))
    items = load_mmau(benchmark_for(name))
    assert profile.mode == "choice"
    assert choice_rule(SimpleNamespace(tokenizer=tokenizer), items, asks_for_letters(profile.prompt), "mean") is None
