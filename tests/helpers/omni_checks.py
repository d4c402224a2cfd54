"""Checks the Qwen Omni thinkers' tests share: a whole Omni checkpoint's layout and loading it (from a folder and by
Hub id from the cache offline), the experiment CLI on a saved thinker, and `device_map` over CPU and disk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import huggingface_hub.constants
import torch
from safetensors.torch import load_file, save_file

from lens_audio import HookedAudioLM
from lens_audio.testing import save_checkpoint
from tests.helpers.family_checks import padded_batch
from tests.helpers.reference import TOL


def hf_inputs(batch):
    return dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask, input_features=batch.input_features,
                feature_attention_mask=batch.feature_attention_mask)


def assert_whole_omni_checkpoint_loads(thinker: Path, whole: Path, model_type: str, speech_weights: dict,
                                       hub_id: str, batch, expected, monkeypatch) -> None:
    """The Hub's layout: a whole Omni model (`model_type`), the thinker saved in `thinker` under `thinker.` beside
    `speech_weights` the port never reads; loaded from the folder and by `hub_id` from the cache, offline."""
    whole.mkdir()
    weights = load_file(thinker / "model.safetensors")
    save_file({**{f"thinker.{k}": v for k, v in weights.items()}, **speech_weights}, whole / "model.safetensors")
    config = json.loads((thinker / "config.json").read_text())
    (whole / "config.json").write_text(json.dumps({"model_type": model_type, "thinker_config": config,
                                                   "enable_audio_output": False}))
    for name in ("tokenizer.json", "tokenizer_config.json", "processor_config.json", "chat_template.jinja"):
        (whole / name).write_bytes((thinker / name).read_bytes())
    loaded = HookedAudioLM.from_pretrained_no_processing(whole)
    with torch.no_grad():
        assert (loaded(batch) - expected).abs().max() < TOL
    cache = whole.parent / "cache"
    entry = cache / f"models--{hub_id.replace('/', '--')}"
    shutil.copytree(whole, entry / "snapshots" / "0123abc")
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text("0123abc")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    by_id = HookedAudioLM.from_pretrained(hub_id)
    assert by_id.processor is not None
    with torch.no_grad():
        assert (by_id(batch) - expected).abs().max() < TOL


def assert_experiment_cli_runs(hf, processor, tmp_path: Path, benchmark_seed: int = 5) -> None:
    """`lens-audio experiment --model <saved tiny thinker> --benchmark <MMAU-format file>`: every stage runs (the
    benchmark seed must give the random model a calibration item right by chance, to rank heads)."""
    from lens_audio import cli
    from lens_audio.organisms.benchmark_writer import write_benchmark
    from lens_audio.paper.results import ExperimentResult

    folder = save_checkpoint(hf, processor, tmp_path / "thinker")
    bench = write_benchmark(tmp_path / "bench", seed=benchmark_seed, n_clips=6, progress=False) / "workshop.json"
    out = tmp_path / "all.json"
    argv = ["experiment", "--model", str(folder), "--benchmark", str(bench), "--out", str(tmp_path / "run"),
            "--mode", "choice", "--betas", "1.0", "--k-heads", "2", "--draws", "4", "--json", str(out),
            "--choice-scoring", "sum"]  # the seeds were chosen under summed scoring (the random model errs on some)
    assert cli.main(argv) == 0
    result = ExperimentResult.from_json(json.loads(out.read_text()))
    assert set(result.test) == {"baseline", "steered", "random_control"}
    assert len(result.head_selection.specialists) == 2 and result.test["baseline"]["total"]["n"] == 6


def assert_device_map_equals_one_device(hf, processor, tmp_path: Path, placement: dict[str, str]) -> None:
    folder = save_checkpoint(hf, processor, tmp_path / "thinker")
    batch = padded_batch(processor)
    one = HookedAudioLM.from_pretrained(folder)
    spread = HookedAudioLM.from_pretrained(folder, device_map=placement, offload_folder=tmp_path / "offload")
    with torch.no_grad():
        assert torch.allclose(spread(batch), one(batch), atol=1e-5)
    assert torch.equal(spread.generate(batch, max_new_tokens=5, do_sample=False),
                       one.generate(batch, max_new_tokens=5, do_sample=False))


def assert_rope_index_and_generation_match(hf, model, processor, new_tokens: int = 20) -> None:
    """`rope_index` equals transformers' `get_rope_index` (and is what the forward uses) in both padding sides, and
    `new_tokens` greedy tokens on a padded batch are identical."""
    from lens_audio.model.mrope import rope_index

    for side in ("left", "right"):
        batch = padded_batch(processor, side)
        ours, deltas = rope_index(batch.input_ids, batch.attention_mask, (hf.config.image_token_id,))
        theirs, their_deltas = hf.model.get_rope_index(batch.input_ids, None, None, batch.attention_mask, False,
                                                       batch.feature_attention_mask.sum(-1))
        assert torch.equal(ours, theirs.long()) and torch.equal(deltas, their_deltas.long())
        assert torch.equal(ours[0], model._position_ids(batch.attention_mask.bool(), None))  # what forward uses
    batch = padded_batch(processor)  # left-padded, as generation wants
    hf.generation_config.eos_token_id = None
    with torch.no_grad():
        expected = hf.generate(**hf_inputs(batch), max_new_tokens=new_tokens, do_sample=False)
    generated = model.generate(batch, max_new_tokens=new_tokens, eos_token_id=[], do_sample=False)
    assert generated.shape == expected.shape == (2, batch.input_ids.shape[1] + new_tokens)
    assert torch.equal(generated, expected)


def assert_bfloat16_as_close_as_transformers(hf, hf_class, processor, tmp_path: Path, reference) -> None:
    """bfloat16 logits are within 1.5x of the error of transformers' thinker (`hf_class`) loaded in bfloat16, both
    against `hf` in float32; `reference(hf, batch)` returns transformers' logits first."""
    folder = save_checkpoint(hf, processor, tmp_path / "thinker")
    batch = padded_batch(processor)
    valid = batch.attention_mask.bool()
    with torch.no_grad():
        high = hf(**hf_inputs(batch)).logits
        ours = (HookedAudioLM.from_pretrained(folder, dtype="bfloat16")(batch).float() - high)[valid].abs()
    hf_low = hf_class.from_pretrained(folder, dtype=torch.bfloat16, attn_implementation="eager").eval()
    theirs = (reference(hf_low, batch)[0].float() - high)[valid].abs()
    assert theirs.mean() > 0
    assert ours.mean() <= 1.5 * theirs.mean() and ours.max() <= 1.5 * theirs.max(), (ours.mean(), theirs.mean())
