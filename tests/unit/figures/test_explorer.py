"""The explorer's numbers equal the analysis functions' own; the notebook widget's callbacks redraw what they should."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from plotly.callbacks import Points
from plotly.offline import get_plotlyjs

from lens_audio import HookedAudioLM
from lens_audio.analysis import adaptive_direction, listening_signal, steer
from lens_audio.benchmark import load_mmau
from lens_audio.cli import main
from lens_audio.explorer import explore, explorer_data
from lens_audio.organisms import BENCHMARK_V1
from lens_audio.organisms.benchmark_writer import SETS_JSON_NAME, write_set_benchmark

# tolerances per dtype: the explorer runs the prompt and its silence twin as one batch of two, the references one at
# a time
TOLERANCE = {"float32": 1e-5, "bfloat16": 3e-2}


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def model(request):
    return HookedAudioLM.from_pretrained("workshop", dtype=request.param)


@pytest.fixture(scope="module")
def one_clip_item():
    return next(i for i in load_mmau(BENCHMARK_V1, split="test") if i["hint"] == "conflicting")  # one clip per prompt


@pytest.fixture(scope="module")
def three_clip_item(tmp_path_factory):
    folder = write_set_benchmark(
        tmp_path_factory.mktemp("sets") / "b",
        seed=0,
        partitions=(("test", 2, ("none", "conflicting")),),
        progress=False,
    )
    return next(i for i in load_mmau(folder / SETS_JSON_NAME) if i["target_clip"] == 2 and i["hint"] == "conflicting")


@torch.no_grad()
def steered_option_probabilities(model, batch, option_ids, layers, beta):
    """The reference: hook-based steered forwards of the prompt and its silence twin, softmax over the options."""
    direction = adaptive_direction(model, batch, layers)
    out = []
    for b in (batch, batch.silence_twin()):
        with steer(model, direction, beta):
            out.append(model(b)[0, -1, option_ids].float().softmax(-1))
    return out


@pytest.mark.parametrize("which", ["one_clip_item", "three_clip_item"])
def test_explorer_data_equals_the_analysis_functions(model, which, request):
    item = request.getfixturevalue(which)
    atol = TOLERANCE[str(model.dtype).removeprefix("torch.")]
    data = explorer_data(model, item)
    batch = data.batch
    n_clips = len(item["audio_path"]) if isinstance(item["audio_path"], list) else 1
    assert len(data.clips) == n_clips and [c.span for c in data.clips] == [tuple(s) for s in batch.audio_spans[0]]
    assert data.target_clip == (item.get("target_clip", 0) - 1 if "target_clip" in item else None)
    heads = [(1, 0), (data.n_layers - 1, data.n_heads - 1)]
    signal = listening_signal(model, batch, heads=heads)
    assert torch.allclose(data.audio_mass, signal.audio_mass[0], atol=atol)
    for i, (layer, head) in enumerate(heads):
        reference = signal.rows[0, i]
        assert torch.allclose(data.attention(layer, head), reference, atol=atol)
        audio = torch.cat([torch.as_tensor(a) for a in data.clip_attention(layer, head)])
        assert torch.allclose(audio, reference[batch.audio_mask[0].cpu()], atol=atol)
        assert sum(v for _, v in data.text_attention(layer, head)) == pytest.approx(1.0, abs=10 * atol)
    for layers, beta in [([1, 2], 1.5), ([data.n_layers - 1], -1.0), ([0], 0.0)]:
        direction = adaptive_direction(model, batch, layers)[0].float().cpu()
        assert torch.allclose(data.direction(layers).float(), direction, atol=atol * (1 + direction.abs().max()))
        audio, silence = data.option_probabilities(beta, layers)
        ref_audio, ref_silence = steered_option_probabilities(model, batch, data.option_ids, layers, beta)
        assert torch.allclose(audio, ref_audio.cpu(), atol=atol) and torch.allclose(
            silence, ref_silence.cpu(), atol=atol
        )
    assert data.options == item["choices"]


def test_widget_callbacks_redraw_with_the_analysis_numbers(model, three_clip_item):
    atol = TOLERANCE[str(model.dtype).removeprefix("torch.")]
    explorer = explore(model, three_clip_item, head=(0, 0), layers=[1])
    data, batch = explorer.data, explorer.data.batch
    before = explorer.attention_traces()
    layer, head = data.n_layers - 1, 1
    row = listening_signal(model, batch, heads=[(layer, head)]).rows[0, 0]
    forwards = []
    with model.hooks(fwd_hooks=[("hook_embed", lambda x, hook: forwards.append(1))]):  # no control may run the model
        explorer.head_map.data[0]._dispatch_on_click(
            Points(point_inds=[[layer, head]], xs=[head], ys=[layer], trace_name="", trace_index=0), None
        )
        assert explorer.head == (layer, head) and explorer.head_menu.value == (layer, head)
        assert list(explorer.head_map.data[1].y) == [layer] and list(explorer.head_map.data[1].x) == [head]
        shown = explorer.attention_traces()
        assert shown != before and len(shown) == 3
        for trace, (start, end) in zip(shown, batch.audio_spans[0]):
            assert np.allclose(trace, row[start:end].numpy(), atol=atol)
        explorer.head_menu.value = (2, 1)  # the dropdown goes through the same callback
        assert explorer.head == (2, 1) and "L2H1" in explorer.timeline.layout.title.text
        explorer.beta_slider.value = 2.0
        explorer.layer_menu.value = (1, 3)
    assert not forwards
    assert explorer.beta == 2.0 and explorer.layers == [1, 3]
    reference = steered_option_probabilities(model, batch, data.option_ids, [1, 3], 2.0)
    for bars, ref in zip(explorer.option_bars(), reference):
        assert np.allclose(bars, ref.cpu().numpy(), atol=atol)
    assert "beta = 2" in explorer.options.layout.title.text
    with pytest.raises(ValueError, match="does not exist"):
        explorer.select_head(data.n_layers, 0)
    with pytest.raises(ValueError, match="non-empty"):
        explorer.set_layers([])


def test_explorer_takes_a_batch_and_refuses_what_it_cannot_show(model, one_clip_item):
    batch = model.to_batch([one_clip_item["audio_path"]] * 2, "What is the main sound?")
    data = explorer_data(model, batch)
    assert data.item is None and len(data.clips) == 2 and len(data.options) == 5
    if model.dtype == torch.float32:  # a bare batch tracks the model's top next tokens (bfloat16 may reorder near-ties)
        assert data.option_ids == model(batch)[0, -1].topk(5).indices.tolist()
    with pytest.raises(ValueError, match="one example"):
        explorer_data(model, model.to_batch([one_clip_item["audio_path"]] * 2, ["a", "b"]))
    with pytest.raises(ValueError, match="audio"):
        explorer_data(model, model.to_batch([], prompt="text only"))


def test_cli_writes_a_self_contained_page(tmp_path, capsys, one_clip_item):
    out = tmp_path / "page.html"
    assert main(["explore", "--item", one_clip_item["id"], "--benchmark", str(BENCHMARK_V1), "--out", str(out)]) == 0
    page = out.read_text()
    assert "wrote" in capsys.readouterr().out
    assert get_plotlyjs() in page  # plotly.js inlined; outside it nothing is loaded from elsewhere
    ours = page.replace(get_plotlyjs(), "")
    assert not re.search(r"<script[^>]*\bsrc=|https?://", ours) and "data:audio/wav;base64," in ours
    assert one_clip_item["question"] in page and "__lens_select_head" in page
    assert main(["explore", "--item", "no-such-item", "--benchmark", str(BENCHMARK_V1), "--out", str(out)]) == 1
    assert "no item 'no-such-item'" in capsys.readouterr().err


def synced_array(value) -> np.ndarray:
    """A number array as a widget's state carries it (plotly's serializer: `{"dtype", "shape", "buffer"}`)."""
    if isinstance(value, dict):
        return np.frombuffer(bytes(value["buffer"]), dtype=value["dtype"]).reshape(value["shape"]).astype(float)
    return np.asarray(value, dtype=float)


def test_a_reloaded_view_shows_what_the_controls_show(model, three_clip_item):
    """A browser reload on a running kernel rebuilds each view from its widget's synced state: after the slider,
    the head menu and the layer menu moved, that state (what `get_state` sends a new view) draws the same beta,
    layers and head as the controls, not the figures the widget was built with."""
    from lens_audio.explorer import charts

    explorer = explore(model, three_clip_item, head=(0, 0), layers=[1])
    built = explorer.options.get_state()["_widget_layout"]["title"]["text"]
    explorer.beta_slider.value = 1.0
    explorer.head_menu.value = (2, 1)
    explorer.layer_menu.value = (1, 3)
    assert explorer.beta_slider.get_state()["value"] == 1.0 and list(explorer.layer_menu.get_state()["index"]) == [1, 3]
    options, timeline, heads = (w.get_state() for w in (explorer.options, explorer.timeline, explorer.head_map))
    title = options["_widget_layout"]["title"]["text"]
    assert title == charts.options_title(1.0, [1, 3]) != built  # the chart's title follows the slider
    for synced, shown in zip(options["_widget_data"][:2], explorer.option_bars()):
        assert np.allclose(synced_array(synced["y"]), shown)
    assert timeline["_widget_layout"]["title"]["text"] == charts.head_title(explorer.data, 2, 1)
    n = len(explorer.data.clips)
    for synced, shown in zip(timeline["_widget_data"][n:], explorer.attention_traces()):
        assert np.allclose(synced_array(synced["y"]), shown)
    assert list(heads["_widget_data"][1]["x"]) == [1] and list(heads["_widget_data"][1]["y"]) == [2]
