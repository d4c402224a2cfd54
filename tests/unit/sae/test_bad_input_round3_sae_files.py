"""Round 3 of bad input, SAE folders: a cfg.json that is missing a field, is not JSON, disagrees with the weights' width
or names an unknown dtype, weights holding NaN, and an SAE whose width is not its hook's are refused naming the file
(and the SAE) and the fix, never a KeyError, JSONDecodeError or size-mismatch dump."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from lens_audio.sae.sae import CFG_FILENAME, WEIGHTS_FILENAME, SAEConfig, SparseAutoencoder
from lens_audio.sae.splice import splice


def make_sae(d_in=8, hook="blocks.0.hook_resid_post") -> SparseAutoencoder:
    sae = SparseAutoencoder(SAEConfig("topk", d_in, 16, hook, k=2))
    generator = torch.Generator().manual_seed(0)
    for parameter in sae.parameters():
        torch.nn.init.normal_(parameter, generator=generator)
    return sae


@pytest.fixture
def folder(tmp_path):
    return make_sae().save(tmp_path / "sae")


def edit_cfg(folder, edit):
    cfg = json.loads((folder / CFG_FILENAME).read_text())
    edit(cfg)
    (folder / CFG_FILENAME).write_text(json.dumps(cfg))


def test_a_good_folder_still_loads_to_the_same_weights(folder):
    loaded = SparseAutoencoder.load(folder)
    assert all(torch.equal(a, b) for a, b in zip(loaded.parameters(), make_sae().parameters()))
    assert loaded.source == str(folder)


@pytest.mark.parametrize("edit,says", [
    (lambda c: c.pop("d_in"), "d_in is missing"),
    (lambda c: c.pop("architecture"), "architecture must be one of ('topk', 'jumprelu') (got 'nothing')"),
    (lambda c: c.update(dtype="float8"), "dtype must be one of ('float32', 'float16', 'bfloat16', 'float64') "
                                         "(got 'float8')"),
    (lambda c: c.update(d_sae="16"), "d_sae must be a positive whole number (got '16')"),
    (lambda c: c.pop("k"), "k must be a whole number in 1..d_sae"),
    (lambda c: c.update(metadata="blocks.0"), "metadata must be a JSON object"),
])
def test_bad_cfg_fields_name_the_file(folder, edit, says):
    edit_cfg(folder, edit)
    with pytest.raises(ValueError) as refused:
        SparseAutoencoder.load(folder)
    assert str(folder / CFG_FILENAME) in str(refused.value) and says in str(refused.value)


@pytest.mark.parametrize("text", ['{"d_in": 8,', "", "[1, 2]"])
def test_cfg_that_is_not_a_json_object_names_the_file(folder, text):
    (folder / CFG_FILENAME).write_text(text)
    with pytest.raises(ValueError, match="cfg.json") as refused:
        SparseAutoencoder.load(folder)
    assert str(folder / CFG_FILENAME) in str(refused.value)


def test_width_that_disagrees_with_the_weights_names_both_files(folder):
    edit_cfg(folder, lambda c: c.update(d_in=12))
    with pytest.raises(ValueError) as refused:
        SparseAutoencoder.load(folder)
    text = str(refused.value)
    assert str(folder / WEIGHTS_FILENAME) in text and str(folder / CFG_FILENAME) in text
    assert "W_enc is [8, 16], not [12, 16]" in text and "fix d_in / d_sae" in text


def test_nan_in_the_decoder_names_the_sae_and_the_tensor(folder):
    state = load_file(str(folder / WEIGHTS_FILENAME))
    state["W_dec"][3, 1] = float("nan")
    save_file(state, str(folder / WEIGHTS_FILENAME))
    says = r"blocks\.0\.hook_resid_post .*sae/sae_weights\.safetensors.*W_dec holds 1 NaN"
    with pytest.raises(ValueError, match=says):
        SparseAutoencoder.load(folder)


def test_splicing_an_sae_with_nan_weights_or_the_wrong_width_is_refused(tiny_pair):
    model = copy.deepcopy(tiny_pair(n_heads=4, n_kv_heads=2, n_layers=2)[1])
    sae = make_sae(d_in=model.cfg.d_model)
    with torch.no_grad():
        sae.W_dec[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"the SAE for blocks\.0\.hook_resid_post \(in memory.*W_dec holds 1 NaN"):
        with splice(model, sae):
            pass
    narrow = make_sae(d_in=model.cfg.d_model // 2)
    with pytest.raises(ValueError, match=rf"reads width {model.cfg.d_model // 2} .*carries width {model.cfg.d_model}"):
        with splice(model, narrow):
            pass
    assert "blocks.0.hook_resid_post.hook_sae_acts_post" not in model.hook_dict  # nothing left spliced
