"""Untrusted files: checkpoints and caches holding pickled code are refused and nothing runs; a data
root that is not there is one clear error naming it and what belongs inside.

The payload is an object whose unpickling creates a marker file: the tests first show that a plain
unpickling does run it, then that no loader of unsup3d (or Lightning's resume path) does.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from unsup3d.data import indoor_datamodules as indoor
from unsup3d.data import lidar_datamodules as lidar
from unsup3d.data.lidar_frames import FrameRef, LidarFrameDataset
from unsup3d.data.prepare import load_npy
from unsup3d.data.scene_folder import read_scene, usable_scenes, write_scene
from unsup3d.pointdc import datamodules as pointdc_dms
from unsup3d.pointdc.feature_pass import TARGET_KEY, is_current, target_dim
from unsup3d.stssl import datamodules as stssl_dms
from unsup3d.stssl.track_cache import TrackSettings, track_frames


class WritesMarker:
    """Unpickling this runs ``open(marker, "w")``: the file appears if pickled code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


def _evil_npy(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.array([WritesMarker(marker)], dtype=object), allow_pickle=True)
    return path


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    torch.save(
        {
            "state_dict": {"backbone.weight": torch.zeros(2, 2)},
            "epoch": 0,
            "global_step": 0,
            "pytorch-lightning_version": "2.6.0",
            "hyper_parameters": {"payload": WritesMarker(marker)},
        },
        path,
    )
    return path


def _assert_payload_is_live(load, marker: Path) -> None:
    """The control: loading the file with pickles allowed does run the payload."""
    load()
    assert marker.exists()
    marker.unlink()


def test_pickled_checkpoint_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    from lightning.pytorch import Trainer
    from lightning.pytorch.demos.boring_classes import BoringModel

    from unsup3d.lightning_cli import check_checkpoint
    from unsup3d.training.common import load_backbone

    marker = tmp_path / "ran"
    ckpt = _evil_checkpoint(tmp_path / "evil.ckpt", marker)
    _assert_payload_is_live(lambda: torch.load(ckpt, weights_only=False), marker)

    with pytest.raises(ValueError, match=f"{ckpt}: refusing to load it"):
        check_checkpoint(ckpt)  # the CLI's check of --ckpt_path
    with pytest.raises(ValueError, match=f"{ckpt}: refusing to load it"):
        load_backbone(torch.nn.Linear(2, 2), ckpt)  # a stage's init_checkpoint
    # Lightning's own resume path (Trainer.fit(ckpt_path=...)), as the CLI calls it and with its default
    # (torch's weights_only=True, unless TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD turns that off)
    forced_off = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "0").lower() in ("1", "y", "yes", "true")
    for kwargs in ({"weights_only": True}, *([] if forced_off else [{}])):
        trainer = Trainer(
            max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu",
        )  # fmt: skip
        with pytest.raises(pickle.UnpicklingError):
            trainer.fit(BoringModel(), ckpt_path=ckpt, **kwargs)
    assert not marker.exists()


def test_pickled_cache_arrays_are_refused_naming_the_file(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    rng = np.random.default_rng(0)
    scene = write_scene(tmp_path / "train" / "s", {"coord": rng.random((50, 3)), "superpoint": np.arange(50)})
    evil = _evil_npy(scene / "superpoint.npy", marker)
    _assert_payload_is_live(lambda: np.load(evil, allow_pickle=True), marker)

    refused = f"{evil}: cannot be read as a plain numpy array: it holds Python objects"
    reads = (lambda: load_npy(evil), lambda: read_scene(scene), lambda: read_scene(scene, ["superpoint"]))
    for read in reads:
        with pytest.raises(ValueError, match=refused):
            read()
    with pytest.warns(UserWarning, match=f"skipping scene {scene}: superpoint.npy: it holds Python objects"):
        assert usable_scenes([scene]) == []

    # CMD's feature targets: a pickled target is not current (it is recomputed) and never loaded
    _evil_npy(scene / f"{TARGET_KEY}.npy", marker)
    with pytest.raises(ValueError, match=f"{scene / TARGET_KEY}.npy: cannot be read"):
        target_dim([scene])
    (scene / f"{TARGET_KEY}.json").write_text('{"settings": {"feature_dim": 1}}')
    assert not is_current(scene, {"feature_dim": 1})

    # the LiDAR cluster cache, read by the data set and by tracking
    scan = tmp_path / "velodyne" / "000000.bin"
    scan.parent.mkdir()
    rng.random((200, 4)).astype(np.float32).tofile(scan)
    ref = FrameRef("semantic_kitti", "00", 0, scan, None, None)
    cache = _evil_npy(tmp_path / "clusters" / "00" / "000000.npy", marker)
    ds = LidarFrameDataset([ref], 0.05, cluster_root=tmp_path / "clusters")
    with pytest.raises(ValueError, match=f"{cache}: cannot be read as a plain numpy array"):
        ds.load(0)
    with pytest.raises(ValueError, match=f"{cache}: cannot be read as a plain numpy array"):
        track_frames([ref], tmp_path / "clusters", tmp_path / "tracks", TrackSettings())
    assert not marker.exists()


# -- a data root that is not there ------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, inside",
    [
        (lambda root, out: indoor.ScanNetDataModule(raw_root=root, data_root=out), "scans/<scene>/"),
        (lambda root, out: indoor.S3DISDataModule(raw_root=root, data_root=out), "Area_N/<room>/Annotation"),
        (lambda root, out: lidar.SemanticKITTIDataModule(raw_root=root, data_root=out), "sequences/NN/"),
        (lambda root, out: lidar.SemanticPOSSDataModule(raw_root=root, data_root=out), "sequences/NN/"),
        (lambda root, out: lidar.NuScenesDataModule(raw_root=root, data_root=out), "v1.0-trainval/*.json"),
        (lambda root, out: indoor.SceneFolderDataModule(root=root, data_root=out), "<split>/<scene>/"),
        # a method's own data modules check before their preparation steps run
        (lambda root, out: pointdc_dms.SceneFolderDataModule(root=root, descriptors=True), "<split>/<scene>"),
        (lambda root, out: stssl_dms.SemanticKITTIDataModule(raw_root=root, data_root=out), "sequences/NN/"),
    ],
    ids=[
        "scannet", "s3dis", "semantic_kitti", "semantic_poss", "nuscenes", "scene_folder",
        "pointdc_scene_folder", "stssl_semantic_kitti",
    ],  # fmt: skip
)
def test_missing_or_empty_data_root_is_one_clear_error(tmp_path: Path, make, inside: str) -> None:
    missing, out = tmp_path / "nowhere" / "dataset", tmp_path / "prepared"
    dm = make(str(missing), str(out))
    for step in (dm.prepare_data, lambda: dm.setup("fit")):
        with pytest.raises(FileNotFoundError) as err:
            step()
        message = str(err.value)
        assert f"raw_root {missing} does not exist: expected " in message
        assert inside in message and "README" in message
    assert not out.exists() and not missing.exists()  # nothing was created on the way

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=f"raw_root {empty} holds none of .*: expected "):
        make(str(empty), str(out)).prepare_data()
