"""Device check of `device_map`: each family's random model split over GPU, CPU and disk equals it on one GPU.

On a GPU machine (a minute or two)::

    python benchmarks/device_map_check.py --out benchmarks/results/device_map_check.json

For each family a random model (float32, 4 decoder layers) is saved, loaded whole on `--device`, and loaded with
a map that puts the audio encoder, the embedding and the first half of the blocks on `--device`, the rest of the
blocks on "cpu" and the unembedding on "disk". Reported per family: max |logit difference|, max difference over
every cached `resid_post`, whether 8 greedy tokens and a steered forward agree, and where the modules went.
With `--device cpu` the same runs on the CPU (GPU entries become "cpu"), as a dry run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from lens_audio import HookedAudioLM, make_batch
from lens_audio.analysis.steering import adaptive_direction, steer
from lens_audio.inputs.offline_processor import build_offline_processor
from lens_audio.testing import save_checkpoint, tiny_hf_model

N_LAYERS = 4


def split_map(device: str) -> dict[str, str]:
    first = device if device != "cpu" else "cpu"
    blocks = {f"blocks.{i}": first if i < N_LAYERS // 2 else "cpu" for i in range(N_LAYERS)}
    return {"audio": first, "embed": first, **blocks, "ln_final": "cpu", "unembed": "disk"}


def check(family: str, device: str, folder: Path) -> dict:
    processor = build_offline_processor(n_mels=16, chunk_seconds=2, family=family)
    hf, _ = tiny_hf_model(processor, seed=0, family=family, n_layers=N_LAYERS, n_mels=16, chunk_seconds=2)
    save_checkpoint(hf, processor, folder / family)
    whole = HookedAudioLM.from_pretrained(folder / family, device=device)
    device_map = split_map(device)
    spread = HookedAudioLM.from_pretrained(folder / family, device_map=device_map, offload_folder=folder / "off")
    spread.processor = whole.processor = processor
    clips = [torch.randn(24000).numpy() * 0.1, torch.randn(8000).numpy() * 0.1]
    batch = make_batch(processor, clips, ["What is it?", "Music?"], sampling_rate=16000).to(device)
    with torch.no_grad():
        a, cache_a = whole.run_with_cache(batch, names_filter=lambda n: n.endswith("resid_post"))
        b, cache_b = spread.run_with_cache(batch, names_filter=lambda n: n.endswith("resid_post"))
        resid = max(float((cache_a[n] - cache_b[n].to(device)).abs().max()) for n in cache_a.keys())
        direction = adaptive_direction(whole, batch, layers=[1, 2])
        with steer(whole, direction, 2.0):
            steered_a = whole(batch)
        with steer(spread, direction, 2.0):
            steered_b = spread(batch)
    kwargs = dict(max_new_tokens=8, eos_token_id=[], do_sample=False)
    return {
        "device_map": device_map,
        "max_abs_logit_diff": float((a - b.to(device)).abs().max()),
        "max_abs_resid_post_diff": resid,
        "generate_equal": bool(
            torch.equal(whole.generate(batch, **kwargs), spread.generate(batch, **kwargs).to(device))
        ),
        "max_abs_steered_diff": float((steered_a - steered_b.to(device)).abs().max()),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        report = {f: check(f, args.device, Path(tmp)) for f in ("qwen2-audio", "audioflamingo3", "voxtral")}
    text = json.dumps({"device": args.device, "families": report}, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
