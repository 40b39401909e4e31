"""benchmarks/svc_labels.py: the label tables it compares."""

from __future__ import annotations

import torch

from benchmarks.svc_labels import label_table


def test_label_table_pads_and_cuts_to_the_scene() -> None:
    labels = torch.tensor([3, 1, 2], dtype=torch.int16)
    assert label_table(labels, 5).tolist() == [3, 1, 2, -1, -1]
    assert label_table(labels, 2).tolist() == [3, 1]
