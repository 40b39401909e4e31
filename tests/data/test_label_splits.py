"""Label-efficient splits: the release's sizes on SemanticKITTI, reproducible by seed, saved and read back,
and a data module that trains on the split's frames only."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from unsup3d.data.label_splits import draw_split, read_split, restrict_to_split, split_size, write_split
from unsup3d.stssl.datamodules import SyntheticLidarDataModule

# SemanticKITTI's training sequences and their scan counts (19,130 in all).
KITTI_TRAIN = {
    "00": 4541, "01": 1101, "02": 4661, "03": 801, "04": 271, "05": 2761, "06": 1101, "07": 1101,
    "09": 1591, "10": 1201,
}  # fmt: skip


@pytest.mark.parametrize(("fraction", "scans"), [(0.001, 17), (0.01, 188), (0.1, 1912), (1.0, 19130)])
def test_semantic_kitti_split_sizes(fraction: float, scans: int) -> None:
    frames = {seq: range(n) for seq, n in KITTI_TRAIN.items()}
    split = draw_split(frames, fraction, seed=0)
    assert sum(len(v) for v in split.values()) == scans
    for seq, idx in split.items():
        assert len(set(idx)) == len(idx) == split_size(KITTI_TRAIN[seq], fraction)
        assert all(0 <= i < KITTI_TRAIN[seq] for i in idx) and idx == sorted(idx)
    assert sum(KITTI_TRAIN.values()) == 19130


def test_splits_are_reproducible_by_seed() -> None:
    frames = {seq: range(n) for seq, n in KITTI_TRAIN.items()}
    a, b = draw_split(frames, 0.01, seed=3), draw_split(frames, 0.01, seed=3)
    assert a == b
    assert draw_split(frames, 0.01, seed=4) != a
    # a sequence's draw does not depend on the other sequences
    assert draw_split({"05": range(2761)}, 0.01, seed=3)["05"] == a["05"]
    with pytest.raises(ValueError, match="fraction"):
        split_size(10, 0.0)


def test_split_file_round_trip_and_errors(tmp_path: Path) -> None:
    split = draw_split({"00": range(50), "01": range(30)}, 0.1, seed=1)
    path = tmp_path / "split.json"
    write_split(path, split, 0.1, 1, 80)
    assert read_split(path) == split
    assert json.loads(path.read_text())["fraction"] == 0.1
    bad = tmp_path / "bad.json"
    bad.write_text('{"frames": 3}')
    with pytest.raises(ValueError, match="bad.json"):
        read_split(bad)
    with pytest.raises(ValueError, match="split.json"):  # it names a frame that is not available
        restrict_to_split([("00", i) for i in range(3)], path, None)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        restrict_to_split([("00", 0)], tmp_path / "missing.json", None)


def test_data_module_trains_on_the_split_only(tmp_path: Path) -> None:
    kw = dict(
        num_sequences=3, num_val=1, frames_per_sequence=8, azimuth_steps=128, data_root=str(tmp_path),
        clusters=False, train_labels=True, batch_size=1,
    )  # fmt: skip
    dm = SyntheticLidarDataModule(**kw, label_fraction=0.25, split_seed=5)
    dm.prepare_data()
    frames = dm.split_frames("train")
    # max(1, floor(8 * 0.25)) = 2 scans from each of the 2 training sequences
    assert Counter(f.sequence for f in frames) == {"00": 2, "01": 2}
    saved = next((dm.prepared_root / "splits").glob("*.json"))
    assert read_split(saved) == {seq: [f.index for f in frames if f.sequence == seq] for seq in ("00", "01")}
    again = SyntheticLidarDataModule(**kw, label_fraction=0.25, split_seed=5).split_frames("train")
    assert [(f.sequence, f.index) for f in again] == [(f.sequence, f.index) for f in frames]
    from_file = SyntheticLidarDataModule(**kw, split_file=str(saved)).split_frames("train")
    assert [(f.sequence, f.index) for f in from_file] == [(f.sequence, f.index) for f in frames]
    other = SyntheticLidarDataModule(**kw, label_fraction=0.25, split_seed=6).split_frames("train")
    assert [(f.sequence, f.index) for f in other] != [(f.sequence, f.index) for f in frames]

    dm.setup("fit")
    # the loader serves the split's 4 scans, each once per epoch, and no other scan
    train_set = dm.datasets["train"]
    assert len(train_set) == 4
    served = []
    for batch in dm.train_dataloader():
        assert (batch["segment"] >= 0).any() and "cluster" not in batch  # labels served; no clusters needed
        refs = [train_set.frames[i] for i in batch["scene_index"].tolist()]
        served += [(f.sequence, f.index) for f in refs]
    assert sorted(served) == sorted((seq, i) for seq, idx in read_split(saved).items() for i in idx)
    assert len(dm.datasets["val"]) == 8  # validation keeps every frame
