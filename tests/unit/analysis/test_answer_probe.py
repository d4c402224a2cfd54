"""`answer_probe`: the probe of an answer's class among each item's options, at every point of the final position's
residual stream (the arrival stage's and the acceptance checks'), equal to `probe_accuracy` called by hand."""

from __future__ import annotations

import numpy as np
import torch

from lens_audio.analysis import answer_probe, probe_accuracy


def test_answer_probe_is_probe_accuracy_at_each_point_and_says_when_it_cannot_fit():
    rng = np.random.default_rng(0)
    names = ["bell", "drums", "flute", "rain", "dog"]
    choices = [list(rng.choice(names, size=4, replace=False)) for _ in range(60)]
    answers = [c[int(rng.integers(4))] for c in choices]
    groups = [i // 3 for i in range(60)]
    points = torch.randn(60, 3, 8)
    points[:, 2, :5] += 5 * torch.nn.functional.one_hot(torch.tensor([names.index(a) for a in answers]), 5)
    by_point, chance, note = answer_probe(points, choices, answers, groups, folds=4, l2=0.01)
    assert note is None and chance == 25.0 and len(by_point) == 3
    classes = sorted(set(names))  # by hand: labels among all option texts, each item restricted to its own
    labels = [classes.index(a) for a in answers]
    options = np.array([[c in item for c in classes] for item in choices])
    for p in range(3):
        assert by_point[p] == probe_accuracy(points[:, p], labels, options, groups, 4, 0.01)
    assert by_point[2] > 90 > by_point[0] + 30  # the planted class is read where it was planted
    assert answer_probe(points[:10], choices[:10], answers[:10], groups[:10])[2].endswith("items (at least 20)")
    assert "group(s)" in answer_probe(points, choices, answers, [0] * 60)[2]
    assert "distinct options" in answer_probe(points, choices, answers, groups, max_classes=4)[2]
