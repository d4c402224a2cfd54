"""Parts of the Qwen3-Omni-MoE thinker (the whole family: test_qwen3_omni.py): the mixture-of-experts MLP
(`lens_audio.model.moe`), the interleaved TMRoPE and the audio encoder (`lens_audio.model.qwen3_omni_audio`) equal
transformers' `Qwen3OmniMoeThinkerTextSparseMoeBlock`, rotary embedding and `Qwen3OmniMoeAudioEncoder`, and the router
and experts are hookable as TransformerLens names them."""

from __future__ import annotations

import pytest
import torch

from lens_audio.model.moe import SparseMoE
from lens_audio.model.mrope import MultimodalRotaryEmbedding

transformers_moe = pytest.importorskip(
    "transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe",
    reason="the reference needs a transformers with Qwen3-Omni",
)


def text_config(**changes):
    from transformers import Qwen3OmniMoeTextConfig

    return Qwen3OmniMoeTextConfig(**{
        "hidden_size": 32, "num_attention_heads": 4, "head_dim": 16, "moe_intermediate_size": 24, "num_experts": 6,
        "num_experts_per_tok": 2, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                                      "mrope_section": [2, 3, 3]}, **changes})


@pytest.fixture(scope="module", params=[True, False], ids=["norm_topk", "raw_topk"])
def blocks(request):
    config = text_config(norm_topk_prob=request.param)
    torch.manual_seed(0)
    hf = transformers_moe.Qwen3OmniMoeThinkerTextSparseMoeBlock(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0, 0.3)
    ours = SparseMoE(32, 24, 6, 2, request.param).from_fused(hf.gate.weight, hf.experts.gate_up_proj,
                                                              hf.experts.down_proj)
    return hf, ours


def test_moe_block_equals_transformers_and_exposes_the_routing(blocks):
    hf, ours = blocks
    x = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(1))
    seen = {}
    hooks = [(name, lambda t, hook: seen.__setitem__(hook.name, t)) for name in
             ("hook_router_logits", "hook_expert_weights", "hook_expert_indices", "hook_topk_weights")]
    with torch.no_grad():
        expected = hf(x)
        for name, fn in hooks:
            getattr(ours, name).name = name
            getattr(ours, name).add_hook(fn)
        got = ours(x)
        for name, _ in hooks:
            getattr(ours, name).remove_hooks()
        logits, weights, indices = hf.gate(x.reshape(-1, 32))
    assert (got - expected).abs().max() < 1e-5  # outputs of size ~5: float32 rounding of a different sum order
    assert torch.equal(seen["hook_expert_indices"].reshape(-1, 2), indices)
    assert torch.allclose(seen["hook_topk_weights"].reshape(-1, 2), weights)
    assert torch.allclose(seen["hook_router_logits"].reshape(-1, 6), logits)
    assert torch.allclose(seen["hook_expert_weights"].sum(-1), torch.ones(2, 7))


def test_an_expert_can_be_read_and_ablated(blocks):
    """Zeroing expert e's result equals the sum over the other chosen experts, computed by hand."""
    _, ours = blocks
    x = torch.randn(1, 9, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        probs = torch.softmax(ours.gate(x).float(), -1)
        top, indices = probs.topk(2, -1)
        if ours.norm_topk_prob:
            top = top / top.sum(-1, keepdim=True)
        e = int(indices[0, 0, 0])
        by_hand = torch.zeros_like(x)
        for slot in range(2):
            for t in range(9):
                chosen = int(indices[0, t, slot])
                if chosen != e:
                    by_hand[0, t] += top[0, t, slot] * ours.experts[chosen](x[0, t:t + 1])[0]
        routed = []
        ours.experts[e].hook_result.add_hook(lambda t, hook: routed.append(t.shape[0]) or torch.zeros_like(t))
        try:
            ablated = ours(x)
        finally:
            ours.experts[e].hook_result.remove_hooks()
    assert routed == [int((indices == e).sum())]
    assert (ablated - by_hand).abs().max() < 1e-5


def test_interleaved_tmrope_equals_qwen3_omni_rotary():
    """Qwen3-Omni interleaves the time/height/width frequencies (Qwen2.5-Omni runs them in sections)."""
    config = text_config()
    hf = transformers_moe.Qwen3OmniMoeThinkerTextRotaryEmbedding(config)
    n = 13
    base = torch.arange(n).expand(2, n)
    position_ids = torch.stack([base, 2 * base + 1, base // 3 + 5])
    cos, sin = hf(torch.zeros(1), position_ids)
    ours = MultimodalRotaryEmbedding(16, 10000.0, (2, 3, 3), interleaved=True).cos_sin(position_ids, torch.float32)
    assert torch.equal(ours[0][:, :, 0], cos) and torch.equal(ours[1][:, :, 0], sin)
    runs = MultimodalRotaryEmbedding(16, 10000.0, (2, 3, 3)).cos_sin(position_ids, torch.float32)
    assert not torch.allclose(runs[0][:, :, 0], cos)  # the layouts differ


def test_qwen3_omni_audio_encoder_equals_transformers():
    """Chunks of 100 frames, attention windows of 2 chunks: a 3.5 s clip gives 2 windows (the second one partial)."""
    from transformers import Qwen3OmniMoeAudioEncoderConfig

    from lens_audio.model.config import AudioEncoderConfig
    from lens_audio.model.qwen3_omni_audio import Qwen3OmniAudioEncoder
    from lens_audio.model.weights import hf_key_to_lens
    from lens_audio.testing import perturb_

    config = Qwen3OmniMoeAudioEncoderConfig(d_model=32, encoder_layers=2, encoder_attention_heads=4,
                                            encoder_ffn_dim=64, num_mel_bins=16, max_source_positions=100,
                                            n_window=50, n_window_infer=200, output_dim=40, downsample_hidden_size=8)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    hf = perturb_(transformers_moe.Qwen3OmniMoeAudioEncoder(config).eval(), seed=3)
    ours = Qwen3OmniAudioEncoder(AudioEncoderConfig(n_mels=16, n_layers=2, n_heads=4, d_model=32, d_mlp=64), 40,
                                 50, 200, 8)
    with torch.no_grad():
        for key, value in hf.state_dict().items():
            name = key if key.split(".")[0] in ("conv2d1", "conv2d2", "conv2d3", "conv_out", "proj1", "proj2") else \
                hf_key_to_lens(f"audio_tower.{key}").removeprefix("audio.")
            ours.get_parameter(name).copy_(value)
    valid = torch.tensor([350, 40, 100])
    features = torch.randn(3, 16, 400, generator=torch.Generator().manual_seed(4))
    mask = (torch.arange(400)[None, :] < valid[:, None]).long()
    with torch.no_grad():
        embeds, n_tokens = ours(features, mask)
        flat = features.permute(0, 2, 1)[mask.bool()].T
        expected = hf(flat, feature_lens=valid).last_hidden_state
    assert n_tokens.tolist() == [13 * 3 + 7, 5, 13]
    got = torch.cat([embeds[clip, :n] for clip, n in enumerate(n_tokens.tolist())])
    assert got.shape == expected.shape and (got - expected).abs().max() < 1e-5
