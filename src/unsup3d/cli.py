"""Console scripts ``lightning`` and ``unsup3d``: LightningCLI in subclass mode.

Any stage (a ``LightningModule`` under ``unsup3d.stages``) and any data module (under
``unsup3d.data.datamodules``) is picked by its ``class_path`` in a YAML config, so
``lightning fit --config experiments/<recipe>.yaml`` runs every recipe without a registry.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI


class Unsup3DCLI(LightningCLI):
    """LightningCLI with unsup3d's defaults: subclass mode for model and data, and a saved config
    that a second run into the same log folder overwrites instead of refusing to start."""

    def __init__(self, args: Sequence[str] | None = None, run: bool = True, **kwargs) -> None:
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
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
