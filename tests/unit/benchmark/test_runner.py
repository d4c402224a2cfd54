"""The benchmark runner: resumable JSON lines, choice scoring, and the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lens_audio.benchmark import load_mmau
from lens_audio.benchmark.report import mmau_report
from lens_audio.benchmark.runner import choice_log_likelihoods, read_records, run_benchmark
from lens_audio.organisms.benchmark_writer import write_benchmark


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    folder = write_benchmark(tmp_path_factory.mktemp("bench") / "w", seed=2, n_clips=4, progress=False)
    return load_mmau(folder / "workshop.json")


@pytest.mark.parametrize("mode", ["generate", "choice"])
def test_resumed_run_equals_uninterrupted_run(tiny_pair, items, tmp_path, mode):
    _, model = tiny_pair(n_heads=4, n_kv_heads=2, n_layers=2)
    kwargs = dict(template="letters", mode=mode, batch_size=4, max_new_tokens=3, progress=False)
    full = run_benchmark(model, items, tmp_path / "full.jsonl", **kwargs)
    partial_path = tmp_path / "partial.jsonl"
    run_benchmark(model, items[:5], partial_path, **kwargs)
    with open(partial_path, "a") as f:
        f.write('{"id": "cut off mid-wri')  # an interruption in the middle of a line
    resumed = run_benchmark(model, items, partial_path, **kwargs)
    assert [r["id"] for r in resumed] == [i["id"] for i in items]
    assert all("listening" in r for r in full) and all("listening" in r for r in resumed)
    without_listening = lambda rs: [{k: v for k, v in r.items() if k != "listening"} for r in rs]  # compared below
    assert without_listening(resumed) == without_listening(full)
    # the listening signal comes back as an array; resumed items read back exactly what was written (batching moves
    # ~1e-7)
    assert resumed.listening.shape == (len(items), model.cfg.n_layers, model.cfg.n_heads)
    assert np.allclose(resumed.listening, full.listening, atol=1e-5) and not np.array_equal(
        resumed.listening, 0 * full.listening
    )
    assert np.array_equal(
        resumed.listening[:5],
        np.array([r["listening"] for r in read_records(partial_path).values()][:5], dtype=np.float32),
    )
    assert mmau_report(resumed) == mmau_report(full)
    assert len(read_records(partial_path)) == len(items)
    lines = partial_path.read_text().splitlines()  # the torn line is gone: each item once, every line whole JSON
    assert sorted(json.loads(line)["id"] for line in lines) == sorted(i["id"] for i in items)
    assert len(full[0]["listening"]) == model.cfg.n_layers and len(full[0]["listening"][0]) == model.cfg.n_heads


def test_multi_token_choice_scores_match_a_manual_computation(tiny_pair, items):
    _, model = tiny_pair(n_heads=4, n_kv_heads=2, n_layers=2)
    item = items[0]
    batch = model.to_batch(item["audio_path"], item["question"])
    scores = choice_log_likelihoods(model, batch, [item["choices"]])
    tok = model.tokenizer
    for j, choice in enumerate(item["choices"]):
        ids = tok.encode(choice, add_special_tokens=False)
        assert len(ids) > 1, "the test tokenizer must split choices into several tokens"
        full = torch.cat([batch.input_ids, torch.tensor([ids])], dim=1)
        with torch.no_grad():
            logits = model(full, torch.ones_like(full), batch.input_features, batch.feature_attention_mask)
        n = batch.input_ids.shape[1]
        manual = logits[0, n - 1 : -1].log_softmax(-1)[torch.arange(len(ids)), ids].sum()
        assert torch.isclose(scores[0, j], manual, atol=1e-4)


def test_report_pools_the_total(items):
    records = [
        {
            "id": i["id"],
            "task": i["task"],
            "difficulty": i["difficulty"],
            "sub-category": i["sub-category"],
            "correct": n % 3 == 0,
        }
        for n, i in enumerate(items)
    ]
    report = mmau_report(records)
    assert report["total"]["n"] == len(items)
    assert report["total"]["accuracy"] == round(100 * sum(r["correct"] for r in records) / len(records), 2)
    assert set(report["task"]) == {i["task"] for i in items}
    low, high = report["total"]["ci"]
    assert low <= report["total"]["accuracy"] <= high
