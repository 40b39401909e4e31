"""Every data module: prepare once (cached by settings), load, collate, feed a backbone forward; the
generic modules, and STSSL's where the frames carry its cached clusters."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.data import indoor_writers as iw
from tests.data.lidar_nuscenes_tables import VERSION, write_tables
from unsup3d.data import indoor_datamodules as indoor
from unsup3d.data import lidar_datamodules as lidar
from unsup3d.data.lidar_frames import interval_at
from unsup3d.data.scene_folder import write_scene
from unsup3d.models import MinkUNet, Res16UNet
from unsup3d.stssl import datamodules as stssl_dms
from unsup3d.synthetic import datamodules as synthetic_dms


def _check_batch(batch: dict, channels: int) -> None:
    sp = batch["sparse"]
    assert sp.C.dtype == torch.int32 and sp.C.shape[1] == 4 and sp.F.shape == (len(sp.C), channels)
    p = len(batch["inverse"])
    assert batch["inverse"].max() < len(sp.C) and batch["point_batch"].shape == (p,)
    # every point's voxel is its own: same batch item, and the voxel holds the point
    assert torch.equal(sp.C[batch["inverse"], 0].long(), batch["point_batch"])
    assert batch["offsets"][-1] == p


def _forward(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        out = model(batch["sparse"], batch["inverse"])
    assert out.shape == (len(batch["inverse"]), model.out_channels)
    assert torch.isfinite(out).all()
    return out


# -- LiDAR -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kitti_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache of clustered KITTI frames shared by the tests below (clustering a frame takes ~1 s)."""
    return tmp_path_factory.mktemp("kitti_prepared")


def test_semantic_kitti_pairs_with_clusters_feed_minkunet(kitti_seq_dir: Path, kitti_cache: Path) -> None:
    raw = kitti_seq_dir.parent.parent
    kw = dict(raw_root=str(raw), train_sequences=["00"], val_sequences=["00"], data_root=str(kitti_cache))
    dm = stssl_dms.SemanticKITTIDataModule(**kw, pairs=True, batch_size=2, max_frames=3, max_voxels=8000)
    dm.prepare_data()
    clusters = sorted((dm.prepared_root / "clusters" / "00").glob("*.npy"))
    assert len(clusters) == 3
    stamp = clusters[0].stat().st_mtime_ns
    dm.prepare_data()  # cached: nothing is recomputed
    assert clusters[0].stat().st_mtime_ns == stamp
    other = stssl_dms.SemanticKITTIDataModule(**kw, max_frames=3, cluster_eps=0.5)
    assert other.prepared_root != dm.prepared_root  # a changed setting never reuses a stale cache

    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    for view in ("view0", "view1"):
        v = batch[view]
        _check_batch(v, 4)
        assert len(v["sparse"].C) <= 2 * 8000
        assert v["cluster"].shape == v["inverse"].shape and v["cluster"].max() >= 10
    assert batch["interval"].tolist() == [0, 0]  # epoch 0 of the schedule: two views of one frame
    _forward(MinkUNet(in_channels=4, width=0.25), batch["view0"])

    val = next(iter(dm.val_dataloader()))
    _check_batch(val, 4)
    assert val["segment"].max() <= 18 and (val["segment"] >= 0).float().mean() > 0.9


def test_interval_schedule_and_pairs_stay_in_their_sequence(kitti_seq_dir: Path, kitti_cache: Path) -> None:
    assert [interval_at(e) for e in (0, 6, 7, 14, 35, 100)] == [0, 0, 1, 2, 5, 5]
    raw = kitti_seq_dir.parent.parent
    dm = lidar.SemanticKITTIDataModule(
        raw_root=str(raw), train_sequences=["00"], data_root=str(kitti_cache), pairs=True,
        interval_start=3, max_frames=4, augment=False, max_voxels=None,
    )  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    assert dm.datasets["val"] is None and dm.val_dataloader() == []  # sequence 08 is absent
    ds = dm.datasets["train"]
    seen = {ds[(e, 3)]["interval"] for e in range(5)}  # the last frame has no later partner
    assert seen == {0}
    ks = {ds[(e, 0)]["interval"] for e in range(20)}
    assert ks <= {0, 1, 2, 3} and len(ks) > 1


def test_nuscenes_keyframes_feed_minkunet(nuscenes_sweep: Path, tmp_path: Path) -> None:
    raw = tmp_path / "nuscenes"
    write_tables(raw, nuscenes_sweep)
    dm = stssl_dms.NuScenesDataModule(
        raw_root=str(raw), version=VERSION, train_split="mini_train", val_split="mini_val",
        data_root=str(tmp_path / "prepared"), batch_size=2, max_voxels=5000,
    )  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    _check_batch(batch, 4)
    assert "cluster" in batch
    assert (batch["segment"] >= 0).any() and batch["segment"].max() <= 15  # scene-0061 has lidarseg
    _forward(MinkUNet(in_channels=4, width=0.25), batch)


def test_semantic_poss_layout(kitti_seq_dir: Path, tmp_path: Path) -> None:
    seq = tmp_path / "poss" / "sequences" / "03"
    (seq / "velodyne").mkdir(parents=True)
    (seq / "labels").mkdir()
    for i in range(2):
        scan = kitti_seq_dir / "velodyne" / f"{i:06d}.bin"
        shutil.copy(scan, seq / "velodyne" / scan.name)
        n = scan.stat().st_size // 16
        raw = np.random.default_rng(i).choice([0, 4, 6, 7, 8, 9, 13, 14, 15, 17, 21, 22], n)
        raw.astype(np.uint32).tofile(seq / "labels" / f"{i:06d}.label")
    dm = lidar.SemanticPOSSDataModule(
        raw_root=str(tmp_path / "poss"), data_root=str(tmp_path / "p"), batch_size=1
    )
    dm.setup("validate")  # POSS's official validation sequence is 03
    batch = next(iter(dm.val_dataloader()))
    _check_batch(batch, 4)
    assert batch["segment"].max() <= 12 and (batch["segment"] == -1).any()


# -- indoor ----------------------------------------------------------------------------------------


def _scannet_root(tmp_path: Path) -> Path:
    raw = tmp_path / "scannet"
    for sid in ("scene0000_00", "scene0001_00"):
        iw.write_scene(raw / "scans" / sid)
    iw.write_label_table(raw / "scannetv2-labels.combined.tsv", "v2")
    (raw / "train.txt").write_text("scene0000_00\n")
    (raw / "val.txt").write_text("scene0001_00\n")
    return raw


def test_scannet_feeds_res16unet(tmp_path: Path) -> None:
    raw = _scannet_root(tmp_path)
    dm = indoor.ScanNetDataModule(
        raw_root=str(raw), train_list=str(raw / "train.txt"), val_list=str(raw / "val.txt"),
        data_root=str(tmp_path / "prepared"), voxel_size=0.05, batch_size=1, augment=False,
    )  # fmt: skip
    dm.prepare_data()
    assert (dm.prepared_root / "train" / "scene0000_00" / "superpoint.npy").is_file()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    _check_batch(batch, 6)
    np.testing.assert_array_equal(batch["segment"].numpy(), iw.SEGMENT)
    np.testing.assert_array_equal(batch["superpoint"].numpy(), iw.SUPERPOINT)
    assert batch["num_superpoints"] == 4
    _forward(Res16UNet(in_channels=6), batch)
    _forward(MinkUNet(in_channels=6, width=0.25), batch)


def test_s3dis_rooms_get_superpoints_and_feed_res16unet(tmp_path: Path) -> None:
    raw = tmp_path / "s3dis"
    for area in (1, 2, 3, 4, 5, 6):
        iw.write_room(raw / f"Area_{area}" / "office_1", [("chair_1", 300), ("table_1", 300)], seed=area)
    dm = indoor.S3DISDataModule(raw_root=str(raw), data_root=str(tmp_path / "prepared"), batch_size=2)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 5 and len(dm.datasets["val"]) == 1
    batch = next(iter(dm.train_dataloader()))
    _check_batch(batch, 6)
    assert batch["num_superpoints"] > 2 and (batch["superpoint"] >= 0).all()
    _forward(Res16UNet(in_channels=6), batch)


def test_scene_folder_adds_missing_superpoints_and_skips_a_degenerate_scene(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for split, name in (("train", "a"), ("train", "b"), ("val", "c")):
        n = 2000
        write_scene(tmp_path / split / name, {
            "coord": rng.random((n, 3)) * 4, "color": rng.integers(0, 256, (n, 3)),
            "segment": rng.integers(0, 5, n),
        })  # fmt: skip
    bad = tmp_path / "train" / "empty"
    bad.mkdir()
    np.save(bad / "coord.npy", np.zeros((0, 3), np.float32))
    np.save(bad / "superpoint.npy", np.zeros(0, np.int64))
    dm = indoor.SceneFolderDataModule(root=str(tmp_path), batch_size=2, voxel_size=0.1)
    dm.prepare_data()
    assert (tmp_path / "train" / "a" / "superpoint.npy").is_file()
    with pytest.warns(UserWarning, match="empty"):
        dm.setup("fit")
    assert len(dm.datasets["train"]) == 2
    batch = next(iter(dm.train_dataloader()))
    _check_batch(batch, 6)
    _forward(Res16UNet(in_channels=6), batch)


def test_augmentation_is_a_function_of_seed_epoch_and_index(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        write_scene(tmp_path / "train" / name, {
            "coord": rng.random((3000, 3)) * 4, "color": rng.integers(0, 256, (3000, 3)),
            "segment": rng.integers(0, 5, 3000), "superpoint": np.arange(3000) // 30,
        })  # fmt: skip
    dm = indoor.SceneFolderDataModule(root=str(tmp_path), voxel_size=0.1)
    dm.setup("fit")
    ds = dm.datasets["train"]
    a, b, c = ds[(1, 0)], ds[(1, 0)], ds[(2, 0)]
    np.testing.assert_array_equal(a["coord"], b["coord"])
    assert not np.array_equal(a["coord"], c["coord"])
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(3)
    first = [int(x) for x in next(iter(loader))["scene_index"]]
    loader.sampler.set_epoch(3)
    assert [int(x) for x in next(iter(loader))["scene_index"]] == first


def test_synthetic_rooms_feed_both_backbones(tmp_path: Path) -> None:
    dm = synthetic_dms.SyntheticRoomsDataModule(
        num_scenes=2, num_val=1, frames_per_scene=0, data_root=str(tmp_path), voxel_size=0.1, batch_size=1
    )
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    _check_batch(batch, 6)
    assert (batch["segment"] >= 0).float().mean() > 0.5 and batch["num_superpoints"] > 10
    _forward(Res16UNet(in_channels=6, width=0.25), batch)
    _forward(MinkUNet(in_channels=6, width=0.25), batch)


def test_synthetic_lidar_pairs_feed_minkunet(tmp_path: Path) -> None:
    dm = stssl_dms.SyntheticLidarDataModule(
        num_sequences=2, num_val=1, frames_per_sequence=3, data_root=str(tmp_path),
        pairs=True, batch_size=2, max_voxels=4000,
    )  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    _check_batch(batch["view0"], 4)
    assert batch["view0"]["cluster"].max() >= 5
    _forward(MinkUNet(in_channels=4, width=0.25), batch["view1"])
    val = next(iter(dm.val_dataloader()))
    assert (val["segment"] >= 0).float().mean() > 0.5


def test_scene_folder_superpoints_follow_the_scenes_own_normals(tmp_path: Path) -> None:
    """A flat floor whose given normals turn at x = 2 (a crease the points alone do not show): with
    ``normal.npy`` no super-voxel crosses the crease; without it (normals estimated: all up) they do."""
    rng = np.random.default_rng(0)
    n = 2000
    coord = np.c_[rng.random((n, 2)) * 4, np.zeros(n)].astype(np.float32)
    left = coord[:, 0] < 2
    normal = np.where(left[:, None], [0.0, 0.0, 2.0], [3.0, 0.0, 0.0]).astype(np.float32)  # not unit: scaled
    base = {"coord": coord, "color": np.full((n, 3), 120), "segment": np.zeros(n, np.int64)}
    write_scene(tmp_path / "given" / "train" / "a", {**base, "normal": normal})
    write_scene(tmp_path / "estimated" / "train" / "a", base)
    # a strip of unusable normals left of the crease: estimated there (up, as the given ones around it)
    strip = (coord[:, 0] > 1.0) & (coord[:, 0] < 1.5)
    partial = {**base, "normal": np.where(strip[:, None], np.nan, normal).astype(np.float32)}
    write_scene(tmp_path / "partial" / "train" / "a", partial)
    write_scene(tmp_path / "bad" / "train" / "a", {**base, "normal": np.zeros_like(normal)})

    def crossing(root: Path) -> int:
        sp = np.load(root / "train" / "a" / "superpoint.npy")
        return len(np.intersect1d(sp[left], sp[~left]))

    for root in ("given", "estimated"):
        indoor.SceneFolderDataModule(root=str(tmp_path / root), voxel_size=0.1).prepare_data()
    assert crossing(tmp_path / "given") == 0
    assert crossing(tmp_path / "estimated") > 0
    with pytest.warns(UserWarning, match=r"normal.npy: \d+ of 2000 normals are non-finite or zero"):
        indoor.SceneFolderDataModule(root=str(tmp_path / "partial"), voxel_size=0.1).prepare_data()
    assert crossing(tmp_path / "partial") == 0  # the other rows kept: the crease still holds
    with pytest.warns(UserWarning, match=r"normal.npy: no usable normal among 2000"):
        indoor.SceneFolderDataModule(root=str(tmp_path / "bad"), voxel_size=0.1).prepare_data()
    assert crossing(tmp_path / "bad") > 0  # no usable normal: estimated instead, as without the file


def test_scene_folder_superpoints_are_redone_when_their_settings_or_sources_change(tmp_path: Path) -> None:
    """Super-voxels computed in place record their settings and sources (``superpoint.json``): the same
    run again reuses them; another ``superpoint_c``, a ``normal.npy`` added or removed or the colours
    replaced since recomputes them, without a warning of damage; a ``superpoint.npy`` of the scene's own
    is kept."""
    import json
    import warnings

    from unsup3d.data.scene_folder import file_digest
    from unsup3d.data.superpoints import felzenszwalb_superpoints

    rng = np.random.default_rng(0)
    n = 2000
    coord = np.c_[rng.random((n, 2)) * 4, np.zeros(n)].astype(np.float32)
    left = coord[:, 0] < 2
    color = np.repeat(30 * (coord[:, 1:2] // 0.5), 3, axis=1).astype(np.uint8)  # 8 bands across x = 2
    normal = np.where(left[:, None], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]).astype(np.float32)
    scene = {"coord": coord, "color": color, "segment": np.zeros(n, np.int64)}
    d = write_scene(tmp_path / "train" / "a", scene)
    sp_file = d / "superpoint.npy"

    def prepare(c: float = 0.1) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message="redoing")  # a changed setting is not damage
            indoor.SceneFolderDataModule(root=str(tmp_path), voxel_size=0.1, superpoint_c=c).prepare_data()
        return np.load(sp_file)

    def crossing(sp: np.ndarray) -> int:
        return len(np.intersect1d(sp[left], sp[~left]))

    first = prepare()
    assert crossing(first) > 0  # estimated normals: all up, nothing stops a colour band at x = 2
    record = json.loads((d / indoor.SUPERPOINT_RECORD).read_text())
    assert record["sources"]["normal"] is None and record["c"] == 0.1
    mtime = sp_file.stat().st_mtime_ns
    prepare()
    assert sp_file.stat().st_mtime_ns == mtime  # current: skipped
    np.save(d / "normal.npy", normal)
    assert crossing(prepare()) == 0  # the scene's normals added: redone on them
    digest = json.loads((d / indoor.SUPERPOINT_RECORD).read_text())["sources"]["normal"]
    assert digest == file_digest(d / "normal.npy")
    (d / "normal.npy").unlink()
    np.testing.assert_array_equal(prepare(), first)  # removed again: back to the estimated normals
    coarse = prepare(c=100.0)  # large enough to merge the bands
    expect = felzenszwalb_superpoints(coord, color, None, c=100.0, min_size=20, workers=1)
    np.testing.assert_array_equal(coarse, expect)  # another superpoint_c: redone with it
    assert len(np.unique(coarse)) < len(np.unique(first))
    np.testing.assert_array_equal(prepare(), first)
    np.save(d / "color.npy", np.full((n, 3), 120, np.uint8))  # the colours replaced: no more bands
    np.testing.assert_array_equal(prepare(), np.zeros(n, np.int64))
    own = (np.arange(n) // 100).astype(np.int64)
    np.save(sp_file, own)  # the scene's own super-voxels, which the record does not describe
    np.testing.assert_array_equal(prepare(c=0.1), own)  # kept, whatever the settings
    (d / indoor.SUPERPOINT_RECORD).unlink()
    np.testing.assert_array_equal(prepare(c=0.3), own)  # no record at all: kept too
