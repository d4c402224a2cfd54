"""One process of the data-parallel tests: a sharded run, head scan, residual patching and fast-steering collection
on a tiny model, written as JSON.

Run alone it is the one-process reference; under `torchrun --nproc_per_node 2` each rank takes its share.
Usage: python tests/helpers/dp_worker.py BENCHMARK_JSON OUT_DIR [N_ITEMS]
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

from lens_audio import HookedAudioLM
from lens_audio.analysis.patching import normalized_logit_diff
from lens_audio.benchmark import load_mmau
from lens_audio.benchmark.parallel import (
    rank_and_size,
    sharded_map,
    sharded_patch_residual_by_position,
    sharded_run,
    sharded_scan_heads,
)
from lens_audio.inputs.offline_processor import build_offline_processor
from lens_audio.paper.fast_steering import FastSteering
from lens_audio.testing import tiny_hf_model


def main() -> None:
    benchmark, out = sys.argv[1], Path(sys.argv[2])
    n_items = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    torch.set_num_threads(1)
    processor = build_offline_processor(n_mels=16, chunk_seconds=2)
    hf, _ = tiny_hf_model(processor, seed=0, n_mels=16, chunk_seconds=2, n_heads=4, n_kv_heads=2, n_layers=2)
    model = HookedAudioLM.from_hf_model(hf, processor)
    items = load_mmau(benchmark)[:n_items]
    started = time.perf_counter()
    run = sharded_run(model, items, out / "run.jsonl", template="letters", mode="choice", batch_size=2,
                      progress=os.environ.get("DP_PROGRESS") == "1")
    run_seconds = time.perf_counter() - started
    batch = model.to_batch([i["audio_path"] for i in items[:2]], ["Which? A or B."] * 2)
    choice_ids = [[model.tokenizer.encode(c, add_special_tokens=False)[0] for c in "AB"]] * 2
    scan = sharded_scan_heads(model, batch, choice_ids, [0, 1], heads_per_pass=3)
    corrupted = batch.silence_twin()
    metric = normalized_logit_diff(model, batch, corrupted, [c[0] for c in choice_ids], [c[1] for c in choice_ids])
    patching, _ = sharded_patch_residual_by_position(model, batch, corrupted, metric, group_audio=False,
                                                     columns_per_pass=5)
    one_token = [{**item, "choices": ["A", "B"], "answer": "AB"[k % 2]} for k, item in enumerate(items)]
    fast = FastSteering.collect(model, one_token, "letters", batch_size=1)
    squares = sharded_map(lambda k: k * k, list(range(5)))
    rank, size = rank_and_size()
    if rank == 0:
        result = {
            "records": [{k: v for k, v in r.items() if k != "item_digests"} for r in run],
            "scan": [scan.margin_change.tolist(), scan.accuracy.tolist(), scan.baseline_margin, scan.baseline_accuracy],
            "patching": patching.tolist(),
            "fast": [fast.points_audio.tolist(), fast.points_silence.tolist(), fast.head_delta.tolist()],
            "squares": squares,
        }
        (out / f"result-{size}.json").write_text(json.dumps(result))
        (out / f"seconds-{size}.json").write_text(json.dumps({"sharded_run": run_seconds, "items": len(items)}))
    import torch.distributed as dist

    if dist.is_initialized():  # leave together, with gloo's threads stopped (else a rank may abort at exit)
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
