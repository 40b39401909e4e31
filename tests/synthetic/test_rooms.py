"""Synthetic ScanNet rooms: exact file formats, determinism, consistent labels, frames that fit the mesh."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import plyfile
import pytest
from PIL import Image
from scipy.spatial import cKDTree

from unsup3d.synthetic.rooms import SyntheticRoomsConfig, generate_rooms, scene_room
from unsup3d.synthetic.rooms_scannet import LABELS, TSV_HEADER

SCANNET20_NYU40 = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39}
SMALL = SyntheticRoomsConfig(
    num_scenes=2,
    num_val=1,
    seed=3,
    frames_per_scene=3,
    image_size=(96, 128),
    depth_size=(72, 96),
    points_per_m2=150.0,
)


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rooms")
    generate_rooms(root, SMALL)
    return root


def _scene(root: Path, i: int = 0) -> tuple[Path, str]:
    name = f"scene{i:04d}_00"
    return root / "scans" / name, name


def _tsv(root: Path) -> dict[str, int]:
    lines = (root / "scannetv2-labels.combined.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    i_raw, i_nyu = header.index("raw_category"), header.index("nyu40id")
    return {row.split("\t")[i_raw]: int(row.split("\t")[i_nyu]) for row in lines[1:]}


def _vertex_labels_from_aggregation(
    scene_dir: Path, name: str, table: dict[str, int]
) -> tuple[np.ndarray, list]:
    segs = np.asarray(
        json.loads((scene_dir / f"{name}_vh_clean_2.0.010000.segs.json").read_text())["segIndices"]
    )
    groups = json.loads((scene_dir / f"{name}.aggregation.json").read_text())["segGroups"]
    labels = np.zeros(len(segs), dtype=np.int64)
    for g in groups:
        labels[np.isin(segs, g["segments"])] = table[g["label"]]
    return labels, groups


def test_same_seed_same_bytes_other_seed_other_scene(tmp_path: Path) -> None:
    cfg = SyntheticRoomsConfig(
        num_scenes=1,
        num_val=0,
        frames_per_scene=1,
        image_size=(48, 64),
        depth_size=(36, 48),
        points_per_m2=60.0,
    )
    a, b = generate_rooms(tmp_path / "a", cfg)[0], generate_rooms(tmp_path / "b", cfg)[0]
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) >= 13
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    c = generate_rooms(tmp_path / "c", SyntheticRoomsConfig(**{**cfg.__dict__, "seed": 1}))[0]
    mesh = "scene0000_00_vh_clean_2.ply"
    assert (a / mesh).read_bytes() != (c / mesh).read_bytes()


def test_files_have_scannet_layouts(small_root: Path) -> None:
    assert (small_root / "scannetv2_train.txt").read_text() == "scene0000_00\n"
    assert (small_root / "scannetv2_val.txt").read_text() == "scene0001_00\n"
    assert (small_root / "scannetv2-labels.combined.tsv").read_text().splitlines()[0].split("\t") == list(
        TSV_HEADER
    )
    scene_dir, name = _scene(small_root)
    mesh = plyfile.PlyData.read(str(scene_dir / f"{name}_vh_clean_2.ply"))
    assert mesh.text is False and mesh.byte_order == "<"
    v, f = mesh["vertex"].data, mesh["face"].data
    assert v.dtype.names == ("x", "y", "z", "red", "green", "blue", "alpha")
    assert [v.dtype[k].str for k in v.dtype.names] == ["<f4"] * 3 + ["|u1"] * 4
    prop = mesh["face"].properties[0]
    assert (prop.name, prop.len_dtype, prop.val_dtype) == ("vertex_indices", "u1", "i4")
    tri = np.stack(f["vertex_indices"])
    assert tri.shape[1] == 3 and tri.min() >= 0 and tri.max() < len(v)
    assert 3_000 < len(v) < 60_000 and np.all(v["alpha"] == 255)
    labels = plyfile.PlyData.read(str(scene_dir / f"{name}_vh_clean_2.labels.ply"))
    lv = labels["vertex"].data
    assert lv.dtype.names[-1] == "label" and lv.dtype["label"].str == "<u2"
    np.testing.assert_array_equal(np.stack([lv["x"], lv["y"], lv["z"]]), np.stack([v["x"], v["y"], v["z"]]))
    segs = json.loads((scene_dir / f"{name}_vh_clean_2.0.010000.segs.json").read_text())
    assert segs["sceneId"] == name and len(segs["segIndices"]) == len(v) and "kThresh" in segs["params"]
    agg = json.loads((scene_dir / f"{name}.aggregation.json").read_text())
    assert agg["sceneId"] == f"scannet.{name}"
    assert [g["id"] for g in agg["segGroups"]] == list(range(len(agg["segGroups"])))
    assert {"id", "objectId", "segments", "label"} <= set(agg["segGroups"][0])
    for sub in (
        "color/0.jpg",
        "color/20.jpg",
        "depth/10.png",
        "pose/20.txt",
        "intrinsic/intrinsic_color.txt",
        "intrinsic/intrinsic_depth.txt",
    ):
        assert (scene_dir / sub).is_file(), sub
    assert Image.open(scene_dir / "color" / "0.jpg").size == (128, 96)
    depth = Image.open(scene_dir / "depth" / "0.png")
    assert depth.size == (96, 72) and depth.mode.startswith("I;16")
    assert np.loadtxt(scene_dir / "pose" / "0.txt").shape == (4, 4)
    info = dict(line.split(" = ") for line in (scene_dir / f"{name}.txt").read_text().splitlines())
    assert np.asarray(info["axisAlignment"].split(), dtype=float).reshape(4, 4)[3].tolist() == [0, 0, 0, 1]


def test_segments_stay_inside_objects_and_labels_agree(small_root: Path) -> None:
    table = _tsv(small_root)
    for i in range(SMALL.num_scenes):
        scene_dir, name = _scene(small_root, i)
        from_agg, groups = _vertex_labels_from_aggregation(scene_dir, name, table)
        all_segs = [s for g in groups for s in g["segments"]]
        assert len(all_segs) == len(set(all_segs)), "a segment belongs to two objects"
        ply = plyfile.PlyData.read(str(scene_dir / f"{name}_vh_clean_2.labels.ply"))["vertex"].data
        np.testing.assert_array_equal(ply["label"].astype(np.int64), from_agg)
        # Each segment is one surface of one object: its labels.ply label is constant.
        segs = np.asarray(
            json.loads((scene_dir / f"{name}_vh_clean_2.0.010000.segs.json").read_text())["segIndices"]
        )
        _, inv = np.unique(segs, return_inverse=True)
        lo = np.full(inv.max() + 1, 99)
        hi = np.zeros(inv.max() + 1, dtype=np.int64)
        np.minimum.at(lo, inv, from_agg)
        np.maximum.at(hi, inv, from_agg)
        assert np.array_equal(lo, hi)
        # Segments are small surface patches, as the real graph segmentation makes.
        counts = np.bincount(inv)
        assert len(counts) > 100 and np.median(counts) < 200


def test_scenes_cover_scannet20_classes() -> None:
    found = set()
    for i in range(8):
        room = scene_room(SyntheticRoomsConfig(), i)
        found |= {LABELS[o.spec.raw][1] for o in room.objects if o.spec.annotated}
    assert len(found & SCANNET20_NYU40) == 20
    assert found - SCANNET20_NYU40, "some objects should fall outside ScanNet-20 (ignored there)"


def test_depth_and_colour_frames_agree_with_mesh(small_root: Path) -> None:
    scene_dir, name = _scene(small_root)
    mesh = plyfile.PlyData.read(str(scene_dir / f"{name}_vh_clean_2.ply"))
    v = mesh["vertex"].data
    verts = np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float64)
    vcol = np.stack([v["red"], v["green"], v["blue"]], 1).astype(np.float64)
    tri = np.stack(mesh["face"].data["vertex_indices"])
    # Dense reference: 10 random points on every triangle.
    w = np.random.default_rng(0).dirichlet(np.ones(3), (len(tri), 10))
    surface = np.einsum("fkc,fcd->fkd", w, verts[tri]).reshape(-1, 3)
    tree = cKDTree(surface)
    Kd = np.loadtxt(scene_dir / "intrinsic" / "intrinsic_depth.txt")[:3, :3]
    Kc = np.loadtxt(scene_dir / "intrinsic" / "intrinsic_color.txt")[:3, :3]
    for fid in (0, 10, 20):
        pose = np.loadtxt(scene_dir / "pose" / f"{fid}.txt")
        depth = np.asarray(Image.open(scene_dir / "depth" / f"{fid}.png"), dtype=np.float64) / 1000.0
        vv, uu = np.nonzero(depth > 0)
        assert len(vv) > 0.7 * depth.size
        z = depth[vv, uu]
        cam = np.stack([(uu - Kd[0, 2]) * z / Kd[0, 0], (vv - Kd[1, 2]) * z / Kd[1, 1], z], 1)
        world = cam @ pose[:3, :3].T + pose[:3, 3]
        dist, _ = tree.query(world)
        assert np.median(dist) < 0.015 and np.quantile(dist, 0.9) < 0.04, (fid, np.median(dist))
        # Mesh vertices seen in the depth frame take their colour in the colour frame (own intrinsics).
        rgb = np.asarray(Image.open(scene_dir / "color" / f"{fid}.jpg"), dtype=np.float64)
        local = (verts - pose[:3, 3]) @ pose[:3, :3]
        front = local[:, 2] > 0.1
        ud = np.round(local[:, 0] / local[:, 2] * Kd[0, 0] + Kd[0, 2]).astype(int)
        vd = np.round(local[:, 1] / local[:, 2] * Kd[1, 1] + Kd[1, 2]).astype(int)
        on = front & (ud >= 0) & (ud < depth.shape[1]) & (vd >= 0) & (vd < depth.shape[0])
        seen = np.flatnonzero(on)[np.abs(depth[vd[on], ud[on]] - local[on, 2]) < 0.02]
        uc = (
            np.round(local[seen, 0] / local[seen, 2] * Kc[0, 0] + Kc[0, 2])
            .astype(int)
            .clip(0, rgb.shape[1] - 1)
        )
        vc = (
            np.round(local[seen, 1] / local[seen, 2] * Kc[1, 1] + Kc[1, 2])
            .astype(int)
            .clip(0, rgb.shape[0] - 1)
        )
        img, ref = rgb[vc, uc], vcol[seen]
        gain = np.sum(img * ref) / np.sum(ref * ref)  # each frame has its own exposure
        err = np.abs(img - gain * ref).mean(1)
        assert len(seen) > 200 and 0.8 < gain < 1.2 and np.median(err) < 8, (fid, gain, np.median(err))


def test_round_trip_through_scannet_reader(small_root: Path) -> None:
    scannet = pytest.importorskip("unsup3d.data.formats.scannet")
    frames = pytest.importorskip("unsup3d.data.formats.scannet_frames")
    scene_dir, name = _scene(small_root)
    s = scannet.read_scene(scene_dir)
    ply = plyfile.PlyData.read(str(scene_dir / f"{name}_vh_clean_2.ply"))["vertex"].data
    np.testing.assert_allclose(s["coord"], np.stack([ply["x"], ply["y"], ply["z"]], 1))
    table = _tsv(small_root)
    from_agg, groups = _vertex_labels_from_aggregation(scene_dir, name, table)
    labelled = np.isin(from_agg, list(SCANNET20_NYU40))
    assert np.array_equal(s["segment"] >= 0, labelled)
    assert set(np.unique(s["segment"][labelled])) <= set(range(20)) and len(np.unique(s["segment"])) >= 6
    assert s["instance"].max() + 1 == len(groups) and np.all(s["instance"][from_agg == 0] == -1)
    assert s["superpoint"].max() + 1 == len(np.unique(s["superpoint"]))
    read = list(frames.read_frames(scene_dir))
    assert [f.index for f in read] == [0, 10, 20]
    assert read[0].color.shape == (96, 128, 3) and read[0].depth.shape == (72, 96)


def test_existing_scenes_are_kept_changed_settings_rewrite_foreign_data_refused(tmp_path: Path) -> None:
    cfg = SyntheticRoomsConfig(num_scenes=1, num_val=0, frames_per_scene=0, points_per_m2=40.0)
    scene = generate_rooms(tmp_path, cfg)[0]
    mesh = scene / "scene0000_00_vh_clean_2.ply"
    before = mesh.stat().st_mtime_ns
    generate_rooms(tmp_path, cfg)
    assert mesh.stat().st_mtime_ns == before
    generate_rooms(tmp_path, SyntheticRoomsConfig(**{**cfg.__dict__, "frames_per_scene": 1}))
    assert (scene / "color" / "0.jpg").is_file() and not list(tmp_path.glob("scans/.*"))
    foreign = tmp_path / "real"
    (foreign / "scans" / "scene0000_00").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="scene0000_00"):
        generate_rooms(foreign, cfg)


def test_frames_leave_the_scene_unchanged(tmp_path: Path) -> None:
    """The teacher-free quickstart recipes generate no frames: their rooms must be the 2D recipes' rooms."""
    cfg = SyntheticRoomsConfig(num_scenes=1, num_val=0, frames_per_scene=0, points_per_m2=40.0)
    bare = generate_rooms(tmp_path / "bare", cfg)[0]
    framed = generate_rooms(
        tmp_path / "framed", SyntheticRoomsConfig(**{**cfg.__dict__, "frames_per_scene": 2})
    )[0]
    assert (framed / "color" / "0.jpg").is_file() and not (bare / "color").exists()
    files = sorted(f.name for f in bare.glob("scene0000_00*") if f.suffix in (".ply", ".json"))
    assert len(files) == 4
    for name in files:
        assert (bare / name).read_bytes() == (framed / name).read_bytes(), name


@pytest.mark.parametrize(
    "bad", [{"num_val": 3, "num_scenes": 2}, {"image_size": (4, 4)}, {"room_side": (5.0, 3.0)}]
)
def test_bad_config_is_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        SyntheticRoomsConfig(**bad)
