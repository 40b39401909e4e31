"""PointDC's data modules: each indoor data module plus PointDC's preparation steps.

:class:`PointDCDataModule` adds CMD's 2D feature pass (:mod:`unsup3d.pointdc.feature_pass`, Eq. 3-6)
and the teacher-free path's descriptor pass (:mod:`unsup3d.pointdc.descriptor_pass`) to a data module:
both run in the data module's :meth:`~unsup3d.data.datamodule_base.PointCloudDataModule.prepare_extra`
hook, after the scenes are prepared and under the same lock. The modules below are the generic ones of
:mod:`unsup3d.data.indoor_datamodules` and :mod:`unsup3d.synthetic.datamodules` with these steps, under
the same names, so a recipe picks PointDC's ScanNet as ``unsup3d.pointdc.datamodules.ScanNetDataModule``.
"""

from __future__ import annotations

from typing import Any, Literal

from unsup3d.data import indoor_datamodules as indoor
from unsup3d.data.datasets import FeatureFn, color_coord_descriptor_features
from unsup3d.data.scene_folder import list_scenes, usable_scenes
from unsup3d.pointdc.descriptor_pass import DESCRIPTOR_KEY, Descriptors, as_descriptors, run_descriptor_pass
from unsup3d.pointdc.feature_pass import (
    SEEN_KEY,
    TARGET_KEY,
    FeatureTargets,
    as_feature_targets,
    run_feature_pass,
)
from unsup3d.synthetic import datamodules as synthetic

__all__ = [
    "PointDCDataModule",
    "S3DISDataModule",
    "ScanNetDataModule",
    "SceneFolderDataModule",
    "SyntheticRoomsDataModule",
]


class PointDCDataModule(indoor.IndoorDataModule):
    """An indoor data module with CMD's feature pass and the teacher-free path's descriptor pass; the
    modules below put it before a dataset's module (``class X(PointDCDataModule, indoor.X)``).

    Args:
        feature_targets: settings of CMD's 2D feature pass
            (:class:`~unsup3d.pointdc.feature_pass.FeatureTargets`). When set, ``prepare_data`` writes
            ``cmd_target.npy`` / ``cmd_seen.npy`` into the scenes of its ``splits`` (resumable), and
            batches carry them as per-point ``cmd_target`` / ``cmd_seen``.
        descriptors: settings of the teacher-free path's descriptor pass
            (:class:`~unsup3d.pointdc.descriptor_pass.Descriptors`; ``true`` for the defaults). When
            set, ``prepare_data`` writes ``descriptor.npy`` into the scenes (resumable), and batches
            carry it as the per-point ``descriptor``.
        descriptor_inputs: the network also reads the descriptors: its input becomes RGB, centred
            coordinates and the 14 descriptor columns (``in_channels: 20``;
            :func:`~unsup3d.data.datasets.color_coord_descriptor_features`).
        units: the segments every stage pools over as super-voxels: ``superpoint`` (the dataset's), or
            ``region``, the descriptor pass's grown super-voxels (the teacher-free recipe's: a floor or a
            wall is a few regions, so Eq. 8's K-means, which counts segments, does not spend half its
            clusters on them).
    """

    def __init__(
        self,
        feature_targets: FeatureTargets | None = None,
        descriptors: Descriptors | bool | None = None,
        descriptor_inputs: bool = False,
        units: Literal["superpoint", "region"] = "superpoint",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.descriptor_inputs, self.units = descriptor_inputs, units
        if units not in ("superpoint", "region"):
            raise ValueError(f"units must be 'superpoint' or 'region', got {units!r}")
        if (descriptor_inputs or units == "region") and descriptors in (None, False):
            raise ValueError("descriptor_inputs and units: region need the descriptor pass: set descriptors")
        self.feature_targets = as_feature_targets(feature_targets)
        if self.feature_targets is not None:
            self.extra_keys += [k for k in (TARGET_KEY, SEEN_KEY) if k not in self.extra_keys]
        self.descriptors = as_descriptors(descriptors)
        if self.descriptors is not None and DESCRIPTOR_KEY not in self.extra_keys:
            self.extra_keys.append(DESCRIPTOR_KEY)

    def superpoints_from(self) -> str:
        return self.units

    def input_features(self) -> FeatureFn:
        if self.descriptor_inputs:  # every split needs them then: the network reads them
            return color_coord_descriptor_features
        return super().input_features()

    def prepare_feature_targets(self) -> dict[str, int]:
        """Run CMD's feature pass over the prepared scenes of ``feature_targets.splits``."""
        cfg = self.feature_targets
        if cfg is None:
            return {"computed": 0, "skipped": 0}
        dirs = [d for split in cfg.splits for d in usable_scenes(list_scenes(self.prepared_root, split))]
        return run_feature_pass(dirs, cfg, self.frames_dir, desc=f"CMD targets ({self.name})")

    def prepare_descriptors(self) -> None:
        """The teacher-free path's hand-made descriptors for the scenes of ``descriptors.splits``."""
        cfg = self.descriptors
        if cfg is not None:
            dirs = [d for split in cfg.splits for d in usable_scenes(list_scenes(self.prepared_root, split))]
            run_descriptor_pass(dirs, cfg, self.prepare_workers)

    def prepare_extra(self) -> None:
        super().prepare_extra()
        self.prepare_feature_targets()
        self.prepare_descriptors()


class ScanNetDataModule(PointDCDataModule, indoor.ScanNetDataModule):
    """ScanNet-v2 (:class:`unsup3d.data.indoor_datamodules.ScanNetDataModule`) with PointDC's passes."""


class S3DISDataModule(PointDCDataModule, indoor.S3DISDataModule):
    """S3DIS (:class:`unsup3d.data.indoor_datamodules.S3DISDataModule`) with PointDC's passes."""


class SceneFolderDataModule(PointDCDataModule, indoor.SceneFolderDataModule):
    """Scene folders (:class:`unsup3d.data.indoor_datamodules.SceneFolderDataModule`) with PointDC's
    passes."""


class SyntheticRoomsDataModule(PointDCDataModule, synthetic.SyntheticRoomsDataModule):
    """The synthetic rooms (:class:`unsup3d.synthetic.datamodules.SyntheticRoomsDataModule`) with
    PointDC's passes."""
