"""The descriptor pass: written once per scene, current scenes skipped, stale or damaged ones redone,
and carried into batches by the data modules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from unsup3d.data.datamodules import SceneFolderDataModule
from unsup3d.data.scene_folder import write_scene
from unsup3d.pointdc.descriptor_pass import Descriptors, as_descriptors, run_descriptor_pass
from unsup3d.pointdc.geometric import point_descriptors


def _scenes(root: Path, n: int = 2) -> list[Path]:
    rng = np.random.default_rng(0)
    dirs = []
    for split in ("train", "val"):
        for i in range(n):
            coord = np.c_[rng.uniform(0, 3, (500, 2)), rng.uniform(0, 2, 500)].astype(np.float32)
            coord[:250, 2] = 0.0  # a floor
            d = write_scene(
                root / split / f"s{i}",
                {
                    "coord": coord,
                    "color": rng.integers(0, 256, (500, 3)).astype(np.uint8),
                    "segment": (coord[:, 2] > 0).astype(np.int64),
                },
            )
            dirs.append(d)
    return dirs


def test_pass_writes_caches_and_redoes(tmp_path: Path) -> None:
    dirs = _scenes(tmp_path)
    cfg = Descriptors(k=8)
    assert run_descriptor_pass(dirs, cfg) == []
    first = dirs[0] / "descriptor.npy"
    scene = {k: np.load(dirs[0] / f"{k}.npy") for k in ("coord", "color")}
    np.testing.assert_array_equal(np.load(first), point_descriptors(scene["coord"], scene["color"], k=8))
    assert json.loads((dirs[0] / "descriptor.json").read_text())["k"] == 8
    mtime = first.stat().st_mtime_ns
    run_descriptor_pass(dirs, cfg)
    assert first.stat().st_mtime_ns == mtime  # current: skipped
    first.write_bytes(b"broken")
    run_descriptor_pass(dirs, cfg)
    assert np.load(first).shape == (500, 14)  # damaged: redone
    run_descriptor_pass(dirs, Descriptors(k=12))
    assert json.loads((dirs[0] / "descriptor.json").read_text())["k"] == 12  # other settings: redone


def test_as_descriptors() -> None:
    assert as_descriptors(None) is None and as_descriptors(False) is None
    assert as_descriptors(True) == Descriptors()
    assert as_descriptors({"k": 9}).k == 9


def test_scene_folder_module_carries_descriptors_per_point(tmp_path: Path) -> None:
    _scenes(tmp_path)
    dm = SceneFolderDataModule(
        root=str(tmp_path), voxel_size=0.05, batch_size=2, descriptors=True, augment=True
    )
    dm.prepare_data()
    dm.setup("fit")
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        batch = next(iter(loader))
        desc = batch["descriptor"]
        assert desc.shape == (len(batch["inverse"]), 14)
        # the rows follow the points through augmentation: each is its stored point's descriptor
        for b, scene in enumerate(batch["scene_index"].tolist()):
            rows = batch["point_batch"] == b
            stored = np.load(loader.dataset.scene_dirs[scene] / "descriptor.npy")
            np.testing.assert_allclose(desc[rows].numpy(), stored[batch["point_index"][rows].numpy()])


def test_descriptor_weights_name_known_groups() -> None:
    from unsup3d.stages.clustering_pass import descriptor_scale

    scale = descriptor_scale({"color": 0.5, "height": 2.0})
    assert scale.shape == (14,) and float(scale[:3].sum()) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="unknown groups"):
        descriptor_scale({"colour": 1.0})
