"""S3DIS readers on small rooms written in the real layout (tests/data/indoor_writers.py)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tests.data.indoor_writers import write_annotation, write_room
from unsup3d.data.formats import s3dis

# File stems in a deliberately unsorted order; "chair_10" sorts before "chair_2" (Pointcept's
# numbering follows the sorted file names), and "stairs" counts as clutter.
OBJECTS = [
    ("wall_1", 30),
    ("chair_2", 5),
    ("chair_10", 7),
    ("ceiling_1", 20),
    ("clutter_3", 4),
    ("stairs_1", 3),
]


def _room(tmp_path: Path, objects=OBJECTS) -> tuple[Path, dict[str, np.ndarray]]:
    room_dir = tmp_path / "Stanford3dDataset_v1.2" / "Area_1" / "office_1"
    return room_dir, write_room(room_dir, objects)


def _expected(points: dict[str, np.ndarray], ignore_clutter: bool = False) -> dict[str, np.ndarray]:
    stems = sorted(points)  # "ceiling_1", "chair_10", "chair_2", "clutter_3", "stairs_1", "wall_1"
    names = {"ceiling": 0, "chair": 8, "clutter": 12, "stairs": 12, "wall": 2}
    seg, inst = [], []
    for i, stem in enumerate(stems):
        cls = names[stem.split("_")[0]]
        cls = -1 if ignore_clutter and cls == 12 else cls
        seg += [cls] * len(points[stem])
        inst += [i] * len(points[stem])
    pts = np.concatenate([points[s] for s in stems])
    return {"coord": pts[:, :3], "color": pts[:, 3:], "segment": np.array(seg), "instance": np.array(inst)}


@pytest.mark.parametrize("ignore_clutter", [False, True])
def test_read_room(tmp_path: Path, ignore_clutter: bool) -> None:
    room_dir, points = _room(tmp_path)
    room = s3dis.read_room(room_dir, ignore_clutter=ignore_clutter)
    expected = _expected(points, ignore_clutter)
    assert room["coord"].dtype == np.float32 and room["color"].dtype == np.uint8
    assert room["segment"].dtype == np.int64 and room["instance"].dtype == np.int64
    np.testing.assert_allclose(room["coord"], expected["coord"], atol=1e-6)
    np.testing.assert_array_equal(room["color"], expected["color"])
    np.testing.assert_array_equal(room["segment"], expected["segment"])
    np.testing.assert_array_equal(room["instance"], expected["instance"])
    assert set(room) == {"coord", "color", "segment", "instance"}  # no normals


def test_class_table() -> None:
    assert s3dis.S3DIS_CLASS_NAMES == (
        "ceiling", "floor", "wall", "beam", "column", "window", "door", "table", "chair", "sofa",
        "bookcase", "board", "clutter",
    )  # fmt: skip
    assert s3dis.S3DIS_AREAS["val"] == (s3dis.VALIDATION_AREA,) == (5,)
    assert sorted(s3dis.S3DIS_AREAS["train"] + s3dis.S3DIS_AREAS["val"]) == [1, 2, 3, 4, 5, 6]


def test_list_rooms(tmp_path: Path) -> None:
    root = tmp_path / "s3dis"
    for area, room in [(1, "office_2"), (1, "conferenceRoom_1"), (5, "hallway_6"), (2, "WC_1")]:
        write_room(root / f"Area_{area}" / room, [("floor_1", 2)])
    (root / "Area_1" / "Area_1_alignmentAngle.txt").write_text("office_2 0\n")  # not a room
    (root / "Area_1" / "notes").mkdir()  # a folder without Annotations is not a room either
    rooms = s3dis.list_rooms(root, areas=[1, 5])
    assert [r.relative_to(root).as_posix() for r in rooms] == [
        "Area_1/conferenceRoom_1", "Area_1/office_2", "Area_5/hallway_6",
    ]  # fmt: skip
    assert len(s3dis.list_rooms(root, areas=[2])) == 1
    with pytest.raises(FileNotFoundError, match=re.escape(str(root / "Area_3"))):
        s3dis.list_rooms(root, areas=[3])


def test_stray_character_line_is_named_and_can_be_skipped(tmp_path: Path) -> None:
    room_dir, points = _room(tmp_path, [("ceiling_1", 6), ("floor_1", 3)])
    bad = room_dir / "Annotations" / "ceiling_1.txt"
    lines = bad.read_text().splitlines()
    lines[3] = "1.5 2.5 103.0\x10000 10 20 30"  # a stray control byte, as in Area_5/hallway_6
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{bad}:4")):
        s3dis.read_room(room_dir)
    with pytest.warns(UserWarning, match=re.escape(str(bad)) + r".*1 malformed line.*\[4\]"):
        room = s3dis.read_room(room_dir, skip_bad_lines=True)
    assert len(room["coord"]) == 8
    kept = np.delete(points["ceiling_1"], 3, axis=0)
    np.testing.assert_allclose(room["coord"][:5], kept[:, :3], atol=1e-6)


def test_short_line_is_named(tmp_path: Path) -> None:
    path = write_annotation(tmp_path / "Annotations" / "wall_1.txt", np.ones((4, 6)))
    path.write_text(path.read_text() + "1.0 2.0 3.0 4 5\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}:5") + ".*expected 6 numbers"):
        s3dis.read_annotation(path)


def test_nonfinite_and_bad_colour_are_named(tmp_path: Path) -> None:
    pts = np.ones((4, 6))
    pts[2, 1] = np.nan
    path = write_annotation(tmp_path / "Annotations" / "wall_1.txt", pts, fmt="%f")
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": 1 row"):
        s3dis.read_annotation(path)
    pts[2, 1] = 0.0
    pts[0, 4] = 300
    path = write_annotation(tmp_path / "Annotations" / "wall_2.txt", pts, fmt="%f")
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*outside 0..255"):
        s3dis.read_annotation(path)


def test_empty_room_is_named(tmp_path: Path) -> None:
    room_dir = tmp_path / "Area_1" / "office_9"
    (room_dir / "Annotations").mkdir(parents=True)
    with pytest.raises(ValueError, match=re.escape(str(room_dir)) + ": empty room"):
        s3dis.read_room(room_dir)
    (room_dir / "Annotations" / "wall_1.txt").write_text("")  # a file with no points is still empty
    with pytest.raises(ValueError, match=re.escape(str(room_dir)) + ": empty room"):
        s3dis.read_room(room_dir)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nowhere" / "Annotations"))):
        s3dis.read_room(tmp_path / "nowhere")


def test_unknown_class_is_named(tmp_path: Path) -> None:
    room_dir, _ = _room(tmp_path, [("wall_1", 2), ("lamp_1", 2)])
    with pytest.raises(ValueError, match=re.escape(str(room_dir / "Annotations" / "lamp_1.txt")) + ".*lamp"):
        s3dis.read_room(room_dir)
