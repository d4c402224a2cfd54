"""The MMAU harness: loading MMAU-format files, prompt templates, the official scoring rule, accuracy tables, the
resumable runner with its run files and manifests, data-parallel runs, and calibration/dev/test splits for any
benchmark (`splits`), conflict suites (`conflict_suite`) and MMAR / MMAU-Pro conversion (`formats`).

    from lens_audio.benchmark import load_mmau, render_prompt, run_benchmark
"""

from lens_audio.benchmark.conflict import ConflictMeasures, conflict_measures
from lens_audio.benchmark.conflict_suite import conflict_suite, write_conflict_suite
from lens_audio.benchmark.formats import convert_benchmark
from lens_audio.benchmark.manifest import RunManifest, RunMismatchError
from lens_audio.benchmark.mmau import BenchmarkError, load_mmau
from lens_audio.benchmark.parallel import (
    sharded_map,
    sharded_patch_residual_by_position,
    sharded_run,
    sharded_scan_heads,
)
from lens_audio.benchmark.prompts import TEMPLATES, prompt_function, render_prompt
from lens_audio.benchmark.report import accuracy_with_ci, grouped_accuracy, mmau_report
from lens_audio.benchmark.run_file import RunLockedError, read_records
from lens_audio.benchmark.run_result import RunResult
from lens_audio.benchmark.runner import run_benchmark
from lens_audio.benchmark.scoring import extract_answer, score_output, string_match
from lens_audio.benchmark.splits import BenchmarkSplit, make_split, read_split, split_from_field

__all__ = [
    "BenchmarkError",
    "ConflictMeasures",
    "BenchmarkSplit",
    "RunLockedError",
    "RunManifest",
    "RunMismatchError",
    "RunResult",
    "TEMPLATES",
    "accuracy_with_ci",
    "conflict_measures",
    "conflict_suite",
    "convert_benchmark",
    "extract_answer",
    "grouped_accuracy",
    "load_mmau",
    "make_split",
    "mmau_report",
    "prompt_function",
    "read_records",
    "read_split",
    "render_prompt",
    "run_benchmark",
    "score_output",
    "sharded_map",
    "sharded_patch_residual_by_position",
    "sharded_run",
    "sharded_scan_heads",
    "split_from_field",
    "string_match",
    "write_conflict_suite",
]
