"""The one registry of named models (`lens_audio.model.registry`): every shipped name resolves all its fields, the
register functions change one entry, and the command line runs a named model with its own profile or says in one
line which profile it falls back to."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest

from lens_audio import cli
from lens_audio.benchmark.manifest import prompt_name
from lens_audio.benchmark.prompts import render_prompt
from lens_audio.benchmark.run_file import read_records
from lens_audio.model import registry
from lens_audio.model.registry import (
    ModelEntry,
    bundled_benchmark,
    model_card,
    model_entry,
    named_checkpoint,
    register_checkpoint,
    register_model,
    registered_names,
)
from lens_audio.organisms.evaluate import PROFILE
from lens_audio.organisms.task import format_question
from lens_audio.paper.profile import (
    ExperimentProfile,
    ProfileFallbackWarning,
    fallback_note,
    profile_for,
    register_profile,
)

SHIPPED = ("workshop", "workshop-v1", "workshop-chains")


@pytest.fixture
def scratch_registry(monkeypatch):
    """The registry as it is, restored after the test (entries registered here do not leak into other tests)."""
    registered_names()  # the providers register the shipped entries first
    monkeypatch.setattr(registry, "_ENTRIES", dict(registry._ENTRIES))


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_name_resolves_checkpoint_benchmark_profile_and_card(name):
    assert name in registered_names()
    checkpoint = named_checkpoint(name)
    assert (checkpoint / "config.json").is_file()
    benchmark = bundled_benchmark(name)
    assert benchmark.is_file() and benchmark.suffix == ".json"
    with warnings.catch_warnings():
        warnings.simplefilter("error", ProfileFallbackWarning)  # a shipped name never falls back
        profile = profile_for(name)
    from lens_audio.organisms.workshop_chains.profile import PROFILE as CHAINS_PROFILE

    assert profile is (CHAINS_PROFILE if name == "workshop-chains" else PROFILE)  # its own, for its own benchmark
    assert profile.mode == "choice" and profile.prompt is format_question
    card = model_card(name)
    assert card is not None and card.name == "README.md"
    assert card.parent == checkpoint.parent, "the card lies in the organism's folder, beside its checkpoint/"
    if card.is_file():  # the cards are written separately; when there, not empty
        assert card.read_text().strip()


def test_the_chains_prompt_is_the_organisms_prompt():
    items = json.loads(bundled_benchmark("workshop-chains").read_text())[:3]
    for item in items:
        assert render_prompt(item, "workshop-chains") == format_question(item) == render_prompt(item, PROFILE.prompt)


def test_register_functions_update_one_entry(scratch_registry):
    before = set(registered_names())
    register_model(ModelEntry("my-model", checkpoint="lens_audio.organisms:CHECKPOINT_SETS"))
    assert set(registered_names()) == before | {"my-model"}
    assert model_entry("my-model") == ModelEntry("my-model", "lens_audio.organisms:CHECKPOINT_SETS")

    register_checkpoint("my-model", "lens_audio.organisms:CHECKPOINT_V1", benchmark="lens_audio.organisms:BENCHMARK_V1")
    register_profile("my-model", "lens_audio.organisms.evaluate:PROFILE")
    entry = model_entry("my-model")
    assert entry == ModelEntry("my-model", "lens_audio.organisms:CHECKPOINT_V1", "lens_audio.organisms:BENCHMARK_V1",
                               "lens_audio.organisms.evaluate:PROFILE")
    assert set(registered_names()) == before | {"my-model"}, "one name, one entry"
    assert named_checkpoint("my-model") == named_checkpoint("workshop-v1")
    assert bundled_benchmark("my-model") == bundled_benchmark("workshop-v1")
    assert profile_for("my-model") is PROFILE

    register_checkpoint("my-model", "lens_audio.organisms:CHECKPOINT_SETS")  # the rest of the entry stays
    assert model_entry("my-model") == ModelEntry("my-model", "lens_audio.organisms:CHECKPOINT_SETS",
                                                 "lens_audio.organisms:BENCHMARK_V1",
                                                 "lens_audio.organisms.evaluate:PROFILE")
    register_checkpoint("new-model", "lens_audio.organisms:CHECKPOINT_SETS")  # a new name: a new entry
    assert model_entry("new-model") == ModelEntry("new-model", "lens_audio.organisms:CHECKPOINT_SETS")
    with pytest.raises(ValueError, match="no registered model"):
        register_profile("nobody", "lens_audio.organisms.evaluate:PROFILE")
    with pytest.raises(ValueError, match="module:attribute"):
        ModelEntry("bad", checkpoint="no-colon")


def test_a_name_with_no_profile_falls_back_with_a_one_line_note(scratch_registry):
    with pytest.warns(ProfileFallbackWarning) as caught:
        profile = profile_for("some/unregistered-model")
    assert profile == ExperimentProfile() and profile.mode == "generate" and profile.prompt == "instruct"
    assert [str(w.message) for w in caught] == [fallback_note("some/unregistered-model")]
    assert "\n" not in fallback_note("x") and "'instruct'" in fallback_note("x")
    register_model(ModelEntry("no-profile", checkpoint="lens_audio.organisms:CHECKPOINT_SETS"))  # no profile field
    with pytest.warns(ProfileFallbackWarning, match="'no-profile' has no registered profile"):
        assert profile_for("no-profile") == ExperimentProfile()


def test_the_cli_prints_the_fallback_as_one_note_line(tmp_path, capsys):
    missing = tmp_path / "not-a-model"  # the profile is chosen first; loading then fails, quickly
    shown = warnings.showwarning
    code = cli.main(["listen", "--model", str(missing), "--benchmark", str(tmp_path / "none.json")])
    err = capsys.readouterr().err.splitlines()
    assert code == 1
    assert err[0] == f"lens-audio: note: {fallback_note(str(missing))}"
    assert len(err) == 2 and err[1].startswith("lens-audio listen: error:"), err
    assert warnings.showwarning is shown, "the CLI restores how warnings are shown"


def test_the_cli_runs_workshop_chains_with_its_own_prompt_and_mode(tmp_path, capsys):
    """`listen --model workshop-chains` on four calibration items: no note, and its run's manifest records the
    organisms' prompt and choice scoring (the Qwen2-Audio default would be 'instruct' and generate)."""
    source = bundled_benchmark("workshop-chains")
    items = [i for i in json.loads(source.read_text()) if i["split"] == "calibration"][:4]
    for item in items:
        for clip in item["audio_id"]:
            (tmp_path / "bench" / clip).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source.parent / clip, tmp_path / "bench" / clip)
    bench = tmp_path / "bench" / "chains.json"
    bench.write_text(json.dumps(items))
    out = tmp_path / "run"
    args = ["listen", "--model", "workshop-chains", "--benchmark", str(bench), "--out", str(out), "--json",
            str(tmp_path / "listen.json")]
    assert cli.main(args) == 0
    assert "note:" not in capsys.readouterr().err
    manifest = json.loads((out / "calibration-baseline.manifest.json").read_text())
    assert manifest["prompt"] == prompt_name(PROFILE.prompt) == "lens_audio.organisms.task.format_question"
    assert manifest["mode"] == "choice" and manifest["model"] == "workshop-chains"
    assert len(read_records(out / "calibration-baseline.jsonl")) == 4
    assert json.loads((tmp_path / "listen.json").read_text())["split"] == "calibration"
