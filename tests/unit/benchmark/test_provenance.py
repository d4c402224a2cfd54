"""Every number knows what made it: run manifests, resume decisions, --fresh, and the experiment's manifest."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil

import pytest
import soundfile
import torch

from lens_audio import cli
from lens_audio.analysis.steering import AdaptiveSteering
from lens_audio.benchmark import load_mmau
from lens_audio.benchmark.manifest import (
    DIGEST_KEY,
    RECORDED_ONLY,
    RunManifest,
    RunMismatchError,
    manifest_path,
    model_fingerprint,
    read_manifest,
)
from lens_audio.benchmark.run_file import RunFile, read_records
from lens_audio.benchmark.runner import run_benchmark
from lens_audio.organisms.benchmark_writer import write_benchmark
from lens_audio.paper.results import ExperimentResult

RUN = dict(template="letters", mode="choice", batch_size=4, progress=False)
BASE = RunManifest(model="m", model_fingerprint="f" * 16, prompt="instruct", mode="choice", dtype="float32",
                   device="cpu", versions={"lens_audio": "0.1.0", "torch": "2.13.0", "transformers": "5.24.0",
                                           "transformer_lens": "4.3.0"})
# one other value for every compared field; the label the refusal uses for it
CHANGES = {
    "model_fingerprint": ("0" * 16, "model 'm'"),
    "prompt": ("letters", "prompt"),
    "mode": ("generate", "mode"),
    "choice_scoring": ("sum", "choice_scoring"),
    "answer_match": ("embedding nvidia/NV-Embed-v2", "answer_match"),
    "dtype": ("bfloat16", "dtype"),
    "device": ("cuda:0", "device"),
    "versions": ({**BASE.versions, "lens_audio": "0.2.0"}, "lens_audio version 0.1.0 -> 0.2.0"),
    "max_new_tokens": (5, "max_new_tokens"),
    "listening": (True, "listening"),
    "silence": (True, "silence"),
    "noise_snr_db": (-10.0, "noise_snr_db"),
    "heads": ([(1, 0)], "heads"),
    "layers": ([0, 1], "layers"),
    "k_heads": (1, "k_heads"),
    "beta": (2.0, "beta"),
    "gate": ("signal", "gate"),
    "steering_source": ("head_outputs", "steering_source"),
    "layer_convention": ("hf_hidden_states", "layer_convention"),
    "steering": ("my.steering", "steering"),
    "hooks": (["blocks.0.hook_resid_post"], "hooks"),
    "seed": (3, "seed"),
    "items_digest": ("abc", "items_digest"),
    "n_items": (3, "n_items"),
    "split": ("0123456789abcdef (seeded, seed 1, sizes 0.25/0.25/0.5, by task)", "split"),
}


def write_one(path, manifest):
    with RunFile(path, manifest) as run:
        run.append({"id": "a", "correct": True, "output": "x", DIGEST_KEY: manifest.digest})


def test_every_compared_field_has_a_case():
    compared = {f.name for f in dataclasses.fields(RunManifest)} - set(RECORDED_ONLY)
    assert set(CHANGES) == compared


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_a_changed_field_refuses_the_resume_naming_it(tmp_path, name):
    path = tmp_path / "run.jsonl"
    write_one(path, BASE)
    value, label = CHANGES[name]
    with pytest.raises(RunMismatchError) as raised:
        RunFile(path, BASE.replace(**{name: value})).__enter__()
    message = str(raised.value)
    assert "\n" not in message and str(path) in message and "1 of 1 records" in message
    assert label in message and "--out" in message and "--fresh" in message
    assert read_records(path) == {"a": {"id": "a", "correct": True, "output": "x", DIGEST_KEY: BASE.digest}}, \
        "a refusal changes nothing"
    assert read_manifest(path) == BASE


@pytest.mark.parametrize("name,value", [("model", "/elsewhere/m"), ("benchmark", "b.json"), ("batch_size", 2),
                                        ("created", "2030-01-01")])
def test_recorded_only_fields_and_patch_versions_reuse_the_records(tmp_path, name, value):
    path = tmp_path / "run.jsonl"
    write_one(path, BASE)
    for changed in (BASE.replace(**{name: value}),
                    BASE.replace(versions={**BASE.versions, "torch": "2.13.1", "transformer_lens": "9.0"})):
        with RunFile(path, changed) as run:
            assert list(run.records) == ["a"]


def test_manifest_written_beside_the_file_before_any_record_and_replaced_while_empty(tmp_path):
    path = tmp_path / "run.jsonl"
    with RunFile(path, BASE):
        pass  # a run killed before its first record
    assert manifest_path(path).name == "run.manifest.json" and read_manifest(path) == BASE
    other = BASE.replace(beta=1.0)
    with RunFile(path, other) as run:  # nothing to protect: the new run takes the file
        run.append({"id": "a", DIGEST_KEY: other.digest})
    assert read_manifest(path) == other


def test_fresh_starts_over_under_the_lock(tmp_path):
    path = tmp_path / "run.jsonl"
    write_one(path, BASE)
    other = BASE.replace(prompt="letters")
    with RunFile(path, other, fresh=True) as run:
        assert run.records == {}
        run.append({"id": "b", DIGEST_KEY: other.digest})
    assert list(read_records(path)) == ["b"] and read_manifest(path) == other
    assert not list(tmp_path.glob("*.tmp"))


def test_records_without_a_manifest_are_refused(tmp_path):
    path = tmp_path / "run.jsonl"
    path.write_text('{"id": "a", "correct": true}\n')
    with pytest.raises(RunMismatchError, match="without a manifest"):
        RunFile(path, BASE).__enter__()
    write_one(path.with_name("b.jsonl"), BASE)
    manifest_path(path.with_name("b.jsonl")).unlink()
    with pytest.raises(RunMismatchError, match="is missing"):
        RunFile(path.with_name("b.jsonl"), BASE.replace(seed=1)).__enter__()


def test_manifest_json_round_trip_and_html_escapes():
    manifest = BASE.replace(heads=[(7, 7), (6, 4)], layers=[6, 7], beta=3, model="<script>x</script>")
    back = RunManifest.from_json(json.loads(json.dumps(manifest.to_json())))
    assert back == manifest and back.heads == ((7, 7), (6, 4)) and back.beta == 3.0
    table = manifest.html_table()
    assert "<script>" not in table and "&lt;script&gt;" in table and "[[7, 7], [6, 4]]" in table


# --- run_benchmark -------------------------------------------------------------------------------------------------
@pytest.fixture
def bench(tmp_path):
    folder = write_benchmark(tmp_path / "bench", seed=3, n_clips=2, progress=False)
    return folder / "workshop.json"


@pytest.fixture
def model(tiny_pair):
    return copy.deepcopy(tiny_pair(n_heads=4, n_kv_heads=2, n_layers=2)[1])  # tests here edit its weights


def test_identical_settings_reuse_every_record_without_a_forward(model, bench, tmp_path, monkeypatch):
    items, path = load_mmau(bench), tmp_path / "run.jsonl"
    first = run_benchmark(model, items, path, **RUN)
    calls, forward = [], type(model).forward  # counted on the class: a hook on the model would be another run
    monkeypatch.setattr(type(model), "forward", lambda *args, **kwargs: calls.append(1) or forward(*args, **kwargs))
    again = run_benchmark(model, load_mmau(bench), path, **{**RUN, "batch_size": 2})
    monkeypatch.undo()
    assert calls == [] and list(again) == list(first) == [read_records(path)[i["id"]] for i in items]
    assert all(r[DIGEST_KEY] == read_manifest(path).digest for r in again)
    assert read_manifest(path).model_fingerprint == model_fingerprint(model)


def test_changed_template_model_weights_and_steering_are_refused(model, bench, tmp_path):
    items, path = load_mmau(bench), tmp_path / "run.jsonl"
    run_benchmark(model, items, path, **RUN)
    with pytest.raises(RunMismatchError, match=r"prompt 'letters' -> 'instruct'"):
        run_benchmark(model, items, path, **{**RUN, "template": "instruct"})
    with pytest.raises(RunMismatchError, match="silence False -> True"):
        run_benchmark(model, items, path, **RUN, silence=True)
    with pytest.raises(RunMismatchError, match="noise_snr_db None -> -10.0"):
        run_benchmark(model, items, path, **RUN, noise_snr_db=-10.0)
    model.add_hook("blocks.0.attn.hook_z", lambda z, hook: 0 * z)  # a user's ablation left on the model
    try:
        with pytest.raises(RunMismatchError, match=r"hooks: added blocks.0.attn.hook_z: forward hook"):
            run_benchmark(model, items, path, **RUN)
    finally:
        model.reset_hooks()
    run_benchmark(model, items, path, **RUN)  # hooks gone: reused
    with torch.no_grad():
        model.blocks[1].mlp.W_out[0, 0] += 1e-4  # one weight, in memory
    with pytest.raises(RunMismatchError, match="model .*fingerprint"):
        run_benchmark(model, items, path, **RUN)
    steered = tmp_path / "steered.jsonl"
    run_benchmark(model, items, steered, **RUN, steering=AdaptiveSteering([1], 1.0))
    with pytest.raises(RunMismatchError, match="beta 1.0 -> 2.0"):
        run_benchmark(model, items, steered, **RUN, steering=AdaptiveSteering([1], 2.0))
    beta = 2.0
    with pytest.raises(ValueError, match="does not describe itself"):
        run_benchmark(model, items, tmp_path / "closure.jsonl", **RUN,
                      steering=lambda m, b, s: AdaptiveSteering([1], beta)(m, b, s))


@pytest.mark.parametrize("part", ["answer", "question", "audio"])
def test_changed_item_content_is_caught_by_its_digest(model, bench, tmp_path, part):
    path = tmp_path / "run.jsonl"
    run_benchmark(model, load_mmau(bench), path, **RUN)
    data = json.loads(bench.read_text())
    if part == "audio":  # the same file name, other bytes
        clip = bench.parent / data[0]["audio_id"]
        soundfile.write(clip, 0.5 * soundfile.read(clip)[0], 16000)
    else:
        for item in data:
            item[part] = (next(c for c in item["choices"] if c != item["answer"]) if part == "answer"
                          else item[part] + " Listen closely.")
    bench.write_text(json.dumps(data))
    n_changed = sum(d["audio_id"] == data[0]["audio_id"] for d in data) if part == "audio" else len(data)
    with pytest.raises(RunMismatchError) as raised:
        run_benchmark(model, load_mmau(bench), path, **RUN)
    message = str(raised.value)
    assert f"{part} of {n_changed}" in message and repr(data[0]["id"]) in message and "--fresh" in message
    if part == "answer":  # every answer changed: a fresh run scores against the new answers
        fresh = run_benchmark(model, load_mmau(bench), path, **RUN, fresh=True)
        assert [r["answer"] for r in fresh] == [d["answer"] for d in data]
        assert [r["answer"] for r in read_records(path).values()] == [d["answer"] for d in data]


# --- the command line: the cases that used to mix runs -------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_bench(tmp_path_factory):
    # seed 6: the workshop model gets 6 of its 9 calibration items right (r needs errors to correlate with)
    return write_benchmark(tmp_path_factory.mktemp("cli") / "bench", seed=6, n_clips=12, progress=False)


def stage(capsys, *argv):
    code = cli.main(list(argv))
    return code, capsys.readouterr()


def test_stages_refuse_other_settings_and_start_over_with_fresh(cli_bench, tmp_path, capsys):
    bench = cli_bench / "workshop.json"
    out = ["--benchmark", str(bench), "--out", str(tmp_path / "run")]
    assert stage(capsys, "listen", *out)[0] == 0
    code, captured = stage(capsys, "listen", *out, "--template", "letters")
    assert code == 1 and "prompt" in captured.err and "'letters'" in captured.err and "--fresh" in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    code, captured = stage(capsys, "select-heads", *out, "--model", "workshop-v1")
    assert code == 1 and "model 'workshop'" in captured.err and "'workshop-v1'" in captured.err

    json_path = tmp_path / "sweep.json"
    assert stage(capsys, "sweep-beta", *out, "--betas", "1.0", "--json", str(json_path))[0] == 0
    heads = stage(capsys, "select-heads", *out, "--json", str(tmp_path / "heads.json"))
    specialists = json.loads((tmp_path / "heads.json").read_text())["specialists"]
    assert heads[0] == 0 and len(specialists) == 4
    code, captured = stage(capsys, "evaluate", *out, "--beta", "1.0")  # writes test-steered-beta1.0.jsonl
    assert code == 0, captured.err
    for flag, value, named in (("--gate", "signal", "gate None -> 'signal'"),
                               ("--steering-source", "head_outputs", "steering_source 'residual' -> 'head_outputs'"),
                               ("--layer-convention", "hf_hidden_states", "layer_convention 'resid_post' -> "
                                                                           "'hf_hidden_states'")):
        code, captured = stage(capsys, "evaluate", *out, "--beta", "1.0", flag, value)
        assert code == 1 and "test-steered-beta1.0.jsonl" in captured.err and named in captured.err, captured.err
    code, captured = stage(capsys, "evaluate", *out, "--beta", "1.0", "--k-heads", "1")
    if sorted({layer for layer, _ in specialists}) != [specialists[0][0]]:
        assert code == 1 and "layers" in captured.err
    code, captured = stage(capsys, "evaluate", *out, "--beta", "1.0", "--k-heads", "1", "--fresh")
    assert code == 0
    manifest = read_manifest(tmp_path / "run" / "test-steered-beta1.0.jsonl")
    assert manifest.layers == (specialists[0][0],) and manifest.beta == 1.0

    changed = json.loads(bench.read_text())
    for item in changed:  # every answer changed
        item["answer"] = next(c for c in item["choices"] if c != item["answer"])
    shutil.copytree(cli_bench, tmp_path / "bench2")
    (tmp_path / "bench2" / "workshop.json").write_text(json.dumps(changed))
    other = ["--benchmark", str(tmp_path / "bench2" / "workshop.json"), "--out", str(tmp_path / "run")]
    code, captured = stage(capsys, "listen", *other)
    assert code == 1 and "answer of" in captured.err and "other item content" in captured.err


def test_experiment_result_carries_its_manifest(tmp_path, cli_bench, capsys):
    bench = cli_bench / "workshop.json"
    argv = ["experiment", "--benchmark", str(bench), "--out", str(tmp_path / "run"), "--betas", "1.0",
            "--k-heads", "2", "--draws", "5", "--json", str(tmp_path / "all.json")]
    assert cli.main(argv) == 0
    data = json.loads((tmp_path / "all.json").read_text())
    result = ExperimentResult.from_json(data)
    manifest = result.manifest
    assert manifest.heads == tuple(result.head_selection.specialists) and manifest.beta == result.beta
    assert manifest.k_heads == 2 and manifest.n_items == len(load_mmau(bench)) and manifest.benchmark == str(bench)
    assert manifest.model == "workshop" and manifest.seed == result.profile.seed
    assert ExperimentResult.from_json(json.loads(json.dumps(result.to_json()))).manifest == manifest
    assert result.to_json()["manifest"] == data["manifest"]
    before = {p.name: p.read_text() for p in (tmp_path / "run").glob("*.jsonl")}
    assert cli.main(argv) == 0
    assert {p.name: p.read_text() for p in (tmp_path / "run").glob("*.jsonl")} == before  # all reused


def test_report_and_figures_show_the_manifest(tmp_path, cli_bench):
    from lens_audio.figures import make_figures

    made = make_figures(benchmark=cli_bench / "workshop.json", out_dir=tmp_path / "figs", runs_dir=tmp_path / "runs",
                        progress=False, formats=("html",))
    manifest = made["result"].manifest
    report = (tmp_path / "figs" / "report.html").read_text()
    assert "What made these numbers" in report and manifest.model_fingerprint in report
    assert manifest.items_digest in report and "transformers" in report
    assert manifest.model_fingerprint in (tmp_path / "figs" / "beta_sweep.html").read_text()
    saved = ExperimentResult.load(tmp_path / "figs" / "results.json")
    assert saved.manifest == manifest


def test_a_bundled_benchmark_is_recorded_by_its_place_in_the_package(tmp_path):
    from lens_audio.benchmark.manifest import benchmark_label
    from lens_audio.organisms import BENCHMARK

    # the same on any machine
    assert benchmark_label(BENCHMARK) == "lens_audio/organisms/workshop/benchmark/workshop_sets.json"
    assert benchmark_label(tmp_path / "mine.json") == str(tmp_path / "mine.json")  # a user's file: as given
