"""The printed table of a split's metrics."""

from unsup3d.metrics import format_metrics


def test_format_metrics_lists_classes() -> None:
    text = format_metrics({"val/miou": 0.5, "val/acc": 0.75, "val/iou/wall": 0.9})
    assert "50.00" in text and "75.00" in text and "wall" in text
