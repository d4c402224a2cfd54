"""The Qwen2.5-Omni thinker: the port equals transformers' `Qwen2_5OmniThinkerForConditionalGeneration` on a random
tiny config (windowed audio encoder cut into several windows, TMRoPE with 2:3:3 sections, grouped-query decoder), with
hooks inside the encoder, loading from a saved thinker and from a whole Omni checkpoint's layout, and the paper's
analyses running unchanged."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from lens_audio import HookedAudioLM
from lens_audio.inputs.offline_processor import build_offline_processor
from lens_audio.model.mrope import MultimodalRotaryEmbedding, rope_index
from lens_audio.testing import save_checkpoint, tiny_hf_model
from tests.helpers.family_checks import (
    assert_rival_interventions,
    assert_silence_twin_listening_and_steering,
    padded_batch,
)
from tests.helpers.omni_checks import (
    assert_bfloat16_as_close_as_transformers,
    assert_device_map_equals_one_device,
    assert_experiment_cli_runs,
    assert_rope_index_and_generation_match,
    assert_whole_omni_checkpoint_loads,
    hf_inputs,
)
from tests.helpers.reference import CHUNK_SECONDS, N_MELS, TOL, waveform

FAMILY = "qwen2.5-omni"


@pytest.fixture(scope="module")
def processor():
    return build_offline_processor(n_mels=N_MELS, chunk_seconds=CHUNK_SECONDS, family=FAMILY)


@pytest.fixture(scope="module")
def pair(processor):
    """(transformers thinker, HookedAudioLM sharing its weights): 50-frame attention windows, so a 1.5 s clip
    spans three windows and a 0.4 s clip part of one."""
    hf, _ = tiny_hf_model(processor, seed=1, family=FAMILY, n_mels=N_MELS, chunk_seconds=CHUNK_SECONDS)
    return hf, HookedAudioLM.from_hf_model(hf, processor)


def reference(hf, batch, **kwargs):
    """transformers' logits (its own TMRoPE positions), decoder layer outputs and audio tower output."""
    captured = {}
    hooks = [layer.register_forward_hook(lambda m, i, o, n=n: captured.__setitem__(n, o[0] if isinstance(o, tuple)
                                                                                    else o))
             for n, layer in enumerate(hf.model.language_model.layers)]
    hooks.append(hf.model.audio_tower.register_forward_hook(
        lambda m, i, o: captured.__setitem__("audio", o.last_hidden_state)))
    try:
        with torch.no_grad():
            logits = hf(**hf_inputs(batch), **kwargs).logits
    finally:
        for h in hooks:
            h.remove()
    return logits, captured


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_padded_batch_matches_transformers(pair, processor, padding_side):
    hf, model = pair
    batch = padded_batch(processor, padding_side)
    assert batch.attention_mask.sum(-1).tolist() != [batch.input_ids.shape[1]] * 2  # one row is padded
    assert model.cfg.family == FAMILY and model.cfg.mrope_section == (2, 3, 3)
    ref_logits, ref = reference(hf, batch)
    valid = batch.attention_mask.bool()
    with torch.no_grad():
        logits, cache = model.run_with_cache(batch)
    assert (logits - ref_logits)[valid].abs().max() < TOL
    n_tokens = [end - start for spans in batch.audio_spans for start, end in spans]
    assert n_tokens == [37, 10]  # 150 and 40 valid mel frames
    flat = torch.cat([cache["audio.hook_audio_embeds"][clip, :n] for clip, n in enumerate(n_tokens)])
    assert flat.shape == ref["audio"].shape and (flat - ref["audio"]).abs().max() < TOL
    for layer in range(model.cfg.n_layers):
        assert (cache[f"blocks.{layer}.hook_resid_post"] - ref[layer])[valid].abs().max() < TOL


def test_rope_index_and_greedy_generation_match_transformers(pair, processor):
    hf, model = pair
    assert_rope_index_and_generation_match(hf, model, processor)
    with pytest.raises(ValueError, match="audio and text only"):
        rope_index(torch.tensor([[1, hf.config.image_token_id]]), None, (hf.config.image_token_id,))



def test_tmrope_sections_with_unequal_rows_match_transformers(pair, processor):
    """Time, height and width ids that differ exercise every section of TMRoPE (text/audio prompts give equal rows)."""
    hf, model = pair
    batch = padded_batch(processor, "right")
    n = batch.input_ids.shape[1]
    base = torch.arange(n).expand(2, n)
    position_ids = torch.stack([base, 2 * base + 1, base // 3 + 5])
    rotary = MultimodalRotaryEmbedding(model.cfg.d_head, model.cfg.rotary_base, model.cfg.mrope_section)
    cos, sin = rotary.cos_sin(position_ids, torch.float32)
    their_cos, their_sin = hf.model.language_model.rotary_emb(torch.zeros(1), position_ids)
    assert torch.allclose(cos[:, :, 0], their_cos, atol=1e-6) and torch.allclose(sin[:, :, 0], their_sin, atol=1e-6)
    assert not torch.allclose(cos, rotary.cos_sin(base, torch.float32)[0])  # the rows matter
    ref_logits, _ = reference(hf, batch, position_ids=position_ids)
    with torch.no_grad():
        logits = model(batch, position_ids=position_ids)
    valid = batch.attention_mask.bool()
    assert (logits - ref_logits)[valid].abs().max() < TOL


def test_encoder_attends_within_windows_and_hooks_fire(pair, processor):
    _, model = pair
    batch = padded_batch(processor)
    with torch.no_grad():
        logits, cache = model.run_with_cache(batch)
    # 150 valid frames: windows of 50, 50, 50; 40 frames: one window of 40 -> 4 windows of 25 positions
    assert cache["audio.hook_conv_out"].shape == (4, 25, model.cfg.audio.d_model)
    pattern = cache["audio.blocks.0.attn.hook_pattern"]
    assert pattern.shape == (4, model.cfg.audio.n_heads, 25, 25)
    assert torch.all(pattern[3, :, :, 20:] == 0) and torch.all(pattern[:3] > 0)  # the short window's padding
    assert cache["audio.hook_pooled"].shape[:2] == (2, 50) and cache["audio.hook_mel"].shape == (2, N_MELS, 200)
    # the spliced embeddings are the projected audio rows, at the placeholders
    embed = cache["hook_embed"]
    for row, spans in enumerate(batch.audio_spans):
        (start, end), = spans
        assert torch.equal(embed[row, start:end], cache["audio.hook_audio_embeds"][row, : end - start])
    # a hook inside the encoder changes what the decoder reads
    zero = lambda x, hook: torch.zeros_like(x)  # noqa: E731
    with torch.no_grad():
        ablated = model.run_with_hooks(batch, fwd_hooks=[("audio.blocks.1.hook_attn_out", zero)])
    assert not torch.allclose(ablated[:, -1], logits[:, -1])


def test_loads_a_saved_thinker_and_a_whole_omni_checkpoint(pair, processor, tmp_path, monkeypatch):
    hf, _ = pair
    batch = padded_batch(processor)
    with torch.no_grad():
        expected = hf(**hf_inputs(batch)).logits
    folder = save_checkpoint(hf, processor, tmp_path / "thinker")
    thinker = HookedAudioLM.from_pretrained(folder)
    assert thinker.processor is not None and thinker.cfg.family == FAMILY
    with torch.no_grad():
        assert (thinker(thinker.to_batch([waveform(1.5, 1), waveform(0.4, 2)], ["What is the sound?",
                                         "Is this music?"], sampling_rate=16000)) - expected).abs().max() < TOL
    assert any(k.startswith("visual.") for k in load_file(folder / "model.safetensors"))  # saved, then skipped
    assert_whole_omni_checkpoint_loads(folder, tmp_path / "omni", "qwen2_5_omni", {
        "talker.model.layers.0.mlp.up_proj.weight": torch.zeros(2, 2),
        "token2wav.code2wav_dit_model.weight": torch.zeros(3)}, "Qwen/Qwen2.5-Omni-7B", batch, expected, monkeypatch)


def test_silence_twin_listening_and_steering(pair, processor):
    assert_silence_twin_listening_and_steering(pair[1], processor, padded_batch(processor))
    assert_rival_interventions(pair[1], padded_batch(processor))


def test_experiment_cli_runs_to_the_end_on_a_saved_thinker(pair, processor, tmp_path):
    """`lens-audio experiment --model <saved tiny thinker> --benchmark <MMAU-format file>`: every stage runs."""
    assert_experiment_cli_runs(pair[0], processor, tmp_path)


def test_sdpa_paths_match_the_sdpa_reference(pair, processor):
    hf, model = pair
    hf_sdpa, _ = tiny_hf_model(processor, seed=1, attn_implementation="sdpa", family=FAMILY, n_mels=N_MELS,
                               chunk_seconds=CHUNK_SECONDS)
    batch = padded_batch(processor)
    valid = batch.attention_mask.bool()
    ref, _ = reference(hf_sdpa, batch)
    for implementation in ("sdpa", "auto"):
        model.set_attn_implementation(implementation)
        with torch.no_grad():
            assert (model(batch) - ref)[valid].abs().max() < TOL
    model.set_attn_implementation("auto")


def test_bfloat16_is_as_close_as_transformers_own(pair, processor, tmp_path):
    """bfloat16 logits are within 1.5x of the error of transformers' thinker loaded in bfloat16 (against float32)."""
    import transformers

    thinker = transformers.Qwen2_5OmniThinkerForConditionalGeneration
    assert_bfloat16_as_close_as_transformers(pair[0], thinker, processor, tmp_path, reference)


def test_device_map_over_cpu_and_disk_equals_one_device(pair, processor, tmp_path):
    assert_device_map_equals_one_device(pair[0], processor, tmp_path, {
        "audio": "cpu", "embed": "cpu", "blocks.0": "cpu", "blocks.1": "disk", "ln_final": "cpu", "unembed": "disk"})
