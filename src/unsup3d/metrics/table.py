"""The logged metrics of a split as a small printed table (``unsup3d evaluate``, the quickstart)."""

from __future__ import annotations


def format_metrics(metrics: dict, prefix: str = "val") -> str:
    """A small table of ``<prefix>/miou``, ``<prefix>/acc`` and the per-class IoUs in ``metrics``."""
    lines = [f"{'mIoU':>16}  {float(metrics[f'{prefix}/miou']) * 100:6.2f}"]
    lines.append(f"{'accuracy':>16}  {float(metrics[f'{prefix}/acc']) * 100:6.2f}")
    for key in sorted(k for k in metrics if k.startswith(f"{prefix}/iou/")):
        lines.append(f"{key.split('/')[-1]:>16}  {float(metrics[key]) * 100:6.2f}")
    return "\n".join(lines)
