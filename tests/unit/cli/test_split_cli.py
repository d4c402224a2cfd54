"""The split on the command line: `lens-audio split`, the split flags of the experiment's stages, `listen --split` with
the benchmark's own split names, and `figures` following an experiment's recorded settings and split."""

from __future__ import annotations

import json

import pytest

from lens_audio import cli
from lens_audio.benchmark import load_mmau
from lens_audio.benchmark.splits import make_split, read_split


@pytest.fixture(scope="module")
def mmau_bench(tmp_path_factory):
    """A 12-item (4 clips) workshop benchmark rewritten in MMAU test-mini's shape: `split: "test-mini"` everywhere."""
    from lens_audio.organisms.benchmark_writer import write_benchmark

    path = write_benchmark(tmp_path_factory.mktemp("mmau") / "b", seed=6, n_clips=4, progress=False) / "workshop.json"
    items = json.loads(path.read_text())
    path.write_text(json.dumps([{**i, "split": "test-mini"} for i in items]))
    return path


def test_split_command_writes_the_seeded_split_file(mmau_bench, tmp_path, capsys):
    out = tmp_path / "split.json"
    argv = ["split", str(mmau_bench), "--out", str(out), "--seed", "2", "--stratify", "task", "difficulty"]
    assert cli.main([*argv, "--sizes", "0.25", "0.25", "0.5"]) == 0
    written = read_split(out)
    assert written == make_split(load_mmau(mmau_bench), seed=2, stratify=("task", "difficulty"))
    assert written.digest in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad:  # a size outside 0..1 is refused by argparse, naming the flag
        cli.main([*argv, "--sizes", "2", "0", "0"])
    assert bad.value.code == 2 and "argument --sizes" in capsys.readouterr().err
    assert cli.main([*argv, "--sizes", "0.5", "0.5", "0.5"]) == 1 and "sum to 1" in capsys.readouterr().err


def test_listen_accepts_the_benchmarks_own_split_and_refuses_an_unknown_one(mmau_bench, tmp_path, capsys):
    common = ["--benchmark", str(mmau_bench), "--out", str(tmp_path / "run"), "--batch-size", "6"]
    assert cli.main(["listen", *common, "--split", "nope"]) == 1  # before the model loads
    err = capsys.readouterr().err
    assert "--split 'nope'" in err and "['test-mini']" in err
    assert cli.main(["listen", *common, "--split", "test-mini"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("test-mini: 12 items")
    # the split the experiment made is said at the start and written beside the runs
    assert "lens-audio: note: split " in captured.err and "calibration 3, dev 3, test 6 items" in captured.err
    assert read_split(tmp_path / "run" / "split.json") == make_split(load_mmau(mmau_bench), seed=0)
    # two ways of choosing the split at once are refused
    assert cli.main(["listen", *common, "--split-file", "x.json", "--split-sizes", "0.2", "0.3", "0.5"]) == 1
    assert "give one of them" in capsys.readouterr().err


def test_figures_follows_the_recorded_experiment_and_takes_its_flags(mmau_bench, tmp_path, capsys):
    from lens_audio.cli.figures import experiment_settings
    from lens_audio.paper.profile import profile_for, record_settings

    runs = tmp_path / "runs"
    recorded = profile_for("workshop").replace(mode="generate", prompt="instruct", n_random_draws=7, betas=(2.0,))
    record_settings(runs, "workshop", str(mmau_bench), recorded, None)
    split = make_split(load_mmau(mmau_bench), seed=9).write(runs / "split.json")
    parser, _ = cli.build_parser()
    args = parser.parse_args(["figures", "--runs", str(runs), "--draws", "9"])
    settings = experiment_settings(args)
    assert settings["profile"] == recorded.replace(n_random_draws=9)  # the recorded profile, a flag overriding it
    assert args.model == "workshop" and args.benchmark == str(mmau_bench)
    assert settings["split"] == read_split(split)  # the folder's split, not a new one
    assert settings["load"] == {"dtype": "float32", "device": "cpu"}
    assert "following the experiment" in capsys.readouterr().err
    # --mode is a flag of figures (no longer taken as an abbreviation of --model)
    assert vars(parser.parse_args(["figures", "--mode", "choice"]))["mode"] == "choice"
    assert cli.main(["figures", "--from", str(tmp_path), "--mode", "choice"]) == 1
    assert "drop --mode" in capsys.readouterr().err
