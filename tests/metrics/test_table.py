"""The printed table of a split's metrics."""

from unsup3d.metrics import format_metrics


def test_format_metrics_lists_classes() -> None:
    """Every value x100 with two decimals, names right-aligned in 16 characters; the per-class IoUs
    sorted by name; keys of another split (``train/...``) and other ``val/`` keys left out. The lines
    are written out by hand."""
    metrics = {
        "val/miou": 0.5,
        "val/acc": 0.75,
        "val/iou/wall": 0.9,
        "val/iou/chair": 0.125,
        "train/iou/x": 0.3,
        "train/miou": 0.01,
        "val/loss": 2.0,
    }
    assert format_metrics(metrics).splitlines() == [
        "            mIoU   50.00",
        "        accuracy   75.00",
        "           chair   12.50",
        "            wall   90.00",
    ]


def test_format_metrics_reads_the_prefix_asked_for() -> None:
    """``prefix="train"``: the training keys, the validation ones left out."""
    metrics = {"train/miou": 0.25, "train/acc": 1.0, "train/iou/floor": 0.0625, "val/iou/wall": 0.9}
    assert format_metrics(metrics, prefix="train").splitlines() == [
        "            mIoU   25.00",
        "        accuracy  100.00",
        "           floor    6.25",
    ]
