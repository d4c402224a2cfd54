"""Every figure renders to HTML and PNG (kaleido with the local Chromium) from real analysis results."""

from __future__ import annotations

import numpy as np
import pytest

from lens_audio import plots
from lens_audio.analysis import listening_signal, logit_lens, normalized_logit_diff, patch_residual_by_position


@pytest.fixture(scope="module")
def results(tiny_pair, processor):
    from lens_audio import make_batch
    from tests.helpers.reference import waveform

    _, model = tiny_pair(n_heads=4, n_kv_heads=2, n_layers=3)
    batch = make_batch(processor, [waveform(1.2, 1)], ["What is it?"], sampling_rate=16000)
    corrupted = batch.silence_twin()
    import torch

    with torch.no_grad():
        top = model(batch)[0, -1].topk(3).indices.tolist()
    metric = normalized_logit_diff(model, batch, corrupted, [top[0]], [top[1]])
    return {
        "heads": plots.head_heatmap(
            np.random.default_rng(0).normal(size=(3, 4)), "Correlation of audio attention with correctness", "r"
        ),
        "audio": plots.audio_attention(listening_signal(model, batch, heads=[(1, 0), (2, 3)]), batch),
        "patching": plots.patching_map(
            *patch_residual_by_position(model, batch, corrupted, metric), title="Residual patching"
        ),
        "curve": plots.curve_with_band(
            [0.5, 1, 2], [60, 70, 65], [55, 64, 58], [66, 76, 71], "Beta sweep", "beta", "accuracy (%)", name="steered"
        ),
        "lens": plots.logit_lens_plot(logit_lens(model, batch, [top]), ["a", "b", "c"]),
    }


def test_each_figure_renders(results, tmp_path):
    for name, fig in results.items():
        written = plots.save_figure(fig, name, tmp_path)
        png = tmp_path / f"{name}.png"
        assert png in written and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert f'src="{plots.PLOTLY_JS}"' in (tmp_path / f"{name}.html").read_text()
        assert fig.layout.title.text, f"{name} needs a title"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary files left"


def test_unknown_format_leaves_nothing(results, tmp_path):
    with pytest.raises(ValueError, match="unknown figure format 'gif'"):
        plots.save_figure(results["curve"], "x", tmp_path, formats=("gif",))
    assert list(tmp_path.iterdir()) == []


def test_missing_browser_still_writes_html_and_names_the_fix(results, tmp_path, monkeypatch):
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-such-chromium"))  # as on a machine without Chromium
    figures = {"curve": results["curve"], "lens": results["lens"]}
    written, problem = plots.save_figures(figures, tmp_path)
    assert problem is not None and "apt-get install chromium" in problem
    assert {p.name for paths in written.values() for p in paths} == {"curve.html", "lens.html"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curve.html", "lens.html", plots.PLOTLY_JS], (
        "no PNG and no temporary files"
    )
    with pytest.raises(plots.StaticExportUnavailable, match="PNG not written"):
        plots.save_figures(figures, tmp_path / "strict", static_required=True)


def test_vector_formats(results, tmp_path):
    written = plots.save_figure(results["heads"], "heads", tmp_path, formats=("pdf", "svg"))
    assert [p.name for p in written] == ["heads.pdf", "heads.svg"]
    assert (tmp_path / "heads.pdf").read_bytes()[:5] == b"%PDF-"
    svg = (tmp_path / "heads.svg").read_text()
    assert svg.lstrip().startswith("<svg") and "Correlation of audio attention" in svg  # text, not a bitmap


def test_marked_heads_and_words_on_axes(results):
    marked = plots.head_heatmap(np.zeros((3, 4)), "t", "r", marked={"specialists": [(1, 2), (2, 0)], "other": [(0, 3)]})
    marks = marked.data[1:]
    assert [list(m.x) for m in marks] == [["H2", "H0"], ["H3"]] and [list(m.y) for m in marks] == [["L1", "L2"], ["L0"]]
    assert marks[0].name == "specialists: L1H2, L2H0" and marks[0].marker.symbol != marks[1].marker.symbol
    assert list(results["lens"].data[0].x) == ["embeddings", "after layer 0", "after layer 1", "after layer 2"]
    audio = results["audio"]
    assert tuple(audio.layout.yaxis2.range) == (0, 1)  # absolute scale: a share of the final token's attention
    assert all("audio mass" in trace.name for trace in audio.data if trace.type == "scatter")


def test_patching_map_is_bounded_and_counts_what_it_clips():
    fig = plots.patching_map([[0.5, 1.8], [-2.0, 0.0]], ["Audio 1", "x"], "t")
    assert (fig.data[0].zmin, fig.data[0].zmax) == (-1, 1)
    assert "2 cells beyond ±1" in fig.layout.annotations[0].text and "2.00" in fig.layout.annotations[0].text
    assert list(fig.layout.xaxis.ticktext) == ["<b>[Audio 1]</b>", "x"]


def test_control_that_cannot_differ_is_named_not_drawn():
    fig = plots.control_distribution_plot([50, 50, 60, 70], 60, 50, "t", 10, not_drawn=["layer-matched: same layers"])
    assert [t.type for t in fig.data] == ["bar", "scatter", "scatter"]  # draws, their 5-95% band, the specialists
    assert list(fig.data[0].y) == [2, 1, 1] and "layer-matched" in fig.layout.annotations[0].text
    assert all(t.name for t in fig.data)  # every series (the band too) is in the legend


def test_control_bars_stand_at_their_accuracy_and_name_their_ties():
    """Overlaid, not grouped: each bar at the accuracy its draws reached (a tie sits on the specialists' line), and
    each legend entry carries the share of its draws that tie, the figure of the shipped result checked against the
    counts of its saved draws and their `tied`; the layer-matched note is under the chart."""
    from pathlib import Path

    from lens_audio.figures import _statistics_figures
    from lens_audio.paper.results import ExperimentResult

    result = ExperimentResult.load(Path(__file__).parents[3] / "figures" / "results.json")
    fig = _statistics_figures(result)["control_distribution"]
    bars = [t for t in fig.data if t.type == "bar"]
    assert fig.layout.barmode == "overlay" and len(bars) == len(result.controls) == 3
    for bar, (kind, control) in zip(bars, result.controls.items()):
        draws = np.asarray(control.accuracies, float)
        assert all(int(np.isclose(draws, x).sum()) == y for x, y in zip(bar.x, bar.y)), kind  # x: the true values
        assert sum(bar.y) == len(draws) and np.allclose(sorted(bar.x), sorted(set(draws.round(6)))), kind
        tied = 100 * np.mean([a == control.specialists_accuracy for a in control.accuracies])
        assert f"{tied:.0f}% of draws tie" in bar.name and f"{control.tied:.0f}% of draws tie" in bar.name, bar.name
    ties = [x for x in bars[0].x if np.isclose(x, result.control.specialists_accuracy)]
    assert ties and np.isclose(ties[0], fig.data[-1].x[0])  # the tied draws' bar on the specialists' red line
    assert "200 draws each" in fig.layout.title.text
    assert any(a.text.startswith("Layer-matched draws not drawn") for a in fig.layout.annotations)
