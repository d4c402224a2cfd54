"""Round 3 of bad input, the command line: every numeric flag refuses nan and inf (lists too) in argparse, before any
work; no parser takes abbreviated flags; `--json` naming a folder and `--out` naming a file are refused up front;
`WORLD_SIZE` left in a plain run's environment is refused before the model loads."""

from __future__ import annotations

import argparse

import pytest

from lens_audio import cli
from lens_audio.checks import cli_float, cli_int, cli_seed


def parsers(parser=None, path=()):
    """(subcommand path, parser) for the lens-audio parser and every subcommand's, recursively."""
    parser = parser or cli.build_parser()[0]
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from parsers(child, (*path, name))


NUMBER_KINDS = {cli_float().__name__, cli_int().__name__, cli_seed().__name__}
NUMERIC_FLAGS = [(path, action.option_strings[-1]) for path, parser in parsers() for action in parser._actions
                 if getattr(action.type, "__name__", None) in NUMBER_KINDS or action.type in (int, float)]


def test_every_parser_refuses_abbreviations_and_every_number_goes_through_the_checks():
    assert len(NUMERIC_FLAGS) > 20 and (("noise-sweep",), "--snrs") in NUMERIC_FLAGS
    assert (("sae", "train"), "--lr") in NUMERIC_FLAGS
    for path, parser in parsers():
        assert parser.allow_abbrev is False, path
        for action in parser._actions:
            assert action.type not in (int, float), f"{' '.join(path)} {action.option_strings}: a bare {action.type}"


@pytest.mark.parametrize("path,flag", NUMERIC_FLAGS, ids=[" ".join((*p, f)) for p, f in NUMERIC_FLAGS])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_every_numeric_flag_refuses_non_finite_values_before_any_work(capsys, monkeypatch, path, flag, value):
    monkeypatch.setattr("lens_audio.HookedAudioLM.from_pretrained", lambda *a, **k: pytest.fail("work began"))
    with pytest.raises(SystemExit) as exit_:
        cli.main([*path, flag, value])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"argument {flag}" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("values", [["5", "nan"], ["nan,5"], ["10", "inf", "0"]])
def test_a_non_finite_number_in_a_list_is_refused(capsys, tmp_path, values):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["noise-sweep", "--out", str(tmp_path / "runs"), "--snrs", *values])
    assert exit_.value.code == 2 and "argument --snrs" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # no run file such as test-noisenandB.jsonl left behind


@pytest.mark.parametrize("argv,unknown", [
    (["select-heads", "--k-head", "3"], "--k-head"),
    (["evaluate", "--bet", "2"], "--bet"),
    (["sae", "train", "--hook", "blocks.0.hook_resid_post", "--out", "x", "--l", "0.1"], "--l"),
])
def test_abbreviated_flags_are_refused(capsys, argv, unknown):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2 and f"unrecognized arguments: {unknown}" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["listen"], ["demo"], ["workshop", "acceptance", "--model", "m"]])
def test_json_naming_a_folder_is_refused_before_any_work(capsys, tmp_path, command):
    for folder in (f"{tmp_path}/new/", str(tmp_path)):  # a folder to be (ending in /), or one that exists
        with pytest.raises(SystemExit) as exit_:
            cli.main([*command, "--json", folder])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and "argument --json" in err and "is a folder; give the file to write" in err
    assert not (tmp_path / "new").exists()


def test_json_under_a_file_and_out_naming_a_file_are_refused(capsys, tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    for argv, flag in ((["listen", "--json", f"{blocker}/r.json"], "--json"),
                       (["listen", "--out", str(blocker)], "--out"),
                       (["workshop", "benchmark", "--out", str(blocker)], "--out"),
                       (["sae", "workshop", "--out", str(blocker / "x")], "--out")):
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and f"argument {flag}" in err and f"{str(blocker)!r} is a file" in err
    assert blocker.read_text() == "mine"


def test_world_size_left_in_a_plain_run_is_refused_before_the_model_loads(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("lens_audio.HookedAudioLM.from_pretrained", lambda *a, **k: pytest.fail("work began"))
    assert cli.main(["listen", "--out", str(tmp_path / "runs")]) == 1
    err = capsys.readouterr().err
    assert "WORLD_SIZE=2 is set but RANK, MASTER_ADDR, MASTER_PORT are not" in err and "unset WORLD_SIZE" in err
