"""Teaching: the workshop sessions' checkers (`lens_audio.workshop.exercises`, used by `notebooks/workshop/`).

The models the sessions use are the organisms (`lens_audio.organisms`).
"""

import warnings as _warnings

# Names this package held before 0.2, when it also shipped the models; they forward to `lens_audio.organisms` for
# one release.
_MOVED = ("BENCHMARK", "BENCHMARK_CHAINS", "BENCHMARK_SETS", "BENCHMARK_V1", "CHECKPOINT", "CHECKPOINT_CHAINS",
          "CHECKPOINT_SETS", "CHECKPOINT_V1", "SAES", "benchmark_for")


def __getattr__(name: str):
    if name in _MOVED:
        _warnings.warn(f"lens_audio.workshop.{name} moved to lens_audio.organisms.{name} (the models are organisms; "
                       "lens_audio.workshop is the course).", DeprecationWarning, stacklevel=2)
        import lens_audio.organisms as organisms

        return getattr(organisms, name)
    raise AttributeError(f"module 'lens_audio.workshop' has no attribute {name!r}")
