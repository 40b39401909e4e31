"""benchmarks/svc_labels.py: the units' impurity against a loop, and the label tables it compares."""

from __future__ import annotations

from collections import Counter

import torch

from benchmarks.svc_labels import label_table, unit_impurity


def test_unit_impurity_counts_points_outside_their_units_majority_class() -> None:
    g = torch.Generator().manual_seed(0)
    unit = torch.randint(-1, 30, (2000,), generator=g)
    segment = torch.randint(-1, 6, (2000,), generator=g)
    expect_wrong = expect_all = 0
    for u in set(unit.tolist()) - {-1}:
        classes = [s for uu, s in zip(unit.tolist(), segment.tolist(), strict=True) if uu == u and s >= 0]
        if classes:
            expect_all += len(classes)
            expect_wrong += len(classes) - Counter(classes).most_common(1)[0][1]
    assert unit_impurity(unit, segment) == (expect_wrong, expect_all)
    pure = unit_impurity(torch.tensor([0, 0, 1, 1, -1]), torch.tensor([2, 2, 3, 3, 1]))
    assert pure == (0, 4)


def test_label_table_pads_and_cuts_to_the_scene() -> None:
    labels = torch.tensor([3, 1, 2], dtype=torch.int16)
    assert label_table(labels, 5).tolist() == [3, 1, 2, -1, -1]
    assert label_table(labels, 2).tolist() == [3, 1]
