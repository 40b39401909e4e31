"""The teacher-free path's preparation: hand-made descriptors written into every scene folder, once.

Each scene of the data module's splits receives ``descriptor.npy`` (float32 ``(N, 14)``,
:func:`unsup3d.pointdc.geometric.point_descriptors` on its points, colours and super-voxels) and
``descriptor.json`` (the settings), written last: a scene whose json records the same settings is
skipped, a changed setting recomputes it, an interrupted scene never looks finished. Batches carry the
descriptors as the per-point ``descriptor`` key: SVC joins them to its clustering features
(``SVCModule(descriptor_weights=...)``) and CMD can distil them (``CMDModule(target_key="descriptor")``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from unsup3d.data.prepare import Job, npy_problem, run_jobs, write_json_atomic
from unsup3d.data.scene_folder import add_arrays, read_scene
from unsup3d.pointdc.geometric import point_descriptors

#: bump when the descriptors a given setting produces change
DESCRIPTOR_VERSION = 1
DESCRIPTOR_KEY = "descriptor"


@dataclass
class Descriptors:
    """Settings of the descriptor pass (a data module's ``descriptors`` init arg).

    Args:
        k: neighbours of the local shape (covariance) features.
        column: cell side (metres) of the vertical-column context.
        splits: splits that get descriptors (SVC's validation reads them only where it pools with them).
    """

    k: int = 16
    column: float = 0.3
    splits: list[str] = field(default_factory=lambda: ["train", "val"])

    def settings(self) -> dict[str, Any]:
        return {"version": DESCRIPTOR_VERSION, "k": self.k, "column": self.column}


def as_descriptors(value: Descriptors | dict[str, Any] | bool | None) -> Descriptors | None:
    """Accept the dataclass, a plain dict, True (defaults) or None / False (no descriptors)."""
    if value is None or value is False:
        return None
    if value is True:
        return Descriptors()
    if isinstance(value, Descriptors):
        return value
    return Descriptors(**dict(value))


def _settings_file(scene_dir: Path) -> Path:
    return scene_dir / f"{DESCRIPTOR_KEY}.json"


def descriptors_problem(scene_dir: Path, settings: dict[str, Any]) -> str | None:
    """Why a scene's descriptors must be (re)computed, or None when they are current."""
    f = _settings_file(scene_dir)
    if not f.is_file():
        return "no descriptor.json"
    try:
        recorded = json.loads(f.read_text())
    except (OSError, ValueError):
        return "descriptor.json is unreadable"
    if recorded != settings:
        return "other settings"
    return npy_problem(scene_dir / f"{DESCRIPTOR_KEY}.npy")


def _output_problem(output: Path, settings: dict[str, Any]) -> str | None:
    # a job's check (module level, so worker processes can unpickle it)
    return descriptors_problem(output.parent, settings)


def scene_descriptors(scene_dir: Path, cfg: Descriptors) -> None:
    """Compute and write one scene's descriptors (the json last)."""
    _settings_file(scene_dir).unlink(missing_ok=True)
    keys = [k for k in ("coord", "color", "superpoint") if (scene_dir / f"{k}.npy").is_file()]
    scene = read_scene(scene_dir, keys)
    desc = point_descriptors(
        scene["coord"], scene.get("color"), scene.get("superpoint"), k=cfg.k, column=cfg.column
    )
    add_arrays(scene_dir, {DESCRIPTOR_KEY: desc})
    write_json_atomic(_settings_file(scene_dir), cfg.settings())


def run_descriptor_pass(scene_dirs: Sequence[Path], cfg: Descriptors, workers: int = 1) -> list[str]:
    """Descriptors for every scene of ``scene_dirs`` whose own are missing or stale; returns the names
    of scenes skipped as unusable."""
    settings = cfg.settings()
    for d in scene_dirs:  # descriptors of other settings are not damage: redo them without a warning
        if descriptors_problem(d, settings) == "other settings":
            _settings_file(d).unlink()
    jobs = [
        Job(
            f"scene {d}",
            _settings_file(d),
            scene_descriptors,
            (d, cfg),
            check=partial(_output_problem, settings=settings),
        )
        for d in scene_dirs
    ]
    return run_jobs(jobs, workers, desc="descriptors")


__all__ = ["DESCRIPTOR_KEY", "Descriptors", "as_descriptors", "descriptors_problem", "run_descriptor_pass"]
