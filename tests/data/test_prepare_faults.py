"""Preparation faults: a killed preparation resumes, a half-written or damaged scene is never read (and is
redone), two processes preparing one folder at once end with what one would have written.

The processes here are real (``fork``: the children start without importing torch and Lightning again)
and the kill is a real SIGKILL, sent by the child to itself in the middle of writing a scene.
"""

from __future__ import annotations

import fcntl
import json
import logging
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.data import indoor_writers as iw
from unsup3d.data import indoor_datamodules as dms
from unsup3d.data import prepare
from unsup3d.data.prepare import (
    preparation_lock,
    sweep_stale_temps,
    temp_path,
    write_json_atomic,
    write_text_atomic,
)
from unsup3d.data.scene_folder import list_scenes, read_scene, write_scene
from unsup3d.stssl.datamodules import SemanticKITTIDataModule

ROOMS = [f"Area_{a}_office_1" for a in range(1, 7)]
_fork = mp.get_context("fork")


@pytest.fixture(scope="module")
def s3dis_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = tmp_path_factory.mktemp("s3dis")
    for area in range(1, 7):
        iw.write_room(raw / f"Area_{area}" / "office_1", [("chair_1", 150), ("table_1", 150)], seed=area)
    return raw


def _s3dis(raw: Path, data_root: Path) -> dms.S3DISDataModule:
    return dms.S3DISDataModule(raw_root=str(raw), data_root=str(data_root), batch_size=2)


@pytest.fixture(scope="module")
def clean_root(s3dis_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What one uninterrupted preparation writes."""
    dm = _s3dis(s3dis_raw, tmp_path_factory.mktemp("clean"))
    dm.prepare_data()
    return dm.prepared_root


def _tree(root: Path) -> dict[str, object]:
    """Every visible file under ``root`` by relative path: arrays loaded, JSON parsed."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            path = Path(dirpath) / name
            if name.startswith("."):
                continue
            rel = str(path.relative_to(root))
            is_npy = name.endswith(".npy")
            out[rel] = np.load(path, allow_pickle=False) if is_npy else json.loads(path.read_text())
    return out


def _assert_same_tree(a: Path, b: Path) -> None:
    ta, tb = _tree(a), _tree(b)
    assert sorted(ta) == sorted(tb)
    for key, value in ta.items():
        if isinstance(value, np.ndarray):
            assert value.dtype == tb[key].dtype, key
            np.testing.assert_array_equal(value, tb[key], err_msg=key)
        else:
            assert value == tb[key], key


def _counting(log: Path) -> Callable[..., None]:
    """``_convert_s3dis`` that also appends the scene it converts to ``log`` (O_APPEND: shared safely)."""
    real = dms._convert_s3dis

    def convert(room_dir: Path, out_dir: Path, *args: object) -> None:
        with open(log, "a") as f:
            f.write(f"{out_dir.name}\n")
        real(room_dir, out_dir, *args)

    return convert


def _converted(log: Path) -> list[str]:
    return sorted(log.read_text().split()) if log.exists() else []


# -- a killed preparation --------------------------------------------------------------------------


def _prepare_until_killed(raw: Path, data_root: Path, log: Path) -> None:
    """Prepare, and SIGKILL this process once the third scene's temporary folder holds two arrays."""
    real_save = np.save
    scenes: list[Path] = []

    def save(file: object, arr: object, *args: object, **kwargs: object) -> None:
        folder = Path(str(file)).parent
        if ".tmp-" in folder.name:
            if folder not in scenes:
                scenes.append(folder)
            if len(scenes) == 3 and len(list(folder.iterdir())) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        real_save(file, arr, *args, **kwargs)

    np.save = save
    dms._convert_s3dis = _counting(log)
    _s3dis(raw, data_root).prepare_data()


def test_killed_preparation_resumes_where_it_stopped(
    s3dis_raw: Path, clean_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = (s3dis_raw, tmp_path / "data", tmp_path / "killed")
    child = _fork.Process(target=_prepare_until_killed, args=args)
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL
    assert _converted(tmp_path / "killed") == ROOMS[:3]

    dm = _s3dis(s3dis_raw, tmp_path / "data")
    root = dm.prepared_root
    done = list_scenes(root, "train")
    assert [d.name for d in done] == ROOMS[:2] and not (root / "prepared.json").exists()
    (half,) = [p for p in (root / "train").iterdir() if p.name.startswith(".")]
    assert ROOMS[2] in half.name and len(list(half.iterdir())) == 2
    # a reader never sees the half-written scene, and is told the preparation has not finished
    with pytest.warns(UserWarning, match="has not finished"):
        assert dm.scene_dirs("train") == done

    stamps = {f: (f.stat().st_ino, f.stat().st_mtime_ns) for d in done for f in d.iterdir()}
    monkeypatch.setattr(dms, "_convert_s3dis", _counting(tmp_path / "resumed"))
    dm.prepare_data()
    assert _converted(tmp_path / "resumed") == ROOMS[2:]  # the finished scenes are not redone
    assert {f: (f.stat().st_ino, f.stat().st_mtime_ns) for f in stamps} == stamps
    assert not half.exists()  # its writer is dead: the next preparation removed it
    _assert_same_tree(root, clean_root)


# -- half-written and damaged scenes ---------------------------------------------------------------


def test_damaged_scenes_are_skipped_by_readers_and_redone_by_preparation(
    s3dis_raw: Path, clean_root: Path, tmp_path: Path
) -> None:
    dm = _s3dis(s3dis_raw, tmp_path)
    dm.prepare_data()
    train = dm.prepared_root / "train"
    truncated, missing, pickled = (train / r for r in ROOMS[:3])
    data = (truncated / "coord.npy").read_bytes()
    (truncated / "coord.npy").write_bytes(data[: len(data) // 2])
    (missing / "segment.npy").unlink()
    np.save(pickled / "normal.npy", np.array([{"not": "an array"}], dtype=object), allow_pickle=True)
    # a scene folder a writer began and never renamed into place
    (train / f".{ROOMS[3]}.tmp-otherhost-1-0123abcd").mkdir()
    np.save(train / f".{ROOMS[3]}.tmp-otherhost-1-0123abcd" / "coord.npy", np.zeros((5, 3), np.float32))

    with pytest.warns(UserWarning) as caught:
        dirs = dm.scene_dirs("train")
    assert [d.name for d in dirs] == ROOMS[3:4] + ROOMS[5:]
    said = "\n".join(str(w.message) for w in caught)
    assert f"{truncated}: coord.npy: it is truncated" in said
    assert f"{missing}: segment.npy is missing" in said
    assert f"{pickled}: normal.npy: it holds Python objects" in said

    with pytest.warns(UserWarning, match="redoing S3DIS room") as caught:
        dm.prepare_data()
    assert len([w for w in caught if "redoing" in str(w.message)]) == 3
    _assert_same_tree(dm.prepared_root, clean_root)


def test_damaged_cluster_cache_is_redone(kitti_seq_dir: Path, tmp_path: Path) -> None:
    dm = SemanticKITTIDataModule(
        raw_root=str(kitti_seq_dir.parent.parent), train_sequences=["00"], val_sequences=[],
        data_root=str(tmp_path), max_frames=1,
    )  # fmt: skip
    dm.prepare_data()
    cache = dm.prepared_root / "clusters" / "00" / "000000.npy"
    good = np.load(cache)
    cache.write_bytes(cache.read_bytes()[:-100])
    with pytest.warns(UserWarning, match=f"redoing frame .*{cache}.*truncated"):
        dm.prepare_data()
    np.testing.assert_array_equal(np.load(cache), good)


# -- two processes at once -------------------------------------------------------------------------


def _prepare_together(raw: Path, data_root: Path, log: Path, barrier: object) -> None:
    dms._convert_s3dis = _counting(log)
    dm = _s3dis(raw, data_root)
    barrier.wait(60)
    dm.prepare_data()


def test_two_processes_preparing_one_root_end_as_one_would(
    s3dis_raw: Path, clean_root: Path, tmp_path: Path
) -> None:
    barrier = _fork.Barrier(2)
    args = (s3dis_raw, tmp_path / "data", tmp_path / "log", barrier)
    procs = [_fork.Process(target=_prepare_together, args=args) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert _converted(tmp_path / "log") == ROOMS  # the second one waited, then found the work done
    root = _s3dis(s3dis_raw, tmp_path / "data").prepared_root
    _assert_same_tree(root, clean_root)
    assert [p.name for p in root.rglob(".*") if p.name != ".lock"] == []


def _write_repeatedly(scene_dir: Path, barrier: object) -> None:
    rng = np.random.default_rng(0)
    scene = {"coord": rng.random((20, 3)), "color": rng.integers(0, 256, (20, 3))}
    barrier.wait(60)
    for _ in range(150):
        write_scene(scene_dir, scene)


def test_concurrent_writes_of_one_scene_never_corrupt_it(tmp_path: Path) -> None:
    """Without the lock too: a rename onto a scene another process just finished must not fail or mix.
    (Three writers, 150 rewrites each: a plain move-aside-then-rename failed this in 5 of 5 tries.)"""
    barrier = _fork.Barrier(3)
    scene_dir = tmp_path / "train" / "s"
    procs = [_fork.Process(target=_write_repeatedly, args=(scene_dir, barrier)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    back = read_scene(scene_dir)
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(back["coord"], rng.random((20, 3)).astype(np.float32))
    assert sorted(back) == ["color", "coord"]
    assert [p.name for p in (tmp_path / "train").iterdir()] == ["s"]


def test_a_second_preparation_waits_saying_for_whom(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "prepared"
    root.mkdir()
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT)  # another "process": its own open file
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, json.dumps({"pid": 4242, "host": "node7", "since": time.time()}).encode())
    entered = threading.Event()

    def second() -> None:
        with preparation_lock(root):
            entered.set()

    caplog.set_level(logging.WARNING, logger=prepare.__name__)
    thread = threading.Thread(target=second)
    thread.start()
    deadline = time.monotonic() + 20
    while "waiting" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.02)
    assert f"{root} is being prepared by pid 4242 on node7" in caplog.text and "waiting" in caplog.text
    time.sleep(0.2)
    assert not entered.is_set()
    os.close(fd)  # the first one ends (or dies): the kernel drops its lock
    thread.join(20)
    assert entered.is_set()
    with preparation_lock(root), preparation_lock(root):  # re-entrant within one process
        assert json.loads((root / ".lock").read_text())["pid"] == os.getpid()


def test_only_temporaries_of_dead_writers_on_this_host_are_swept(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = prepare._HOST
    split = tmp_path / "train"
    (split / "s").mkdir(parents=True)
    stale_dir = split / f".s.tmp-{host}-{dead.pid}-0123abcd"
    stale_file = split / "s" / f".superpoint.tmp-{host}-{dead.pid}-89abcdef.npy"
    live = temp_path(split / "t")  # this process: alive
    elsewhere = split / f".u.tmp-{host}x-{dead.pid}-0123abcd"  # another host: its pid means nothing here
    other = split / ".hidden"
    for d in (stale_dir, live, elsewhere):
        d.mkdir()
    for f in (stale_file, other):
        f.write_bytes(b"")
    assert sorted(sweep_stale_temps(tmp_path)) == sorted([stale_dir, stale_file])
    assert not stale_dir.exists() and not stale_file.exists()
    assert live.exists() and elsewhere.exists() and other.exists()


def test_write_text_atomic_leaves_an_identical_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "prepared.json"
    assert write_json_atomic(path, {"settings": {"a": 1}})
    stamp = (path.stat().st_ino, path.stat().st_mtime_ns)
    assert not write_json_atomic(path, {"settings": {"a": 1}})  # same JSON: not rewritten
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == stamp
    assert write_text_atomic(path, "changed\n") and path.read_text() == "changed\n"
    assert not [p for p in path.parent.iterdir() if p.name != path.name]  # no temporary left


def test_a_stale_output_is_redone_without_the_damage_warning(tmp_path: Path) -> None:
    """A job whose check answers STALE (whole, but made with other settings) runs again silently; any
    other problem runs it again with the "damaged" warning; None skips it."""
    import warnings

    from unsup3d.data.prepare import STALE, Job, run_jobs

    out = tmp_path / "out.txt"
    out.write_text("old")
    ran: list[str] = []

    def write(tag: str) -> None:
        ran.append(tag)
        out.write_text(tag)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_jobs([Job("stale", out, write, ("stale",), check=lambda _: STALE)])
        run_jobs([Job("current", out, write, ("current",), check=lambda _: None)])
    with pytest.warns(UserWarning, match=r"redoing damaged: its output .* is damaged \(truncated\)"):
        run_jobs([Job("damaged", out, write, ("damaged",), check=lambda _: "truncated")])
    assert ran == ["stale", "damaged"] and out.read_text() == "damaged"
