"""TransformerLens idioms, second round: circuit tools, TransformerLens weight names, the state dict and the
constructor, blocks run by hand, cfg fields, text helpers and generate's defaults; each checked against a second
computation (a dense matrix product, torch.linalg.svd, the cached residual stream, torch.multinomial, ...)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformer_lens import SVDInterpreter
from transformer_lens.utilities import test_prompt as tl_test_prompt

from lens_audio import HookedAudioLM

TEXT = "the cat sat on the mat and the cat sat"


# ------------------------------------------------------------------ circuits


@pytest.mark.parametrize("mode", ["Q", "K", "V"])
def test_composition_scores_equal_the_arena_formula(model, mode):
    with torch.no_grad():
        scores = model.all_composition_scores(mode)
        W_OV = model.W_V @ model.W_O  # [layer, head, d_model, d_model], dense
        W_QK = model.W_Q @ model.W_K.transpose(-2, -1)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    assert scores.shape == (L, H, L, H)
    for l1 in range(L):
        for h1 in range(H):
            for l2 in range(L):
                for h2 in range(H):
                    if l1 >= l2:
                        assert scores[l1, h1, l2, h2] == 0
                        continue
                    A = W_OV[l1, h1]
                    B = {"Q": W_QK[l2, h2], "K": W_QK[l2, h2].T, "V": W_OV[l2, h2]}[mode]
                    expected = (A @ B).norm() / (A.norm() * B.norm())
                    assert torch.isclose(scores[l1, h1, l2, h2], expected, rtol=1e-4), (l1, h1, l2, h2)
    with pytest.raises(ValueError, match="mode"):
        model.all_composition_scores("O")


def test_head_labels_are_layer_major(model):
    labels = model.all_head_labels()
    assert len(labels) == model.cfg.n_layers * model.cfg.n_heads
    assert labels[: model.cfg.n_heads + 1] == [f"L0H{h}" for h in range(model.cfg.n_heads)] + ["L1H0"]


def _same_up_to_sign(got, expected):
    """Singular vectors are defined up to sign: compare each column with either sign."""
    for k in range(expected.shape[-1]):
        g, e = got[..., k], expected[..., k]
        assert torch.allclose(g, e, atol=1e-4) or torch.allclose(g, -e, atol=1e-4), k


@pytest.mark.parametrize("which", ["folded", "raw"])
def test_svd_interpreter_vectors_equal_torch_svd(which, model, raw):
    m = {"folded": model, "raw": raw}[which]
    svd = SVDInterpreter(m)
    W_U = m.unembed.W_U.detach()
    with torch.no_grad():
        ov = svd.get_singular_vectors("OV", layer_index=1, head_index=2, num_vectors=3)
        _, _, vh = torch.linalg.svd(m.blocks[1].attn.W_V[2] @ m.blocks[1].attn.W_O[2])
        _same_up_to_sign(ov[:, 0], W_U.T @ vh[:3].T)

        w_in = svd.get_singular_vectors("w_in", layer_index=1, num_vectors=2)
        dense_in = m.blocks[1].mlp.W_in.T
        if m.blocks[1].ln2.w is not None:  # unfolded: SVDInterpreter multiplies the norm weight in
            dense_in = dense_in * m.blocks[1].ln2.w
        _same_up_to_sign(w_in[:, 0], W_U.T @ torch.linalg.svd(dense_in)[2][:2].T)

        w_out = svd.get_singular_vectors("w_out", layer_index=0, num_vectors=2)
        _same_up_to_sign(w_out[:, 0], W_U.T @ torch.linalg.svd(m.blocks[0].mlp.W_out)[2][:2].T)
    assert ov.shape == (m.cfg.d_vocab, 1, 3)


def test_tl_parameters_are_views_of_the_stored_weights(model, raw):
    params = model.tl_parameters()
    same_storage = {
        "embed.W_E": model.embed.weight,
        "unembed.W_U": model.unembed.weight,
        "blocks.1.attn.W_Q": model.blocks[1].attn.q_proj.weight,
        "blocks.1.attn.W_O": model.blocks[1].attn.o_proj.weight,
        "blocks.1.attn._W_V": model.blocks[1].attn.v_proj.weight,
        "blocks.1.mlp.W_in": model.blocks[1].mlp.up_proj.weight,
        "blocks.1.mlp.W_out": model.blocks[1].mlp.down_proj.weight,
    }
    for name, weight in same_storage.items():
        assert params[name].untyped_storage().data_ptr() == weight.untyped_storage().data_ptr(), name
    assert torch.equal(params["blocks.1.attn.W_V"], model.blocks[1].attn.W_V)  # per query head
    assert params["blocks.1.attn.W_K"].shape == (model.cfg.n_heads, model.cfg.d_model, model.cfg.d_head)
    assert all(isinstance(params[name], torch.Tensor) for name in params)
    assert "blocks.0.ln1.w" not in params and "ln_final.w" not in params  # folded, as in TransformerLens
    assert torch.equal(raw.tl_parameters()["blocks.0.ln1.w"], raw.blocks[0].ln1.w)
    with pytest.raises(KeyError):
        params["blocks.0.attn.q_proj.weight"]
    # the Hugging Face layout stays what named_parameters() and state_dict() give
    assert "blocks.0.attn.q_proj.weight" in dict(model.named_parameters())


# ------------------------------------------------------------------ state dict, constructor, blocks


@pytest.mark.parametrize("flags", [{}, {"fold_ln": False}, {"fold_value_biases": True, "center_unembed": True}])
def test_state_dict_round_trip_through_the_constructor(hf, processor, two_example_batch, flags):
    source = HookedAudioLM.from_hf_model(hf, processor, **flags)
    fresh = HookedAudioLM(source.cfg.replace())
    fresh.load_state_dict(source.state_dict())  # strict: the constructor builds exactly the config's parameters
    assert (fresh.ln_final.w is None) == (source.cfg.normalization_type == "RMSPre")
    with torch.no_grad():
        assert torch.equal(fresh(two_example_batch), source(two_example_batch))


def test_the_constructor_builds_the_configs_dtype_and_norms(model):
    half = HookedAudioLM(model.cfg.replace(dtype=torch.bfloat16))
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    assert half.ln_final.w is None and all(b.ln1.w is None and b.ln2.w is None for b in half.blocks)  # "RMSPre"
    with pytest.raises(ValueError, match="normalization_type"):
        HookedAudioLM(model.cfg.replace(normalization_type="LN"))


def test_a_block_called_with_the_residual_alone_gives_resid_post(model, processor):
    tokens = model.to_tokens(TEXT)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
        for layer in range(model.cfg.n_layers):
            block = model.blocks[layer]
            out = block(cache["resid_pre", layer])
            assert torch.allclose(out, cache["resid_post", layer], atol=1e-5), layer
            assert torch.allclose(block.attn(block.ln1(cache["resid_pre", layer])), cache["attn_out", layer], atol=1e-5)
    with pytest.raises(ValueError, match="cos_sin"):
        model.blocks[0](cache["resid_pre", 0], kv_cache=object())


def test_cfg_fields_transformer_lens_users_read(model):
    cfg = model.cfg
    assert cfg.rotary_dim == cfg.d_head and cfg.attention_dir == "causal"
    assert cfg.default_prepend_bos is False
    assert cfg.tokenizer_prepends_bos == (len(model.tokenizer.encode("")) > 0)
    hidden = sum(
        b.attn.W_Q.numel() + b.attn.W_K.numel() + b.attn.W_V.numel() + b.attn.W_O.numel()
        + b.mlp.W_in.numel() + b.mlp.W_gate.numel() + b.mlp.W_out.numel()
        for b in model.blocks
    )
    assert cfg.n_params == hidden
    d = cfg.to_dict()
    assert d["n_layers"] == cfg.n_layers and d["n_params"] == hidden and d["audio"]["n_mels"] == cfg.audio.n_mels
    assert d["normalization_type"] == "RMSPre" and d["rotary_dim"] == cfg.d_head
    assert type(cfg).from_dict(d) == cfg


# ------------------------------------------------------------------ text helpers


def test_str_tokens_prepend_bos_and_lists(model):
    tok = model.tokenizer
    plain = model.to_str_tokens(TEXT, prepend_bos=False)
    assert plain == model.to_str_tokens(TEXT) == [tok.decode([i]) for i in tok.encode(TEXT, add_special_tokens=False)]
    # No BOS in Qwen's tokenizer: as in TransformerLens, BOS is the EOS token.
    assert tok.bos_token_id == tok.eos_token_id is not None
    with_bos = model.to_tokens(TEXT, prepend_bos=True)
    assert with_bos[0, 0] == tok.eos_token_id and torch.equal(with_bos[:, 1:], model.to_tokens(TEXT))
    assert model.to_str_tokens(TEXT, prepend_bos=True) == [tok.eos_token] + plain
    texts = ["a cat", "the mat sat"]
    assert model.to_str_tokens(texts) == [model.to_str_tokens(t) for t in texts]
    ids = tok.encode("cat", add_special_tokens=False)
    assert model.to_str_tokens(np.array(ids)) == model.to_str_tokens(torch.tensor([ids])) == [tok.decode(ids)]
    assert model.to_single_str_token(ids[0]) == tok.decode([ids[0]])
    with pytest.raises(ValueError, match="int"):
        model.to_single_str_token("cat")


def test_transformer_lens_test_prompt_runs(model, capsys):
    answer = " mat"
    with torch.no_grad():
        tl_test_prompt(TEXT, answer, model, prepend_space_to_answer=False, top_k=3)
        logits = model(model.to_tokens(TEXT + answer))
    printed = capsys.readouterr().out
    # The top prediction after the prompt, as test_prompt prints it.
    top = model.to_string(logits[0, len(model.to_str_tokens(TEXT)) - 1].argmax())
    assert f"Token: |{top}|" in printed and "Performance on answer token" in printed


def test_arena_generate_repeated_tokens_runs_verbatim(model):
    t, device = torch, model.cfg.device

    def generate_repeated_tokens(model, seq_len, batch_size=1):
        t.manual_seed(0)
        prefix = (t.ones(batch_size, 1) * model.tokenizer.bos_token_id).long()
        rep_tokens_half = t.randint(0, model.cfg.d_vocab, (batch_size, seq_len), dtype=t.int64)
        rep_tokens = t.cat([prefix, rep_tokens_half, rep_tokens_half], dim=-1).to(device)
        return rep_tokens

    tokens = generate_repeated_tokens(model, 6, batch_size=2)
    assert (tokens[:, 0] == model.tokenizer.eos_token_id).all() and tokens.shape == (2, 13)
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
    assert logits.shape == (2, 13, model.cfg.d_vocab) and cache["pattern", 0].shape[-1] == 13


# ------------------------------------------------------------------ generate


def test_generate_on_a_list_of_strings_returns_strings(model):
    prompts = ["the cat", "a mat sat on the"]
    kwargs = dict(max_new_tokens=3, stop_at_eos=False, do_sample=False)
    texts = model.generate(prompts, **kwargs)
    assert texts == [model.generate(p, **kwargs) for p in prompts]  # batched (left-padded) = one at a time
    assert all(t.startswith(p) for t, p in zip(texts, prompts))
    for prompt in ("the cat", model.to_tokens("the cat")):  # TransformerLens's generate(input, max_new_tokens)
        with pytest.raises(ValueError, match="keyword-only"):
            model.generate(prompt, 5)


def test_generate_samples_by_default_as_torch_multinomial(model):
    import inspect

    defaults = {k: p.default for k, p in inspect.signature(model.generate).parameters.items()}
    assert defaults["do_sample"] is True and defaults["temperature"] == 1.0 and defaults["freq_penalty"] == 0.0
    assert defaults["max_new_tokens"] == 10 and defaults["top_k"] is None and defaults["top_p"] is None
    tokens = model.to_tokens(["the cat sat", "on the mat"], padding_side="left")
    with torch.no_grad():
        logits = model(tokens)[:, -1].float()
    # The tiny model's logits are nearly flat: a low temperature is what makes the draws depend on it.
    untempered = []
    for seed in range(4):
        torch.manual_seed(seed)
        got = model.generate(tokens, max_new_tokens=1, temperature=0.05, stop_at_eos=False)[:, -1]
        torch.manual_seed(seed)
        expected = torch.multinomial((logits / 0.05).softmax(-1), 1)[:, 0]
        assert torch.equal(got, expected), seed
        torch.manual_seed(seed)
        untempered.append(not torch.equal(got, torch.multinomial(logits.softmax(-1), 1)[:, 0]))
    assert any(untempered), "the check cannot tell temperature 0.05 from 1"
    greedy = model.generate(tokens, max_new_tokens=4, stop_at_eos=False, do_sample=False)
    assert torch.equal(model.generate(tokens, max_new_tokens=4, stop_at_eos=False, temperature=0.0), greedy)


def test_freq_penalty_subtracts_counts_before_sampling(model):
    # The prompt holds half the vocabulary (once, the text's tokens more often): the penalty then moves the draws.
    half = [i for i in range(model.cfg.d_vocab // 2) if i != model.cfg.audio_token_id]
    tokens = torch.cat([torch.tensor([half]), model.to_tokens(TEXT)], dim=1)
    with torch.no_grad():
        logits = model(tokens)[:, -1].float()
    counts = torch.bincount(tokens[0], minlength=model.cfg.d_vocab).float()
    unpenalised = []
    for seed in range(6):
        torch.manual_seed(seed)
        got = model.generate(tokens, max_new_tokens=1, temperature=0.05, freq_penalty=2.0, stop_at_eos=False)[:, -1]
        torch.manual_seed(seed)
        expected = torch.multinomial((logits / 0.05 - 2.0 * counts).softmax(-1), 1)[:, 0]
        assert torch.equal(got, expected), seed
        torch.manual_seed(seed)
        unpenalised.append(not torch.equal(got, torch.multinomial((logits / 0.05).softmax(-1), 1)[:, 0]))
    assert any(unpenalised), "the check cannot tell the penalty from none"
    with pytest.raises(ValueError, match="freq_penalty"):
        model.generate(tokens, freq_penalty=-1.0)
