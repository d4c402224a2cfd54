"""Memory and time of the batched head-ablation scan as a function of heads per forward pass.

Workshop model, 16 test clips (no hint), zero ablation of all heads. For each `heads_per_pass`
(1 = one head per forward): median wall time of the whole scan and the peak memory it adds (Linux
VmHWM, reset before each scan), plus a check that every setting gives the same numbers. The audio
encoder runs once per scan whatever `heads_per_pass` is, and each pass starts at its first ablated
layer; `speedup_vs_one_head_per_pass` is the ratio of the one-head-per-pass scan's time to each setting's,
`speedup_vs_plain_forwards` the ratio of the plain way's (a whole hooked forward per head, audio encoder
included, as `run_with_hooks` would do it; checked to give the same numbers) to each setting's.

Usage: python benchmarks/bench_ablation.py
Writes benchmarks/results/ablation.json.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from lens_audio.timing import peak_added_bytes

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from lens_audio import HookedAudioLM
    from lens_audio.analysis import scan_heads
    from lens_audio.benchmark import load_mmau
    from lens_audio.benchmark.prompts import render_prompt
    from lens_audio.organisms import BENCHMARK
    from lens_audio.paper.profile import profile_for

    model = HookedAudioLM.from_pretrained("workshop")
    items = [i for i in load_mmau(BENCHMARK, split="test") if i["hint"] == "none"][:16]
    prompt = profile_for("workshop").prompt
    batch = model.to_batch([i["audio_path"] for i in items], [render_prompt(i, prompt) for i in items])
    tok = model.tokenizer
    choices = [[tok.encode(c, add_special_tokens=False)[0] for c in i["choices"]] for i in items]
    answers = [i["choices"].index(i["answer"]) for i in items]
    report = {"examples": len(items), "heads": model.cfg.n_layers * model.cfg.n_heads, "by_heads_per_pass": {}}
    plain = plain_scan(model, batch, choices, answers)
    plain_times = []
    for _ in range(3):
        start = time.perf_counter()
        plain_scan(model, batch, choices, answers)
        plain_times.append(time.perf_counter() - start)
    report["plain_forward_per_head_seconds"] = round(statistics.median(plain_times), 3)
    reference = None
    for per_pass in (1, 4, 8, 24):
        run = lambda: scan_heads(model, batch, choices, answers, kind="zero", heads_per_pass=per_pass)
        scan = run()
        reference = scan if reference is None else reference
        assert torch.allclose(scan.margin_change, reference.margin_change, atol=1e-4)
        assert torch.allclose(scan.margin_change, plain, atol=1e-4)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        report["by_heads_per_pass"][per_pass] = {
            "forward_passes": -(-report["heads"] // per_pass),
            "seconds": round(statistics.median(times), 3),
            "peak_added_mib": round(peak_added_bytes(run) / 2**20, 1),
        }
    one = report["by_heads_per_pass"][1]["seconds"]
    for row in report["by_heads_per_pass"].values():
        row["speedup_vs_one_head_per_pass"] = round(one / row["seconds"], 2)
        row["speedup_vs_plain_forwards"] = round(report["plain_forward_per_head_seconds"] / row["seconds"], 2)
    report["machine"] = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    (ROOT / "benchmarks" / "results" / "ablation.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


@torch.no_grad()
def plain_scan(model, batch, choices, answers) -> torch.Tensor:
    """Zero-ablation margin change per head the plain way: one whole hooked forward per head."""
    rows, final = torch.arange(batch.batch_size), batch.final_position
    choice, answer = torch.tensor(choices), torch.tensor(answers)

    def margin(logits):
        scores = logits[rows, final][rows[:, None], choice]
        others = scores.clone()
        others[rows, answer] = float("-inf")
        return (scores[rows, answer] - others.max(-1).values).mean()

    base = margin(model(batch))
    table = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            def zero(z, hook, head=head):
                z = z.clone()
                z[:, :, head] = 0.0
                return z

            logits = model.run_with_hooks(batch, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero)])
            table[layer, head] = margin(logits) - base
    return table


if __name__ == "__main__":
    main()
