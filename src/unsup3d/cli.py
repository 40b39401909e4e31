"""Console scripts ``lightning`` and ``unsup3d``: LightningCLI in subclass mode.

Any stage (a ``LightningModule`` under ``unsup3d.stages``) and any data module (under
``unsup3d.data.datamodules``) is picked by its ``class_path`` in a YAML config, so
``lightning fit --config experiments/<recipe>.yaml`` runs every recipe without a registry.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI


def set_cpu_threads() -> int:
    """Named fallback for CPU-only machines: run torch on ``UNSUP3D_CPU_THREADS`` threads (default 1).

    The built-in sparse convolution runs many small gather/scatter ops; intra-op threads cost more
    than they give there (the quickstart took 3.5 min on 1 thread and ~5x longer on 2 on a 2-core
    machine). ``OMP_NUM_THREADS``, when set, is respected; with CUDA nothing is changed. Returns the
    number of threads torch uses.
    """
    if torch.cuda.is_available() or "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    torch.set_num_threads(max(1, int(os.environ.get("UNSUP3D_CPU_THREADS", "1"))))
    return torch.get_num_threads()


class Unsup3DCLI(LightningCLI):
    """LightningCLI with unsup3d's defaults: subclass mode for model and data, and a saved config
    that a second run into the same log folder overwrites instead of refusing to start."""

    def __init__(self, args: Sequence[str] | None = None, run: bool = True, **kwargs) -> None:
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        set_cpu_threads()
        super().__init__(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=args,
            run=run,
            auto_configure_optimizers=False,
            **kwargs,
        )


def lightning_main(args: Sequence[str] | None = None) -> None:
    """Entry point of the ``lightning`` command (Lightning >= 2.5 ships none of its own)."""
    Unsup3DCLI(args=args)


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the ``unsup3d`` command."""
    Unsup3DCLI(args=args)


if __name__ == "__main__":
    main(sys.argv[1:])
