"""What the stages share: default backbones, loading a backbone from another stage's checkpoint,
and this rank's share of a data module's unaugmented training scenes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from lightning.pytorch import LightningModule

from unsup3d.models import MinkUNet, Res16UNet


def default_pointdc_backbone() -> torch.nn.Module:
    """PointDC's Res16UNet on its release's 6 input channels (RGB, centred coordinates)."""
    return Res16UNet(in_channels=6)


def default_stssl_backbone() -> torch.nn.Module:
    """STSSL's MinkUNet on x, y, z and intensity."""
    return MinkUNet(in_channels=4)


def build_backbone(
    backbone: torch.nn.Module | None,
    init_checkpoint: str | Path | None,
    default: Callable[[], torch.nn.Module],
) -> torch.nn.Module:
    """The stage's backbone: the one given (or ``default()``), with the ``backbone.*`` weights of
    ``init_checkpoint`` loaded into it when one is named."""
    net = backbone if backbone is not None else default()
    if init_checkpoint:
        load_backbone(net, init_checkpoint)
    return net


def load_backbone(backbone: torch.nn.Module, checkpoint: str | Path, prefix: str = "backbone.") -> None:
    """Copy the ``backbone.*`` weights of a Lightning checkpoint (any unsup3d stage) into ``backbone``.

    The file is read with ``weights_only=True``: no pickled code runs. Missing or unexpected keys
    are an error naming the checkpoint.
    """
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = ckpt.get("state_dict", ckpt)
    sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not sub:
        raise ValueError(f"{checkpoint}: no '{prefix}*' weights in this checkpoint")
    missing, unexpected = backbone.load_state_dict(sub, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{checkpoint}: backbone weights do not fit (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )


def rank_share(module: LightningModule) -> Iterator[dict]:
    """The unaugmented training scenes of this rank (every ``world_size``-th batch), for
    dataset-wide passes; with one process, all of them."""
    loader = module.trainer.datamodule.cluster_dataloader()
    rank, world = module.global_rank, module.trainer.world_size
    for i, batch in enumerate(loader):
        if i % world == rank:
            yield batch
