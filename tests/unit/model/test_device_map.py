"""Models spread over devices with accelerate: a random model dispatched with a device_map that keeps some
modules on the CPU and offloads others to disk gives what the same model in one place gives."""

from __future__ import annotations

import pytest
import torch

from lens_audio import HookedAudioLM
from lens_audio.analysis.listening import listening_signal
from lens_audio.analysis.steering import adaptive_direction, steer
from lens_audio.testing import save_checkpoint, tiny_hf_model

SPLIT = {"audio": "cpu", "embed": "cpu", "blocks.0": "cpu", "blocks.1": "disk", "blocks.2": "disk",
         "ln_final": "cpu", "unembed": "disk"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory, processor):
    hf, _ = tiny_hf_model(processor, seed=7, n_heads=4, n_kv_heads=2, n_layers=3)
    return save_checkpoint(hf, processor, tmp_path_factory.mktemp("dm") / "tiny")


@pytest.fixture(scope="module")
def pair(folder, tmp_path_factory):
    whole = HookedAudioLM.from_pretrained(folder)
    spread = HookedAudioLM.from_pretrained(folder, device_map=SPLIT, offload_folder=tmp_path_factory.mktemp("off"))
    return whole, spread


def test_weights_are_really_offloaded(pair):
    _, spread = pair
    assert spread.blocks[1].attn.q_proj.weight.device.type == "meta", "disk modules hold no weights in memory"
    assert spread.unembed.weight.device.type == "meta"
    assert spread.blocks[0].attn.q_proj.weight.device.type == "cpu"
    assert spread.hf_device_map == SPLIT and spread.device == torch.device("cpu")



WEIGHT_VIEWS = ["W_E", "W_U", "b_U", "W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O", "W_in", "W_gate", "W_out",
                "b_in", "b_out"]


def test_weight_views_of_offloaded_modules_read_the_real_weights(pair):
    """`W_U`, `W_Q`, `QK`, ... of modules on disk are loaded from accelerate's offload store, not meta tensors;
    the modules stay offloaded."""
    whole, spread = pair
    for name in WEIGHT_VIEWS:
        got = getattr(spread, name)
        assert got.device.type == "cpu" and torch.equal(got, getattr(whole, name)), name
    assert spread.W_U.abs().sum() > 0 and spread.W_Q[1].abs().sum() > 0
    for layer in (1, 2):  # both on disk
        for name in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_O"):
            assert torch.equal(getattr(spread.blocks[layer].attn, name), getattr(whole.blocks[layer].attn, name))
        assert torch.equal(spread.blocks[layer].mlp.W_out, whole.blocks[layer].mlp.W_out)
    assert torch.allclose(spread.QK.AB, whole.QK.AB) and torch.allclose(spread.OV.AB, whole.OV.AB)
    assert torch.equal(spread.tokens_to_residual_directions([3, 5]), whole.tokens_to_residual_directions([3, 5]))
    assert spread.unembed.weight.device.type == "meta" and spread.blocks[1].attn.o_proj.weight.device.type == "meta"


def test_per_head_results_of_offloaded_blocks(pair, two_example_batch):
    """`hook_result` projects through W_O without running o_proj's forward: an offloaded o_proj is loaded for it."""
    whole, spread = pair
    names = lambda name: name.endswith("hook_result")
    with torch.no_grad():
        _, cache = whole.run_with_cache(two_example_batch, names_filter=names)
        _, spread_cache = spread.run_with_cache(two_example_batch, names_filter=names)
    assert {"blocks.1.attn.hook_result", "blocks.2.attn.hook_result"} <= set(spread_cache.keys())
    for name in cache.keys():
        assert torch.allclose(cache[name], spread_cache[name], atol=1e-5, rtol=0), name


def test_logits_cache_and_generation_match(pair, two_example_batch):
    whole, spread = pair
    with torch.no_grad():
        logits, cache = whole.run_with_cache(two_example_batch)
        spread_logits, spread_cache = spread.run_with_cache(two_example_batch)
    assert torch.allclose(logits, spread_logits, atol=1e-6, rtol=0)
    assert set(cache.keys()) == set(spread_cache.keys()) and len(cache.keys()) > 50
    for name in cache.keys():
        assert torch.allclose(cache[name], spread_cache[name], atol=1e-5, rtol=0), name
    kwargs = dict(max_new_tokens=8, eos_token_id=[], do_sample=False)
    assert torch.equal(whole.generate(two_example_batch, **kwargs), spread.generate(two_example_batch, **kwargs))


def test_listening_and_steering_match(pair, two_example_batch):
    whole, spread = pair
    assert torch.allclose(listening_signal(whole, two_example_batch).audio_mass,
                          listening_signal(spread, two_example_batch).audio_mass, atol=1e-6)
    direction = adaptive_direction(whole, two_example_batch, layers=[1, 2])
    assert torch.allclose(direction, adaptive_direction(spread, two_example_batch, layers=[1, 2]), atol=1e-5)
    with torch.no_grad():
        with steer(whole, direction, beta=3.0):
            expected = whole(two_example_batch)
        with steer(spread, direction, beta=3.0):
            got = spread(two_example_batch)
        plain = whole(two_example_batch)
    assert not torch.allclose(expected[:, -1], plain[:, -1])
    assert torch.allclose(expected, got, atol=1e-6)


def test_an_offload_folder_can_be_shared_by_two_models(folder, tmp_path, processor, two_example_batch, pair):
    """accelerate reuses an index.json it finds: each model must offload into a folder of its own."""
    other, _ = tiny_hf_model(processor, seed=8, n_heads=4, n_kv_heads=2, n_layers=3)
    other_folder = save_checkpoint(other, processor, tmp_path / "other")
    first = HookedAudioLM.from_pretrained(folder, device_map=SPLIT, offload_folder=tmp_path / "off")
    second = HookedAudioLM.from_pretrained(other_folder, device_map=SPLIT, offload_folder=tmp_path / "off")
    with torch.no_grad():
        assert torch.allclose(first(two_example_batch), pair[0](two_example_batch), atol=1e-6)
        assert torch.allclose(second(two_example_batch), HookedAudioLM.from_pretrained(other_folder)(two_example_batch),
                              atol=1e-6)


def test_auto_map_within_a_memory_cap_offloads_to_disk(folder, tmp_path, two_example_batch, pair):
    auto = HookedAudioLM.from_pretrained(folder, device_map="auto", max_memory={"cpu": "600KB"},
                                         offload_folder=tmp_path)
    assert "disk" in auto.hf_device_map.values() and "cpu" in auto.hf_device_map.values()
    with torch.no_grad():
        assert torch.allclose(auto(two_example_batch), pair[0](two_example_batch), atol=1e-6)


def test_bad_maps_are_refused(folder):
    with pytest.raises(ValueError, match="not modules of this model"):
        HookedAudioLM.from_pretrained(folder, device_map={**SPLIT, "decoder": "cpu"})
    with pytest.raises(ValueError, match="offload_folder"):
        HookedAudioLM.from_pretrained(folder, device_map=SPLIT)
    incomplete = {k: v for k, v in SPLIT.items() if k != "unembed"}
    with pytest.raises(ValueError, match="unembed"):
        HookedAudioLM.from_pretrained(folder, device_map=incomplete)
    with pytest.raises(ValueError, match="leaves no device room"):
        HookedAudioLM.from_pretrained(folder, device_map="auto", max_memory={"cpu": "100KB"})


def test_experiment_cli_takes_a_device_map(tmp_path):
    """`lens-audio listen --device-map ...` (a stage of `experiment`, same arguments) gives the one-device numbers."""
    import json

    from lens_audio import cli
    from lens_audio.organisms.benchmark_writer import write_benchmark

    bench = write_benchmark(tmp_path / "bench", seed=5, n_clips=6, progress=False) / "workshop.json"
    n_layers = HookedAudioLM.from_pretrained("workshop").cfg.n_layers
    device_map = {"audio": "cpu", "embed": "cpu", "ln_final": "cpu", "unembed": "disk",
                  **{f"blocks.{i}": "disk" if i % 2 else "cpu" for i in range(n_layers)}}
    runs = {}
    for name, extra in {"one": [], "spread": ["--device-map", json.dumps(device_map),
                                             "--offload-folder", str(tmp_path / "off")]}.items():
        out = tmp_path / f"{name}.json"
        args = ["listen", "--benchmark", str(bench), "--out", str(tmp_path / name), "--json", str(out), *extra]
        assert cli.main(args) == 0
        runs[name] = json.loads(out.read_text())
    assert list((tmp_path / "off").glob("*/index.json")), "the disk modules were offloaded"
    assert runs["one"]["accuracy"] == runs["spread"]["accuracy"]
    assert torch.allclose(torch.tensor(runs["one"]["mean_audio_mass"]), torch.tensor(runs["spread"]["mean_audio_mass"]),
                          atol=1e-6)


def test_explore_takes_the_device_map(tmp_path, monkeypatch):
    """`lens-audio explore --device-map ... --offload-folder ...` loads the model through accelerate, as the
    experiment stages do, and writes the page from the offloaded model."""
    import json

    from lens_audio import cli, explorer

    made = {}
    real_page = explorer.explore_page

    def page(model, *args, **kwargs):
        made["model"] = model
        return real_page(model, *args, **kwargs)

    monkeypatch.setattr(explorer, "explore_page", page)
    split = {"audio": "cpu", "embed": "cpu", **{f"blocks.{i}": "disk" if i % 2 else "cpu" for i in range(8)},
             "ln_final": "cpu", "unembed": "disk"}
    out = tmp_path / "page.html"
    assert cli.main(["explore", "--item", "set0-cal-00000-a1-conflicting", "--device-map", json.dumps(split),
                     "--offload-folder", str(tmp_path / "off"), "--out", str(out)]) == 0
    model = made["model"]
    assert model.hf_device_map == split and model.unembed.weight.device.type == "meta"
    assert out.stat().st_size > 10_000
    args = cli.argparse.Namespace(device_map="auto", max_memory='{"0": "70GiB", "cpu": "1GiB"}', offload_folder="o")
    assert cli.placement_args(args) == {"device_map": "auto", "max_memory": {0: "70GiB", "cpu": "1GiB"},
                                        "offload_folder": "o"}
