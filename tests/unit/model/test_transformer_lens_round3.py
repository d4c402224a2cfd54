"""TransformerLens idioms, third round, written as TransformerLens, ARENA and SAELens code writes them: padded-batch
loss, `utils.get_attention_mask`, tokenization keywords on forward, TransformerLens's key-value cache class,
`input_to_embed`, `apply_rotary` / `cfg.attn_scale`, 4.x's logit lens and direct-path patching, patching functions
given an `AudioBatch`, and the 4.x config fields; each checked against a second computation. The comparison with
TransformerLens 3.9's own `HookedTransformer` on the same weights is in test_transformer_lens_reference.py."""

from __future__ import annotations

import importlib

import pytest
import torch
from transformer_lens import patching

from lens_audio import make_batch
from lens_audio.model.kv_cache import KVCache
from tests.helpers.reference import waveform

TEXTS = ["the cat sat on the mat and the cat", "a dog ran"]


def _tl_utils():
    """`transformer_lens.utils` (3.x) or `transformer_lens.utilities` (4.x): the same functions."""
    try:
        return importlib.import_module("transformer_lens.utilities")
    except ImportError:  # pragma: no cover - older TransformerLens
        return importlib.import_module("transformer_lens.utils")


def _tl_cache_classes():
    """TransformerLens's key-value cache classes this install has (`TransformerLensKeyValueCache` in 3.9 and 4.x;
    the 3.x name `HookedTransformerKeyValueCache` in older 3.x)."""
    found = []
    for module, name in [
        ("transformer_lens.cache.key_value_cache", "TransformerLensKeyValueCache"),
        ("transformer_lens.past_key_value_caching", "HookedTransformerKeyValueCache"),
    ]:
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return found


# ------------------------------------------------------------------ padded text batches


def test_padded_batch_loss_is_the_token_weighted_mean_of_the_unpadded_prompts(model):
    with torch.no_grad():
        batch_loss = model(TEXTS, return_type="loss")
        per_token = model(TEXTS, return_type="loss", loss_per_token=True)
        alone = [model(text, return_type="loss") for text in TEXTS]
        alone_per_token = [model(text, return_type="loss", loss_per_token=True)[0] for text in TEXTS]
    counts = [model.to_tokens(text).shape[1] - 1 for text in TEXTS]
    expected = sum(loss * n for loss, n in zip(alone, counts)) / sum(counts)
    assert torch.allclose(batch_loss, expected, atol=1e-5)
    # TransformerLens's rule: a target counts when it and its predicting position are both real tokens.
    mask = model._tokenize(TEXTS)[1]
    scored = mask[:, :-1].bool() & mask[:, 1:].bool()
    assert (per_token[~scored] == 0).all() and (per_token[scored] > 0).all()
    for row, (values, n) in enumerate(zip(alone_per_token, counts)):  # left padding: real targets at the end
        assert torch.allclose(per_token[row, -n:], values, atol=1e-4), row
    assert int(scored.sum()) == sum(counts)


def test_get_attention_mask_finds_the_left_pads_to_tokens_added(model):
    utils = _tl_utils()
    tokens = model.to_tokens(TEXTS)
    assert model.tokenizer.padding_side == "left"
    mask = utils.get_attention_mask(model.tokenizer, tokens, model.cfg.default_prepend_bos)
    assert torch.equal(mask.bool(), model._tokenize(TEXTS)[1].bool())
    assert not mask.bool().all()  # the short row's pads are found
    with torch.no_grad():
        from_mask = model(tokens, attention_mask=mask, return_type="loss")
        from_texts = model(TEXTS, return_type="loss")
        logits = model(tokens, attention_mask=mask)
        inferred = model(tokens)  # no mask: TransformerLens's forward finds the leading pads itself
        inferred_loss = model(tokens, return_type="loss")
        short = model(TEXTS[1])
    assert torch.allclose(from_mask, from_texts, atol=1e-6) and torch.allclose(inferred_loss, from_texts, atol=1e-6)
    n = short.shape[1]
    assert (logits[1, -n:] - short[0]).abs().max() < 1e-4
    assert (inferred[1, -n:] - short[0]).abs().max() < 1e-4
    # right-padded tokens: the trailing pads, when the forward is told the side (as TransformerLens's padding_side=)
    right = model.to_tokens(TEXTS, padding_side="right")
    with torch.no_grad():
        right_loss = model(right, padding_side="right", return_type="loss")
    assert torch.allclose(right_loss, from_texts, atol=1e-5)


@pytest.mark.parametrize("prepend_bos", [False, True])
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_forward_and_run_with_cache_take_tokenization_keywords(model, prepend_bos, padding_side):
    kw = {"prepend_bos": prepend_bos, "padding_side": padding_side}
    tokens = model.to_tokens(TEXTS, **kw)
    assert (tokens[:, 0] == model.tokenizer.bos_token_id).all() == (prepend_bos and padding_side == "right")
    mask = (tokens != model.tokenizer.pad_token_id).long() if not prepend_bos else None
    with torch.no_grad():
        logits = model(TEXTS, **kw)
        cached_logits, cache = model.run_with_cache(TEXTS, names_filter="blocks.1.hook_resid_post", **kw)
        loss = model(TEXTS, return_type="loss", **kw)
        rows = [model(text, prepend_bos=prepend_bos)[0] for text in TEXTS]
    assert torch.equal(logits, cached_logits) and cache["blocks.1.hook_resid_post"].shape[:2] == tokens.shape
    for row, alone in enumerate(rows):  # each row equals the prompt alone, on the side it was padded
        n = alone.shape[0]
        got = logits[row, :n] if padding_side == "right" else logits[row, -n:]
        assert (got - alone).abs().max() < 1e-4, row
    if mask is not None:  # the pad id is not the BOS id here, so the pads can be found from the tokens
        assert torch.allclose(loss, model(tokens, attention_mask=mask, return_type="loss"), atol=1e-6)


def test_saelens_activations_store_calls(model):
    """SAELens's `ActivationsStore` tokenizes with `to_tokens(row, truncate=False, move_to_device=False,
    prepend_bos=False)` and reads activations with `run_with_cache(tokens, names_filter=[hook], stop_at_layer=L + 1,
    prepend_bos=False)`; the activations equal a full run's."""
    hook = "blocks.0.hook_resid_post"
    tokens = torch.stack(
        [model.to_tokens(t, truncate=False, move_to_device=False, prepend_bos=False)[0, :3] for t in TEXTS]
    )
    with torch.no_grad():
        out, cache = model.run_with_cache(tokens, names_filter=[hook], stop_at_layer=1, prepend_bos=False)
        _, full = model.run_with_cache(tokens)
    assert list(cache.keys()) == [hook] and torch.equal(out, cache[hook])
    assert torch.allclose(cache[hook], full[hook], atol=1e-6)


# ------------------------------------------------------------------ TransformerLens's key-value cache idiom


@pytest.mark.parametrize("cache_class", [KVCache, *_tl_cache_classes()], ids=lambda c: c.__name__)
def test_key_value_cache_idiom_gives_the_full_forwards_logits(model, cache_class):
    tokens = model.to_tokens(TEXTS[0])
    with torch.no_grad():
        full = model(tokens)
        cache = cache_class.init_cache(model.cfg, model.cfg.device, 1)
        first = model(tokens[:, :5], past_kv_cache=cache)
        rest = [model(tokens[:, i : i + 1], past_kv_cache=cache) for i in range(5, tokens.shape[1])]
    assert (torch.cat([first, *rest], dim=1) - full).abs().max() < 1e-4
    assert cache.previous_attention_mask.shape == tokens.shape
    assert cache[0].past_keys.shape == (1, tokens.shape[1], model.cfg.n_key_value_heads, model.cfg.d_head)


@pytest.mark.parametrize("cache_class", [KVCache, *_tl_cache_classes()], ids=lambda c: c.__name__)
def test_frozen_cache_serves_many_continuations_of_one_prefix(model, cache_class):
    prefix = model.to_tokens("the cat sat on the")
    endings = [model.to_tokens(" mat and"), model.to_tokens(" dog")]
    with torch.no_grad():
        cache = cache_class.init_cache(model.cfg, model.cfg.device, 1)
        model(prefix, past_kv_cache=cache)
        cache.freeze()
        continued = [model(ending, past_kv_cache=cache) for ending in endings]
        assert cache.previous_attention_mask.shape[1] == prefix.shape[1]  # frozen: nothing appended
        full = [model(torch.cat([prefix, ending], dim=1))[:, prefix.shape[1] :] for ending in endings]
        cache.unfreeze()
        model(endings[1], past_kv_cache=cache)
    for got, expected in zip(continued, full):
        assert (got - expected).abs().max() < 1e-4
    assert cache.previous_attention_mask.shape[1] == prefix.shape[1] + endings[1].shape[1]


def test_cache_on_a_padded_audio_batch_continues_the_full_forward(model, two_example_batch, processor):
    b = two_example_batch
    extra = torch.tensor([[model.to_single_token(" a")] * 2, [model.to_single_token(" the")] * 2])
    tokens = torch.cat([b.input_ids, extra], dim=1)
    mask = torch.cat([b.attention_mask, torch.ones_like(extra)], dim=1)
    with torch.no_grad():
        full = model(tokens, mask, b.input_features, b.feature_attention_mask)[:, -2:]
        for cache in [KVCache.init_cache(model.cfg, model.cfg.device, 2)] + [
            cls.init_cache(model.cfg, model.cfg.device, 2) for cls in _tl_cache_classes()
        ]:
            model(b, past_kv_cache=cache)
            continued = model(extra, past_kv_cache=cache)
            assert (continued - full).abs().max() < 1e-4, type(cache).__name__


def test_past_kv_cache_of_another_kind_is_refused(model):
    with pytest.raises(TypeError, match="init_cache"):
        model(model.to_tokens("hi"), past_kv_cache={"keys": None})


# ------------------------------------------------------------------ component-level helpers


def test_input_to_embed_then_start_at_layer_zero_is_the_forward(model, two_example_batch):
    with torch.no_grad():
        for inputs in (TEXTS, two_example_batch):
            residual, tokens, shortformer_pos_embed, mask = model.input_to_embed(inputs)
            assert shortformer_pos_embed is None  # rotary: no positional embedding added, as in TransformerLens
            out = model(residual, start_at_layer=0, attention_mask=mask, tokens=tokens)
            loss = model(residual, start_at_layer=0, attention_mask=mask, tokens=tokens, return_type="loss")
            expected = model(inputs)
            valid = mask.bool()
            assert (out - expected)[valid].abs().max() < 1e-5
            assert torch.allclose(loss, model(inputs, return_type="loss"), atol=1e-6)
        _, cache = model.run_with_cache(two_example_batch, names_filter="blocks.0.hook_resid_pre")
    residual = model.input_to_embed(two_example_batch)[0]
    assert torch.equal(residual, cache["blocks.0.hook_resid_pre"])  # audio written over its placeholders


def test_apply_rotary_reproduces_rot_q_and_rot_k_and_scores(model, two_example_batch):
    b = two_example_batch
    with torch.no_grad():
        _, cache = model.run_with_cache(b)
    rep = model.cfg.n_heads // model.cfg.n_key_value_heads
    for layer in range(model.cfg.n_layers):
        attn = model.blocks[layer].attn
        assert attn.attn_scale == model.cfg.attn_scale == model.cfg.d_head**0.5
        rot_q = attn.apply_rotary(cache["q", layer], attention_mask=b.attention_mask)
        rot_k = attn.apply_rotary(cache["k", layer], attention_mask=b.attention_mask)
        assert (rot_q - cache["rot_q", layer]).abs().max() < 1e-5
        assert (rot_k - cache["rot_k", layer]).abs().max() < 1e-5
        # ARENA / rotary research code: scores = rot_q . rot_k / attn_scale, then the causal and padding mask.
        scores = torch.einsum("bqhd,bkhd->bhqk", rot_q, rot_k.repeat_interleave(rep, dim=2)) / model.cfg.attn_scale
        reference = cache["attn_scores", layer]
        allowed = torch.ones(b.input_ids.shape[1], b.input_ids.shape[1]).tril().bool()[None, None]
        allowed = allowed & b.attention_mask.bool()[:, None, None, :]
        allowed = allowed.expand_as(reference)
        assert (scores - reference)[allowed].abs().max() < 1e-4
        assert (reference[~allowed] < -1e30).all()
        pattern = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
        real = b.attention_mask.bool()[:, None, :, None].expand_as(pattern)  # rows of real query positions
        assert (pattern - cache["pattern", layer])[real].abs().max() < 1e-5


def test_apply_rotary_offsets_positions_as_a_kv_cache_does(model):
    tokens = model.to_tokens(TEXTS[0])
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith(("hook_q", "hook_rot_q")))
    attn = model.blocks[1].attn
    tail = attn.apply_rotary(cache["q", 1][:, 4:], past_kv_pos_offset=4)
    assert (tail - cache["rot_q", 1][:, 4:]).abs().max() < 1e-5


# ------------------------------------------------------------------ TransformerLens 4.x's generic tools


def test_logit_lens_tools_read_the_models_logits(model, two_example_batch):
    logit_lens = pytest.importorskip("transformer_lens.tools.analysis.logit_lens",
                                    reason="TransformerLens 4.x's generic logit lens (3.9 has none)").logit_lens
    with torch.no_grad():
        for inputs in (model.to_tokens(TEXTS[0]), two_example_batch):
            logits, cache = model.run_with_cache(inputs)
            result = cache.logit_lens()
            assert result.labels[-1] == "final_post"
            assert (result.values[-1] - logits[:, -1]).abs().max() < 1e-4
            direct = logit_lens(model, inputs)
            assert (direct.values - result.values).abs().max() < 1e-5
            # An earlier entry is ln_final(resid_pre 1) @ W_U + b_U, computed by hand.
            by_hand = model.unembed(model.ln_final(cache["blocks.1.hook_resid_pre"][:, -1:]))[:, 0]
            assert (result.values[1] - by_hand).abs().max() < 1e-4


@pytest.mark.parametrize("prompt", ["text", "audio"])
def test_direct_path_patching_equals_a_hand_hooked_run(model, two_example_batch, prompt):
    if not hasattr(patching, "get_act_patch_direct_path"):
        pytest.skip("this TransformerLens has no get_act_patch_direct_path (4.x)")
    if prompt == "text":
        clean, corrupted = model.to_tokens(["the cat sat on the mat", "the dog ran at the rug"])[:, -5:].split(1)
    else:  # the audio against its silence twin: same tokens, the audio's effect through one path
        clean, corrupted = two_example_batch, two_example_batch.silence_twin()
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean)
        _, corrupted_cache = model.run_with_cache(corrupted)

        def metric(logits):
            return logits[0, -1, 5] * 1e3

        result = patching.get_act_patch_direct_path(
            model, corrupted, clean_cache, corrupted_cache, metric, src_layer=0, src_head=1, verbose=False
        )
        assert not model.cfg.use_split_qkv_input  # the caller's flag is restored
        W_O = model.blocks[0].attn.W_O[1]
        delta = (clean_cache["z", 0][:, :, 1] - corrupted_cache["z", 0][:, :, 1]) @ W_O
        model.set_use_split_qkv_input(True)
        try:
            for head in range(model.cfg.n_heads):

                def add(q_input, hook, head=head):
                    q_input = q_input.clone()
                    q_input[:, :, head] += delta
                    return q_input

                by_hand = model.run_with_hooks(corrupted, fwd_hooks=[("blocks.1.hook_q_input", add)])
                assert torch.isclose(result[1, head], metric(by_hand), atol=1e-3), head
        finally:
            model.set_use_split_qkv_input(False)
    assert (result[0] == 0).all() and not torch.allclose(result[1], metric(model(corrupted)).expand(4), atol=1e-3)


def test_patching_functions_take_an_audio_batch(model, processor, two_example_batch):
    from lens_audio.analysis import BoundAudioModel

    corrupted = two_example_batch
    clean = make_batch(
        processor, [waveform(1.5, 5), waveform(0.4, 6)], ["What is the sound?", "Is this music?"], sampling_rate=16000
    )
    assert torch.equal(clean.input_ids, corrupted.input_ids) and corrupted.shape == corrupted.input_ids.shape

    def metric(logits):
        return logits[:, -1, 5].sum()

    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean)
        result = patching.get_act_patch_attn_head_out_all_pos(model, corrupted, clean_cache, metric)
        bound = patching.get_act_patch_attn_head_out_all_pos(
            BoundAudioModel(model, corrupted), corrupted.input_ids, clean_cache, metric
        )

        def patch(z, hook):
            z[:, :, 2] = clean_cache[hook.name][:, :, 2]
            return z

        by_hand = metric(model.run_with_hooks(corrupted, fwd_hooks=[("blocks.1.attn.hook_z", patch)]))
    assert torch.allclose(result, bound) and torch.isclose(result[1, 2], by_hand, atol=1e-5)
    assert not torch.isclose(result[1, 2], metric(model(corrupted)), atol=1e-6)


def test_attribution_patch_scores_equal_the_taylor_term_by_hand(model, two_example_batch):
    """4.x's `attribution_patch` on text token pairs and on an audio batch against its silence twin: a head's score
    is (clean - corrupt) head output . d(metric)/d(attention output) on the corrupt run, averaged over the pairs."""
    tools = pytest.importorskip("transformer_lens.tools.analysis", reason="TransformerLens 4.x's tools (3.9 has none)")
    audio = two_example_batch
    text = model.to_tokens(["the cat sat on the mat", "the dog ran to the rug"])
    position, layer, head = -1, 0, 2

    def metric(logits):
        return logits[0, -1, 5] - logits[0, -1, 7]

    for clean, corrupt in ((text[:1], text[1:]), (audio, audio.silence_twin())):
        result = tools.attribution_patch(model, clean, corrupt, metric)
        expected = 0.0
        for row in range(clean.shape[0]):
            with torch.no_grad():
                _, clean_cache = model.run_with_cache(clean[row : row + 1], names_filter="blocks.0.attn.hook_z")
            captured: dict = {}

            def keep(x, hook, captured=captured):
                x.retain_grad()
                captured[hook.name] = x

            hooks = [("blocks.0.attn.hook_z", keep), ("blocks.0.hook_attn_out", keep)]
            metric(model.run_with_hooks(corrupt[row : row + 1], fwd_hooks=hooks)).backward()
            model.zero_grad(set_to_none=True)
            W_O = model.blocks[layer].attn.W_O[head]
            delta = (clean_cache["blocks.0.attn.hook_z"] - captured["blocks.0.attn.hook_z"].detach())[0, position, head]
            expected += float((delta @ W_O) @ captured["blocks.0.hook_attn_out"].grad[0, position]) / clean.shape[0]
        scores = {(n.kind, n.layer, n.head, n.position): v for n, v in result.node_scores.items()}
        got = scores["attn_head_out", layer, head, clean.shape[1] - 1]
        assert got == pytest.approx(expected, rel=1e-3, abs=1e-7) and expected != 0


def test_audio_batch_rows_keep_their_clips(model, two_example_batch):
    b = two_example_batch
    assert b.ndim == 2
    with torch.no_grad():
        whole = model(b)
        for row in range(2):
            alone = b[row : row + 1]
            assert alone.batch_size == 1 and alone.input_features.shape[0] == len(b.audio_spans[row])
            assert (model(alone) - whole[row : row + 1]).abs().max() < 1e-5
    assert torch.equal(b[1].input_ids, b.input_ids[1:]) and torch.equal(b[-1].input_ids, b.input_ids[1:])


# ------------------------------------------------------------------ config fields and switches


def test_4x_config_fields(model, raw):
    assert model.cfg.uses_rms_norm and raw.cfg.uses_rms_norm
    assert model.cfg.layer_norm_folding and not raw.cfg.layer_norm_folding
    assert model.cfg.num_experts is None and model.cfg.experts_per_token is None
    assert model.cfg.to_dict()["attn_scale"] == model.cfg.attn_scale


def test_loaded_models_are_in_eval_mode(model, hf, processor, tmp_path):
    """TransformerLens 4.x's tools refuse a module in training mode; Hugging Face loads in eval mode, so does
    lens_audio (no module has dropout, so nothing else changes)."""
    from lens_audio import HookedAudioLM
    from lens_audio.testing import save_checkpoint

    loaded = HookedAudioLM.from_pretrained(save_checkpoint(hf, processor, tmp_path / "ckpt"))
    for m in (model, loaded):
        assert not any(module.training for module in m.modules())


def test_set_use_attn_in(model, tiny_pair, two_example_batch):
    with pytest.raises(AssertionError, match="split_qkv_input"):
        model.set_use_attn_in(True)  # grouped-query attention: TransformerLens's assertion and advice
    assert not model.cfg.use_attn_in
    _, mha = tiny_pair(n_heads=4, n_kv_heads=4, n_layers=2)
    b = two_example_batch
    with torch.no_grad():
        plain = mha(b)
        mha.set_use_attn_in(True)
        try:
            logits, cache = mha.run_with_cache(b, names_filter="blocks.1.hook_attn_in")
            resid_mid = mha.run_with_cache(b, names_filter="blocks.1.hook_resid_pre")[1]["blocks.1.hook_resid_pre"]

            def zero_head(x, hook):  # head 0 reads nothing: as if its query, key and value inputs were zero
                x[:, :, 0] = 0
                return x

            ablated = mha.run_with_hooks(b, fwd_hooks=[("blocks.1.hook_attn_in", zero_head)])
        finally:
            mha.set_use_attn_in(False)
        mha.set_use_split_qkv_input(True)
        try:
            zeroed = [(f"blocks.1.hook_{x}_input", zero_head) for x in "qkv"]
            expected = mha.run_with_hooks(b, fwd_hooks=zeroed)
        finally:
            mha.set_use_split_qkv_input(False)
    valid = b.attention_mask.bool()
    attn_in = cache["blocks.1.hook_attn_in"]
    assert attn_in.shape == (*b.input_ids.shape, 4, mha.cfg.d_model)
    assert torch.equal(attn_in[:, :, 3], resid_mid)
    assert (logits - plain)[valid].abs().max() < 1e-5
    assert (ablated - expected)[valid].abs().max() < 1e-5 and (ablated - plain)[valid].abs().max() > 1e-4
