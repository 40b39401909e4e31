"""PointDC's data modules: each indoor data module plus PointDC's preparation steps.

:class:`PointDCDataModule` adds CMD's 2D feature pass (:mod:`unsup3d.pointdc.feature_pass`, Eq. 3-6)
and the teacher-free path's descriptor pass (:mod:`unsup3d.pointdc.descriptor_pass`) to a data module:
both run in the data module's :meth:`~unsup3d.data.datamodule_base.PointCloudDataModule.prepare_extra`
hook, after the scenes are prepared and under the same lock. The modules below are the generic ones of
:mod:`unsup3d.data.indoor_datamodules` and :mod:`unsup3d.synthetic.datamodules` with these steps, under
the same names, so a recipe picks PointDC's ScanNet as ``unsup3d.pointdc.datamodules.ScanNetDataModule``.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

import numpy as np

from unsup3d.data import indoor_datamodules as indoor
from unsup3d.data.datasets import FeatureFn, color_coord_features, color_height_features
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


#: the network's input besides the descriptors, by ``input_coords``
INPUT_COORDS: dict[str, FeatureFn] = {"xyz": color_coord_features, "z": color_height_features}


def with_descriptors(base: FeatureFn, sample: dict[str, np.ndarray]) -> np.ndarray:
    """``base``'s input followed by the points' hand-made descriptors (``descriptor``, 14 columns in
    about [0, 1], centred here on 0), invariant to the augmentations' turns and flips about z."""
    return np.concatenate([base(sample), sample["descriptor"].astype(np.float32) - 0.5], axis=1)


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
        descriptor_inputs: the network also reads the descriptors: its input becomes RGB, the
            coordinates of ``input_coords`` and the 14 descriptor columns (``in_channels: 20``, or 18
            with ``input_coords: z``; :func:`with_descriptors`).
        input_coords: which coordinates the network reads beside RGB: ``xyz`` (PointDC's release: x and
            y centred on the scene, and z; ``in_channels: 6``) or ``z``, the height alone
            (``in_channels: 4``; :func:`~unsup3d.data.datasets.color_height_features`), so that a
            point's side of the room is not an input.
        units: the segments every stage pools over as super-voxels: ``superpoint`` (the dataset's), or
            ``region``, the descriptor pass's grown super-voxels (the teacher-free recipe's: a floor or a
            wall is a few regions, so Eq. 8's K-means, which counts segments, does not spend half its
            clusters on them); or ``merged``, those regions merged per scene into groups
            (``descriptors.merge_regions``; :func:`~unsup3d.pointdc.descriptor_pass.merge_regions`).
    """

    def __init__(
        self,
        feature_targets: FeatureTargets | None = None,
        descriptors: Descriptors | bool | None = None,
        descriptor_inputs: bool = False,
        input_coords: Literal["xyz", "z"] = "xyz",
        units: Literal["superpoint", "region", "merged"] = "superpoint",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.descriptor_inputs, self.units, self.input_coords = descriptor_inputs, units, input_coords
        if units not in ("superpoint", "region", "merged"):
            raise ValueError(f"units must be 'superpoint', 'region' or 'merged', got {units!r}")
        if input_coords not in INPUT_COORDS:
            raise ValueError(f"input_coords must be one of {sorted(INPUT_COORDS)}, got {input_coords!r}")
        if (descriptor_inputs or units != "superpoint") and descriptors in (None, False):
            raise ValueError(f"descriptor_inputs and units: {units} need the descriptor pass (descriptors)")
        self.feature_targets = as_feature_targets(feature_targets)
        if self.feature_targets is not None:
            self.extra_keys += [k for k in (TARGET_KEY, SEEN_KEY) if k not in self.extra_keys]
        self.descriptors = as_descriptors(descriptors)
        if units == "merged" and self.descriptors is not None and self.descriptors.merge_regions is None:
            raise ValueError("units: merged needs descriptors.merge_regions (how many groups a scene)")
        if self.descriptors is not None and DESCRIPTOR_KEY not in self.extra_keys:
            self.extra_keys.append(DESCRIPTOR_KEY)

    def superpoints_from(self) -> str:
        return self.units

    def input_features(self) -> FeatureFn:
        base = INPUT_COORDS[self.input_coords]
        if self.descriptor_inputs:  # every split needs them then: the network reads them
            return partial(with_descriptors, base)
        return base

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
