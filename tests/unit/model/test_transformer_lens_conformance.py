"""TransformerLens idioms give HookedTransformer's answers on HookedAudioLM, each checked against a second
computation."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import FactoredMatrix

from lens_audio import HookedAudioLM
from lens_audio.testing import save_checkpoint
from tests.helpers.reference import reference_run


@pytest.fixture(scope="module")
def checkpoint(hf, processor, tmp_path_factory):
    return save_checkpoint(hf, processor, tmp_path_factory.mktemp("conformance"))


# ------------------------------------------------------------------ 1. gradients


def test_loaded_parameters_are_trainable(checkpoint, model):
    loaded = HookedAudioLM.from_pretrained(checkpoint)
    for m in (loaded, model):
        assert all(p.requires_grad for p in m.parameters())


def test_backward_hook_gradient_equals_autograd(model, two_example_batch):
    name = "blocks.0.hook_resid_post"
    captured, grads = {}, {}

    def keep(resid, hook):
        resid.retain_grad()
        captured["resid"] = resid

    def record(grad, hook):
        grads["hook"] = grad.detach().clone()

    with model.hooks(fwd_hooks=[(name, keep)], bwd_hooks=[(name, record)]):
        model(two_example_batch)[:, -1, 5].sum().backward()
    model.zero_grad(set_to_none=True)
    assert grads["hook"].abs().max() > 0
    assert torch.allclose(grads["hook"], captured["resid"].grad, atol=1e-6)
    # The same gradient from torch.autograd.grad on a fresh graph.
    resid = model(two_example_batch, stop_at_layer=1).detach().requires_grad_(True)
    logits = model.unembed(model.ln_final(model.blocks[1](resid, *_block_args(model, two_example_batch))))
    (expected,) = torch.autograd.grad(logits[:, -1, 5].sum(), resid)
    assert torch.allclose(grads["hook"], expected, atol=1e-5)


def _block_args(model, batch):
    state = model.start_decoder(
        batch.input_ids, batch.attention_mask, batch.input_features, batch.feature_attention_mask
    )
    return state.cos_sin, state.allowed


# ------------------------------------------------------------------ 2. weight processing


def test_folded_model_keeps_transformers_logits(model, raw, hf, two_example_batch):
    ref, _ = reference_run(hf, two_example_batch)
    valid = two_example_batch.attention_mask.bool()
    with torch.no_grad():
        folded, unfolded = model(two_example_batch), raw(two_example_batch)
    assert (folded - ref)[valid].abs().max() < 1e-4
    assert (folded - unfolded)[valid].abs().max() < 1e-4
    assert model.cfg.normalization_type == "RMSPre" and raw.cfg.normalization_type == "RMS"
    assert model.ln_final.w is None and raw.ln_final.w is not None
    assert hf.model.language_model.norm.weight is not None, "folding must not touch the Hugging Face model"


def test_normalized_final_stream_times_W_U_is_the_logits(model, raw, two_example_batch):
    with torch.no_grad():
        logits, cache = model.run_with_cache(two_example_batch)
        raw_logits, raw_cache = raw.run_with_cache(two_example_batch)
    assert (cache["ln_final.hook_normalized"] @ model.W_U + model.b_U - logits).abs().max() < 1e-4
    # W_U[:, t] is token t's residual direction: the unfolded model needs the norm weight for the same number.
    assert torch.allclose(model.W_U, raw.W_U * raw.ln_final.w[:, None], atol=1e-6)
    assert (raw_cache["ln_final.hook_normalized"] @ raw.W_U - raw_logits).abs().max() > 1e-3


@pytest.mark.parametrize("which", ["model", "raw"])
def test_logit_attrs_are_exact_folded_or_not(which, model, raw, two_example_batch):
    m = {"model": model, "raw": raw}[which]
    tokens = torch.tensor([5, 9])
    with torch.no_grad():
        logits, cache = m.run_with_cache(two_example_batch)
        parts = cache.decompose_resid(pos_slice=-1)
        attrs = cache.logit_attrs(parts, tokens=tokens, pos_slice=-1)
    expected = logits[torch.arange(2), -1, tokens]
    assert (attrs.sum(0) - expected).abs().max() < 1e-4


def test_center_unembed_and_fold_value_biases_keep_log_probs(hf, processor, raw, two_example_batch):
    processed = HookedAudioLM.from_hf_model(hf, processor, center_unembed=True, fold_value_biases=True)
    valid = two_example_batch.attention_mask.bool()
    with torch.no_grad():
        got, want = processed(two_example_batch), raw(two_example_batch)
    assert (got.log_softmax(-1) - want.log_softmax(-1))[valid].abs().max() < 1e-4
    assert (got - want)[valid].abs().max() > 1e-3, "centering W_U shifts logits by a constant per position"
    assert processed.W_U.mean(-1).abs().max() < 1e-5
    assert processed.b_V.abs().max() == 0 and processed.b_O.abs().max() > 0
    expected_b_O = torch.einsum("lhd,lhdm->lm", raw.b_V, raw.W_O)
    assert torch.allclose(processed.b_O, expected_b_O, atol=1e-5)


def test_from_pretrained_no_processing_keeps_checkpoint_weights(checkpoint, raw):
    loaded = HookedAudioLM.from_pretrained_no_processing(checkpoint)
    assert loaded.cfg.normalization_type == "RMS"
    assert torch.equal(loaded.blocks[1].ln2.w, raw.blocks[1].ln2.w)
    assert torch.equal(loaded.W_U, raw.W_U)


# ------------------------------------------------------------------ 3. grouped-query layout


def test_key_value_weights_are_per_query_head(model, two_example_batch):
    attn = model.blocks[1].attn
    n_rep = model.cfg.n_heads // model.cfg.n_key_value_heads
    assert attn.W_K.shape[0] == attn.W_V.shape[0] == attn.b_K.shape[0] == model.cfg.n_heads
    assert attn._W_K.shape[0] == model.cfg.n_key_value_heads
    with torch.no_grad():
        _, cache = model.run_with_cache(two_example_batch)
    x = cache["blocks.1.ln1.hook_normalized"]
    for h in range(model.cfg.n_heads):
        k = x @ attn.W_K[h] + attn.b_K[h]
        v = x @ attn.W_V[h] + attn.b_V[h]
        assert (k - cache["k", 1][:, :, h // n_rep]).abs().max() < 1e-4
        assert (v - cache["v", 1][:, :, h // n_rep]).abs().max() < 1e-4


# ------------------------------------------------------------------ 4. weight-analysis surface


def test_factored_circuits_equal_their_products(model):
    assert isinstance(model.OV, FactoredMatrix) and isinstance(model.blocks[0].attn.QK, FactoredMatrix)
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            ov = model.W_V[layer, head] @ model.W_O[layer, head]
            qk = model.W_Q[layer, head] @ model.W_K[layer, head].T
            assert torch.allclose(model.OV[layer, head].AB, ov, atol=1e-6)
            assert torch.allclose(model.QK[layer, head].AB, qk, atol=1e-6)
            assert torch.allclose(model.blocks[layer].attn.OV[head].AB, ov, atol=1e-6)


def test_stacked_weights_match_the_blocks(model):
    attn, mlp = model.blocks[1].attn, model.blocks[1].mlp
    assert torch.equal(model.W_in[1], mlp.up_proj.weight.T) and torch.equal(model.W_gate[1], mlp.gate_proj.weight.T)
    assert torch.equal(model.W_out[1], mlp.down_proj.weight.T) and torch.equal(model.b_Q[1], attn.b_Q)
    assert model.b_in.shape == (2, model.cfg.d_mlp) and model.b_out.abs().max() == 0
    assert model.embed.W_E is model.embed.weight and torch.equal(model.unembed.W_U, model.W_U)
    assert model.cfg.gated_mlp and model.cfg.original_architecture == "Qwen2AudioForConditionalGeneration"
    assert model.cfg.tokenizer_name


@pytest.mark.parametrize("fold_value_biases", [False, True])
def test_full_resid_decomposition_sums_to_the_final_residual(hf, processor, two_example_batch, fold_value_biases):
    m = HookedAudioLM.from_hf_model(hf, processor, fold_value_biases=fold_value_biases)
    with torch.no_grad():
        _, cache = m.run_with_cache(two_example_batch)
        parts, labels = cache.get_full_resid_decomposition(return_labels=True)
    assert labels[-1] == "bias" and len(labels) == m.cfg.n_layers * (m.cfg.n_heads + m.cfg.d_mlp) + 2
    assert (parts.sum(0) - cache["resid_post", m.cfg.n_layers - 1]).abs().max() < 1e-4
    assert torch.allclose(m.accumulated_bias(m.cfg.n_layers), m.b_O.sum(0))


def test_to_dtype_updates_cfg(hf, processor):
    m = HookedAudioLM.from_hf_model(hf, processor, fold_ln=False)
    m.to(torch.float64)
    assert m.cfg.dtype == torch.float64 and m.W_U.dtype == torch.float64


# ------------------------------------------------------------------ 5. loss


def test_loss_skips_padding_and_audio_targets(model, two_example_batch):
    b = two_example_batch
    with torch.no_grad():
        logits, loss = model(b, return_type="both")
        per_token = model(b, return_type="loss", loss_per_token=True)
        plain = model(b)
    assert torch.equal(logits, plain)
    real = b.attention_mask.bool()
    # targets: real text tokens predicted from a real position (TransformerLens's rule, plus audio targets skipped)
    scored = (real & ~b.audio_mask)[:, 1:] & real[:, :-1]
    rows, cols = scored.nonzero(as_tuple=True)
    expected = torch.nn.functional.cross_entropy(logits[rows, cols], b.input_ids[rows, cols + 1])
    assert torch.allclose(loss, expected, atol=1e-5)
    assert per_token.shape == (2, b.input_ids.shape[1] - 1) and (per_token[~scored] == 0).all()
    assert torch.allclose(model.loss_fn(logits, b.input_ids, b.attention_mask), loss)


def test_answer_loss_scores_only_the_answer(model, processor, two_example_batch):
    answers = [" a dog", " yes"]
    with torch.no_grad():
        losses = model.answer_loss(two_example_batch, answers)
        for row, answer in enumerate(answers):
            keep = two_example_batch.attention_mask[row].bool()
            prompt = two_example_batch.input_ids[row, keep]
            answer_ids = torch.tensor(processor.tokenizer.encode(answer, add_special_tokens=False))
            clips = [i for i, spans in enumerate(two_example_batch.audio_spans) for _ in spans if i == row]
            tokens = torch.cat([prompt, answer_ids])[None]
            features = two_example_batch.input_features[clips]
            logits = model(tokens, None, features, two_example_batch.feature_attention_mask[clips])
            log_probs = logits[0, len(prompt) - 1 : -1].log_softmax(-1)
            expected = -log_probs.gather(-1, answer_ids[:, None]).mean()
            assert torch.allclose(losses[row], expected, atol=1e-4), row


# ------------------------------------------------------------------ 6. decoder and encoder hooks


def test_layer_works_on_encoder_hooks_and_filters_pick_a_stack(model, two_example_batch):
    from lens_audio import audio_only, decoder_only

    seen = []
    pattern = lambda name: name.endswith("pattern")  # the ARENA idiom
    with torch.no_grad():
        model.run_with_hooks(
            two_example_batch, fwd_hooks=[(pattern, lambda x, hook: seen.append((hook.is_audio, hook.layer())))]
        )
        _, cache = model.run_with_cache(two_example_batch, names_filter=decoder_only(pattern))
        text_only = []
        model.run_with_hooks("hello world", fwd_hooks=[(pattern, lambda x, hook: text_only.append(hook.name))])
    n_audio = model.cfg.audio.n_layers
    assert sorted(seen) == [(False, l) for l in range(model.cfg.n_layers)] + [(True, l) for l in range(n_audio)]
    assert sorted(cache.keys()) == [f"blocks.{l}.attn.hook_pattern" for l in range(model.cfg.n_layers)]
    assert text_only == [f"blocks.{l}.attn.hook_pattern" for l in range(model.cfg.n_layers)], "no audio, no encoder"
    assert model.hook_names(audio_only(pattern)) == [f"audio.blocks.{l}.attn.hook_pattern" for l in range(n_audio)]


def test_get_act_name_is_reexported():
    from lens_audio import get_act_name

    assert get_act_name("pattern", 1) == "blocks.1.attn.hook_pattern"
    assert get_act_name("resid_post", 0) == "blocks.0.hook_resid_post"


# ------------------------------------------------------------------ 7. text helpers


def test_text_helpers_round_trip(model, processor):
    text = "hello world, what is this?"
    ids = processor.tokenizer.encode(text, add_special_tokens=False)
    tokens = model.to_tokens(text)
    assert tokens.tolist() == [ids] and model.to_string(tokens[0]) == text and model.to_string(tokens) == [text]
    strs = model.to_str_tokens(text)
    assert strs == model.to_str_tokens(tokens) == model.to_str_tokens(tokens[0]) and "".join(strs) == text
    position = model.get_token_position(strs[1], text)
    assert tokens[0, position] == ids[1]
    assert model.get_token_position(ids[1], tokens, mode="last") == max(i for i, t in enumerate(ids) if t == ids[1])
    with torch.no_grad():
        assert torch.equal(model(text), model(tokens))
        batch_logits = model([text, "hi"])  # left-padded; the padded row equals the row alone
        assert (batch_logits[1, -1] - model("hi")[0, -1]).abs().max() < 1e-4


# ------------------------------------------------------------------ 8. partial forwards


def test_start_at_layer_continues_from_a_residual(model, two_example_batch):
    b = two_example_batch
    with torch.no_grad():
        full = model(b)
        resid = model(b, stop_at_layer=1)
        rest = model(resid, b.attention_mask, start_at_layer=1)
        loss = model(resid, b.attention_mask, start_at_layer=1, tokens=b.input_ids, return_type="loss")
    valid = b.attention_mask.bool()
    assert (rest - full)[valid].abs().max() < 1e-5
    assert torch.allclose(loss, model(b, return_type="loss"), atol=1e-6)


def test_stop_at_layer_returns_the_residual_entering_that_block_and_none_runs_no_unembed(model, two_example_batch):
    b = two_example_batch
    names = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_pre", "ln_final.hook_scale"]
    with torch.no_grad():
        _, cache = model.run_with_cache(b, names_filter=names)
        resid = model(b, stop_at_layer=1)
        fired: list[str] = []
        with model.hooks(fwd_hooks=[(lambda name: name in names[1:], lambda x, hook: fired.append(hook.name))]):
            nothing = model(b, return_type=None)
            model(b, stop_at_layer=1)
    assert torch.equal(resid, cache["blocks.1.hook_resid_pre"]) and torch.equal(
        resid, cache["blocks.0.hook_resid_post"]
    )
    assert resid.shape == (*b.input_ids.shape, model.cfg.d_model)
    assert nothing is None
    # return_type=None runs every block but no final norm; stop_at_layer=1 never reaches block 1
    assert fired == ["blocks.1.hook_resid_pre"]


# ------------------------------------------------------------------ 9. generate


def test_generate_takes_transformer_lens_arguments(model, processor, two_example_batch):
    import inspect

    params = inspect.signature(model.generate).parameters
    assert {"verbose", "stop_at_eos", "return_type", "max_new_tokens"} <= set(params)
    tokens = model.generate(two_example_batch, max_new_tokens=4, stop_at_eos=False, verbose=True, do_sample=False)
    assert tokens.shape[1] == two_example_batch.input_ids.shape[1] + 4
    texts = model.generate(two_example_batch, max_new_tokens=4, stop_at_eos=False, return_type="str", do_sample=False)
    assert texts == processor.tokenizer.batch_decode(tokens, skip_special_tokens=True)
    text = model.generate("hello", max_new_tokens=3, stop_at_eos=False)
    assert isinstance(text, str) and text.startswith("hello")


def test_switches_add_hooks_without_changing_the_output(hf, processor, two_example_batch):
    m = HookedAudioLM.from_hf_model(hf, processor)
    with torch.no_grad():
        plain = m(two_example_batch)
        m.set_use_split_qkv_input(True)
        m.set_use_hook_mlp_in(True)
        m.set_ungroup_grouped_query_attention(True)
        logits, cache = m.run_with_cache(two_example_batch)
    n = m.cfg.n_heads
    assert cache["blocks.1.hook_q_input"].shape[2] == cache["blocks.1.hook_k_input"].shape[2] == n
    assert cache["k", 1].shape[2] == cache["v", 1].shape[2] == n
    assert torch.equal(cache["blocks.1.hook_mlp_in"], cache["resid_mid", 1])
    assert torch.equal(cache["blocks.1.hook_q_input"][:, :, 2], cache["resid_pre", 1])
    valid = two_example_batch.attention_mask.bool()
    assert (logits - plain)[valid].abs().max() < 1e-4
    # Patching one head's query input changes only what that head reads.
    def zero_head_0(x, hook):
        x[:, :, 0] = 0
        return x

    with torch.no_grad():
        seen = {}
        m.run_with_hooks(
            two_example_batch,
            fwd_hooks=[
                ("blocks.0.hook_q_input", zero_head_0),
                ("blocks.0.attn.hook_q", lambda q, hook: seen.setdefault("q", q)),
            ],
        )
    expected_q0 = m.blocks[0].attn.b_Q[0]  # zero input: RMSNorm of zeros is zero, so only the bias remains
    assert torch.allclose(seen["q"][:, :, 0], expected_q0.expand_as(seen["q"][:, :, 0]), atol=1e-5)
    assert torch.allclose(seen["q"][:, :, 1], cache["q", 0][:, :, 1], atol=1e-5)


# ------------------------------------------------------------------ docs


def test_docs_main_demo_steps_run_on_the_workshop_model(capsys):
    """docs/transformerlens.md's Main Demo, here too so that CI runs it under TransformerLens 3.9 as well
    (tests/integration/test_docs.py runs every page's code under 4.x)."""
    import re
    from pathlib import Path

    page = (Path(__file__).resolve().parents[3] / "docs" / "transformerlens.md").read_text()
    code = re.search(r"```python\n(.*?)```", page, re.DOTALL).group(1)
    try:
        exec(compile(code, "docs/transformerlens.md", "exec"), {})  # asserts logit lens and DLA inside
    finally:
        torch.set_grad_enabled(True)
    out = capsys.readouterr().out
    assert "answer loss" in out and "top components:" in out
