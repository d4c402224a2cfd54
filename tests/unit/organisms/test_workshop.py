"""The workshop task generator, the training script, and the shipped workshop model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lens_audio import HookedAudioLM, cli, load_audio
from lens_audio.benchmark import load_mmau
from lens_audio.organisms import BENCHMARK, BENCHMARK_V1, CHECKPOINT, CHECKPOINT_CHAINS, CHECKPOINT_V1
from lens_audio.organisms.benchmark_writer import write_benchmark
from lens_audio.organisms.sounds import CLASS_DOMAIN, DOMAINS, mix_noise, synthesize
from lens_audio.organisms.task import HINT_CONDITIONS


def test_twelve_classes_in_three_domains_and_exact_snr():
    assert set(DOMAINS) == {"sound", "music", "speech"} and len(CLASS_DOMAIN) == 12
    rng = np.random.default_rng(0)
    for name in CLASS_DOMAIN:
        a, b = synthesize(name, np.random.default_rng(5), 1.2), synthesize(name, np.random.default_rng(5), 1.2)
        assert np.array_equal(a, b) and a.shape == (19200,) and np.isfinite(a).all() and 0.4 < np.abs(a).max() <= 0.9
    clean = synthesize("chord", rng, 1.0).astype(np.float64)
    noisy = mix_noise(clean, 6.0, np.random.default_rng(1)).astype(np.float64)
    # A second way to the noise: the same generator's white draws. noisy = a * clean + b * unit, where a < 1 only
    # when mix_noise rescaled to avoid clipping; a least-squares fit recovers a and b exactly (float32 rounding).
    unit = np.random.default_rng(1).standard_normal(clean.size)
    (a, b), *_ = np.linalg.lstsq(np.stack([clean, unit], 1), noisy, rcond=None)
    assert np.abs(noisy - (a * clean + b * unit)).max() < 1e-6
    assert 0 < a <= 1 + 1e-6 and (a > 1 - 1e-6 or abs(np.abs(noisy).max() - 0.9) < 1e-6)
    snr = 10 * np.log10(np.mean(clean**2) / np.mean((b / a * unit) ** 2))
    assert abs(snr - 6.0) < 0.2  # the unit draws' mean square is 1 +- 0.011 over 16000 samples: +-0.05 dB


def test_benchmark_is_deterministic_valid_mmau(tmp_path):
    a = write_benchmark(tmp_path / "a", seed=3, n_clips=12, progress=False)
    b = write_benchmark(tmp_path / "b", seed=3, n_clips=12, progress=False)
    c = write_benchmark(tmp_path / "c", seed=4, n_clips=12, progress=False)
    assert (a / "workshop.json").read_text() == (b / "workshop.json").read_text()
    assert (a / "workshop.json").read_text() != (c / "workshop.json").read_text()
    wavs = sorted((a / "audios").glob("*.wav"))
    assert len(wavs) == 12 and all(w.read_bytes() == (b / "audios" / w.name).read_bytes() for w in wavs)
    items = load_mmau(a / "workshop.json")
    assert len(items) == 36 and {i["split"] for i in items} == {"calibration", "dev", "test"}
    for item in items:
        assert set(item) >= {
            "id",
            "audio_id",
            "question",
            "choices",
            "answer",
            "dataset",
            "task",
            "split",
            "category",
            "sub-category",
            "difficulty",
        }
        assert item["answer"] in item["choices"] and len(item["choices"]) == 4
        assert all(CLASS_DOMAIN[c] == item["task"] for c in item["choices"])
        hinted = item["hinted_choice"]
        if item["hint"] == "congruent":
            assert hinted == item["answer"] and hinted in item["question"]
        elif item["hint"] == "conflicting":
            assert hinted != item["answer"] and hinted in item["choices"] and hinted in item["question"]
        else:
            assert hinted is None and not any(c in item["question"] for c in item["choices"])
        audio = load_audio(item["audio_path"])
        assert 16000 <= audio.shape[0] <= 1.6 * 16000 + 1
    by_clip = {}
    for item in items:
        by_clip.setdefault(item["audio_id"], set()).add(item["hint"])
    assert all(hints == set(HINT_CONDITIONS) for hints in by_clip.values())
    with pytest.raises(FileExistsError, match="overwrite"):
        write_benchmark(tmp_path / "a", seed=3, n_clips=12, progress=False)


def test_benchmark_command(tmp_path):
    assert (
        cli.main(
            ["workshop", "benchmark", "--recipe", "v1", "--out", str(tmp_path / "w"), "--clips", "6", "--seed", "1"]
        )
        == 0
    )
    assert len(json.loads((tmp_path / "w" / "workshop.json").read_text())) == 18


def test_training_script_writes_a_loadable_checkpoint(tmp_path):
    from lens_audio.organisms.workshop_v1.recipe import TrainSettings, train

    settings = TrainSettings(pool_clips=48, steps_audio=2, steps_mixed=2, batch_size=4, warmup_steps=1)
    metrics = train(tmp_path / "ckpt", settings, eval_benchmark=None, progress=False)
    assert np.isfinite(metrics["loss_history"][-1]["loss"])
    files = {f.name for f in (tmp_path / "ckpt").iterdir()}
    assert {"config.json", "model.safetensors", "metrics.json", "tokenizer.json", "processor_config.json"} <= files
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")], "no staging folder left behind"
    model = HookedAudioLM.from_pretrained(tmp_path / "ckpt")
    assert model.cfg.n_layers == 6


def test_training_script_resumed_from_a_saved_state_equals_the_uninterrupted_run(tmp_path):
    from safetensors.torch import load_file

    from lens_audio.organisms.workshop_v1.recipe import TrainSettings, train

    settings = TrainSettings(pool_clips=48, steps_audio=3, steps_mixed=3, batch_size=4, warmup_steps=2)
    whole = train(tmp_path / "whole", settings, progress=False)
    assert train(tmp_path / "cut", settings, progress=False, stop_after=4, checkpoint_every=3) is None
    assert [p.name for p in (tmp_path / "cut").glob("state-*")] == ["state-000004"]
    resumed = train(tmp_path / "cut", settings, progress=False)
    assert resumed["loss_history"] == whole["loss_history"]
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), "resumed weights equal uninterrupted weights"
    assert not list((tmp_path / "cut").glob("state-*")) and not (tmp_path / "cut" / "progress.jsonl").exists(), \
        "the finished checkpoint replaces the run folder"


SHIPPED = [("workshop", CHECKPOINT, BENCHMARK), ("workshop-v1", CHECKPOINT_V1, BENCHMARK_V1)]


@pytest.mark.parametrize("name, checkpoint", [(n, c) for n, c, _ in SHIPPED] + [("workshop-chains", CHECKPOINT_CHAINS)])
def test_shipped_checkpoint_loads_offline_and_matches_transformers(name, checkpoint):
    from transformers import Qwen2AudioForConditionalGeneration

    from lens_audio.organisms import benchmark_for

    model = HookedAudioLM.from_pretrained(name)
    hf = Qwen2AudioForConditionalGeneration.from_pretrained(checkpoint, attn_implementation="eager").eval()
    item = load_mmau(benchmark_for(name), split="test")[0]
    batch = model.to_batch(item["audio_path"], item["question"])
    with torch.no_grad():
        ours = model(batch)
        theirs = hf(**batch.model_inputs()).logits
    assert (ours - theirs).abs().max() < 2e-5 * theirs.abs().max()  # float32 rounding, relative to the logit scale
    assert sum(p.numel() * p.element_size() for p in model.parameters()) < 16 * 2**20


@pytest.mark.parametrize("name, checkpoint, benchmark_path", SHIPPED)
def test_shipped_model_listens_and_shows_text_dominance(name, checkpoint, benchmark_path):
    """The targets of each workshop model, re-measured on its bundled test split, equal to its metrics.json."""
    from lens_audio.organisms.evaluate import score_items, summarize

    model = HookedAudioLM.from_pretrained(name)
    items = load_mmau(benchmark_path, split="test")
    summary = summarize(score_items(model, items, progress=False))
    silent = summarize(score_items(model, [i for i in items if i["hint"] == "none"], silence=True, progress=False))
    assert summary["accuracy"]["none"]["all"] >= 85
    assert summary["text_dominance_gap"] >= 20
    assert silent["accuracy"]["none"]["all"] <= 45  # chance is 25
    recorded = json.loads((checkpoint / "metrics.json").read_text())
    for hint, accuracy in summary["accuracy"].items():
        assert accuracy == pytest.approx(recorded["test"]["accuracy"][hint], abs=1e-6), hint
    assert silent["accuracy"]["none"]["all"] == pytest.approx(
        recorded["test_with_silence"]["accuracy"]["none"]["all"], abs=1e-6
    )
