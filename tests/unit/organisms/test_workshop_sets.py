"""The clip-set workshop task (three clips, a question about one), its benchmark and its training recipe."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lens_audio import HookedAudioLM, cli, load_audio
from lens_audio.benchmark import load_mmau
from lens_audio.organisms.benchmark_writer import SETS_JSON_NAME, write_set_benchmark
from lens_audio.organisms.sounds import CLASS_DOMAIN
from lens_audio.organisms.workshop.task import SECONDS, SET_SIZE, draw_clip_sets, make_set_item

SMALL = (("calibration", 2, ("conflicting",)), ("dev", 1, ("none", "congruent", "conflicting")),
         ("test", 2, ("none", "congruent", "conflicting")))


def test_clip_sets_hold_distinct_classes_of_one_domain():
    sets = draw_clip_sets(np.random.default_rng(0), 30, "t", (0.0, 20.0))
    assert [s.domain for s in sets].count("music") == 10
    for clip_set in sets:
        classes = [c.class_name for c in clip_set.clips]
        assert len(set(classes)) == SET_SIZE and {CLASS_DOMAIN[c] for c in classes} == {clip_set.domain}
        assert all(SECONDS[0] <= c.seconds <= SECONDS[1] for c in clip_set.clips)


def test_items_ask_about_the_named_clip():
    clip_set = draw_clip_sets(np.random.default_rng(1), 1, "t", (0.0, 20.0))[0]
    rng = np.random.default_rng(2)
    for target in range(SET_SIZE):
        for hint in ("none", "congruent", "conflicting"):
            item = make_set_item(clip_set, target, hint, rng, ["a.wav", "b.wav", "c.wav"], "test")
            assert item["answer"] == clip_set.clips[target].class_name and item["target_clip"] == target + 1
            assert f"Audio {target + 1}" in item["question"] and item["snr_db"] == clip_set.clips[target].snr_db
            others = {c.class_name for c in clip_set.clips} - {item["answer"]}
            assert others < set(item["choices"]), "the other clips' classes are among the options"
            assert (item["hinted_choice"] == item["answer"]) == (hint == "congruent")
    with pytest.raises(ValueError, match="target"):
        make_set_item(clip_set, 3, "none", rng, [], "test")


def test_set_benchmark_is_deterministic_and_loads(tmp_path):
    a = write_set_benchmark(tmp_path / "a", seed=3, partitions=SMALL, progress=False)
    b = write_set_benchmark(tmp_path / "b", seed=3, partitions=SMALL, progress=False)
    assert (a / SETS_JSON_NAME).read_text() == (b / SETS_JSON_NAME).read_text()
    wavs = sorted((a / "audios").glob("*.wav"))
    assert len(wavs) == 5 * SET_SIZE and all(w.read_bytes() == (b / "audios" / w.name).read_bytes() for w in wavs)
    items = load_mmau(a / SETS_JSON_NAME)
    assert len(items) == 2 * 3 + 1 * 9 + 2 * 9
    assert {i["hint"] for i in items if i["split"] == "calibration"} == {"conflicting"}
    for item in items:
        assert isinstance(item["audio_path"], list) and len(item["audio_path"]) == SET_SIZE
        clip = load_audio(item["audio_path"][item["target_clip"] - 1])
        assert SECONDS[0] * 16000 - 1 <= clip.shape[0] <= SECONDS[1] * 16000 + 1
    with pytest.raises(FileExistsError, match="overwrite"):
        write_set_benchmark(tmp_path / "a", seed=3, partitions=SMALL, progress=False)


def test_set_benchmark_runs_through_the_model_with_three_clips(tmp_path):
    folder = write_set_benchmark(tmp_path / "w", seed=1, partitions=SMALL, progress=False)
    item = load_mmau(folder / SETS_JSON_NAME, split="test")[0]
    model = HookedAudioLM.from_pretrained("workshop-v1")
    batch = model.to_batch(item["audio_path"], item["question"])
    assert len(batch.audio_spans[0]) == SET_SIZE
    previous_end = 0
    for k, (start, end) in enumerate(batch.audio_spans[0]):  # each clip follows its own "Audio k:" label
        between = model.tokenizer.decode(batch.input_ids[0, previous_end:start])
        assert between.rstrip().endswith(f"Audio {k + 1}: <|audio_bos|>"), between
        previous_end = end


def test_training_recipe_writes_a_loadable_checkpoint(tmp_path):
    from lens_audio.organisms.workshop.recipe import DECODER_CONFIG

    args = ["workshop", "train", "--out", str(tmp_path / "ckpt"), "--steps-audio", "2", "--steps-mixed", "2",
            "--steps-select", "2", "--pool-clips", "3", "--benchmark", "none"]
    assert cli.main(args) == 0
    metrics = json.loads((tmp_path / "ckpt" / "metrics.json").read_text())
    assert metrics["recipe"] == "clip-sets" and np.isfinite(metrics["loss_history"][-1]["loss"])
    model = HookedAudioLM.from_pretrained(tmp_path / "ckpt")
    v1 = HookedAudioLM.from_pretrained("workshop-v1")
    assert (model.cfg.n_layers, model.cfg.n_heads) == (DECODER_CONFIG["n_layers"], DECODER_CONFIG["n_heads"])
    frozen = dict(v1.audio.named_parameters())
    encoder = [(n, p) for n, p in model.audio.named_parameters() if not n.startswith("projector")]
    assert encoder and all(np.array_equal(p.detach().numpy(), frozen[n].detach().numpy()) for n, p in encoder), \
        "the audio encoder is v1's, unchanged"
    projector, v1_projector = model.audio.projector.weight.detach().numpy(), frozen["projector.weight"].detach().numpy()
    assert not np.allclose(projector, v1_projector), "the projector is rescaled and trained"


def test_training_recipe_resumed_in_either_phase_equals_the_uninterrupted_run(tmp_path):
    from safetensors.torch import load_file

    from lens_audio.organisms.workshop.recipe import SetsTrainSettings, train_sets

    settings = SetsTrainSettings(pool_clips_per_class=3, steps_audio=2, steps_mixed=2, steps_select=3, batch_size=4,
                                 warmup_steps=2, threads=1)
    whole = train_sets(tmp_path / "whole", settings, progress=False)
    cut = tmp_path / "cut"
    assert train_sets(cut, settings, progress=False, stop_after=4) is None  # the end of stages 1-2 (phase 0)
    assert json.loads((cut / "state-000004" / "state.json").read_text())["loop"]["phase"] == 0
    assert train_sets(cut, settings, progress=False, stop_after=2) is None  # inside stage 3, with its probes
    meta = json.loads((cut / "state-000006" / "state.json").read_text())
    assert meta["loop"]["phase"] == 1 and any(k.startswith("probes.") for k in load_file(
        cut / "state-000006" / "weights.safetensors"))
    resumed = train_sets(cut, settings, progress=False)
    assert resumed["loss_history"] == whole["loss_history"]
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(cut / "model.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), "resumed weights equal uninterrupted weights"
