"""Reading an offline W&B run without uploading it: its history rows, summary and media files.

wandb 0.31 has no Python reader of its ``run-<id>.wandb`` transaction log any more (the old
``wandb.sdk.internal.datastore`` went with the move of the internals to ``wandb-core``), so this is
one, for tests and for looking at a run on a machine with no network. The file is a LevelDB-style log
(wandb-core's ``leveldb`` package): a 7-byte header (``:W&B``, magic ``0xBEE1``, version 0), then
32 KiB blocks of chunks ``crc32 (4) | length (2) | type (1) | data``, where a record too long for its
block is split into FIRST / MIDDLE / LAST chunks and the checksum is zlib's CRC-32 of the type byte
and the data. Each record is a ``wandb.proto.wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["OfflineRun", "find_offline_runs", "iter_records", "read_offline_run"]

_HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
_BLOCK = 32768
_CHUNK_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _chunks(path: Path) -> Iterator[bytes]:
    data = path.read_bytes()
    if data[: len(_HEADER)] != _HEADER:
        raise ValueError(f"{path}: not a W&B run log (header {data[:7]!r}, expected {_HEADER!r})")
    pos, pending = len(_HEADER), None
    while pos + _CHUNK_HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _CHUNK_HEADER:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        if crc == 0 and length == 0 and kind == 0:  # zero padding to the end of the block
            pos += left
            continue
        start, end = pos + _CHUNK_HEADER, pos + _CHUNK_HEADER + length
        if end > len(data):
            return  # a record still being written: stop at the last whole one
        body = data[start:end]
        if zlib.crc32(body, zlib.crc32(bytes([kind]))) != crc:
            raise ValueError(f"{path}: checksum mismatch in the chunk at byte {pos}")
        pos = end
        if kind == _FULL:
            yield body
        elif kind == _FIRST:
            pending = bytearray(body)
        elif kind in (_MIDDLE, _LAST) and pending is not None:
            pending += body
            if kind == _LAST:
                yield bytes(pending)
                pending = None
        else:
            raise ValueError(f"{path}: chunk of type {kind} out of order at byte {pos}")


def iter_records(path: str | Path) -> Iterator[Any]:
    """The ``Record`` protobufs of a ``run-<id>.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    for raw in _chunks(Path(path)):
        record = pb.Record()
        record.ParseFromString(raw)
        yield record


def _put(target: dict[str, Any], item: Any) -> None:
    keys = list(item.nested_key) or [item.key]
    for k in keys[:-1]:
        target = target.setdefault(k, {})
    target[keys[-1]] = json.loads(item.value_json)


@dataclass
class OfflineRun:
    """One offline run: ``history`` (one dict a ``run.log`` call; media as their JSON descriptions,
    e.g. ``{"_type": "object3D-file", "path": "media/object3D/..."}``), ``summary``, ``config``, and
    whether the log holds the run's exit record (``finished``)."""

    path: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    finished: bool = False

    def scalars(self, key: str) -> list[float]:
        """The values logged under ``key``, in order."""
        return [row[key] for row in self.history if key in row and isinstance(row[key], (int, float))]

    def media(self, key: str) -> list[Path]:
        """The files of the media logged under ``key`` (images, tables, 3D objects), in order."""
        files = self.path / "files"
        return [files / row[key]["path"] for row in self.history if isinstance(row.get(key), dict)]

    def keys(self) -> set[str]:
        return {k for row in self.history for k in row}


def read_offline_run(run_dir: str | Path, timeout: float = 0.0) -> OfflineRun:
    """Read the ``offline-run-*`` folder (or its ``run-*.wandb`` file) of a W&B run.

    ``wandb.finish()`` can return before wandb-core has written the run's log (or even created the
    file), so a run read right after it may look empty or missing: up to ``timeout`` seconds are spent
    waiting for the run's exit record (then ``finished`` is True); what is there is returned either way.
    """
    run_dir = Path(run_dir)
    deadline = time.monotonic() + timeout
    while True:
        logs = [run_dir] if run_dir.suffix == ".wandb" else sorted(run_dir.glob("run-*.wandb"))
        logs = [log for log in logs if log.is_file()]
        run = _read(logs[0]) if len(logs) == 1 else None
        if (run is not None and run.finished) or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    if run is None:
        raise FileNotFoundError(f"{run_dir}: expected one run-*.wandb file, found {len(logs)}")
    return run


def _read(log: Path) -> OfflineRun:
    run = OfflineRun(log.parent)
    for record in iter_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "exit":
            run.finished = True
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _put(row, item)
            run.history.append(row)
        elif kind == "summary":
            for item in record.summary.update:
                _put(run.summary, item)
        elif kind in ("config", "run"):  # the run record holds the config given to wandb.init
            config = record.config if kind == "config" else record.run.config
            for item in config.update:
                _put(run.config, item)
    return run


def find_offline_runs(save_dir: str | Path) -> list[Path]:
    """The ``offline-run-*`` folders under ``<save_dir>/wandb``, oldest first."""
    return sorted((Path(save_dir) / "wandb").glob("offline-run-*"))
