"""A clip longer than the model's audio window is recorded in its item's run record (`truncated_s`), not only warned
about once per process; the seconds equal the clip's length minus the window, read from the file a second way."""

from __future__ import annotations

import json
import warnings

import numpy as np
import soundfile as sf

from lens_audio.benchmark.runner import run_benchmark


def test_each_truncated_item_records_the_seconds_cut(own_model, tmp_path):
    window = own_model.processor.feature_extractor.n_samples / 16_000  # 2 s for the test processor
    rng = np.random.default_rng(0)
    lengths = {"short": 1.5, "long": 3.25, "two": 2.5}
    for name, seconds in lengths.items():
        sf.write(tmp_path / f"{name}.wav", 0.1 * rng.standard_normal(int(seconds * 16_000)), 16_000)
    items = [{"id": name, "audio_path": str(tmp_path / f"{name}.wav"), "question": "What is it?",
              "choices": ["A", "B"], "answer": "A"} for name in ("short", "long")]
    items.append({"id": "two", "audio_path": [str(tmp_path / "two.wav"), str(tmp_path / "long.wav")],
                  "question": "What is it?", "choices": ["A", "B"], "answer": "A"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the once-per-process warning is not what is checked here
        run_benchmark(own_model, items, tmp_path / "run.jsonl", mode="choice", listening=False, progress=False,
                      batch_size=2)
    records = {r["id"]: r for r in map(json.loads, (tmp_path / "run.jsonl").read_text().splitlines())}
    cut = lambda name: sf.info(tmp_path / f"{name}.wav").duration - window  # noqa: E731  (the file's header)
    assert "truncated_s" not in records["short"]
    assert records["long"]["truncated_s"] == round(cut("long"), 3) == 1.25
    assert records["two"]["truncated_s"] == round(cut("two") + cut("long"), 3)
