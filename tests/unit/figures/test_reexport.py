"""`lens-audio figures --from`: every figure and the report redrawn from a saved result with no model and no forward
pass; the report references only files that were written, in every format mix."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lens_audio import cli
from lens_audio.figure_inputs import FILE, FigureInputs
from lens_audio.figures import FIGURES, figures_from
from lens_audio.paper.results import ExperimentResult
from tests.helpers.browser import CHROMIUM, open_page

RESULTS = Path(__file__).parents[3] / "figures" / "results.json"


def _inputs() -> FigureInputs:
    """Figure inputs shaped like the shipped result's model (8 layers x 8 heads), three clips."""
    rng = np.random.default_rng(0)
    spans = [(3, 13), (15, 25), (27, 37)]
    rows = rng.random((4, 45)) / 45
    margin = rng.normal(size=(8, 8))
    margin[0, 0] = np.nan
    return FigureInputs(
        margin_change=margin, ablation_items=16, label="Audio 2: answer bell, hint chord", asked=2,
        choices=["bell", "chord", "dog"], attention_heads=[(1, 0), (5, 4), (2, 3), (6, 1)], attention_rows=rows,
        audio_spans=spans, mels=[rng.normal(size=(16, 40)) for _ in spans],
        shown={"specialist": [(1, 0), (5, 4)], "largest ablation drop": [(2, 3)], "most on the asked clip": [(6, 1)]},
        patching=rng.normal(size=(8, 40)),  # 40 columns: wider than the report's column
        patching_labels=["<s>", "Audio 1", "Audio 2", "Audio 3", *(f"tok{i}" for i in range(36))],
        lens_prob=rng.random((9, 3)), lens_rank=rng.integers(0, 50, (9, 3)),
        lens_labels=[f"{i}_pre" for i in range(8)] + ["final_post"],
    )


@pytest.fixture
def saved(tmp_path):
    folder = tmp_path / "saved"
    folder.mkdir()
    shutil.copy(RESULTS, folder / "results.json")
    _inputs().save(folder / FILE)
    return folder


@pytest.fixture
def no_model(monkeypatch):
    """Loading any model fails, and every module call is counted: a re-export must make none."""
    from lens_audio import HookedAudioLM

    def refuse(*args, **kwargs):
        raise AssertionError("a re-export loaded a model")

    monkeypatch.setattr(HookedAudioLM, "from_pretrained", classmethod(refuse))
    calls = []
    original = torch.nn.Module.__call__
    monkeypatch.setattr(torch.nn.Module, "__call__", lambda self, *a, **k: calls.append(type(self)) or original(
        self, *a, **k))
    return calls


def test_figure_inputs_round_trip_through_json():
    inputs = _inputs()
    back = FigureInputs.from_json(json.loads(json.dumps(inputs.to_json())))
    assert back.to_json() == inputs.to_json()
    assert np.isnan(back.margin_change[0, 0]) and back.shown["specialist"] == [(1, 0), (5, 4)]
    # what the charts read, in their shapes: one example, heads x positions; clips padded with a frame mask
    assert back.attention_signal().rows.shape == (1, 4, 45)
    batch = back.attention_batch()
    assert batch.input_features.shape == (3, 16, 40) and int(batch.feature_attention_mask.sum()) == 120
    assert back.lens().prob.shape == (9, 1, 3)
    assert np.array_equal(back.lens().prob[:, 0].numpy(), inputs.lens_prob)
    assert np.abs(batch.input_features[1, :, :40].numpy() - inputs.mels[1]).max() <= 5e-4  # mels kept to 3 places


def test_figures_from_a_saved_result_draws_everything_with_no_forward_pass(saved, tmp_path, no_model):
    out = tmp_path / "out"
    assert cli.main(["figures", "--from", str(saved), "--out", str(out), "--formats", "html"]) == 0
    assert no_model == []  # not one module was called
    written = {p.name for p in out.iterdir()}
    assert {f"{name}.html" for name in FIGURES} <= written, set(FIGURES) - {p.stem for p in out.iterdir()}
    assert {"report.html", "results.json", FILE} <= written
    saved_json = json.loads(json.dumps(ExperimentResult.load(RESULTS).to_json()))
    assert json.loads((out / "results.json").read_text()) == saved_json
    # the same result file, as a path, writes into its own folder by default
    made = figures_from(saved / "results.json", formats=("html",))
    assert made["out"] == saved and made["skipped"] == [] and (saved / "ablation.html").exists()
    assert no_model == []


def test_a_result_without_figure_inputs_draws_what_it_holds_and_names_the_rest(tmp_path, no_model):
    alone = tmp_path / "experiment"  # a results.json with no figure_inputs.json beside it (`experiment --json`)
    alone.mkdir()
    shutil.copy(RESULTS, alone / "results.json")
    made = figures_from(alone / "results.json", tmp_path / "out", formats=("html",))
    assert set(made["skipped"]) == {"audio_attention", "patching", "logit_lens", "ablation"}
    assert set(made["figures"]) == set(FIGURES) - set(made["skipped"])
    assert no_model == []
    with pytest.raises(FileNotFoundError, match="--from"):
        figures_from(tmp_path / "nothing-here", tmp_path)


def _referenced(report: Path) -> list[str]:
    page = report.read_text()
    return [ref for ref in re.findall(r"(?:src|href)='([^']+)'", page) if not ref.startswith(("file:", "http"))]


@pytest.mark.parametrize("formats", [("html",), ("html", "png"), ("pdf", "svg")])
def test_the_report_references_only_files_written(saved, tmp_path, formats):
    if set(formats) - {"html"} and CHROMIUM is None:
        pytest.skip("static export needs a Chromium")
    out = tmp_path / "out"
    figures_from(saved, out, formats, static_required=True)
    refs = _referenced(out / "report.html")
    assert refs and all((out / ref).is_file() for ref in refs), [r for r in refs if not (out / r).is_file()]
    assert {Path(ref).suffix[1:] for ref in refs} == {*formats, "md"}  # the figures and the model card
    page = (out / "report.html").read_text()
    shown = re.findall(r"<img src='(\w+)\.(png|svg)' alt='\w+' width='(\d+)'", page)
    assert len(shown) == (len(FIGURES) if set(formats) & {"png", "svg"} else 0)
    for name, fmt, width in shown:  # each image at the natural width of the file shown, read a second way
        if fmt == "png":  # drawn at scale 2: shown at half its pixel width
            assert int.from_bytes((out / f"{name}.png").read_bytes()[16:20], "big") == 2 * int(width), name
        else:
            from xml.etree import ElementTree

            assert float(ElementTree.parse(out / f"{name}.svg").getroot().get("width")) == int(width), name
    if shown:  # the patching map: its own width as a PNG (one column per token), the paper's 7.5 in as an SVG
        from lens_audio.plots.paper import PAPER_WIDTH

        patching = re.search(r"<img src='patching\.(\w+)' alt='patching' width='(\d+)'", page)
        assert (int(patching[2]) == PAPER_WIDTH) == (patching[1] == "svg"), patching[0]
    # the model card's link is relative to the report's folder: it resolves there, in any clone
    card = re.search(r"href='([^']+)'>model card", page)[1]
    assert not card.startswith(("file:", "/")) and (out / card).resolve().name == "README.md"
    assert (out / card).is_file()


@pytest.mark.skipif(CHROMIUM is None, reason="needs a Chromium (Debian: apt-get install chromium)")
def test_a_vector_only_report_renders_with_no_broken_image(saved, tmp_path):
    out = tmp_path / "out"
    figures_from(saved, out, ("pdf", "svg"), static_required=True)
    check = ("JSON.stringify({images: Array.from(document.images, (i) => [i.getAttribute('src'), i.complete && "
             "i.naturalWidth > 0]), page: document.documentElement.scrollWidth, "
             "about: document.querySelector('.about').textContent})")
    results, errors, requests = open_page(out / "report.html", [check], width=1280)
    assert not errors and not requests, (errors, requests)
    page = json.loads(results[0])
    assert len(page["images"]) == len(FIGURES) and all(ok for _, ok in page["images"]), page["images"]
    assert page["page"] <= 1280  # wide figures scroll inside their own box
    assert "synthetic audio" in page["about"] and "workshop" in page["about"]


def test_the_report_says_what_made_it_and_why_a_cell_is_empty():
    from lens_audio.report_page import NO_R_WHY, report_html

    result = ExperimentResult.load(RESULTS)
    undefined = [f"{s} / {c}" for s, d in result.validity.items() for c, v in d.items() if np.isnan(v.r)]
    assert undefined  # the shipped result has conditions where r is undefined (e.g. dev congruent)
    page = report_html(result, {})
    assert not re.search(r"\bnan\b", page, re.IGNORECASE)
    assert all(f"<td>{name}</td><td class=num>undefined*</td>" in page for name in undefined)
    assert NO_R_WHY.replace("'", "&#x27;") in page
    about = re.search(r"<p class='about'>(.*?)</p>", page)[1]
    assert about.index("synthetic audio") < about.index("model card") and "workshop_sets.json" in about
    card = re.search(r"href='([^']+)'>model card", about)[1]  # relative to the folder the report is written in
    assert not card.startswith(("file:", "/")) and Path(card).is_file() and Path(card).name == "README.md"


def test_every_figure_title_names_the_model_the_split_and_the_items():
    from lens_audio.figures import draw_figures

    result = ExperimentResult.load(RESULTS)
    figures = draw_figures(result, _inputs())
    assert set(figures) == set(FIGURES)
    ten = ("head_correlation", "audio_mass", "beta_sweep", "steering_results", "control_distribution",
           "listening_check", "audio_attention", "patching", "logit_lens", "ablation")
    for name, fig in figures.items():
        title = fig.layout.title.text
        assert "model workshop" in title, (name, title)
        assert name not in ten or (" split" in title and "item" in title), (name, title)
    assert f"dev split, all items, n = {result.dev.baseline['n']}" in figures["beta_sweep"].layout.title.text
    assert "16 no-hint items" in figures["ablation"].layout.title.text


def test_from_refuses_the_flags_of_a_run(saved, tmp_path, no_model, capsys):
    argv = ["figures", "--from", str(saved), "--fresh", "--out", str(tmp_path / "o"), "--formats", "html"]
    assert cli.main(argv) != 0
    assert "drop --fresh" in capsys.readouterr().err and not (tmp_path / "o").exists()
