"""Plain-numpy references for session 2's confound exercise: correlation within strata.

A small reference for the checker, built on the library's Pearson r (`pearson_columns`); once the experiment's
validity controls (stratified r, silence-twin r) are in `lens_audio.analysis`, this should call them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from jaxtyping import Bool, Float

from lens_audio.analysis.statistics import pearson_columns


def demean_within(values: Float[np.ndarray, "example ..."], strata: Sequence) -> Float[np.ndarray, "example ..."]:
    """`values` minus the mean of its own stratum (over the examples of that stratum), for every example."""
    values = np.asarray(values, dtype=float)
    labels = np.asarray([str(s) for s in strata])
    out = values.copy()
    for label in np.unique(labels):
        rows = labels == label
        out[rows] -= values[rows].mean(0)
    return out


def within_stratum_pearson(
    signal: Float[np.ndarray, "example ..."], correct: Bool[np.ndarray, " example"], strata: Sequence
) -> np.ndarray:
    """Pooled within-stratum r: both variables centred on their stratum's mean, then one Pearson r.

    This equals the partial correlation of `signal` and `correct` given the stratum (one indicator per stratum):
    what is left of the correlation once the differences between strata are taken out.
    """
    x = demean_within(signal, strata)
    y = demean_within(np.asarray(correct, dtype=float), strata)
    return pearson_columns(x.reshape(len(x), -1), y).reshape(x.shape[1:])
