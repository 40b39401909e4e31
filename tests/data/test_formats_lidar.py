"""Readers of SemanticKITTI / SemanticPOSS / nuScenes files, on the real samples and on corrupted copies."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from unsup3d.data.formats import nuscenes as nu
from unsup3d.data.formats import semantic_kitti as sk
from unsup3d.data.formats import semantic_poss as sp

from .lidar_nuscenes_tables import VERSION, write_tables

# semantic-kitti.yaml learning_map, as published (0 = unlabeled, classes 1..19).
KITTI_YAML_MAP = {
    0: 0, 1: 0, 10: 1, 11: 2, 13: 5, 15: 3, 16: 5, 18: 4, 20: 5, 30: 6, 31: 7, 32: 8, 40: 9, 44: 10,
    48: 11, 49: 12, 50: 13, 51: 14, 52: 0, 60: 9, 70: 15, 71: 16, 72: 17, 80: 18, 81: 19, 99: 0,
    252: 1, 253: 7, 254: 6, 255: 8, 256: 5, 257: 5, 258: 4, 259: 5,
}  # fmt: skip
# nuscenes-devkit LidarsegClassMapper, general index (v1.0 order) -> challenge index (0 = ignore).
NUSC_DEVKIT_COARSE = [0, 0, 7, 7, 7, 0, 7, 0, 0, 1, 0, 0, 8, 0, 2, 3, 3, 4, 5, 0, 0, 6, 9, 10, 11, 12,
                      13, 14, 15, 0, 16, 0]  # fmt: skip
# sha256 of ",".join(sorted(names)) for the scene lists of nuscenes-devkit 1.2 utils/splits.py.
NUSC_SPLIT_SHA256 = {
    "train": "d75a775e17eac4545c7d772341bbb31a043878320cf35dcb1994a224dbc33c86",
    "val": "a45b01ed90bcefb24a46a85e3649d90b0eab600d7f3d9fdbc1308de453708ae5",
    "test": "3f033eee3b1aa0c1d941a9048d7c89f251449ce3cd779403d3994fd9c9a218cf",
}


def _named(path: Path | str, rest: str = "") -> str:
    """A ``match`` pattern: the literal path, then the regex ``rest``."""
    return re.escape(str(path)) + rest


# ---------------------------------------------------------------- SemanticKITTI, real sample


def test_scan_and_labels_of_real_frame(kitti_seq_dir: Path) -> None:
    frames = sk.list_frames(kitti_seq_dir)
    assert [f.frame_id for f in frames] == [f"{i:06d}" for i in range(10)]
    assert [f.labels is not None for f in frames] == [True] * 3 + [False] * 7
    scan = sk.read_scan(frames[0].scan)
    assert scan.dtype == np.float32 and scan.shape == (124_668, 4)
    np.testing.assert_array_equal(scan.ravel(), np.fromfile(frames[0].scan, dtype="<f4"))
    semantic, instance = sk.read_labels(frames[0].labels, num_points=len(scan))
    assert semantic.dtype == instance.dtype == np.int64 and semantic.shape == (124_668,)
    raw = np.fromfile(frames[0].labels, dtype="<u4").astype(np.int64)
    np.testing.assert_array_equal(semantic + instance * 65536, raw)
    assert set(np.unique(semantic)) <= set(KITTI_YAML_MAP)
    classes = sk.map_labels(semantic)
    np.testing.assert_array_equal(classes, [KITTI_YAML_MAP[int(r)] - 1 for r in semantic])
    assert classes.min() == -1 and 8 in classes  # unlabeled points and road


def test_kitti_learning_map_matches_yaml() -> None:
    assert sk.LEARNING_MAP == {k: v - 1 for k, v in KITTI_YAML_MAP.items()}
    assert len(sk.CLASS_NAMES) == 19 and sk.CLASS_NAMES[0] == "car" and sk.CLASS_NAMES[18] == "traffic-sign"
    assert [sk.LEARNING_MAP[r] for r in sk.CLASS_RAW_IDS] == list(range(19))
    with pytest.raises(ValueError, match=r"x\.label.*\[7, 300\]"):
        sk.map_labels(np.array([10, 7, 300]), path="x.label")


def test_kitti_splits() -> None:
    train, val, test = (set(sk.split_sequences(s)) for s in ("train", "val", "test"))
    assert val == {"08"} and "08" not in train and len(train) == 10 and len(test) == 11
    assert train | val | test == {f"{i:02d}" for i in range(22)}
    with pytest.raises(ValueError, match="valid"):
        sk.split_sequences("valid")


def test_calib_and_times(kitti_seq_dir: Path) -> None:
    calib = sk.read_calib(kitti_seq_dir / "calib.txt")
    assert set(calib) == {"P0", "P1", "P2", "P3", "Tr"}
    assert all(calib[f"P{i}"].shape == (3, 4) for i in range(4))
    tr = calib["Tr"]
    assert tr.shape == (4, 4) and np.array_equal(tr[3], [0, 0, 0, 1])
    np.testing.assert_allclose(tr[:3, :3] @ tr[:3, :3].T, np.eye(3), atol=1e-6)
    # LiDAR x (forward) is camera z (forward).
    assert tr[2, 0] > 0.999
    times = sk.read_times(kitti_seq_dir / "times.txt")
    assert times.shape == (10,) and times[0] == 0 and np.all(np.diff(times) > 0)


def _median_nn(reference: np.ndarray, query: np.ndarray, transform: np.ndarray) -> float:
    moved = query @ transform[:3, :3].T + transform[:3, 3]
    return float(np.median(cKDTree(reference).query(moved)[0]))


def test_poses_register_consecutive_frames(kitti_seq_dir: Path) -> None:
    """The data README's check: frame 1 posed onto frame 0 lands ~8 cm from it, ~20 cm unposed."""
    poses = sk.read_poses(kitti_seq_dir / "poses.txt", kitti_seq_dir / "calib.txt")
    assert poses.shape == (10, 4, 4) and poses.dtype == np.float64
    np.testing.assert_allclose(poses[0], np.eye(4), atol=1e-6)
    a = sk.read_scan(kitti_seq_dir / "velodyne" / "000000.bin")[:, :3].astype(np.float64)
    b = sk.read_scan(kitti_seq_dir / "velodyne" / "000001.bin")[:, :3].astype(np.float64)
    # Non-ground: the sensor is 1.73 m above the road.
    a, b = a[a[:, 2] > -1.3], b[b[:, 2] > -1.3]
    b = b[np.random.default_rng(0).choice(len(b), 20_000, replace=False)]
    rel = np.linalg.inv(poses[0]) @ poses[1]
    posed = _median_nn(a, b, rel)
    unposed = _median_nn(a, b, np.eye(4))
    # Camera poses used as if they were LiDAR poses (no Tr) move the scan along the wrong axis.
    cam = sk.read_camera_poses(kitti_seq_dir / "poses.txt")
    no_tr = _median_nn(a, b, np.linalg.inv(cam[0]) @ cam[1])
    assert posed < 0.12 and posed < 0.6 * unposed and posed < 0.6 * no_tr
    assert rel[0, 3] > 0.5  # the car drives forward along LiDAR x


def test_plain_kitti_without_labels(kitti_seq_dir: Path, tmp_path: Path) -> None:
    seq = tmp_path / "sequences" / "05"
    (seq / "velodyne").mkdir(parents=True)
    for i in range(2):
        shutil.copyfile(kitti_seq_dir / "velodyne" / f"00000{i}.bin", seq / "velodyne" / f"00000{i}.bin")
    frames = sk.list_frames(seq)
    assert len(frames) == 2 and all(f.labels is None for f in frames)
    with pytest.raises(FileNotFoundError, match=_named(seq / "labels" / "000000.label")):
        sk.list_frames(seq, require_labels=True)
    with pytest.raises(FileNotFoundError, match="velodyne"):
        sk.list_frames(tmp_path)


# ---------------------------------------------------------------- SemanticKITTI, bad input


def test_truncated_binaries_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "000000.bin"
    bad.write_bytes(np.zeros(4 * 10, np.float32).tobytes() + b"\x00\x00\x00")
    with pytest.raises(ValueError, match=_named(bad, ".*163 bytes.*16-byte record")):
        sk.read_scan(bad)
    label = tmp_path / "000000.label"
    label.write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match=_named(label)):
        sk.read_labels(label)
    sweep = tmp_path / "x.pcd.bin"
    np.zeros((3, 4), np.float32).tofile(sweep)  # 48 bytes: four values a point, not five
    with pytest.raises(ValueError, match=_named(sweep, ".*20-byte record")):
        nu.read_sweep(sweep)


def test_label_count_mismatch(tmp_path: Path) -> None:
    label = tmp_path / "000000.label"
    np.arange(5, dtype=np.uint32).tofile(label)
    with pytest.raises(ValueError, match=_named(label, ": holds 5 labels but the point cloud has 6")):
        sk.read_labels(label, num_points=6)
    seg = tmp_path / "tok_lidarseg.bin"
    np.zeros(7, np.uint8).tofile(seg)
    with pytest.raises(ValueError, match=_named(seg, ": holds 7 labels but the point cloud has 8")):
        nu.read_lidarseg(seg, num_points=8)
    assert nu.read_lidarseg(seg, num_points=7).dtype == np.int64


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_nonfinite_points(tmp_path: Path, bad_value: float) -> None:
    points = np.ones((6, 4), np.float32)
    points[2, 1] = bad_value
    path = tmp_path / "000000.bin"
    points.tofile(path)
    with pytest.raises(ValueError, match=_named(path, ": 1 row")):
        sk.read_scan(path)
    with pytest.warns(UserWarning, match=_named(path, ": dropped 1 points")):
        kept = sk.read_scan(path, drop_nonfinite=True)
    np.testing.assert_array_equal(kept, np.delete(points, 2, axis=0))
    sweep = tmp_path / "s.pcd.bin"
    np.concatenate([np.ones((3, 5), np.float32), np.full((1, 5), bad_value, np.float32)]).tofile(sweep)
    with pytest.raises(ValueError, match=_named(sweep)):
        nu.read_sweep(sweep)


def test_missing_files_are_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.bin"
    for read in (sk.read_scan, sk.read_labels, sk.read_calib, sk.read_times, nu.read_sweep, nu.read_lidarseg):
        with pytest.raises(FileNotFoundError, match=_named(missing)):
            read(missing)
    with pytest.raises(FileNotFoundError, match=_named(tmp_path / "v1.0-trainval")):
        nu.NuScenesTables(tmp_path)


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("P0 1 2 3\n", ":1: expected 'KEY: numbers'"),
        ("P0: 1 2 x 4\n", ":1: not a number"),
        ("P0: 1 2 3 4 5 6 7 8 9 10 11 12\nTr: 1 nan 0 0 0 1 0 0 0 0 1 0\n", ":2.*NaN"),
        ("", "no calibration entries"),
    ],
)
def test_malformed_calib(tmp_path: Path, text: str, fault: str) -> None:
    path = tmp_path / "calib.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=_named(path, fault if fault.startswith(":") else f": {fault}")):
        sk.read_calib(path)


def test_malformed_poses(kitti_seq_dir: Path, tmp_path: Path) -> None:
    calib = kitti_seq_dir / "calib.txt"
    poses = tmp_path / "poses.txt"
    good = (kitti_seq_dir / "poses.txt").read_text().splitlines()
    poses.write_text("\n".join([good[0], " ".join(good[1].split()[:11])]))
    with pytest.raises(ValueError, match=_named(poses, ":2: expected 12 numbers, found 11")):
        sk.read_poses(poses, calib)
    poses.write_text(good[0].replace("1.000000e+00", "one", 1))
    with pytest.raises(ValueError, match=_named(poses, ":1: not a number")):
        sk.read_poses(poses, calib)
    no_tr = tmp_path / "calib.txt"
    no_tr.write_text("\n".join(line for line in calib.read_text().splitlines() if not line.startswith("Tr")))
    poses.write_text(good[0])
    with pytest.raises(ValueError, match=_named(no_tr, ": no 12-number 'Tr'")):
        sk.read_poses(poses, no_tr)


# ---------------------------------------------------------------- SemanticPOSS


def test_semantic_poss_map_and_readers(tmp_path: Path) -> None:
    # One implementation of the file readers, shared with SemanticKITTI.
    assert (sp.read_scan, sp.read_labels, sp.read_poses) == (sk.read_scan, sk.read_labels, sk.read_poses)
    assert len(sp.CLASS_NAMES) == 13 and sp.split_sequences("val") == ("03",)
    assert sorted(sp.split_sequences("train") + sp.split_sequences("val")) == [f"0{i}" for i in range(6)]
    # semantic-poss.yaml ids and their classes, written as the release names them.
    release = {0: None, 4: "person", 5: "person", 6: "rider", 7: "car", 8: "trunk", 9: "plants",
               10: "traffic-sign", 11: "traffic-sign", 12: "traffic-sign", 13: "pole", 14: "trashcan",
               15: "building", 16: "cone/stone", 17: "fence", 21: "bike", 22: "ground"}  # fmt: skip
    raw = np.array(list(release), dtype=np.uint32)
    instance = np.arange(len(raw), dtype=np.uint32) * 3
    label = tmp_path / "000000.label"
    (raw | (instance << 16)).tofile(label)
    semantic, inst = sp.read_labels(label, num_points=len(raw))
    np.testing.assert_array_equal(inst, instance)
    expected = [-1 if n is None else sp.CLASS_NAMES.index(n) for n in release.values()]
    np.testing.assert_array_equal(sp.map_labels(semantic), expected)
    assert sorted(set(expected) - {-1}) == list(range(13))
    with pytest.raises(ValueError, match="SemanticPOSS"):
        sp.map_labels(np.array([23]))


# ---------------------------------------------------------------- nuScenes


def test_real_sweep(nuscenes_sweep: Path) -> None:
    points = nu.read_sweep(nuscenes_sweep)
    assert points.dtype == np.float32 and points.shape == (34_688, 5)
    np.testing.assert_array_equal(points.ravel(), np.fromfile(nuscenes_sweep, dtype="<f4"))
    ring = points[:, 4]
    assert np.array_equal(ring, np.round(ring)) and ring.min() == 0 and ring.max() == 31
    assert 0 <= points[:, 3].min() and points[:, 3].max() <= 255


def test_nuscenes_splits_match_devkit() -> None:
    sizes = {s: len(nu.split_scenes(s)) for s in ("train", "val", "test", "mini_train", "mini_val")}
    assert sizes == {"train": 700, "val": 150, "test": 150, "mini_train": 8, "mini_val": 2}
    for split, digest in NUSC_SPLIT_SHA256.items():
        assert hashlib.sha256(",".join(sorted(nu.split_scenes(split))).encode()).hexdigest() == digest
    assert len(set(nu.split_scenes("train") + nu.split_scenes("val") + nu.split_scenes("test"))) == 1000
    assert set(nu.split_scenes("mini_val")) <= set(nu.split_scenes("val"))


def test_challenge_map_matches_devkit() -> None:
    np.testing.assert_array_equal(nu.challenge_lut(), np.array(NUSC_DEVKIT_COARSE) - 1)
    assert len(nu.CLASS_NAMES) == 16 and nu.CLASS_NAMES[3] == "car"
    with pytest.raises(ValueError, match=r"f\.bin.*\[40\]"):
        nu.map_labels(np.array([17, 40]), path="f.bin")


@pytest.fixture(scope="module")
def nusc_root(tmp_path_factory: pytest.TempPathFactory, nuscenes_sweep: Path) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("nuscenes")
    return root, write_tables(root, nuscenes_sweep)


def test_nuscenes_sequences(nusc_root: tuple[Path, dict]) -> None:
    root, expected = nusc_root
    tables = nu.NuScenesTables(root, VERSION)
    assert tables.scene_names == ["scene-0061", "scene-0103"]
    assert tables.scenes_in_split("mini_train") == ["scene-0061"]
    assert tables.scenes_in_split("mini_val") == ["scene-0103"] and tables.scenes_in_split("test") == []
    lut = tables.label_lut()
    for name in tables.scene_names:
        exp = expected[name]
        seq = tables.sequence(name)
        assert len(seq) == len(exp["sample_tokens"])
        assert seq.scene == name and list(seq.sample_tokens) == exp["sample_tokens"]
        assert list(seq.sample_data_tokens) == exp["sd_tokens"] and list(seq.lidar_paths) == exp["lidar"]
        assert list(seq.lidarseg_paths) == exp["lidarseg"]
        np.testing.assert_allclose(seq.poses, np.stack(exp["poses"]), atol=1e-9)
        np.testing.assert_array_equal(seq.timestamps, exp["timestamps"])
        for path, seg, labels in zip(seq.lidar_paths, seq.lidarseg_paths, exp["labels"]):
            raw = nu.read_lidarseg(seg, num_points=len(nu.read_sweep(path)))
            np.testing.assert_array_equal(raw, labels)
            # Through the (permuted) category table, by name, to the devkit's challenge classes.
            names = [expected["index_to_name"][int(i)] for i in raw]
            ref = [NUSC_DEVKIT_COARSE[nu.GENERAL_CLASS_NAMES.index(n)] - 1 for n in names]
            np.testing.assert_array_equal(nu.map_labels(raw, lut), ref)
    assert tables.sequence("scene1").sample_tokens == tables.sequence("scene-0103").sample_tokens
    assert all(p is None for p in tables.sequence("scene-0103").lidarseg_paths)
    with pytest.raises(KeyError, match="scene-9999"):
        tables.sequence("scene-9999")


def _corrupt(root: Path, table: str, edit) -> Path:
    path = root / VERSION / f"{table}.json"
    records = json.loads(path.read_text())
    path.write_text(json.dumps(edit(records)))
    return path


def _set(records: list[dict], index: int, **fields) -> list[dict]:
    records[index].update(fields)
    return records


@pytest.mark.parametrize(
    ("table", "edit", "named", "fault"),
    [
        ("sample", None, "sample", "malformed JSON"),
        ("ego_pose", lambda r: {"records": r}, "ego_pose", "JSON list of records"),
        (
            "sample_data",
            lambda r: [{k: v for k, v in r[0].items() if k != "filename"}] + r[1:],
            "sample_data",
            "lacks \\['filename'\\]",
        ),
        ("sample_data", lambda r: _set(r, 0, ego_pose_token="missing-ego"), "sample_data", "missing-ego"),
        ("scene", lambda r: _set(r, 0, nbr_samples=4), "scene", "nbr_samples=4"),
        ("sample", lambda r: _set(r, 0, next="s1-sample0"), "sample", "leaves the scene"),
        ("ego_pose", lambda r: _set(r, 0, rotation=[1.0, 0.5, 0.0, 0.0]), "ego_pose", "not a unit quatern"),
        ("ego_pose", lambda r: _set(r, 0, translation=[0.0, "a", 1.0]), "ego_pose", "finite 3-vector"),
        ("calibrated_sensor", lambda r: r + r[:1], "calibrated_sensor", "appears twice"),
    ],
)
def test_malformed_tables(nuscenes_sweep: Path, tmp_path: Path, table, edit, named, fault) -> None:
    write_tables(tmp_path, nuscenes_sweep, scene_sizes=(2, 1))
    if edit is None:
        path = tmp_path / VERSION / f"{table}.json"
        path.write_text(path.read_text()[:-40])
    else:
        _corrupt(tmp_path, table, edit)
    with pytest.raises(ValueError, match=_named(tmp_path / VERSION / f"{named}.json", f".*{fault}")):
        nu.NuScenesTables(tmp_path, VERSION).sequence("scene-0061")


def test_missing_required_table(nuscenes_sweep: Path, tmp_path: Path) -> None:
    write_tables(tmp_path, nuscenes_sweep, scene_sizes=(1,))
    (tmp_path / VERSION / "ego_pose.json").unlink()
    with pytest.raises(FileNotFoundError, match=_named(tmp_path / VERSION / "ego_pose.json")):
        nu.NuScenesTables(tmp_path, VERSION)
    # Optional tables may be absent: without sensor.json the channel is read from the file name.
    write_tables(tmp_path, nuscenes_sweep, scene_sizes=(2,))
    for name in ("sensor", "lidarseg", "category"):
        (tmp_path / VERSION / f"{name}.json").unlink()
    tables = nu.NuScenesTables(tmp_path, VERSION)
    seq = tables.sequence("scene-0061")
    assert len(seq.lidar_paths) == 2 and seq.lidarseg_paths == (None, None)
    np.testing.assert_array_equal(tables.label_lut(), nu.challenge_lut())
