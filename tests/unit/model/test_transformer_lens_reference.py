"""TransformerLens's own `HookedTransformer` (3.x; TransformerLens 4.x removed it) built from the same decoder weights
as the text reference for the third round of idioms: padded-batch loss, tokenization keywords, the key-value cache,
`input_to_embed`, `apply_rotary` and attention scores; and SAELens's `ActivationsStore` on `HookedAudioLM`. Skipped
where TransformerLens 3.x (or SAELens) is not installed; CI runs it in its TransformerLens 3.9 environment."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

TEXTS = ["the cat sat on the mat and the cat", "a dog ran"]


@pytest.fixture(scope="module")
def ht(model, hf):
    """A `HookedTransformer` with the decoder of `hf` (Qwen2), folded as `model` is; `model`'s tokenizer."""
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig
        from transformer_lens.pretrained.weight_conversions.qwen2 import convert_qwen2_weights
    except (ImportError, AttributeError):
        pytest.skip("TransformerLens 3.x's HookedTransformer is not installed (CI runs this under 3.9)")
    c = model.cfg
    cfg = HookedTransformerConfig(
        n_layers=c.n_layers, d_model=c.d_model, n_heads=c.n_heads, d_head=c.d_head, d_mlp=c.d_mlp,
        n_key_value_heads=c.n_key_value_heads, d_vocab=c.d_vocab, n_ctx=256, act_fn="silu", gated_mlp=True,
        normalization_type="RMS", positional_embedding_type="rotary", rotary_base=int(c.rotary_base),
        rotary_dim=c.d_head, eps=c.eps, final_rms=True, default_prepend_bos=False,
        original_architecture="Qwen2ForCausalLM", tokenizer_prepends_bos=False,
    )
    qwen = SimpleNamespace(model=hf.model.language_model, lm_head=hf.lm_head)
    reference = HookedTransformer(cfg)
    reference.load_and_process_state_dict(
        convert_qwen2_weights(qwen, cfg), fold_ln=True, center_writing_weights=False, center_unembed=False,
        fold_value_biases=False,
    )
    # HookedTransformer.set_tokenizer reloads the tokenizer by name, which an offline tokenizer has not: attach it
    # as set_tokenizer(tokenizer, default_padding_side="left") leaves it.
    reference.tokenizer = model.tokenizer
    reference.cfg.default_padding_side = "left"
    return reference.eval()


def _real(model, prepend_bos=None, padding_side=None):
    return model._tokenize(TEXTS, prepend_bos, padding_side)[1].bool()


def test_logits_equal_hooked_transformers_on_the_text_decoder(model, ht):
    tokens = model.to_tokens(TEXTS)
    assert torch.equal(tokens, ht.to_tokens(TEXTS))
    with torch.no_grad():
        expected = ht(TEXTS)
        for logits in (model(TEXTS), model(tokens)):  # tokens alone: the pads are found, as TransformerLens does
            assert (logits - expected)[_real(model)].abs().max() < 1e-4


def test_padded_batch_loss_and_per_token_loss_equal_hooked_transformers(model, ht):
    with torch.no_grad():
        for inputs in (TEXTS, model.to_tokens(TEXTS)):
            assert torch.allclose(model(inputs, return_type="loss"), ht(inputs, return_type="loss"), atol=1e-5)
            ours = model(inputs, return_type="loss", loss_per_token=True)
            theirs = ht(inputs, return_type="loss", loss_per_token=True)
            assert (ours - theirs).abs().max() < 1e-4 and torch.equal(ours == 0, theirs == 0)


@pytest.mark.parametrize("prepend_bos", [False, True])
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_tokenization_keywords_equal_hooked_transformers(model, ht, prepend_bos, padding_side):
    kw = {"prepend_bos": prepend_bos, "padding_side": padding_side}
    hook = "blocks.1.hook_resid_post"
    assert torch.equal(model.to_tokens(TEXTS, **kw), ht.to_tokens(TEXTS, **kw))
    real = _real(model, prepend_bos, padding_side)
    with torch.no_grad():
        logits, cache = model.run_with_cache(TEXTS, names_filter=hook, **kw)
        ref_logits, ref_cache = ht.run_with_cache(TEXTS, names_filter=hook, **kw)
        loss = model(TEXTS, return_type="loss", **kw)
        # TransformerLens builds no mask for a right-padded batch, so its loss then scores the pads too; with the
        # mask given it skips them, as lens_audio always does (docs/transformerlens.md's table).
        tokens = model.to_tokens(TEXTS, **kw)
        ref_loss = ht(tokens, attention_mask=real.long(), return_type="loss")
    assert (logits - ref_logits)[real].abs().max() < 1e-4
    assert (cache[hook] - ref_cache[hook])[real].abs().max() < 1e-4
    assert torch.allclose(loss, ref_loss, atol=1e-5)


def test_key_value_cache_continuation_equals_hooked_transformers(model, ht):
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    tokens = model.to_tokens(TEXTS)
    steps = torch.tensor([[5, 9], [6, 7]])
    with torch.no_grad():
        ours = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, 2)
        theirs = TransformerLensKeyValueCache.init_cache(ht.cfg, ht.cfg.device, 2)
        assert (model(tokens, past_kv_cache=ours) - ht(tokens, past_kv_cache=theirs))[_real(model)].abs().max() < 1e-4
        for i in range(steps.shape[1]):
            got = model(steps[:, i : i + 1], past_kv_cache=ours)
            expected = ht(steps[:, i : i + 1], past_kv_cache=theirs)
            assert (got - expected).abs().max() < 1e-4, i
    assert torch.equal(ours.previous_attention_mask, theirs.previous_attention_mask)


def test_input_to_embed_equals_hooked_transformers(model, ht):
    with torch.no_grad():
        residual, tokens, shortformer, mask = model.input_to_embed(TEXTS)
        ref_residual, ref_tokens, ref_shortformer, ref_mask = ht.input_to_embed(TEXTS)
        out = model(residual, start_at_layer=0, attention_mask=mask, tokens=tokens)
        ref_out = ht(ref_residual, start_at_layer=0, attention_mask=ref_mask, tokens=ref_tokens)
    assert torch.equal(residual, ref_residual) and torch.equal(tokens, ref_tokens) and torch.equal(mask, ref_mask)
    assert shortformer is None and ref_shortformer is None
    assert (out - ref_out)[mask.bool()].abs().max() < 1e-4


def test_apply_rotary_and_attention_scores_equal_hooked_transformers(model, ht):
    mask = _real(model)
    with torch.no_grad():
        _, cache = model.run_with_cache(TEXTS)
        _, ref = ht.run_with_cache(TEXTS)
    for layer in range(model.cfg.n_layers):
        attn, ref_attn = model.blocks[layer].attn, ht.blocks[layer].attn
        assert attn.attn_scale == ref_attn.attn_scale == ht.cfg.attn_scale == model.cfg.attn_scale
        q = cache["q", layer]
        rotated = attn.apply_rotary(q, 0, mask.long())
        # TransformerLens rotates a pad to position 0, lens_audio to 1 (as Hugging Face's generate): pads are unread.
        assert (rotated - ref_attn.apply_rotary(q, 0, mask.long()))[mask].abs().max() < 1e-5
        for name in ("rot_q", "rot_k", "z"):
            assert (cache[name, layer] - ref[name, layer])[mask].abs().max() < 1e-4, name
        scores, ref_scores = cache["attn_scores", layer], ref["attn_scores", layer]
        allowed = ref_scores > -1e30  # TransformerLens fills masked scores with -inf, lens_audio with the dtype's min
        assert torch.equal(allowed, scores > -1e30)
        assert (scores - ref_scores)[allowed].abs().max() < 1e-4
        rows = mask[:, None, :, None].expand_as(scores)  # patterns of real query positions
        assert (cache["pattern", layer] - ref["pattern", layer])[rows].abs().max() < 1e-5


def test_saelens_activations_store_reads_a_hook_point(model):
    datasets = pytest.importorskip("datasets", reason="SAELens's store reads a Dataset: pip install -e '.[sae]'")
    store_module = pytest.importorskip("sae_lens.training.activations_store",
                                       reason="SAELens is not installed: pip install -e '.[sae]'")
    hook = "blocks.0.hook_resid_post"
    texts = ["the cat sat on the mat and the cat sat on the mat", "a dog ran to the park and back home again"]
    store = store_module.ActivationsStore(
        model=model, dataset=datasets.Dataset.from_dict({"text": texts * 8}), streaming=False, hook_name=hook,
        hook_head_index=None, context_size=8, d_in=model.cfg.d_model, n_batches_in_buffer=2,
        total_training_tokens=64, store_batch_size_prompts=4, train_batch_size_tokens=16, prepend_bos=False,
        normalize_activations="none", device=torch.device("cpu"), dtype="float32",
    )
    tokens = store.get_batch_tokens()
    assert tokens.shape == (4, 8)
    acts = store.get_activations(tokens)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=hook)
    assert (acts.reshape(cache[hook].shape) - cache[hook]).abs().max() < 1e-5
    assert next(store).shape == (16, model.cfg.d_model)


def test_saelens_training_runs_on_a_hook_point_and_the_sae_loads_in_lens_audio(model, tmp_path):
    """SAELens's own runner (its `ActivationsStore` and trainer) on a few hundred tokens of a `HookedAudioLM` hook
    point; the SAE it writes loads in lens_audio and gives SAELens's latents."""
    datasets = pytest.importorskip("datasets", reason="SAELens's store reads a Dataset: pip install -e '.[sae]'")
    sae_lens = pytest.importorskip("sae_lens", reason="SAELens is not installed: pip install -e '.[sae]'")
    from lens_audio.sae.sae import SparseAutoencoder

    hook = "blocks.0.hook_resid_post"
    texts = ["the cat sat on the mat and the cat sat on the mat", "a dog ran to the park and back home again",
             "what is the sound of a bell in the rain"] * 10
    cfg = sae_lens.LanguageModelSAERunnerConfig(
        # lens_audio reads TopK SAEs without SAELens's decoder-norm rescaling
        sae=sae_lens.TopKTrainingSAEConfig(d_in=model.cfg.d_model, d_sae=32, k=4, rescale_acts_by_decoder_norm=False),
        model_name="hooked-audio-lm", hook_name=hook, dataset_path="", is_dataset_tokenized=False, streaming=False,
        context_size=8, training_tokens=256, train_batch_size_tokens=32, store_batch_size_prompts=4,
        n_batches_in_buffer=8, prepend_bos=False, device="cpu", dtype="float32",
        logger=sae_lens.LoggingConfig(log_to_wandb=False), n_checkpoints=0, checkpoint_path=None,
        output_path=str(tmp_path / "sae"), n_eval_batches=1, eval_batch_size_prompts=2, verbose=False,
    )
    runner = sae_lens.LanguageModelSAETrainingRunner(
        cfg, override_dataset=datasets.Dataset.from_dict({"text": texts}), override_model=model
    )
    trained = runner.run()
    loaded = SparseAutoencoder.load(tmp_path / "sae")
    with torch.no_grad():
        _, cache = model.run_with_cache(model.to_tokens(texts[:2]), names_filter=hook)
        acts = cache[hook].reshape(-1, model.cfg.d_model)
        latents = loaded.encode(acts)
        assert torch.allclose(latents, trained.encode(acts), atol=1e-5)
    assert ((latents > 0).sum(-1) <= 4).all() and latents.abs().sum() > 0
