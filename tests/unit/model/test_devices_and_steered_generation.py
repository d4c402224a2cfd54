"""Silence twins without feature extraction, steered generation in one prefill, and every analysis on any device/dtype.

On a CUDA machine the device test runs on the GPU; on the CPU it runs in float32 and bfloat16.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lens_audio import make_batch
from lens_audio.analysis.ablation import scan_heads
from lens_audio.analysis.lens import logit_lens
from lens_audio.analysis.listening import listening_signal
from lens_audio.analysis.patching import normalized_logit_diff, patch_heads
from lens_audio.analysis.steering import adaptive_direction, steer, steered_generate, steering_hooks
from tests.helpers.reference import waveform

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def test_silence_twin_features_equal_the_extractors(processor):
    rng = np.random.default_rng(0)
    clips = [[0.1 * rng.standard_normal(24000).astype(np.float32), waveform(0.3, 4)], waveform(0.9, 5)]
    batch = make_batch(processor, clips, ["a?", "b?"], sampling_rate=16000)
    twin = batch.silence_twin()
    silent = [[np.zeros_like(w) for w in row] for row in batch.waveforms]
    expected = make_batch(processor, silent, prompt=batch.texts, sampling_rate=16000)  # the extractor on zeros
    assert torch.equal(twin.input_features, expected.input_features)
    assert torch.equal(twin.feature_attention_mask, expected.feature_attention_mask)
    assert torch.equal(twin.input_ids, expected.input_ids) and twin.audio_spans == expected.audio_spans
    assert all(not w.any() for row in twin.waveforms for w in row)


@pytest.fixture
def model(tiny_pair):
    return tiny_pair(n_heads=4, n_kv_heads=2, n_layers=3)[1]


@pytest.mark.parametrize(
    "layers, hook_name",
    [([1], None), ([0, 2], None), ([2], "blocks.1.hook_resid_post"), ([0], "blocks.1.hook_resid_mid")],
    ids=["shallow", "deepest-is-last", "hook-before-direction (fallback)", "mid-hook"],
)
def test_steered_generate_equals_direction_then_steered_generate(model, two_example_batch, layers, hook_name):
    kwargs = dict(max_new_tokens=6, eos_token_id=[], do_sample=False)
    for beta in (4.0, 200.0):
        direction = adaptive_direction(model, two_example_batch, layers)
        expected = model.generate(
            two_example_batch, fwd_hooks=steering_hooks(model, direction, beta, hook_name), **kwargs
        )
        got = steered_generate(model, two_example_batch, layers, beta, hook_name=hook_name, **kwargs)
        assert torch.equal(got, expected)
    assert not torch.equal(got, model.generate(two_example_batch, **kwargs))


def test_adaptive_direction_batched_equals_two_separate_passes(model, two_example_batch):
    from lens_audio.analysis.steering import final_residuals

    separate = final_residuals(model, two_example_batch, [0, 2]) - final_residuals(
        model, two_example_batch.silence_twin(), [0, 2]
    )
    assert torch.allclose(adaptive_direction(model, two_example_batch, [0, 2]), separate.mean(1), atol=1e-5)


@pytest.fixture
def shared_prefix_batch(processor):
    """Rows 0, 1 and 3 share their silence prefix (same clip lengths, different audio and questions, so
    different left padding); row 2 has a longer clip and row 4 two clips: prefixes of their own."""
    two_clips = [waveform(0.8, 5), waveform(0.5, 6)]
    clips = [waveform(0.8, 1), waveform(0.8, 2), waveform(1.2, 3), waveform(0.8, 4), two_clips]
    questions = ["What is the sound?", "Is this music or a voice, tell me?", "Why?", "Loud?", "Which clip is louder?"]
    return make_batch(processor, clips, questions, sampling_rate=16000)


def test_shared_silence_prefix_equals_the_full_silence_pass(model, shared_prefix_batch, two_example_batch):
    from lens_audio.analysis.steering import final_residuals
    from lens_audio.analysis.steering.silence_prefix import shared_silence_residuals

    layers = [0, 2]
    full = final_residuals(model, shared_prefix_batch.silence_twin(), layers)
    shared = shared_silence_residuals(model, shared_prefix_batch, layers)
    assert shared is not None and torch.allclose(shared, full, atol=1e-5)
    audio = final_residuals(model, shared_prefix_batch, layers)
    assert torch.allclose(adaptive_direction(model, shared_prefix_batch, layers), (audio - full).mean(1), atol=1e-5)
    assert not torch.allclose(shared, audio, atol=1e-3)  # the silence rows really differ from the audio rows
    # no sharing to gain (with the cross-call cache off), or hooks that would see the silence rows in two
    # pieces: the caller runs the full pass
    from lens_audio.analysis.steering.silence_cache import DEFAULT_MAX_BYTES, silence_prefix_cache

    silence_prefix_cache(model, max_bytes=0)
    try:
        assert shared_silence_residuals(model, two_example_batch, layers) is None
    finally:
        silence_prefix_cache(model, max_bytes=DEFAULT_MAX_BYTES)
    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", lambda resid, hook: None)]):
        assert shared_silence_residuals(model, shared_prefix_batch, layers) is None


def test_rows_whose_prompt_ends_with_the_clip_take_the_full_silence_pass(model, processor):
    from lens_audio.analysis.steering import final_residuals
    from lens_audio.analysis.steering.silence_prefix import shared_silence_residuals

    audio = processor.audio_token
    prompts = [f"Listen {audio}", f"Listen {audio}", f"Listen {audio} and tell me what"]
    clips = [waveform(0.8, 1), waveform(0.8, 2), waveform(0.8, 3)]
    batch = make_batch(processor, clips, prompt=prompts, sampling_rate=16000)
    assert shared_silence_residuals(model, batch, [0, 2]) is None  # rows 0-1 have no suffix to run on a shared prefix
    full = final_residuals(model, batch, [0, 2]) - final_residuals(model, batch.silence_twin(), [0, 2])
    assert torch.allclose(adaptive_direction(model, batch, [0, 2]), full.mean(1), atol=1e-5)


def test_steered_generate_with_a_shared_silence_prefix(model, shared_prefix_batch):
    kwargs = dict(max_new_tokens=6, eos_token_id=[], do_sample=False)
    direction = adaptive_direction(model, shared_prefix_batch, [1])
    expected = model.generate(shared_prefix_batch, fwd_hooks=steering_hooks(model, direction, 50.0), **kwargs)
    assert torch.equal(steered_generate(model, shared_prefix_batch, [1], 50.0, **kwargs), expected)


def _analyses(model, batch):
    """Every public analysis on `model` and `batch`, results moved to the CPU in float32."""
    twin = batch.silence_twin()
    with torch.no_grad():
        logits = model(batch)[torch.arange(2, device=model.device), batch.final_position.to(model.device)]
    top2 = logits.topk(2, dim=-1).indices
    metric = normalized_logit_diff(model, batch, twin, top2[:, 0], top2[:, 1])
    direction = adaptive_direction(model, batch, [0, 2])
    with torch.no_grad(), steer(model, direction, 4.0):
        steered_logits = model(batch)[:, -1]
    out = {
        "listening": listening_signal(model, batch, heads=[(1, 2)]).audio_mass,
        "direction": direction,
        "steered_logits": steered_logits,
        "patching": patch_heads(model, batch, twin, metric),
        "ablation": scan_heads(model, batch, [[5, 9, 13], [5, 9, 13]], [0, 2], kind="silence").margin_change,
        "lens": logit_lens(model, batch, [[5, 9], [5, 9]]).prob,
    }
    kwargs = dict(max_new_tokens=4, eos_token_id=[], do_sample=False)
    out["generate"] = model.generate(batch, fwd_hooks=steering_hooks(model, direction, 4.0), **kwargs)
    out["steered_generate"] = steered_generate(model, batch, [0, 2], 4.0, **kwargs)
    return {k: v.detach().cpu().float() if v.is_floating_point() else v.cpu() for k, v in out.items()}


# CUDA: both dtypes, batch on the GPU or left on the CPU. CPU: the batch is on the model's device either way.
PLACES = ("model", "cpu") if DEVICE == "cuda" else ("model",)
CASES = [(DEVICE, dtype, where) for dtype in (torch.float32, torch.bfloat16) for where in PLACES]


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


@pytest.mark.parametrize("device, dtype, batch_on", CASES, ids=[f"{d}-{str(t)[6:]}-batch_on_{w}" for d, t, w in CASES])
def test_every_analysis_runs_with_the_batch_moved(model, two_example_batch, device, dtype, batch_on):
    reference = _analyses(model, two_example_batch)
    moved_model = copy.deepcopy(model).to(device=device, dtype=dtype)  # deepcopy: from_hf_model shares weights
    batch = two_example_batch.to(device) if batch_on == "model" else two_example_batch
    got = _analyses(moved_model, batch)
    exact = dtype == torch.float32
    assert torch.equal(got["generate"], got["steered_generate"]) or not exact
    for name, value in got.items():
        assert value.shape == reference[name].shape, name
        if name in ("generate", "steered_generate"):
            assert torch.equal(value, reference[name]) or not exact, name
            continue
        finite = torch.isfinite(reference[name])
        assert torch.equal(torch.isfinite(value), finite), name
        value, expected = value[finite], reference[name][finite]  # (logit-difference ratios are too fine for bf16)
        if exact:
            error = (value - expected).abs().max() / expected.abs().max().clamp(min=1e-3)
            assert error <= (1e-4 if device == "cpu" else 2e-3), f"{name}: relative error {error:.3g} on {device}"
        elif name not in ("patching", "ablation"):  # bfloat16: the pattern must survive, not every digit
            assert _cosine(value, expected) > 0.95, (
                f"{name}: cosine {_cosine(value, expected):.3f} on {device} bfloat16"
            )


def _set_attn(hf, implementation: str) -> None:
    for config in (hf.config, hf.config.audio_config, hf.config.text_config):
        config._attn_implementation = implementation


def test_bfloat16_difference_from_transformers_is_within_its_own_eager_vs_sdpa(processor):
    """Wide random config in bfloat16: |port - HF SDPA| <= 1.25 x |HF eager - HF SDPA| (mean absolute logit
    difference)."""
    from lens_audio import HookedAudioLM
    from lens_audio.model.hooked_audio_lm import position_ids_from_mask
    from lens_audio.testing import tiny_hf_model

    wide = dict(
        d_model=1024,
        n_layers=3,
        n_heads=16,
        n_kv_heads=2,
        d_mlp=2816,
        audio_d_model=640,
        audio_layers=2,
        audio_heads=10,
    )
    hf, _ = tiny_hf_model(processor, attn_implementation="sdpa", n_mels=16, chunk_seconds=2, **wide)
    hf = hf.to(torch.bfloat16)
    port = HookedAudioLM.from_hf_model(hf, processor)
    batch = make_batch(
        processor,
        [waveform(1.5, 1), waveform(0.7, 2), waveform(1.9, 3)],
        ["What is it?", "Music?", "Which?"],
        sampling_rate=16000,
    )
    positions, valid = position_ids_from_mask(batch.attention_mask), batch.attention_mask.bool()
    with torch.no_grad():
        sdpa = hf(**batch.model_inputs(), position_ids=positions).logits.float()
        _set_attn(hf, "eager")
        eager = hf(**batch.model_inputs(), position_ids=positions).logits.float()
        ours = port(batch).float()
    floor = (eager - sdpa).abs()[valid].mean()
    assert floor > 0  # the two reference paths really differ in bfloat16
    assert (ours - sdpa).abs()[valid].mean() <= 1.25 * floor


def test_gpu_check_runs_with_small_shapes(tmp_path):
    """The prepared device check stays runnable: tiny shapes, on whatever device this machine has."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[3] / "benchmarks" / "gpu_check.py"
    out = tmp_path / "check.json"
    args = ["--small", "--out", str(out), "--repeats", "1", "--new-tokens", "2", "--batch-sizes", "2"]
    subprocess.run([sys.executable, str(script), *args], check=True, capture_output=True, timeout=600)
    report = json.loads(out.read_text())
    assert report["equivalence"]["float32"]["port_vs_sdpa"]["mean_abs"] < 1e-4
    assert all(row["steered_generate equals two-pass"] for row in report["steering_on_device"].values())
    assert set(report["timing"]["by_batch"]["2"]["rows"]) >= {"port forward", "port steered_generate"}
