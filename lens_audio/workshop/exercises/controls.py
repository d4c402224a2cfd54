"""References for session 2's confound exercise (correlation within strata): the library's validity controls.

The checker compares a learner's answer with `lens_audio.analysis.validity`, whose pooled within-stratum r is
tested against regression residuals (`tests/unit/analysis/test_validity.py`); this module only shapes it for the
exercise's `[example, layer, head]` arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from jaxtyping import Bool, Float

from lens_audio.analysis.validity import demean_within, within_stratum_r

__all__ = ["demean_within", "within_stratum_pearson"]


def within_stratum_pearson(
    signal: Float[np.ndarray, "example ..."], correct: Bool[np.ndarray, " example"], strata: Sequence
) -> np.ndarray:
    """Pooled within-stratum r of every column of `signal` with correctness, in `signal`'s trailing shape: both
    variables centred on their stratum's mean, then one Pearson r (the partial correlation given the stratum)."""
    signal = np.asarray(signal, dtype=float)
    return within_stratum_r(signal.reshape(len(signal), -1), correct, strata).reshape(signal.shape[1:])
