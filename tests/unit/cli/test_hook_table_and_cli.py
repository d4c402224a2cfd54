"""The documented hook table covers every hook exactly once, and the command line runs."""

from __future__ import annotations

import json
import re

import pytest

from lens_audio import HookedAudioLM, cli
from lens_audio.benchmark.mmau import load_mmau
from lens_audio.inputs.frames import n_audio_tokens
from lens_audio.model.hook_table import markdown_table, rows_matching
from lens_audio.organisms import BENCHMARK
from lens_audio.organisms.task import format_question


def test_every_hook_is_documented_exactly_once(tiny_pair):
    _, model = tiny_pair(n_heads=4, n_kv_heads=2, n_layers=3)
    for name in model.hook_dict:
        assert len(rows_matching(name)) == 1, (name, rows_matching(name))


def test_the_docs_list_the_hook_table():
    """The hook table lives in docs/hooks.md (the README links there), equal to `lens-audio hooks`'s output."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    assert markdown_table() in (root / "docs" / "hooks.md").read_text(), (
        "docs/hooks.md's hook table is stale: paste `lens-audio hooks` output")
    assert "docs/hooks.md" in (root / "README.md").read_text()


def test_demo_command(tmp_path, capsys):
    assert cli.main(["demo", "--json", str(tmp_path / "summary.json")]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    # float32 rounding grows with the trained model's residual norm (~275): compare relative to the logit scale
    assert summary["max_abs_logit_diff_vs_transformers"] < 2e-5 * summary["max_abs_logit"]
    # The demo's batched, left-padded answers equal each question decoded alone (a second way to the same text).
    model = HookedAudioLM.from_pretrained("workshop")
    items = load_mmau(BENCHMARK, split="test")
    clip = [i for i in items if i["audio_id"] == items[0]["audio_id"]]
    assert [a["question"] for a in summary["answers"]] == [format_question(i) for i in clip]
    for item, shown in zip(clip, summary["answers"]):
        alone = model.to_batch(item["audio_path"], format_question(item))
        tokens = model.generate(alone, max_new_tokens=8, do_sample=False)[0, alone.input_ids.shape[1]:]
        assert shown["answer"] == model.tokenizer.decode(tokens, skip_special_tokens=True).strip()
    assert summary["hook_points"] == len(model.hook_dict)
    frames = alone.feature_attention_mask.sum(-1)
    assert summary["audio_tokens_per_example"] == [int(n_audio_tokens(frames).sum())] * len(clip)
    assert cli.main(["hooks", "--model", "workshop"]) == 0
    assert "audio.hook_audio_embeds" in capsys.readouterr().out


def test_cli_docstring_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    choices = re.search(r"\{([a-z,-]+)\}", capsys.readouterr().out).group(1).split(",")
    listed = re.findall(r"^  ([a-z-]+)", cli.__doc__, flags=re.M)
    assert sorted(set(listed)) == sorted(choices), "update the subcommand list in lens_audio.cli's docstring"



def test_locate_is_a_subcommand_and_its_old_spelling_forwards(tmp_path, capsys, monkeypatch):
    """`lens-audio locate` builds the experiment (model, profile, benchmark, --out) and writes <out>/locate.json
    through `write_locate`, printing it; `python -m lens_audio.paper.locate` (kept for one release) says it moved
    and does the same. The sweeps are stubbed here: tests/unit/paper/test_experiment.py runs them for real."""
    from lens_audio.organisms import BENCHMARK
    from lens_audio.paper import locate

    def sweeps(experiment, betas):
        return {"model": experiment.model.cfg.model_name, "profile": experiment.profile.to_json(),
                "benchmark": experiment.benchmark, "items": len(experiment.items), "betas": list(betas)}

    monkeypatch.setattr(locate, "locate", sweeps)
    assert cli.main(["locate", "--out", str(tmp_path / "new"), "--betas", "1", "3"]) == 0
    written = json.loads((tmp_path / "new" / "locate.json").read_text())
    assert json.loads(capsys.readouterr().out) == written
    assert written["profile"]["mode"] == "choice" and written["betas"] == [1.0, 3.0]
    assert written["benchmark"] == str(BENCHMARK) and written["items"] == len(load_mmau(BENCHMARK))
    assert locate.main(["--out", str(tmp_path / "old"), "--betas", "1", "3"]) == 0
    assert "`lens-audio locate`" in capsys.readouterr().err
    assert json.loads((tmp_path / "old" / "locate.json").read_text()) == written
