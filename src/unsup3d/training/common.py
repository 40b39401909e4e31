"""What the stages share: default backbones, loading a backbone from another stage's checkpoint,
and this rank's share of a data module's unaugmented training scenes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from lightning.pytorch import LightningModule
from torch.utils.data import BatchSampler, DataLoader

from unsup3d.models import MinkUNet, Res16UNet
from unsup3d.models.checkpoints import load_tensors


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
    ckpt = load_tensors(checkpoint)
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
    """This rank's batches of the unaugmented training scenes, for dataset-wide passes.

    The batches of one process's loader are cut into ``world_size`` contiguous runs (their lengths
    differ by one at most; a rank may get none), and rank r reads run r only. Rows gathered in rank
    order (:func:`unsup3d.clustering.kmeans`) are then in the order one process sees, so K-means,
    whose initialisation depends on row order, clusters the same input on 1 or N processes. With one
    process, all batches.
    """
    loader = module.trainer.datamodule.cluster_dataloader()
    rank, world = module.global_rank, module.trainer.world_size
    if world == 1:
        yield from loader
        return
    batches = list(BatchSampler(loader.sampler, loader.batch_size, drop_last=False))
    start, stop = len(batches) * rank // world, len(batches) * (rank + 1) // world
    # A loader over this rank's batches only: the others' scenes are never read.
    yield from DataLoader(
        loader.dataset,
        batch_sampler=batches[start:stop],
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
    )
