"""ScanNet readers on small files written in the real formats (tests/data/indoor_writers.py)."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import plyfile
import pytest

from tests.data.indoor_writers import (
    INSTANCE,
    SCENE_ID,
    SEGMENT,
    SUPERPOINT,
    mesh_vertices,
    write_frames,
    write_label_table,
    write_mesh_ply,
    write_scene,
)
from unsup3d.data.formats import scannet, scannet_frames, scannet_labels
from unsup3d.data.formats.ply import face_normals, read_ply, vertex_normals


def _dataset(tmp_path: Path, table: str | None = "v2", **scene_kw) -> Path:
    """A ScanNet download: <root>/scans/<scene>/ with the label table (if any) at <root>."""
    root = tmp_path / "scannet"
    scene_dir = write_scene(root / "scans" / SCENE_ID, **scene_kw)
    if table == "v2":
        write_label_table(root / "scannetv2-labels.combined.tsv", "v2")
    elif table == "old":
        write_label_table(root / "scannet-labels.combined.tsv", "old")
    elif table == "old-no-id":
        write_label_table(root / "scannet-labels.combined.tsv", "old", with_id=False)
    return scene_dir


# ---------------------------------------------------------------- labels: every release variant


def test_aggregation_with_v2_table(tmp_path: Path) -> None:
    scene = scannet.read_scene(_dataset(tmp_path, "v2"))
    np.testing.assert_array_equal(scene["segment"], SEGMENT)
    np.testing.assert_array_equal(scene["instance"], INSTANCE)
    np.testing.assert_array_equal(scene["superpoint"], SUPERPOINT)
    xyz, _ = mesh_vertices()
    np.testing.assert_array_equal(scene["coord"], xyz)
    assert scene["coord"].dtype == np.float32 and scene["color"].dtype == np.uint8
    assert scene["normal"].dtype == np.float32
    for key in ("segment", "instance", "superpoint"):
        assert scene[key].dtype == np.int64 and scene[key].shape == (12,)
    np.testing.assert_array_equal(scene["color"], np.arange(36).reshape(12, 3))


@pytest.mark.parametrize(
    ("table", "scene_kw"),
    [
        ("old", {}),  # aggregation + older table (raw names in `category`)
        ("old-no-id", {}),  # the older table as published, without an id column
        (None, {"aggregation": False}),  # v2 labels.ply (NYU40 ids), no table at all
        ("v2", {"aggregation": False}),  # v2 labels.ply with the v2 table
        ("old", {"aggregation": False, "labels_ply": "table"}),  # older labels.ply: table ids
    ],
)
def test_every_release_variant_gives_the_same_segments(
    tmp_path: Path, table: str | None, scene_kw: dict
) -> None:
    scene = scannet.read_scene(_dataset(tmp_path, table, **scene_kw))
    np.testing.assert_array_equal(scene["segment"], SEGMENT)
    np.testing.assert_array_equal(scene["superpoint"], SUPERPOINT)
    expected_instance = INSTANCE if scene_kw.get("aggregation", True) else np.full(12, -1)
    np.testing.assert_array_equal(scene["instance"], expected_instance)


def test_explicit_label_table_outside_the_tree(tmp_path: Path) -> None:
    scene_dir = _dataset(tmp_path, None)
    table = write_label_table(tmp_path / "elsewhere" / "my_table.tsv", "old")
    scene = scannet.read_scene(scene_dir, label_table=table)
    np.testing.assert_array_equal(scene["segment"], SEGMENT)
    np.testing.assert_array_equal(scene["instance"], INSTANCE)
    parsed = scannet_labels.read_label_table(table)
    assert parsed.raw_name_column == "category" and parsed.labels_ply_ids == "table"
    np.testing.assert_array_equal(scannet.read_scene(scene_dir, label_table=parsed)["segment"], SEGMENT)


def test_aggregation_wins_over_labels_ply(tmp_path: Path) -> None:
    # labels.ply claims everything is wall; the aggregation (authoritative) says otherwise.
    scene_dir = _dataset(tmp_path, "v2", labels_ply=None)
    xyz, faces = mesh_vertices()
    write_mesh_ply(scene_dir / f"{SCENE_ID}_vh_clean_2.labels.ply", xyz, faces, label=np.ones(12, int))
    np.testing.assert_array_equal(scannet.read_scene(scene_dir)["segment"], SEGMENT)


def test_aggregation_without_table_falls_back_to_labels_ply_with_warning(tmp_path: Path) -> None:
    scene_dir = _dataset(tmp_path, None)
    with pytest.warns(UserWarning, match="aggregation.json"):
        scene = scannet.read_scene(scene_dir)
    np.testing.assert_array_equal(scene["segment"], SEGMENT)
    np.testing.assert_array_equal(scene["instance"], np.full(12, -1))


def test_later_object_wins_and_unknown_names_are_ignored(tmp_path: Path) -> None:
    scene_dir = _dataset(tmp_path, "v2")
    agg_path = scene_dir / f"{SCENE_ID}.aggregation.json"
    agg = json.loads(agg_path.read_text())
    agg["segGroups"].append({"id": 3, "objectId": 3, "segments": [9], "label": "wall"})  # overrides cabinet
    agg["segGroups"].append({"id": 4, "objectId": 4, "segments": [7], "label": "flux capacitor"})
    agg_path.write_text(json.dumps(agg))
    with pytest.warns(UserWarning, match="flux capacitor"):
        scene = scannet.read_scene(scene_dir)
    np.testing.assert_array_equal(scene["segment"], [4, 4, 4, 0, 0, 0, -1, -1, -1, -1, -1, -1])
    np.testing.assert_array_equal(scene["instance"], [0, 0, 0, 3, 3, 3, 2, 2, 2, 4, 4, 4])


def test_unlabelled_test_scan(tmp_path: Path) -> None:
    scene_dir = _dataset(tmp_path, "v2", aggregation=False, segs=False, labels_ply=None)
    scene = scannet.read_scene(scene_dir, unlabelled_ok=True)
    for key in ("segment", "instance", "superpoint"):
        np.testing.assert_array_equal(scene[key], np.full(12, -1))
    with pytest.raises(FileNotFoundError, match="segs.json"):
        scannet.read_scene(scene_dir)


def test_label_table_lookup_and_maps(tmp_path: Path) -> None:
    root = tmp_path / "root"
    scene_dir = root / "scans" / SCENE_ID
    scene_dir.mkdir(parents=True)
    assert scannet_labels.find_label_table(scene_dir) is None
    old = write_label_table(root / "scannet-labels.combined.tsv", "old")
    assert scannet_labels.find_label_table(scene_dir) == old.resolve()
    new = write_label_table(root / "scannetv2-labels.combined.tsv", "v2")
    assert scannet_labels.find_label_table(scene_dir) == new.resolve()  # v2 first
    table = scannet_labels.read_label_table(new)
    assert table.name_to_nyu40["storage"] == 0 and table.id_to_nyu40[41] == 3
    # NYU40 -> ScanNet-20 against the class list written out by hand.
    nyu = np.arange(41)
    expected = np.full(41, -1)
    for i, nyu_id in enumerate([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39]):
        expected[nyu_id] = i
    np.testing.assert_array_equal(scannet_labels.nyu40_to_scannet20(nyu), expected)
    names = scannet_labels.SCANNET20_CLASS_NAMES
    assert len(names) == 20 and names[15] == "shower curtain" and names[19] == "otherfurniture"
    for name, nyu_id in zip(names, scannet_labels.SCANNET20_NYU40_IDS):
        assert scannet_labels.NYU40_CLASS_NAMES[nyu_id - 1] == name
    with pytest.raises(ValueError, match="0..40"):
        scannet_labels.nyu40_to_scannet20(np.array([41]))


# ---------------------------------------------------------------- normals and PLY


def test_normals_match_hand_computed_face_normals(tmp_path: Path) -> None:
    # Two triangles hinged at a right angle: A in z=0 (area 1/2, normal +z), B in x=0 (area 1,
    # normal +x). Shared vertices get (1/2 * z + 1 * x) normalised; the others their face's normal.
    xyz = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 2]], np.float32)
    faces = [[0, 1, 2], [0, 2, 3]]
    path = write_mesh_ply(tmp_path / "hinge.ply", xyz, faces)
    mesh = scannet.read_mesh(path)
    shared = np.array([1.0, 0.0, 0.5]) / np.sqrt(1.25)
    expected = np.array([shared, [0, 0, 1], shared, [1, 0, 0]])
    np.testing.assert_allclose(mesh["normal"], expected, atol=1e-6)
    unit, area = face_normals(xyz, np.array(faces))
    np.testing.assert_allclose(area, [0.5, 1.0])


def test_vertex_normals_against_a_loop_reference() -> None:
    rng = np.random.default_rng(1)
    v = rng.normal(size=(50, 3))
    f = rng.integers(0, 50, (120, 3))
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    ref = np.zeros((50, 3))
    for a, b, c in f:  # the cross product is twice the area times the unit normal
        n = np.cross(v[b] - v[a], v[c] - v[a]) / 2.0
        ref[[a, b, c]] += n
    norm = np.linalg.norm(ref, axis=1, keepdims=True)
    ref = np.where(norm > 0, ref / np.where(norm > 0, norm, 1), 0)
    np.testing.assert_allclose(vertex_normals(v, f), ref, atol=1e-6)
    assert np.all(vertex_normals(v, f)[np.setdiff1d(np.arange(50), f)] == 0)  # unused vertices


def test_polygons_and_ascii_ply(tmp_path: Path) -> None:
    xyz = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    quad_and_tri = [[0, 1, 2, 3], [0, 1, 4]]
    for text in (False, True):
        mesh = read_ply(write_mesh_ply(tmp_path / f"poly{text}.ply", xyz, quad_and_tri, text=text))
        np.testing.assert_array_equal(mesh.faces, [[0, 1, 2], [0, 2, 3], [0, 1, 4]])
        np.testing.assert_array_equal(mesh.xyz(), xyz)


def test_binary_fast_path_matches_generic_parser(tmp_path: Path) -> None:
    xyz, faces = mesh_vertices(20)
    path = write_mesh_ply(tmp_path / "m.ply", xyz, faces)
    generic = plyfile.PlyData.read(str(path))
    mesh = read_ply(path)
    np.testing.assert_array_equal(mesh.faces, np.stack(generic["face"]["vertex_indices"]))
    np.testing.assert_array_equal(mesh.xyz(), np.stack([generic["vertex"][k] for k in "xyz"], 1))


# ---------------------------------------------------------------- bad input: each error names the file


@pytest.mark.parametrize(
    "missing", [f"{SCENE_ID}_vh_clean_2.ply", f"{SCENE_ID}_vh_clean_2.0.010000.segs.json"]
)
def test_missing_file_is_named(tmp_path: Path, missing: str) -> None:
    scene_dir = _dataset(tmp_path)
    (scene_dir / missing).unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(scene_dir / missing))):
        scannet.read_scene(scene_dir)


def test_no_annotations_at_all_is_named(tmp_path: Path) -> None:
    scene_dir = _dataset(tmp_path, "v2", aggregation=False, labels_ply=None)
    with pytest.raises(FileNotFoundError, match="aggregation.json") as err:
        scannet.read_scene(scene_dir)
    assert str(scene_dir) in str(err.value)


def test_aggregation_without_any_table_or_labels_ply(tmp_path: Path) -> None:
    scene_dir = _dataset(tmp_path, None, labels_ply=None)
    with pytest.raises(FileNotFoundError, match="scannetv2-labels.combined.tsv") as err:
        scannet.read_scene(scene_dir)
    assert f"{SCENE_ID}.aggregation.json" in str(err.value)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_ply_is_named(tmp_path: Path, damage: str) -> None:
    scene_dir = _dataset(tmp_path)
    mesh = scene_dir / f"{SCENE_ID}_vh_clean_2.ply"
    data = mesh.read_bytes()
    mesh.write_bytes(
        {"garbage": b"\x89PNG not a mesh", "truncated": data[: len(data) - 20], "empty": b""}[damage]
    )
    with pytest.raises(ValueError, match=re.escape(str(mesh))):
        scannet.read_scene(scene_dir)


def test_face_index_out_of_range_is_named(tmp_path: Path) -> None:
    xyz = np.zeros((3, 3), np.float32)
    path = write_mesh_ply(tmp_path / "bad.ply", xyz, [[0, 1, 7]])
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*3 vertices"):
        read_ply(path)


def test_segs_length_mismatch_is_named(tmp_path: Path) -> None:
    scene_dir = _dataset(tmp_path)
    segs = scene_dir / f"{SCENE_ID}_vh_clean_2.0.010000.segs.json"
    segs.write_text(json.dumps({"segIndices": [0] * 11}))
    with pytest.raises(ValueError, match=re.escape(str(segs)) + ".*11 segment ids.*12 points"):
        scannet.read_scene(scene_dir)


def test_labels_ply_count_mismatch_is_named(tmp_path: Path) -> None:
    scene_dir = _dataset(tmp_path, "v2", aggregation=False, labels_ply=None)
    xyz, _ = mesh_vertices()
    labels = write_mesh_ply(
        scene_dir / f"{SCENE_ID}_vh_clean_2.labels.ply", xyz[:9], [[0, 1, 2]], label=np.ones(9)
    )
    with pytest.raises(ValueError, match=re.escape(str(labels)) + ".*9 labelled vertices.*12 points"):
        scannet.read_scene(scene_dir)


def test_nonfinite_coordinates_are_named(tmp_path: Path) -> None:
    scene_dir = _dataset(tmp_path)
    xyz, faces = mesh_vertices()
    xyz[4, 1] = np.nan
    xyz[7, 0] = np.inf
    mesh = write_mesh_ply(scene_dir / f"{SCENE_ID}_vh_clean_2.ply", xyz, faces)
    with pytest.raises(ValueError, match=re.escape(str(mesh)) + ": 2 row"):
        scannet.read_scene(scene_dir)


def test_old_labels_ply_without_table_is_named(tmp_path: Path) -> None:
    scene_dir = _dataset(tmp_path, None, aggregation=False, labels_ply="table")
    with pytest.raises(
        ValueError, match=re.escape(str(scene_dir / f"{SCENE_ID}_vh_clean_2.labels.ply")) + ".*outside NYU40"
    ):
        scannet.read_scene(scene_dir)
    # The older table as published has no id column: its labels.ply ids cannot be mapped.
    write_label_table(scene_dir.parent.parent / "scannet-labels.combined.tsv", "old", with_id=False)
    with pytest.raises(ValueError, match="no 'id' column"):
        scannet.read_scene(scene_dir)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("aggregation.json", "{not json", "malformed JSON"),
        ("aggregation.json", json.dumps({"segGroups": [{"label": "chair"}]}), "segGroups\\[0\\]"),
        ("segs.json", json.dumps({"segIndices": [0.5] * 12}), "integers"),
        ("segs.json", json.dumps({"params": {}}), "segIndices"),
    ],
)
def test_malformed_json_is_named(tmp_path: Path, name: str, content: str, match: str) -> None:
    scene_dir = _dataset(tmp_path)
    suffix = {"aggregation.json": ".aggregation.json", "segs.json": "_vh_clean_2.0.010000.segs.json"}[name]
    path = scene_dir / f"{SCENE_ID}{suffix}"
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as err:
        scannet.read_scene(scene_dir)
    assert str(path) in str(err.value)


def test_malformed_label_table_is_named(tmp_path: Path) -> None:
    table = tmp_path / "scannetv2-labels.combined.tsv"
    table.write_text("id\traw_category\tnyu40id\n1\twall\tone\n")
    with pytest.raises(ValueError, match=re.escape(str(table)) + ":2.*nyu40id"):
        scannet_labels.read_label_table(table)
    table.write_text("id\tname\tnyu40id\n")
    with pytest.raises(ValueError, match=re.escape(str(table)) + ".*raw_category"):
        scannet_labels.read_label_table(table)


# ---------------------------------------------------------------- splits


def test_official_splits() -> None:
    splits = {s: scannet.read_split(s) for s in ("train", "val", "test")}
    for s, n in scannet.SPLIT_SIZES.items():
        assert len(splits[s]) == len(set(splits[s])) == n
    rooms = {s: {x[:9] for x in ids} for s, ids in splits.items()}
    assert not rooms["train"] & rooms["val"]  # scans of one room never straddle train and val
    assert len(rooms["train"] | rooms["val"]) == 707 and len(rooms["test"]) == 100
    assert "scene0000_00" in splits["train"] and "scene0011_00" in splits["val"]
    assert splits["test"][0] == "scene0707_00" and splits["test"][-1] == "scene0806_00"


def test_split_file_and_scene_dir(tmp_path: Path) -> None:
    f = tmp_path / "mine.txt"
    f.write_text("scene0001_00\n\nscene0002_00\n")
    assert scannet.read_split("train", split_file=f) == ["scene0001_00", "scene0002_00"]
    with pytest.raises(ValueError, match="unknown ScanNet split"):
        scannet.read_split("trainval")
    scene_dir = _dataset(tmp_path)
    assert scannet.find_scene_dir(scene_dir.parent.parent, SCENE_ID) == scene_dir
    with pytest.raises(FileNotFoundError, match="scene0999_00"):
        scannet.find_scene_dir(tmp_path, "scene0999_00")


# ---------------------------------------------------------------- 2D frames


def test_frames_roundtrip_and_bad_pose_skipped(tmp_path: Path) -> None:
    frames_dir = tmp_path / "export"
    written, k_color, k_depth = write_frames(frames_dir, n=4, bad_pose=(1,))
    with pytest.warns(UserWarning, match=re.escape(str(frames_dir / "pose" / "1.txt"))):
        frames = list(scannet_frames.read_frames(frames_dir))
    assert [f.index for f in frames] == [0, 2, 3]
    for f in frames:
        w = written[f.index]
        assert f.color.dtype == np.uint8 and f.color.shape == (12, 16, 3)
        assert np.abs(f.color.astype(int) - w["color"]).max() <= 2  # JPEG
        assert f.depth.dtype == np.float32
        np.testing.assert_allclose(f.depth, w["depth"] / 1000.0, rtol=1e-6)
        assert f.depth[0, 0] == 0.0
        np.testing.assert_allclose(f.pose, w["pose"])
        np.testing.assert_allclose(f.intrinsics.color, k_color, atol=1e-6)
        np.testing.assert_allclose(f.intrinsics.depth, k_depth, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [f.index for f in scannet_frames.read_frames(frames_dir, every=2)] == [0, 2]


def test_frames_numeric_order(tmp_path: Path) -> None:
    frames_dir = tmp_path / "export"
    write_frames(frames_dir, n=3)
    for sub, ext in (("color", "jpg"), ("depth", "png"), ("pose", "txt")):
        shutil.copy(frames_dir / sub / f"2.{ext}", frames_dir / sub / f"10.{ext}")
    assert scannet_frames.frame_indices(frames_dir) == [0, 1, 2, 10]


def test_frame_errors_name_the_file(tmp_path: Path) -> None:
    frames_dir = tmp_path / "export"
    write_frames(frames_dir, n=2)
    (frames_dir / "depth" / "1.png").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(frames_dir / "depth" / "1.png"))):
        list(scannet_frames.read_frames(frames_dir))
    from PIL import Image

    eight_bit = frames_dir / "depth" / "1.png"
    Image.fromarray(np.zeros((8, 10), np.uint8)).save(eight_bit)
    with pytest.raises(ValueError, match=re.escape(str(eight_bit)) + ".*16-bit"):
        scannet_frames.read_depth(eight_bit)
    pose = frames_dir / "pose" / "0.txt"
    pose.write_text("1 0 0\n0 1 0\n")
    with pytest.raises(ValueError, match=re.escape(str(pose)) + ".*4 x 4"):
        scannet_frames.read_pose(pose)
    pose.write_text("1 0 0 0\n0 1 0 0\n0 0 x 0\n0 0 0 1\n")
    with pytest.raises(ValueError, match=re.escape(str(pose)) + ":3"):
        scannet_frames.read_pose(pose)
    jpg = frames_dir / "color" / "0.jpg"
    jpg.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=re.escape(str(jpg))):
        scannet_frames.read_color(jpg)
