"""W&B media of the segmentation stages' validation: per-class IoU table, aligned confusion matrix, and
3D point clouds of a few validation scenes coloured by ground truth, aligned cluster and super-voxel.

What the callback reads from the stage (SVC, CMD, linear probe, fine-tune):

- ``validation_step`` returns ``{"pred": id per point}`` (cluster or class ids of the batch's points,
  in the metric's id space), or ``{"unit": index per point}`` into the epoch's evaluation units when
  clusters are only known at epoch end (CMD, whose K-means runs over the whole epoch);
- ``module.last_metrics`` after the epoch: the metric's dict, with ``iou`` (per class),
  ``confusion`` (``(clusters, classes)`` counts), ``assignment`` (each cluster's matched class or -1;
  the identity for supervised stages) and, for ``unit`` outputs, ``unit_clusters``.

Points are the scene's own (``coord`` of the batch, no augmentation at validation), the same
sub-sample of at most ``max_points`` for every colouring. Clusters take the colour of the class they
were matched to by the Hungarian matching, so the ground-truth and cluster clouds compare at a glance;
an unmatched cluster ``k`` takes the colour of id ``num_classes + k``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import Callback, LightningModule, Trainer

from unsup3d.callbacks.media import log_media, object3d, sample_rows, wandb_logger

__all__ = ["ValidationMedia", "aligned_confusion", "aligned_ids"]


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def aligned_ids(clusters: np.ndarray, assignment: np.ndarray, num_classes: int) -> np.ndarray:
    """Each point's cluster replaced by the class it was matched to; a point of an unmatched cluster
    ``k`` gets ``num_classes + k`` (a colour of its own); ``-1`` stays ``-1``."""
    clusters = np.asarray(clusters, dtype=np.int64)
    assignment = np.asarray(assignment, dtype=np.int64)
    out = np.full_like(clusters, -1)
    valid = (clusters >= 0) & (clusters < len(assignment))
    matched = assignment[clusters[valid]]
    out[valid] = np.where(matched >= 0, matched, num_classes + clusters[valid])
    return out


def aligned_confusion(confusion: np.ndarray, assignment: np.ndarray) -> np.ndarray:
    """The Hungarian-aligned confusion matrix ``(C, C + 1)``: rows the ground-truth class, columns the
    class each cluster was matched to; the last column counts the points of unmatched clusters.

    ``confusion`` is ``(clusters, classes)`` (``HungarianMIoU``'s state), ``assignment`` ``(clusters,)``.
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    assignment = np.asarray(assignment, dtype=np.int64)
    k, c = confusion.shape
    if assignment.shape != (k,):
        raise ValueError(f"aligned_confusion: {assignment.shape} assignment for {k} clusters")
    out = np.zeros((c, c + 1), dtype=np.int64)
    column = np.where(assignment >= 0, assignment, c)
    np.add.at(out.T, column, confusion)  # out[:, column[j]] += confusion[j, :]
    return out


def class_names(trainer: Trainer, module: LightningModule, num_classes: int) -> list[str]:
    """The stage's or the data module's class names when they fit ``num_classes``, else the ids."""
    hparams = getattr(module, "hparams", {}) or {}
    names = hparams.get("class_names") if hasattr(hparams, "get") else None
    if not names:
        names = getattr(getattr(trainer, "datamodule", None), "class_names", None)
    names = list(names) if names is not None else []
    return names if len(names) == num_classes else [str(i) for i in range(num_classes)]


class ValidationMedia(Callback):
    """Log, at validation (and test), the per-class IoU ``wandb.Table``, the aligned confusion matrix as a
    ``wandb.Image`` and ``wandb.Object3D`` clouds of the first ``num_scenes`` scenes (module docstring).

    Keys: ``<stage>/iou_table``, ``<stage>/confusion``, ``<stage>/scene<index>/{ground_truth,clusters,
    supervoxels}`` with ``<stage>`` ``val`` or ``test``. Nothing happens without a W&B logger (e.g. under
    ``fast_dev_run``) unless ``save_dir`` is set, where the same pictures are written as PNGs.

    Args:
        num_scenes: validation scenes drawn (the first ones of the loader, so the same every time).
        max_points: points a cloud holds at most (a seeded random subset above it).
        every_n_epochs: log at validations of epochs ``n - 1, 2n - 1, ...`` and at the last epoch.
        save_dir: also write ``<save_dir>/<stage>_epoch<E>_{confusion,scene<index>}.png``.
        seed: seed of the point sub-sample.
    """

    def __init__(
        self,
        num_scenes: int = 2,
        max_points: int = 20000,
        every_n_epochs: int = 1,
        save_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        if num_scenes < 0 or max_points < 1 or every_n_epochs < 1:
            raise ValueError(
                f"ValidationMedia: need num_scenes >= 0, max_points >= 1, every_n_epochs >= 1, got "
                f"{num_scenes}, {max_points}, {every_n_epochs}"
            )
        self.num_scenes, self.max_points, self.every_n_epochs = num_scenes, max_points, every_n_epochs
        self.save_dir = Path(save_dir) if save_dir else None
        self.seed = seed
        self._scenes: list[dict[str, np.ndarray]] = []
        self._active = False

    # -- when -----------------------------------------------------------------------------------------

    def _due(self, trainer: Trainer) -> bool:
        if trainer.sanity_checking:
            return False
        if trainer.state.fn != "fit":  # validate / test: always
            return True
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and trainer.max_epochs > 0 and epoch >= trainer.max_epochs
        return epoch % self.every_n_epochs == 0 or last

    def _start(self, trainer: Trainer) -> None:
        self._scenes = []
        wanted = wandb_logger(trainer) is not None or (self.save_dir is not None and trainer.is_global_zero)
        self._active = wanted and self._due(trainer)

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(trainer)

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(trainer)

    # -- collecting the first scenes ------------------------------------------------------------------

    def _collect(self, outputs: Any, batch: Mapping[str, Any]) -> None:
        if not self._active or len(self._scenes) >= self.num_scenes or not isinstance(batch, Mapping):
            return
        if "coord" not in batch or "point_batch" not in batch:
            return
        point_batch = _numpy(batch["point_batch"])
        per_point = {"coord": _numpy(batch["coord"])}
        for key in ("segment", "superpoint"):
            if key in batch:
                per_point[key] = _numpy(batch[key])
        if isinstance(outputs, Mapping):
            for key in ("pred", "unit"):
                if outputs.get(key) is not None:
                    per_point[key] = _numpy(outputs[key]).reshape(-1)
                    if len(per_point[key]) != len(point_batch):
                        raise ValueError(
                            f"ValidationMedia: the validation step's '{key}' has {len(per_point[key])} "
                            f"entries for the batch's {len(point_batch)} points"
                        )
        for b, scene in enumerate(_numpy(batch["scene_index"]).reshape(-1).tolist()):
            if len(self._scenes) >= self.num_scenes:
                break
            rows = np.flatnonzero(point_batch == b)
            rows = rows[sample_rows(len(rows), self.max_points, self.seed + int(scene))]
            self._scenes.append({"scene": int(scene), **{k: v[rows] for k, v in per_point.items()}})

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        self._collect(outputs, batch)

    def on_test_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        self._collect(outputs, batch)

    # -- logging (after the stage's epoch end has computed ``last_metrics``) ---------------------------

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._finish(trainer, pl_module, "val")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._finish(trainer, pl_module, "test")

    def _finish(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not self._active:
            return
        self._active = False
        scenes, self._scenes = self._scenes, []
        metrics = {k: _numpy(v) for k, v in (getattr(pl_module, "last_metrics", None) or {}).items()}
        hparams = getattr(pl_module, "hparams", {})
        num_classes = len(metrics["iou"]) if "iou" in metrics else int(hparams.get("num_classes", 0))
        names = class_names(trainer, pl_module, num_classes)
        logger = wandb_logger(trainer)
        media: dict[str, Any] = {}
        if "iou" in metrics and logger is not None:
            media[f"{stage}/iou_table"] = self._iou_table(names, metrics["iou"])
        if "confusion" in metrics and "assignment" in metrics:
            media.update(self._confusion(trainer, names, metrics, stage, logger is not None))
        for scene in scenes:
            media.update(self._scene(trainer, scene, metrics, num_classes, stage, logger is not None))
        if logger is not None:
            log_media(logger, trainer, media)

    @staticmethod
    def _iou_table(names: Sequence[str], iou: np.ndarray) -> Any:
        import wandb

        rows = [[name, None if v != v else float(v)] for name, v in zip(names, iou.tolist())]  # NaN: absent
        return wandb.Table(columns=["class", "iou"], data=rows)

    def _png(self, trainer: Trainer, stage: str, what: str) -> Path | None:
        if self.save_dir is None:
            return None
        return self.save_dir / f"{stage}_epoch{trainer.current_epoch:03d}_{what}.png"

    def _confusion(
        self, trainer: Trainer, names: list[str], metrics: dict, stage: str, to_wandb: bool
    ) -> dict[str, Any]:
        from unsup3d.viz import draw_confusion, figure_to_array

        matrix = aligned_confusion(metrics["confusion"], metrics["assignment"])
        c = matrix.shape[0]
        if matrix[:, c].any():  # unmatched clusters: a row of zeros keeps the matrix square
            square = np.zeros((c + 1, c + 1), dtype=np.int64)
            square[:c] = matrix
            labels = [*names, "unmatched"]
        else:
            square, labels = matrix[:, :c], names
        title = f"{stage} confusion (Hungarian-aligned), epoch {trainer.current_epoch}"
        fig = draw_confusion(square, labels, self._png(trainer, stage, "confusion"), title=title)
        if not to_wandb:
            return {}
        import wandb

        return {f"{stage}/confusion": wandb.Image(figure_to_array(fig), caption=title)}

    def _scene(
        self, trainer: Trainer, scene: dict, metrics: dict, num_classes: int, stage: str, to_wandb: bool
    ) -> dict[str, Any]:
        from unsup3d.viz import draw_scenes, label_colors

        colourings: dict[str, np.ndarray] = {}
        if "segment" in scene:
            colourings["ground_truth"] = scene["segment"].astype(np.int64)
        clusters = scene.get("pred")
        if clusters is None and "unit" in scene and "unit_clusters" in metrics:
            clusters = metrics["unit_clusters"][scene["unit"]]
        if clusters is not None:
            clusters = clusters.astype(np.int64)
            if "assignment" in metrics:
                clusters = aligned_ids(clusters, metrics["assignment"], num_classes)
            colourings["clusters"] = clusters
        if "superpoint" in scene:
            colourings["supervoxels"] = scene["superpoint"].astype(np.int64)
        path = self._png(trainer, stage, f"scene{scene['scene']}")
        if path is not None and colourings:
            draw_scenes(scene["coord"], list(colourings.values()), list(colourings), path)
        if not to_wandb:
            return {}
        return {
            f"{stage}/scene{scene['scene']}/{what}": object3d(scene["coord"], label_colors(ids))
            for what, ids in colourings.items()
        }
