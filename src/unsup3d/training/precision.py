"""Float32 islands inside mixed precision (``--trainer.precision bf16-mixed``).

Lightning runs ``training_step``, ``validation_step`` and ``test_step`` under ``torch.autocast``; the
backbone's matrix multiplies then run in bfloat16, and so would everything after them. The parts
whose result is compared, summed or rounded (classifier logits that feed cross-entropy, argmax or
super-voxel pooling; BYOL's ``2 - 2 cos`` near 0; the clustering pass, whose K-means and pseudo labels
depend on small differences of cosines) run in float32 through :func:`float32`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

__all__ = ["float32", "to_float32"]


@contextmanager
def float32(device: torch.device | str) -> Iterator[None]:
    """Autocast off for ``device``'s type in the block: its ops run in their inputs' dtype, which the
    caller makes float32 (:func:`to_float32`)."""
    device_type = device.type if isinstance(device, torch.device) else torch.device(device).type
    with torch.autocast(device_type, enabled=False):
        yield


def to_float32(x: Tensor) -> Tensor:
    """``x`` as float32 where it is a lower-precision float (float64 and integers stay as they are)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
