"""The clip-chain workshop task (four clips, found by number or by a neighbour's content), its benchmark and its
resumable training recipe."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lens_audio import load_audio
from lens_audio.benchmark import load_mmau
from lens_audio.organisms import BENCHMARK_CHAINS
from lens_audio.organisms.benchmark_writer import CHAINS_JSON_NAME, write_chain_benchmark
from lens_audio.organisms.sounds import DOMAINS
from lens_audio.organisms.workshop_chains.task import CHAIN_SIZE, draw_chain_sets, make_chain_item, relations_for

SMALL = (("calibration", 2, ("conflicting",)), ("dev", 1, ("none", "congruent", "conflicting")),
         ("test", 3, ("none", "congruent", "conflicting")))


def test_chain_sets_hold_each_class_of_their_domain_once():
    for clip_set in draw_chain_sets(np.random.default_rng(0), 12, "t", (0.0, 20.0)):
        assert sorted(c.class_name for c in clip_set.clips) == sorted(DOMAINS[clip_set.domain])


def test_relation_items_answer_with_the_named_clips_neighbour():
    clip_set = draw_chain_sets(np.random.default_rng(1), 1, "t", (0.0, 20.0))[0]
    names = [c.class_name for c in clip_set.clips]
    rng = np.random.default_rng(2)
    seen = Counter()
    for target in range(CHAIN_SIZE):
        for relation in relations_for(target):
            for hint in ("none", "congruent", "conflicting"):
                item = make_chain_item(clip_set, target, relation, hint, rng, [f"{j}.wav" for j in range(4)], "test")
                seen[relation] += 1
                assert item["answer"] == names[target] and item["target_clip"] == target + 1
                assert item["snr_db"] == clip_set.clips[target].snr_db and sorted(item["choices"]) == sorted(names)
                question = item["question"].split("? ")[-1] if "?" in item["question"] else item["question"]
                if relation == "direct":
                    assert question.endswith(f"What is in Audio {target + 1}?") and item["named_clip"] == target + 1
                else:  # find the clip by the class the question names, then read its neighbour (computed here)
                    named_class = question.split(" the ")[-1].removesuffix(" one?")
                    named = names.index(named_class)
                    neighbour = named + (1 if relation == "after" else -1)
                    assert f"clip {relation} the {named_class} one" in question
                    assert item["answer"] == names[neighbour] != named_class and item["named_clip"] == named + 1
                assert (item["hinted_choice"] == item["answer"]) == (hint == "congruent")
                if hint != "none":  # the hint names the clip the way the question does
                    assert item["hinted_choice"] in item["question"].split("?")[0]
    assert seen == {"direct": 12, "after": 9, "before": 9}
    with pytest.raises(ValueError, match="cannot be asked about as 'after'"):
        make_chain_item(clip_set, 0, "after", "none", rng, [], "test")
    with pytest.raises(ValueError, match="relation must be one of"):
        make_chain_item(clip_set, 1, "beside", "none", rng, [], "test")


def test_chain_benchmark_is_deterministic_paired_and_loads(tmp_path):
    a = write_chain_benchmark(tmp_path / "a", seed=3, partitions=SMALL, progress=False)
    b = write_chain_benchmark(tmp_path / "b", seed=3, partitions=SMALL, progress=False)
    assert (a / CHAINS_JSON_NAME).read_text() == (b / CHAINS_JSON_NAME).read_text()
    items = load_mmau(a / CHAINS_JSON_NAME)
    assert len(items) == CHAIN_SIZE * (2 * 1 + 1 * 3 + 3 * 3)
    by_question = Counter((i["clip_id"], i["target_clip"], i["relation"]) for i in items if i["split"] == "test")
    assert set(by_question.values()) == {3}, "each question is asked under the three hint conditions, same naming"
    for item in items:
        assert isinstance(item["audio_path"], list) and len(item["audio_path"]) == CHAIN_SIZE
        assert load_audio(item["audio_path"][item["target_clip"] - 1]).shape[0] > 0.6 * 16000


def test_default_chain_benchmark_is_large_enough_to_decide():
    from lens_audio.organisms.benchmark_writer import CHAIN_PARTITIONS

    sizes = {split: (n_sets, hints) for split, n_sets, hints in CHAIN_PARTITIONS}
    assert sizes["test"][0] >= 200 and sizes["test"][0] * CHAIN_SIZE >= 600 and "conflicting" in sizes["test"][1]
    assert sizes["calibration"][0] * CHAIN_SIZE * 0.2 >= 80, "calibration: >= 80 errors at a 20% error rate"


TINY = dict(n_layers=3, token_probe_layer=1, answer_probe_layer=2, adversary_below=2, pool_clips_per_class=2,
            steps_audio=2, steps=5, batch_size=3, monitor_sets=3, monitor_every=4, min_steps=5, checkpoint_every=2,
            log_every=1, warmup_steps=2, threads=1, lookup_from=3)


def _trained(folder):
    return load_file(folder / "final" / "model.safetensors")


def test_resumed_run_equals_uninterrupted_run_and_loads_in_transformers(tmp_path, monkeypatch):
    from transformers import Qwen2AudioForConditionalGeneration

    from lens_audio.organisms.workshop_chains.recipe import ChainsTrainSettings, export_latest, train_chains
    from lens_audio.train import run_folder, state_files

    settings = ChainsTrainSettings(**TINY)
    whole = train_chains(tmp_path / "whole", settings, progress=False)
    assert whole is not None and whole["steps_trained"] == 5
    cut = tmp_path / "cut"
    assert train_chains(cut, settings, progress=False, stop_after=3) is None  # a budgeted slice: saved at step 3
    assert [p.name for p in cut.glob("state-*")] == ["state-000003"]
    partial = Qwen2AudioForConditionalGeneration.from_pretrained(export_latest(cut, tmp_path / "partial"))
    assert json.loads((tmp_path / "partial" / "metrics.json").read_text())["step"] == 3
    params = dict(partial.named_parameters())
    saved = load_file(cut / "state-000003" / "weights.safetensors")
    assert all(params[k[len("model."):]].detach().equal(v) for k, v in saved.items() if k.startswith("model."))

    kept = tmp_path / "kept" / "state-000003"  # a state outside the run folder (and the repository)
    shutil.copytree(cut / "state-000003", kept)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing the step-4 checkpoint")

    monkeypatch.setattr(state_files, "save_file", killed)
    with pytest.raises(KeyboardInterrupt):
        train_chains(cut, settings, progress=False)
    monkeypatch.undo()
    (cut / (run_folder.STAGING_PREFIX + "left-by-kill-9")).mkdir()  # what a kill -9 mid-write leaves
    assert [p.name for p in cut.glob("state-*")] == ["state-000003"], "step 4 is lost, step 3 intact"
    resumed = train_chains(cut, settings, progress=False)
    assert resumed["steps_trained"] == 5 and resumed["loss_history"] == whole["loss_history"]
    assert resumed["monitor"] == whole["monitor"]
    a, b = _trained(tmp_path / "whole"), _trained(cut)
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), "resumed weights equal uninterrupted weights"
    assert not list(cut.glob(run_folder.STAGING_PREFIX + "*"))
    events = [json.loads(line).get("event") for line in (cut / "progress.jsonl").read_text().splitlines()]
    assert events.count("resume") == 2 and events.count("start") == 1
    model = Qwen2AudioForConditionalGeneration.from_pretrained(cut / "final")
    assert model.config.text_config.num_hidden_layers == TINY["n_layers"]
    assert train_chains(cut, settings, progress=False)["steps_trained"] == 5, "a finished run is not retrained"
    moved = train_chains(tmp_path / "moved", settings, progress=False, resume_from=kept)
    assert moved["loss_history"] == whole["loss_history"] and moved["monitor"] == whole["monitor"]
    c = _trained(tmp_path / "moved")
    assert all(a[k].equal(c[k]) for k in a), "a run started from a state kept elsewhere equals the uninterrupted run"

    train_chains(tmp_path / "other", settings, progress=False, stop_after=1)
    with pytest.raises(ValueError, match="other settings"):
        train_chains(tmp_path / "other", replace(settings, learning_rate=1e-3), progress=False)


def test_cli_trains_a_slice_of_the_chains_recipe_and_leaves_a_resumable_state(tmp_path, capsys):
    from lens_audio import cli

    out = tmp_path / "run"
    args = ["workshop", "train", "--recipe", "chains", "--out", str(out), "--pool-clips", "2", "--steps", "3",
            "--steps-audio", "1", "--threads", "1", "--stop-after", "1"]
    assert cli.main(args) == 0
    assert "resume with the same command" in capsys.readouterr().out
    state = json.loads((out / "state-000001" / "state.json").read_text())
    assert state["loop"]["step"] == 1 and state["settings"]["n_layers"] == 16 and state["settings"]["steps"] == 3
    sizes = [p.stat().st_size for p in (out / "state-000001").iterdir()]
    assert max(sizes) < 20 * 2**20, "each state file stays under 20 MB"
    assert not list((out / "state-000001").glob("*.pt")), "no pickle: safetensors and JSON only"


def test_the_named_clip_probe_reads_the_questions_class_word_and_leaves_the_first_recipe_resumable(tmp_path):
    from lens_audio import HookedAudioLM
    from lens_audio.organisms.workshop.recipe import build_model
    from lens_audio.organisms.workshop_chains.recipe import ChainData, ChainsTrainSettings, train_chains

    settings = ChainsTrainSettings(**{**TINY, "named_probe_layer": 1})
    model, processor = build_model(settings, settings.decoder_config())
    data = ChainData(HookedAudioLM.from_hf_model(model, processor), processor, settings, progress=False)
    checked = 0
    for item, indices in data.monitor_items:
        batch = data.collate([item], [indices], [item["answer"]])
        position = int(batch["named_position"][0])
        if item["relation"] == "direct":
            assert position == -1
            continue
        named_class = item["question"].split(" the ")[-1].removesuffix(" one?")
        word = processor.tokenizer.decode(batch["input_ids"][0, position]).strip()
        assert named_class.endswith(word) and word, (item["question"], word)  # the question's word, last token
        following = processor.tokenizer.decode(batch["input_ids"][0, position + 1 : position + 3])
        assert following.strip().startswith("one?")  # not the hint's "... the drums one is ..."
        assert int(batch["named_clip"][0]) == item["named_clip"] - 1
        checked += 1
    assert checked > 0
    # a run started before the setting existed (no value saved) resumes under the default, None
    train_chains(tmp_path / "run", ChainsTrainSettings(**TINY), progress=False, stop_after=1)
    state = next((tmp_path / "run").glob("state-*")) / "state.json"
    meta = json.loads(state.read_text())
    del meta["settings"]["named_probe_layer"]
    state.write_text(json.dumps(meta))
    assert train_chains(tmp_path / "run", ChainsTrainSettings(**TINY), progress=False)["steps_trained"] == TINY["steps"]
    with pytest.raises(ValueError, match="named_probe_layer"):
        ChainsTrainSettings(**{**TINY, "named_probe_layer": TINY["n_layers"]}).check()


def test_lookup_items_ask_for_the_clip_of_a_class_and_stay_out_of_the_adversaries_fit():
    from lens_audio import HookedAudioLM
    from lens_audio.organisms.workshop.recipe import build_model
    from lens_audio.organisms.workshop_chains.recipe import ChainData, ChainsTrainSettings
    from lens_audio.organisms.workshop_chains.task import make_lookup_item

    clip_set = draw_chain_sets(np.random.default_rng(4), 1, "t", (0.0, 20.0))[0]
    for named, clip in enumerate(clip_set.clips):
        item = make_lookup_item(clip_set, named, "train")
        assert item["question"] == f"Which clip is the {clip.class_name} one?" and item["answer"] == str(named + 1)
        assert item["choices"] == ["1", "2", "3", "4"] and item["hint"] == "none" and item["relation"] == "lookup"
    with pytest.raises(ValueError, match="named must index"):
        make_lookup_item(clip_set, 4, "train")
    settings = ChainsTrainSettings(**{**TINY, "lookup_share": 0.5})
    model, processor = build_model(settings, settings.decoder_config())
    data = ChainData(HookedAudioLM.from_hf_model(model, processor), processor, settings, progress=False)
    state = data.rng.bit_generator.state
    without = data.batch(2)
    data.rng.bit_generator.state = state
    assert torch.equal(data.batch(2, lookups=False)["input_ids"], without["input_ids"]), "off: the same draws"
    batches = [data.batch(2, lookups=True) for _ in range(4)]
    digits = {processor.tokenizer.encode(str(k), add_special_tokens=False)[0] for k in range(1, CHAIN_SIZE + 1)}
    for batch in batches:
        rows = torch.arange(len(batch["final_position"]))
        answers = batch["targets"][rows, batch["final_position"]]
        lookup = torch.tensor([int(a) in digits for a in answers])
        assert not batch["adversarial"][lookup].any()  # the question names the class: nothing to hide
        # a lookup's answer is the number of the clip it is about, which the answer-clip probe reads too
        assert (answers[lookup] == torch.tensor([processor.tokenizer.encode(str(int(k) + 1),
                                                 add_special_tokens=False)[0] for k in batch["target_clip"][lookup]],
                                                dtype=answers.dtype)).all()
    assert 0 < sum(int(a) in digits for b in batches for a in b["targets"][torch.arange(len(b["final_position"])),
                                                                            b["final_position"]]) < 4 * 3


def test_a_run_saved_before_lookups_existed_resumes_only_up_to_their_first_step(tmp_path):
    from lens_audio.organisms.workshop_chains.recipe import ChainsTrainSettings, train_chains

    settings = ChainsTrainSettings(**TINY)  # lookup_from = 3
    train_chains(tmp_path / "run", settings, progress=False, stop_after=2)
    state = next((tmp_path / "run").glob("state-*")) / "state.json"
    meta = json.loads(state.read_text())
    for key in ("lookup_share", "lookup_from"):
        del meta["settings"][key]
    state.write_text(json.dumps(meta))
    late = replace(settings, lookup_from=1)  # the saved steps would have held lookups: refused
    with pytest.raises(ValueError, match="lookup_from"):
        train_chains(tmp_path / "run", late, progress=False, stop_after=1)
    assert train_chains(tmp_path / "run", settings, progress=False)["steps_trained"] == TINY["steps"]
    monitors = json.loads((tmp_path / "run" / "final" / "metrics.json").read_text())["monitor"]
    assert 0 <= monitors[-1]["extra"]["lookup"] <= 100


def test_a_bundled_chain_benchmark_writes_its_audio_on_first_use_and_checks_it(tmp_path, monkeypatch):
    import tempfile

    from lens_audio.organisms.benchmark_writer import SeededBenchmark

    shipped = tmp_path / "package" / CHAINS_JSON_NAME
    bundled = SeededBenchmark(shipped, "chains_test", seed=0, partitions=SMALL)
    bundled.write(tmp_path / "package", progress=False)
    shutil.rmtree(tmp_path / "package" / "audios")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert bundled.path(progress=False) == shipped
    items = load_mmau(shipped)
    assert all(load_audio(path).shape[0] > 0.6 * 16000 for item in items for path in item["audio_path"])
    assert [p.name for p in shipped.parent.iterdir() if p.name.startswith(".")] == [], "no staging left"
    # a shipped JSON that the seed no longer reproduces is refused, and nothing is left behind
    shutil.rmtree(shipped.parent / "audios")
    shipped.write_text(shipped.read_text().replace('"dev"', '"Dev"', 1))
    with pytest.raises(RuntimeError, match="differs from the shipped"):
        bundled.path(progress=False)
    assert sorted(p.name for p in shipped.parent.iterdir()) == [CHAINS_JSON_NAME]
    # a read-only package folder: the audio and a copy of the JSON go to the user cache
    bundled.write(tmp_path / "fresh", progress=False)
    shutil.copyfile(tmp_path / "fresh" / CHAINS_JSON_NAME, shipped)
    real_mkdtemp = tempfile.mkdtemp

    def read_only_package(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == shipped.parent:
            raise PermissionError(dir)
        return real_mkdtemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkdtemp", read_only_package)
    cached = bundled.path(progress=False)
    assert cached == tmp_path / "cache" / "lens_audio" / "chains_test" / CHAINS_JSON_NAME
    assert cached.read_text() == shipped.read_text() and (cached.parent / "audios").is_dir()
    assert bundled.path(progress=False) == cached  # found, not written again


def test_the_direct_benchmark_asks_every_clip_by_number_and_is_the_registered_one(tmp_path):
    """`"workshop-chains"`' registered benchmark: direct questions only, rewritten from its recorded seed equal to the
    shipped JSON, with the sizes that make the head-selection claim decidable (800 conflicting test items)."""
    from lens_audio.model.registry import model_entry, resolve
    from lens_audio.organisms import BENCHMARK_CHAINS_DIRECT
    from lens_audio.organisms.benchmark_writer import DIRECT_SEED, direct_chain_benchmark
    from lens_audio.paper.profile import profile_for

    small = write_chain_benchmark(tmp_path / "small", seed=2, partitions=SMALL, progress=False, direct_only=True)
    items = load_mmau(small / CHAINS_JSON_NAME)
    assert {i["relation"] for i in items} == {"direct"}
    assert all(i["question"].endswith(f"What is in Audio {i['target_clip']}?") for i in items)
    with pytest.raises(ValueError, match="clip-chain"):
        from lens_audio.organisms.benchmark_writer import write_set_benchmark

        write_set_benchmark(tmp_path / "sets", partitions=SMALL, progress=False, direct_only=True)

    assert resolve(model_entry("workshop-chains").benchmark) is direct_chain_benchmark
    from lens_audio.cli import main

    assert main(["workshop", "benchmark", "--recipe", "chains", "--direct-only", "--seed", str(DIRECT_SEED),
                 "--out", str(tmp_path / "full")]) == 0  # the command the card gives rewrites the shipped JSON
    assert (tmp_path / "full" / CHAINS_JSON_NAME).read_text() == BENCHMARK_CHAINS_DIRECT.read_text()
    assert main(["workshop", "benchmark", "--direct-only", "--out", str(tmp_path / "sets")]) != 0
    shipped = json.loads(BENCHMARK_CHAINS_DIRECT.read_text())
    counts = Counter((i["split"], i["hint"]) for i in shipped)
    assert counts[("test", "conflicting")] == 800 and counts[("calibration", "conflicting")] == 1400
    assert {i["relation"] for i in shipped} == {"direct"}
    mixed = {i["clip_id"] for i in json.loads(BENCHMARK_CHAINS.read_text())}
    assert mixed.isdisjoint(i["clip_id"] for i in shipped), "its own seed: no clip shared with the mixed benchmark"
    profile = profile_for("workshop-chains")
    assert profile.mode == "choice" and profile.n_random_draws == 200
    assert profile.depth_matched_control and profile.beta_matched_control and profile.layer_matched_control


def test_shipped_chain_model_metrics_are_recomputed_on_its_bundled_test_split():
    """`"workshop-chains"`'s metrics.json, re-measured through the hooked port on the bundled benchmark's test split
    (with the audio, and with every clip replaced by silence), and what its numbers show."""
    from lens_audio import HookedAudioLM
    from lens_audio.organisms import CHECKPOINT_CHAINS
    from lens_audio.organisms.benchmark_writer import chain_benchmark
    from lens_audio.organisms.evaluate import score_items, summarize

    model = HookedAudioLM.from_pretrained("workshop-chains")
    assert model.cfg.n_layers == 16
    items = load_mmau(chain_benchmark(), split="test")  # the mixed benchmark it was accepted on
    assert len(items) == 2400 and sum(i["hint"] == "conflicting" for i in items) == 800
    records = score_items(model, items, progress=False)
    summary = summarize(records)
    silent = summarize(score_items(model, [i for i in items if i["hint"] == "none"], silence=True, progress=False))
    recorded = json.loads((CHECKPOINT_CHAINS / "metrics.json").read_text())
    for hint, accuracy in summary["accuracy"].items():
        assert accuracy == pytest.approx(recorded["test"]["accuracy"][hint], abs=1e-6), hint
    assert silent["accuracy"]["none"]["all"] == pytest.approx(
        recorded["test_with_silence"]["accuracy"]["none"]["all"], abs=1e-6)
    assert silent["accuracy"]["none"]["all"] <= 45  # it listens: four options, chance 25
    relation = {item["id"]: item["relation"] for item in items}
    direct = [r["extracted"] == r["answer"] for r in records if r["hint"] == "none" and relation[r["id"]] == "direct"]
    assert np.mean(direct) >= 0.85  # it reads a clip named by its number (what it does learn)
