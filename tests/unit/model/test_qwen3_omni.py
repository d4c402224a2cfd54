"""The Qwen3-Omni-MoE thinker: the port equals transformers' `Qwen3OmniMoeThinkerForConditionalGeneration` on a random
tiny config (Conv2d audio encoder over 1 s chunks with 2-chunk attention windows, q/k RMSNorm, interleaved TMRoPE,
mixture-of-experts layers 0 and 2 around a dense layer 1), with the router and experts hookable, loading from a saved
thinker (experts stored one by one) and from a whole Omni checkpoint's layout, and the paper's analyses running."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from lens_audio import HookedAudioLM
from lens_audio.inputs.offline_processor import build_offline_processor
from lens_audio.model.decoder import GatedMLP
from lens_audio.model.moe import SparseMoE
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

pytest.importorskip("transformers.models.qwen3_omni_moe", reason="the reference needs a transformers with Qwen3-Omni")
FAMILY = "qwen3-omni-moe"


@pytest.fixture(scope="module")
def processor():
    return build_offline_processor(n_mels=N_MELS, chunk_seconds=CHUNK_SECONDS, family=FAMILY)


@pytest.fixture(scope="module")
def pair(processor):
    """(transformers thinker, HookedAudioLM sharing its weights; experts split from transformers' fused tensors)."""
    hf, _ = tiny_hf_model(processor, seed=1, family=FAMILY, n_mels=N_MELS, chunk_seconds=CHUNK_SECONDS)
    return hf, HookedAudioLM.from_hf_model(hf, processor)


def reference(hf, batch):
    """transformers' logits, decoder layer outputs, audio tower output and each sparse layer's router choices."""
    captured = {}
    layers = hf.model.language_model.layers
    hooks = [layer.register_forward_hook(lambda m, i, o, n=n: captured.__setitem__(n, o[0] if isinstance(o, tuple)
                                                                                    else o))
             for n, layer in enumerate(layers)]
    hooks += [layer.mlp.gate.register_forward_hook(lambda m, i, o, n=n: captured.__setitem__(("router", n), o))
              for n, layer in enumerate(layers) if hasattr(layer.mlp, "gate")]
    hooks.append(hf.model.audio_tower.register_forward_hook(
        lambda m, i, o: captured.__setitem__("audio", o.last_hidden_state)))
    try:
        with torch.no_grad():
            logits = hf(**hf_inputs(batch)).logits
    finally:
        for h in hooks:
            h.remove()
    return logits, captured


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_padded_batch_and_router_match_transformers(pair, processor, padding_side):
    hf, model = pair
    batch = padded_batch(processor, padding_side)
    assert batch.attention_mask.sum(-1).tolist() != [batch.input_ids.shape[1]] * 2  # one row is padded
    assert model.cfg.family == FAMILY and model.cfg.moe_layers == (0, 2) and model.cfg.qk_norm
    assert [type(b.mlp) for b in model.blocks] == [SparseMoE, GatedMLP, SparseMoE]  # mlp_only_layers=[1]
    ref_logits, ref = reference(hf, batch)
    valid = batch.attention_mask.bool()
    with torch.no_grad():
        logits, cache = model.run_with_cache(batch)
    assert (logits - ref_logits)[valid].abs().max() < TOL
    n_tokens = [end - start for spans in batch.audio_spans for start, end in spans]
    assert n_tokens == [13 + 7, 5]  # 150 valid mel frames: a whole 100-frame chunk (13 rows) and 50 frames (7)
    flat = torch.cat([cache["audio.hook_audio_embeds"][clip, :n] for clip, n in enumerate(n_tokens)])
    assert flat.shape == ref["audio"].shape and (flat - ref["audio"]).abs().max() < TOL
    for layer in range(model.cfg.n_layers):
        assert (cache[f"blocks.{layer}.hook_resid_post"] - ref[layer])[valid].abs().max() < TOL
    for layer in model.cfg.moe_layers:
        their_logits, their_weights, their_indices = ref[("router", layer)]
        shape = (*batch.input_ids.shape, -1)
        ours = cache[f"blocks.{layer}.mlp.hook_expert_indices"]
        assert torch.equal(ours[valid], their_indices.reshape(shape)[valid])
        assert (cache[f"blocks.{layer}.mlp.hook_topk_weights"] - their_weights.reshape(shape))[valid].abs().max() < TOL
        assert (cache[f"blocks.{layer}.mlp.hook_router_logits"] - their_logits.reshape(shape))[valid].abs().max() < TOL
        assert len(ours[valid].unique()) > 2  # the routing spreads over several of the 6 experts


def test_rope_index_and_greedy_generation_match_transformers(pair, processor):
    hf, model = pair
    assert_rope_index_and_generation_match(hf, model, processor)


def test_ablating_one_expert_by_hook_equals_the_by_hand_computation(pair, processor):
    """Zeroing expert e's output in layer 0 equals removing, by hand, its weighted output from `hook_mlp_out`."""
    _, model = pair
    batch = padded_batch(processor, "right")
    with torch.no_grad():
        logits, cache = model.run_with_cache(batch)
        block = model.blocks[0]
        x = block.ln2(cache["blocks.0.hook_resid_mid"])  # the MoE block's input
        indices, weights = cache["blocks.0.mlp.hook_expert_indices"], cache["blocks.0.mlp.hook_topk_weights"]
        e = int(indices[0, -1, 0])  # the last token's first choice
        routed = (indices == e)
        by_hand = cache["blocks.0.hook_mlp_out"] - (weights * routed).sum(-1, keepdim=True) * block.mlp.experts[e](
            x.reshape(-1, x.shape[-1])).reshape(x.shape)
        seen = []
        zero = lambda t, hook: seen.append(t.shape[0]) or torch.zeros_like(t)  # noqa: E731
        ablated = model.run_with_hooks(batch, fwd_hooks=[(f"blocks.0.mlp.experts.{e}.hook_result", zero)])
        patched = model.run_with_hooks(batch, fwd_hooks=[("blocks.0.hook_mlp_out", lambda t, hook: by_hand)])
    assert seen == [int(routed.sum())]  # the expert ran on exactly the tokens routed to it
    assert (ablated - patched).abs().max() < TOL
    assert (ablated - logits).abs().max() > 1e-3  # and the ablation matters


def test_qk_norm_hooks_and_tl_weight_views(pair, processor):
    _, model = pair
    batch = padded_batch(processor)
    with torch.no_grad():
        _, cache = model.run_with_cache(batch)
        attn = model.blocks[1].attn
        assert torch.allclose(cache["blocks.1.attn.hook_q_normed"], attn.q_norm(cache["blocks.1.attn.hook_q"]))
        assert torch.allclose(cache["blocks.1.attn.hook_k_normed"], attn.k_norm(cache["blocks.1.attn.hook_k"]))
    assert cache["blocks.0.attn.hook_q_normed"].shape[2:] == (model.cfg.n_heads, model.cfg.d_head)
    assert torch.equal(model.blocks[0].mlp.W_gate, model.blocks[0].mlp.gate.weight.T)  # the router, as in TL's MoE
    cfg = model.cfg  # TransformerLens's n_params: every expert and the router counted, per query head in attention
    mlp = sum(p.numel() for block in model.blocks for p in block.mlp.parameters())
    assert cfg.n_params == mlp + cfg.n_layers * 4 * cfg.d_model * cfg.d_head * cfg.n_heads
    assert model.blocks[1].mlp.W_in.shape == (model.cfg.d_model, model.cfg.d_mlp)  # the dense layer's
    with pytest.raises(ValueError, match="mixture-of-experts layer has no single value"):
        model.blocks[0].mlp.W_in  # noqa: B018
    with pytest.raises(ValueError, match="mixtures of experts"):
        model.W_in  # noqa: B018


def test_loads_a_saved_thinker_folded_and_a_whole_omni_checkpoint(pair, processor, tmp_path, monkeypatch):
    hf, _ = pair
    batch = padded_batch(processor)
    with torch.no_grad():
        expected = hf(**hf_inputs(batch)).logits
    folder = save_checkpoint(hf, processor, tmp_path / "thinker")
    weights = load_file(folder / "model.safetensors")
    assert "model.layers.0.mlp.experts.5.down_proj.weight" in weights  # saved one expert at a time
    thinker = HookedAudioLM.from_pretrained(folder)  # fold_ln: ln2 folded into the router and every expert
    assert thinker.processor is not None and thinker.cfg.normalization_type == "RMSPre"
    assert thinker.blocks[0].ln2.w is None
    with torch.no_grad():
        assert (thinker(thinker.to_batch([waveform(1.5, 1), waveform(0.4, 2)], ["What is the sound?",
                                         "Is this music?"], sampling_rate=16000)) - expected).abs().max() < TOL
    assert_whole_omni_checkpoint_loads(folder, tmp_path / "omni", "qwen3_omni_moe", {
        "talker.model.layers.0.mlp.experts.0.up_proj.weight": torch.zeros(2, 2),
        "code2wav.decoder.0.conv.weight": torch.zeros(3)}, "Qwen/Qwen3-Omni-30B-A3B-Instruct", batch, expected,
        monkeypatch)


def test_silence_twin_listening_and_steering(pair, processor):
    assert_silence_twin_listening_and_steering(pair[1], processor, padded_batch(processor))
    assert_rival_interventions(pair[1], padded_batch(processor))


def test_experiment_cli_runs_to_the_end_on_a_saved_thinker(pair, processor, tmp_path):
    """`lens-audio experiment --model <saved tiny MoE thinker> --benchmark <MMAU-format file>`: every stage runs."""
    assert_experiment_cli_runs(pair[0], processor, tmp_path, benchmark_seed=3)


def test_device_map_over_cpu_and_disk_equals_one_device(pair, processor, tmp_path):
    """A sparse block (its router and experts) offloaded to disk, as a 30B-A3B thinker split over devices is."""
    assert_device_map_equals_one_device(pair[0], processor, tmp_path, {
        "audio": "cpu", "embed": "cpu", "blocks.0": "disk", "blocks.1": "cpu", "blocks.2": "disk", "ln_final": "cpu",
        "unembed": "disk"})


def test_another_config_matches_transformers(processor):
    """Sparse every second layer (`decoder_sparse_step=2`), unnormalised top-k weights, biases on all four attention
    projections, heads of 24 (not d_model / n_heads), attention windows of one chunk."""
    import transformers

    from lens_audio.model.hf_config import qwen3_omni_moe_thinker_config
    from lens_audio.testing import perturb_

    tok = processor.tokenizer
    config = qwen3_omni_moe_thinker_config(len(tok), processor.audio_token_id, n_layers=4, mlp_only_layers=(),
                                           decoder_sparse_step=2, n_window_infer=100, pad_token_id=tok.pad_token_id,
                                           eos_token_id=tok.eos_token_id, mrope_section=(4, 4, 4))
    text = config.text_config
    text.norm_topk_prob, text.attention_bias, text.head_dim = False, True, 24
    config._attn_implementation = "eager"
    torch.manual_seed(3)
    hf = perturb_(transformers.Qwen3OmniMoeThinkerForConditionalGeneration(config).eval(), 3)
    model = HookedAudioLM.from_hf_model(hf, processor)
    assert model.cfg.moe_layers == (1, 3) and model.cfg.o_bias and not model.cfg.norm_topk_prob
    batch = padded_batch(processor)
    ref_logits, ref = reference(hf, batch)
    valid = batch.attention_mask.bool()
    with torch.no_grad():
        logits, cache = model.run_with_cache(batch)
    assert (logits - ref_logits)[valid].abs().max() < TOL
    _, weights, indices = ref[("router", 3)]
    assert torch.equal(cache["blocks.3.mlp.hook_expert_indices"][valid], indices.reshape(2, -1, 2)[valid])
    assert (cache["blocks.3.mlp.hook_topk_weights"] - weights.reshape(2, -1, 2))[valid].abs().max() < TOL


def test_bfloat16_is_as_close_as_transformers_own(pair, processor, tmp_path):
    """bfloat16 logits are within 1.5x of the error of transformers' thinker loaded in bfloat16 (against float32)."""
    import transformers

    thinker = transformers.Qwen3OmniMoeThinkerForConditionalGeneration
    assert_bfloat16_as_close_as_transformers(pair[0], thinker, processor, tmp_path, reference)
