"""The listening-signal pass against caching every decoder attention pattern, on the same model and inputs.

`listening_signal` computes only the final query row of each head from hooked
queries and keys while the model runs its fast attention path; the
alternative is `run_with_cache` of every `blocks.{L}.attn.hook_pattern`
(explicit attention, [batch, head, pos, pos] per layer) and summing the final
row over audio positions. Both give the same numbers (see
tests/unit/analysis/test_listening.py). Reported: median wall time and peak added memory
(Linux VmHWM, reset before each measurement), as ratios.

Usage: python benchmarks/bench_listening_signal.py [--seconds 30] [--repeats 5]
Writes benchmarks/results/listening_signal.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from lens_audio.timing import CPU_BENCHMARK_CONFIG as CONFIG
from lens_audio.timing import interleaved_medians, peak_added_bytes

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="clip length (the token count grows 25 per second)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "listening_signal.json"))
    args = parser.parse_args()

    from lens_audio import HookedAudioLM, make_batch
    from lens_audio.analysis import listening_signal
    from lens_audio.testing import tiny_hf_model

    hf, processor = tiny_hf_model(**CONFIG)
    model = HookedAudioLM.from_hf_model(hf, processor).eval()
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(int(16000 * args.seconds)).astype(np.float32) * 0.1 for _ in range(2)]
    batch = make_batch(processor, clips, ["What is the sound?", "Describe it."], sampling_rate=16000)
    patterns = lambda name: name.startswith("blocks.") and name.endswith("attn.hook_pattern")

    def via_cache():
        _, cache = model.run_with_cache(batch, names_filter=patterns)
        rows = torch.arange(batch.batch_size)
        return torch.stack(
            [
                (cache["pattern", l][rows, :, batch.final_position] * batch.audio_mask[:, None]).sum(-1)
                for l in range(model.cfg.n_layers)
            ],
            1,
        )

    contenders = {
        "listening_signal": lambda: listening_signal(model, batch).audio_mass,
        "run_with_cache_patterns": via_cache,
    }
    with torch.no_grad():
        assert torch.allclose(contenders["listening_signal"](), contenders["run_with_cache_patterns"](), atol=1e-5)
        seconds = interleaved_medians(contenders, args.repeats)
        memory = {name: peak_added_bytes(fn) for name, fn in contenders.items()}
    report = {
        "tokens": list(batch.input_ids.shape),
        "audio_tokens_per_example": int(batch.audio_mask[0].sum()),
        "seconds": seconds,
        "peak_added_bytes": memory,
        "time_ratio_listening_over_cache": round(seconds["listening_signal"] / seconds["run_with_cache_patterns"], 3),
        "memory_ratio_listening_over_cache": round(
            memory["listening_signal"] / max(1, memory["run_with_cache_patterns"]), 3
        ),
        "machine": {"threads": torch.get_num_threads(), "torch": torch.__version__},
    }
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
