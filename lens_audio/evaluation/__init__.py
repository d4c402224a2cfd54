"""Moved in 0.2: the MMAU harness is `lens_audio.benchmark`, the paper's experiment `lens_audio.paper`.

This forwarding package keeps old imports working for one release (`from lens_audio.evaluation import load_mmau`,
`from lens_audio.evaluation.prompts import render_prompt`, ...), with a `DeprecationWarning` naming the new place.
"""

import importlib
import sys
import warnings

MOVED = {
    "mmau": "lens_audio.benchmark.mmau",
    "templates": "lens_audio.benchmark.templates",
    "prompts": "lens_audio.benchmark.prompts",
    "scoring": "lens_audio.benchmark.scoring",
    "report": "lens_audio.benchmark.report",
    "runner": "lens_audio.benchmark.runner",
    "run_file": "lens_audio.benchmark.run_file",
    "manifest": "lens_audio.benchmark.manifest",
    "parallel": "lens_audio.benchmark.parallel",
    "profile": "lens_audio.paper.profile",
    "experiment": "lens_audio.paper.experiment",
    "controls": "lens_audio.paper.controls",
    "results": "lens_audio.paper.results",
    "fast_steering": "lens_audio.paper.fast_steering",
    "locate": "lens_audio.paper.locate",
}

warnings.warn(
    "lens_audio.evaluation moved: import the harness from lens_audio.benchmark and the experiment from "
    "lens_audio.paper (this forwarding package goes in the next release).",
    DeprecationWarning,
    stacklevel=2,
)
for _old, _new in MOVED.items():
    sys.modules[f"{__name__}.{_old}"] = importlib.import_module(_new)
load_mmau = importlib.import_module("lens_audio.benchmark").load_mmau
