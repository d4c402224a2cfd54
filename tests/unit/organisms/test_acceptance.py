"""The clip-chain organism's acceptance checks (`lens_audio.organisms.workshop_chains.acceptance`), and the
analysis pieces they are built on (`lens_audio.analysis.probes`, `lens_audio.analysis.final_position`), each number
checked a second way."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from lens_audio import HookedAudioLM
from lens_audio.analysis import final_resid_patch_logits, probe_accuracy
from lens_audio.analysis.listening import listening_signal
from lens_audio.analysis.statistics import pearson_columns
from lens_audio.benchmark import load_mmau
from lens_audio.benchmark.prompts import render_prompt
from lens_audio.model.hook_point import block_hook_name
from lens_audio.organisms.benchmark_writer import CHAINS_JSON_NAME, write_chain_benchmark
from lens_audio.organisms.evaluate import PROFILE, score_items
from lens_audio.organisms.workshop_chains.acceptance import AcceptanceChecks, acceptance_checks, even_subset
from lens_audio.testing import save_checkpoint, tiny_hf_model

PARTITIONS = (("calibration", 4, ("conflicting",)), ("dev", 4, ("none", "congruent", "conflicting")))
EARLY, LATE = 2, 3  # the 4-layer model's early and late layers


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A random 4-layer model with the workshop tokenizer (every class one token), a tiny chain benchmark, and
    the checks on its dev split."""
    from transformers import AutoProcessor

    from lens_audio.organisms import CHECKPOINT_V1

    processor = AutoProcessor.from_pretrained(CHECKPOINT_V1)
    hf, _ = tiny_hf_model(processor, seed=1, n_layers=4, d_model=32, n_heads=4, n_kv_heads=2, d_mlp=64,
                          audio_d_model=32, audio_layers=1, n_mels=64, chunk_seconds=2)
    model = HookedAudioLM.from_hf_model(hf, processor)
    root = tmp_path_factory.mktemp("acceptance")
    bench = write_chain_benchmark(root / "bench", seed=5, partitions=PARTITIONS, progress=False) / CHAINS_JSON_NAME
    items = load_mmau(bench)
    result = acceptance_checks(model, items, "dev", early_below=EARLY, late_from=LATE, betas=(0.0, 2.0), folds=3,
                               batch_size=7, n_bootstrap=50)
    return model, items, result, hf, processor, root, bench


def _accuracy(records) -> float:
    return 100 * float(np.mean([r["correct"] for r in records]))


def test_patching_restores_the_audio_run_at_the_last_layer_and_matches_the_runner(setup):
    model, items, result, *_ = setup
    p = result.patching
    no_hint = [i for i in items if i["split"] == "dev" and i["hint"] == "none"]
    assert p.items == "no-hint items" and p.n == len(no_hint) == 16 and len(p.by_layer) == model.cfg.n_layers
    assert p.audio == pytest.approx(_accuracy(score_items(model, no_hint, progress=False)))
    assert p.silence == pytest.approx(_accuracy(score_items(model, no_hint, silence=True, progress=False)))
    # the last layer's final resid_post is all the final logits depend on: patching it gives the audio run
    assert p.by_layer[-1] == pytest.approx(p.audio)
    assert p.early_limit == pytest.approx(p.silence + 10) and p.late_limit == pytest.approx(0.9 * p.audio)
    expected = all(v <= p.early_limit for v in p.by_layer[:EARLY]) and all(v >= p.late_limit for v in p.by_layer[LATE:])
    assert p.passed == expected == result.passed["patching"]


def test_restarted_patch_equals_a_hooked_forward_at_every_layer(setup):
    model, items, *_ = setup
    chunk = [i for i in items if i["split"] == "dev"][:5]
    clean = model.to_batch([i["audio_path"] for i in chunk], [render_prompt(i, PROFILE.prompt) for i in chunk])
    corrupted = clean.silence_twin()
    names = [block_hook_name(layer, "hook_resid_post") for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        clean_logits, cache = model.run_with_cache(clean, names_filter=names, return_cache_object=False)
    rows, final = torch.arange(clean.batch_size), clean.final_position
    clean_final = torch.stack([cache[name][rows, final] for name in names], dim=1)
    patched = final_resid_patch_logits(model, corrupted, clean_final)
    for layer, name in enumerate(names):
        def put(resid, hook, layer=layer):
            resid = resid.clone()
            resid[rows, final] = clean_final[:, layer]
            return resid

        with torch.no_grad():
            hooked = model.run_with_hooks(corrupted, fwd_hooks=[(name, put)])[rows, final]
        assert torch.allclose(patched[layer], hooked, atol=1e-4), f"layer {layer}"
    assert torch.allclose(patched[-1], clean_logits[rows, final], atol=1e-4)
    with torch.no_grad():
        silent = model(corrupted)[rows, final]
    assert not torch.allclose(patched[0], silent, atol=1e-3), "the patch changes the silence run"


def test_steering_at_beta_zero_is_the_baseline_and_the_baseline_is_the_runners(setup):
    model, items, result, *_ = setup
    s = result.steering
    conflicting = [i for i in items if i["split"] == "dev" and i["hint"] == "conflicting"]
    assert s.items == "conflicting items" and s.n == len(conflicting) and s.betas == [0.0, 2.0]
    assert s.baseline == pytest.approx(_accuracy(score_items(model, conflicting, progress=False)))
    assert s.by_beta[0] == [s.baseline] * model.cfg.n_layers
    assert s.passed_by_beta[0] is False  # no gain at beta 0: the late layers fail
    assert s.passed == any(s.passed_by_beta)


def test_the_probe_reads_a_planted_class_and_not_a_clip_sets_identity():
    rng = np.random.default_rng(0)
    n, classes = 120, 12
    options = np.zeros((n, classes), dtype=bool)
    domain = rng.integers(0, 3, n)
    for row, d in enumerate(domain):
        options[row, 4 * d : 4 * d + 4] = True
    labels = 4 * domain + rng.integers(0, 4, n)
    groups = np.repeat(np.arange(20), 6)
    planted = np.eye(classes)[labels] * 4.0 + rng.normal(size=(n, classes))  # 99% readable by argmax
    noise = rng.normal(size=(n, 16))
    assert probe_accuracy(np.concatenate([planted, noise], 1), labels, options, groups) >= 85
    assert probe_accuracy(noise, labels, options, groups) < 45  # chance is 25
    # the class constant within each clip set, the features the set's identity: only a probe that had seen the
    # held-out set could read it (ungrouped folds would)
    by_group = 4 * domain[groups * 6] + rng.integers(0, 4, 20)[groups]
    identity = np.eye(20)[groups]
    assert probe_accuracy(identity, by_group, options[groups * 6], groups) < 60
    with pytest.raises(ValueError, match="one of its options"):
        probe_accuracy(noise, (labels + 4) % classes, options, groups)


def test_the_probe_check_covers_the_embeddings_and_every_layer(setup):
    model, items, result, *_ = setup
    pr = result.probe
    dev = [i for i in items if i["split"] == "dev" and i["hint"] in ("none", "conflicting")]
    assert pr.n == len(dev) and pr.n_groups == 4 and pr.folds == 3 and pr.chance == pytest.approx(25.0)
    assert len(pr.by_point) == model.cfg.n_layers + 1 and all(0 <= v <= 100 for v in pr.by_point)
    assert pr.passed == all(v <= 40 for v in pr.by_point[: EARLY + 1])


def test_the_top_heads_are_the_highest_abs_r_on_calibration(setup):
    model, items, result, *_ = setup
    calibration = [i for i in items if i["split"] == "calibration"]
    records = score_items(model, calibration, progress=False)
    correct = np.array([r["correct"] for r in records], dtype=float)
    assert 0 < correct.mean() < 1, "correctness must vary for r to be defined"
    prompts = [render_prompt(i, PROFILE.prompt) for i in calibration]
    batch = model.to_batch([i["audio_path"] for i in calibration], prompts)
    mass = listening_signal(model, batch).audio_mass.numpy()
    r = pearson_columns(mass.reshape(len(calibration), -1), correct).reshape(mass.shape[1:])
    order = np.argsort(-np.abs(r), axis=None)[:4]
    expected = [tuple(int(i) for i in np.unravel_index(flat, r.shape)) for flat in order]
    v = result.validity
    assert [h.head for h in v.heads] == expected and v.n_selection == len(calibration)
    for h in v.heads:
        assert h.r_calibration == pytest.approx(float(r[h.head]), abs=1e-4)
    assert v.items == "conflicting items" and v.n_clusters == 4
    assert v.passed == (v.within.r >= 0.3 and v.silence.r <= 0.1)


def test_even_subset_keeps_the_strata_and_spreads_over_the_split():
    items = [{"id": f"s{s}-{t}-{h}", "hint": h, "task": ["sound", "music", "speech"][s % 3],
              "relation": "direct" if t == 0 else "after"}
             for s in range(60) for t in range(4) for h in ("none", "congruent", "conflicting")]
    picked = even_subset(items, 240)
    assert picked == even_subset(items, 240) and len({i["id"] for i in picked}) == 240
    assert Counter(i["hint"] for i in picked) == {"none": 80, "congruent": 80, "conflicting": 80}
    assert all(abs(count - 80) <= 3 for count in Counter(i["task"] for i in picked).values())  # +-1 per hint
    by_relation = Counter((i["hint"], i["relation"]) for i in picked)
    assert all(by_relation[h, "direct"] == 20 and by_relation[h, "after"] == 60 for h in ("none", "conflicting"))
    assert len({i["id"].split("-")[0] for i in picked}) == 60, "every clip set contributes"
    assert [items.index(i) for i in picked] == sorted(items.index(i) for i in picked)
    assert even_subset(items, 10_000) == items
    with pytest.raises(ValueError, match="limit"):
        even_subset(items, 0)


def test_json_round_trip_table_and_cli(setup, capsys):
    from lens_audio import cli

    model, items, result, hf, processor, root, bench = setup
    data = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert AcceptanceChecks.from_json(data).to_json() == data
    assert set(data["passed"]) == {"patching", "probe", "steering", "validity"}
    table = result.format()
    assert "steer b=2" in table and "validity" in table and "  emb  " in table
    assert sum(line.split()[0].isdigit() for line in table.splitlines() if line.strip()) == model.cfg.n_layers
    checkpoint = save_checkpoint(hf, processor, root / "model")
    out = root / "acceptance.json"
    args = ["workshop", "acceptance", "--model", str(checkpoint), "--benchmark", str(bench), "--split", "dev",
            "--early-below", str(EARLY), "--late-from", str(LATE), "--betas", "0", "2", "--limit", "24",
            "--json", str(out)]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "acceptance checks" in printed and "24 of 48 items" in printed
    written = AcceptanceChecks.from_json(json.loads(out.read_text()))
    assert written.n_items == 24 and written.limit == 24 and written.steering.betas == [0.0, 2.0]
    assert written.steering.by_beta[0] == [written.steering.baseline] * model.cfg.n_layers
    assert cli.main(["workshop", "acceptance", "--model", str(checkpoint), "--benchmark", str(bench)]) == 1
    assert "early_below" in capsys.readouterr().err, "the 8-layer default bound is refused on a 4-layer model"


def test_on_calibration_the_checks_fall_back_to_its_conflicting_items_and_reuse_its_runs(setup):
    model, items, *_ = setup
    result = acceptance_checks(model, items, "calibration", early_below=EARLY, late_from=LATE, betas=(1.0,), folds=3,
                               l2=1.0, n_bootstrap=20)
    calibration = [i for i in items if i["split"] == "calibration"]
    p, v = result.patching, result.validity
    assert p.items == "conflicting items, as the split has no no-hint items" and p.n == len(calibration)
    assert p.audio == pytest.approx(_accuracy(score_items(model, calibration, progress=False)))
    assert p.audio == result.steering.baseline and p.by_layer[-1] == pytest.approx(p.audio)
    assert v.n == v.n_selection == len(calibration) and result.probe.l2 == [1.0]
    assert v.within_relation is not None and v.within_relation.n == len(calibration)
    data = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert AcceptanceChecks.from_json(data).to_json() == data and "question kinds" in result.format()
    assert [h.r for h in v.heads] == pytest.approx([h.r_calibration for h in v.heads], nan_ok=True)
