"""The workshop model and its synthetic benchmark, shipped inside the package so everything runs offline.

`HookedAudioLM.from_pretrained("workshop")` loads `CHECKPOINT`; `BENCHMARK` is
the bundled MMAU-format benchmark (calibration, dev and test clips, each under
congruent, conflicting and no hint). Both are rebuilt by
`lens-audio workshop benchmark` and `lens-audio workshop train`.
"""

from pathlib import Path

CHECKPOINT = Path(__file__).parent / "checkpoint"
BENCHMARK = Path(__file__).parent / "data" / "workshop.json"
BENCHMARK_SEED = 0
BENCHMARK_CLIPS = 180



def make_readable(folder: Path) -> None:
    """Give a finished staging folder (mkdtemp makes it private) the usual permissions before it is renamed into place."""
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


__all__ = ["BENCHMARK", "BENCHMARK_CLIPS", "BENCHMARK_SEED", "CHECKPOINT", "make_readable"]
