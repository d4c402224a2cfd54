"""Round 3 of bad input, what the manifest must see: any PyTorch hook on any module (not only hook points), a spliced
SAE by its weights and settings (`use_error_term` included), a replaced method, a changed module setting; a hook it
cannot describe makes resuming refuse rather than mix records."""

from __future__ import annotations

import functools

import pytest
import torch
from torch.nn.modules import module as torch_module

from lens_audio.benchmark import load_mmau
from lens_audio.benchmark.fingerprint import UNDESCRIBED, model_fingerprint, model_state
from lens_audio.benchmark.manifest import RunMismatchError, read_manifest
from lens_audio.benchmark.run_file import read_records
from lens_audio.benchmark.runner import run_benchmark
from lens_audio.sae.sae import SAEConfig, SparseAutoencoder
from lens_audio.sae.splice import splice

RUN = dict(template="letters", mode="choice", batch_size=4, progress=False, listening=False)


@pytest.fixture
def clean_run(own_model, small_bench, tmp_path):
    items, path = load_mmau(small_bench)[:4], tmp_path / "run.jsonl"
    return items, path, run_benchmark(own_model, items, path, **RUN)


def doubled(module, args, output):  # a plain function: described by its code
    return output * 2


def test_plain_pytorch_forward_hook_on_a_block_is_another_run(own_model, clean_run):
    items, path, clean = clean_run
    handle = own_model.blocks[0].register_forward_hook(doubled)
    try:
        with pytest.raises(RunMismatchError, match=r"hooks: added blocks\.0: forward hook .*\.doubled \(code"):
            run_benchmark(own_model, items, path, **RUN)
        hooked = run_benchmark(own_model, items, path.with_name("hooked.jsonl"), **RUN)
    finally:
        handle.remove()
    # the clean file is untouched, and the hooked run is another manifest
    assert [r["correct"] for r in read_records(path).values()] == [r["correct"] for r in clean]
    assert read_manifest(path.with_name("hooked.jsonl")).digest != read_manifest(path).digest
    resumed = run_benchmark(own_model, items, path, **RUN)  # the hook removed: the clean run resumes
    assert [dict(r) for r in resumed] == [dict(r) for r in clean]
    assert len(hooked) == len(clean)
    assert read_records(path.with_name("hooked.jsonl")).keys() == read_records(path).keys()


def test_pre_hook_global_hook_and_replaced_method_are_described(own_model):
    assert model_state(own_model) == []
    handles = [own_model.blocks[1].mlp.register_forward_pre_hook(lambda module, args: None),
               torch_module.register_module_forward_hook(functools.partial(doubled))]
    own_model.blocks[0].ln1.forward = functools.partial(torch.nn.functional.relu)
    try:
        state = model_state(own_model)
    finally:
        for handle in handles:
            handle.remove()
        del own_model.blocks[0].ln1.forward
    assert any(line.startswith("blocks.1.mlp: forward pre-hook") for line in state), state
    assert any(line.startswith("every module: global forward hook partial of") for line in state), state
    assert any(line.startswith("blocks.0.ln1: replaced method forward partial of") for line in state), state
    assert not any(UNDESCRIBED in line for line in state) and model_state(own_model) == []


def test_hook_that_cannot_be_described_refuses_resume(own_model, clean_run):
    items, path, _ = clean_run

    class Scale:  # a callable object: what it computes cannot be read cheaply
        def __call__(self, module, args, output):
            return output

    handle = own_model.blocks[0].attn.register_forward_hook(Scale())
    try:
        with pytest.raises(RunMismatchError) as refused:
            run_benchmark(own_model, items, path, **RUN)
        fresh = run_benchmark(own_model, items, path.with_name("object.jsonl"), **RUN)  # a new file: nothing to mix
        with pytest.raises(RunMismatchError, match="cannot describe"):  # and it cannot be resumed either
            run_benchmark(own_model, items, path.with_name("object.jsonl"), **RUN)
    finally:
        handle.remove()
    assert "blocks.0.attn: forward hook 'Scale'" in str(refused.value) and len(fresh) == len(items)


def test_spliced_sae_is_seen_by_its_settings_and_weights(own_model, clean_run):
    items, path, _ = clean_run
    sae = SparseAutoencoder(SAEConfig("topk", own_model.cfg.d_model, 16, "blocks.0.hook_resid_post", k=2))
    torch.nn.init.normal_(sae.W_enc, generator=torch.Generator().manual_seed(0))
    torch.nn.init.normal_(sae.W_dec, generator=torch.Generator().manual_seed(1))
    with splice(own_model, sae, use_error_term=False):
        with pytest.raises(RunMismatchError, match=r"blocks\.0\.hook_resid_post: SAE spliced .*use_error_term False"):
            run_benchmark(own_model, items, path, **RUN)
        without_error = model_state(own_model)
    with splice(own_model, sae, use_error_term=True):
        with_error = model_state(own_model)
    with torch.no_grad():
        sae.W_dec[0, 0] += 1
    with splice(own_model, sae, use_error_term=True):
        other_weights = model_state(own_model)
    assert len({*without_error, *with_error, *other_weights}) == 3 and model_state(own_model) == []
    assert "use_error_term True" in with_error[0] and "weights" in with_error[0]


def test_in_place_change_of_a_module_setting_changes_the_fingerprint(own_model):
    before = model_fingerprint(own_model)
    norm = own_model.blocks[0].ln1
    name = next(k for k, v in vars(norm).items() if not k.startswith("_") and isinstance(v, float))
    setattr(norm, name, getattr(norm, name) * 10)
    assert model_fingerprint(own_model) != before
    setattr(norm, name, getattr(norm, name) / 10)
    assert model_fingerprint(own_model) == before
