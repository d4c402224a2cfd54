"""Checkers for the workshop sessions (`notebooks/workshop/`): one module per session, plus the setup check.

Each `test_*` function takes the learner's implementation, runs it on real inputs, compares it with a reference
computed another way (usually a library function of `lens_audio.analysis`), and on a mismatch raises an
`AssertionError` that says what went wrong (for the usual mistakes: which axis, which position, which sign).
Nothing else in the package imports these modules.
"""

from lens_audio.workshop.exercises.setup import check_setup

__all__ = ["check_setup"]
