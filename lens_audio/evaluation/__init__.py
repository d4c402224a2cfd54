"""Benchmarks in MMAU's format: loading and scoring."""

from lens_audio.evaluation.mmau import load_mmau

__all__ = ["load_mmau"]
