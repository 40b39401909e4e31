"""CMD's feature pass: 2D teacher features lifted onto every point of the prepared scenes, once.

PointDC Sec. 3.3, Eq. 3-6 (the per-point half: projection, visibility, sampling, pooling over views;
the mean over each super-voxel's seen points is taken at training time, on the points of the crop,
by :class:`unsup3d.pointdc.cmd.CMDModule`). Each scene folder receives

- ``cmd_target.npy``: float16 ``(N, D)``, the view-pooled teacher feature of every point (0 unseen);
- ``cmd_seen.npy``: bool ``(N,)``, whether any view saw the point;
- ``cmd_target.json``: the settings that produced them, digests of the arrays they were computed from
  (:func:`target_sources`), and a few statistics.

Views are the scene's RGB-D frames where the raw dataset has them (ScanNet's SensReader exports, the
synthetic rooms), else renderings of the coloured cloud from cameras inside the room and around it
(S3DIS, bare scene folders). The pass is resumable: a scene whose json records the same settings and
sources is skipped, a changed setting, or points, super-voxels or (rendered views) colours changed in
place, recomputes it; a json written before the sources were recorded is trusted. The json is removed
before new arrays are written and written last, so an interrupted scene never looks finished.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from unsup3d.data.prepare import load_npy, write_json_atomic
from unsup3d.data.scene_folder import add_arrays, read_scene, source_digests

#: bump when the arrays a given setting produces change
FEATURE_PASS_VERSION = 1
TARGET_KEY, SEEN_KEY = "cmd_target", "cmd_seen"
SETTINGS_FILE = f"{TARGET_KEY}.json"


@dataclass
class FeatureTargets:
    """Settings of CMD's feature pass (a data module's ``feature_targets`` init arg).

    Args:
        teacher: the 2D teacher ``h``: a Hugging Face name (from the local cache) or a local folder.
            The recipe's is DINO ViT-S/8; the paper distils STEGO (on DINO), whose head is not on the hub.
        allow_random_teacher: without the weights, continue with a RANDOM teacher of the same
            architecture (a loud warning; the targets then carry no semantics: smoke tests only).
            False stops with the teacher's error, which says how to get the weights.
        random_teacher_config: overrides of that random architecture (e.g. a tiny width for CPU
            quickstarts); used only when the random fallback happens.
        cache_dir: Hugging Face cache to look in (default: the usual one).
        views: ``"frames"`` (RGB-D frames, an error where a scene has none), ``"render"`` (rendered
            views of the cloud), or ``"auto"`` (frames where the raw scene has them, else render).
        frame_every: use every n-th exported frame (ScanNet's exports hold thousands a scene).
        num_views: rendered views a scene.
        inside_fraction: share of rendered views from cameras standing in the room
            (:func:`~unsup3d.vision.cameras_inside`); the rest look from outside
            (:func:`~unsup3d.vision.cameras_around`), which a ceiling hides.
        image_size: (height, width) every view is resized or rendered to before the teacher.
        view_pool: pooling over views, ``"max"`` (Eq. 6) or ``"mean"``.
        depth_tolerance: metres between a point's depth and the view's depth for it to count as seen.
        splits: splits that get targets (validation only needs them to log ``val/loss``).
        chunk: views per teacher call.
        device: where the pass runs (default: CUDA when there is one).
        seed: seeds the rendered cameras.
    """

    teacher: str = "facebook/dino-vits8"
    allow_random_teacher: bool = False
    random_teacher_config: dict[str, Any] | None = None
    cache_dir: str | None = None
    views: Literal["auto", "frames", "render"] = "auto"
    frame_every: int = 20
    num_views: int = 24
    inside_fraction: float = 0.75
    image_size: tuple[int, int] = (240, 320)
    view_pool: Literal["max", "mean"] = "max"
    depth_tolerance: float = 0.05
    splits: list[str] = field(default_factory=lambda: ["train"])
    chunk: int = 8
    device: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.views not in ("auto", "frames", "render"):
            raise ValueError(f"feature_targets.views must be auto, frames or render, got {self.views!r}")
        if self.view_pool not in ("max", "mean"):
            raise ValueError(f"feature_targets.view_pool must be max or mean, got {self.view_pool!r}")
        if self.frame_every < 1 or self.num_views < 1 or self.chunk < 1:
            raise ValueError("feature_targets: frame_every, num_views and chunk must be >= 1")
        if not 0.0 <= self.inside_fraction <= 1.0:
            raise ValueError(
                f"feature_targets.inside_fraction must lie in [0, 1], got {self.inside_fraction}"
            )
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        if min(self.image_size) < 8:
            raise ValueError(f"feature_targets.image_size must be at least 8 x 8, got {self.image_size}")


def load_teacher(cfg: FeatureTargets) -> Any:
    """The frozen ``ViTTeacher`` of ``cfg`` (random only as ``allow_random_teacher`` permits)."""
    from unsup3d.vision import ViTTeacher

    return ViTTeacher.from_pretrained(
        cfg.teacher,
        allow_random=cfg.allow_random_teacher,
        random_config_overrides=cfg.random_teacher_config,
        cache_dir=cfg.cache_dir,
        seed=cfg.seed,
    )


def has_frames(frames_dir: Path | None) -> bool:
    """Whether ``frames_dir`` holds a SensReader export (``color/*.jpg``)."""
    return frames_dir is not None and any((frames_dir / "color").glob("*.jpg"))


def scene_settings(cfg: FeatureTargets, teacher: Any, kind: str) -> dict[str, Any]:
    """What decides a scene's targets (compared with its json to skip or recompute it)."""
    out: dict[str, Any] = {
        "version": FEATURE_PASS_VERSION,
        "teacher": teacher.name or cfg.teacher,
        "teacher_pretrained": bool(teacher.pretrained),
        "feature_dim": int(teacher.feature_dim),
        "views": kind,
        "image_size": list(cfg.image_size),
        "view_pool": cfg.view_pool,
        "depth_tolerance": cfg.depth_tolerance,
    }
    if not teacher.pretrained:
        out["random_teacher_config"] = cfg.random_teacher_config
        out["seed"] = cfg.seed
    if kind == "frames":
        out["frame_every"] = cfg.frame_every
    else:
        out.update(num_views=cfg.num_views, inside_fraction=cfg.inside_fraction, seed=cfg.seed)
    return out


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def target_sources(scene_dir: Path, kind: str) -> dict[str, str | None]:
    """Digests (:func:`~unsup3d.data.scene_folder.source_digests`) of the arrays a scene's targets are
    computed from: its points and super-voxels, and with rendered views (``kind`` ``"render"``) its
    colours. Raw frames are not digested (too many files): a changed frame export is not noticed."""
    return source_digests(scene_dir, ("coord", "superpoint") + (("color",) if kind == "render" else ()))


def is_current(scene_dir: Path, settings: dict[str, Any]) -> bool:
    """Whether the scene already holds targets made with ``settings`` from its present arrays
    (:func:`target_sources`; a record written before the sources were is trusted), for all of its
    points."""
    record = _read_json(scene_dir / SETTINGS_FILE)
    if record is None or record.get("settings") != json.loads(json.dumps(settings)):
        return False
    if "sources" in record and record["sources"] != target_sources(scene_dir, settings["views"]):
        return False
    try:
        n = len(np.load(scene_dir / "coord.npy", mmap_mode="r", allow_pickle=False))
        target = np.load(scene_dir / f"{TARGET_KEY}.npy", mmap_mode="r", allow_pickle=False)
        seen = np.load(scene_dir / f"{SEEN_KEY}.npy", mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return False
    return target.shape == (n, settings["feature_dim"]) and seen.shape == (n,)


def scene_views(
    scene: dict[str, np.ndarray],
    cfg: FeatureTargets,
    kind: str,
    frames_dir: Path | None,
    device: torch.device,
) -> Any:
    """The views of one scene: its RGB-D frames, or renderings of its coloured cloud."""
    from unsup3d.pointdc.lifting import views_from_frames, views_from_render
    from unsup3d.vision import Cameras, cameras_around, cameras_inside

    if kind == "frames":
        from unsup3d.data.formats.scannet_frames import read_frames

        frames = (
            (np.array(f.color), f.depth, f.pose, f.intrinsics.color)
            for f in read_frames(frames_dir, cfg.frame_every)
        )
        return views_from_frames(frames, image_size=cfg.image_size, name=str(frames_dir))
    points = torch.from_numpy(np.ascontiguousarray(scene["coord"], dtype=np.float32)).to(device)
    colors = torch.from_numpy(np.ascontiguousarray(scene["color"], dtype=np.uint8)).to(device)
    n_in = round(cfg.num_views * cfg.inside_fraction)
    parts = []
    if n_in:
        parts.append(cameras_inside(points, n_in, image_size=cfg.image_size, seed=cfg.seed))
    if cfg.num_views - n_in:
        parts.append(cameras_around(points, cfg.num_views - n_in, image_size=cfg.image_size, seed=cfg.seed))
    cameras = Cameras(
        torch.cat([c.intrinsics for c in parts]), torch.cat([c.cam_to_world for c in parts]), cfg.image_size
    )
    return views_from_render(points, colors, cameras)


def scene_targets(
    scene_dir: Path,
    teacher: Any,
    cfg: FeatureTargets,
    kind: str,
    frames_dir: Path | None,
    device: torch.device,
) -> dict[str, Any]:
    """Compute and write one scene's targets (json last); returns its statistics."""
    from unsup3d.pointdc.lifting import compute_targets

    start = time.perf_counter()
    keys = ["coord", "superpoint"] + (["color"] if kind == "render" else [])
    sources = target_sources(scene_dir, kind)  # before the arrays are read
    scene = read_scene(scene_dir, keys)
    n, problem = len(scene["coord"]), None
    try:
        views = scene_views(scene, cfg, kind, frames_dir, device)
    except ValueError as err:  # unreadable or unusable frames: the scene trains without targets
        problem = str(err)
    if problem is None:
        out = compute_targets(
            scene["coord"],
            scene["superpoint"],
            teacher,
            views,
            view_pool=cfg.view_pool,
            chunk=cfg.chunk,
            depth_tolerance=cfg.depth_tolerance,
            device=device,
        )
        target, seen, count = out["point_features"].numpy(), out["seen"].numpy(), out["view_count"].numpy()
    else:
        target, seen, count = np.zeros((n, teacher.feature_dim), np.float16), np.zeros(n, bool), None
    stats = {
        "num_points": n,
        "num_views": 0 if problem else len(views),
        "seen_fraction": float(seen.mean()) if n else 0.0,
        "mean_views_per_seen_point": float(count[seen].mean()) if seen.any() else 0.0,
        "seconds": round(time.perf_counter() - start, 3),
        **({"problem": problem} if problem else {}),
    }
    if not seen.any():
        why = problem or "no view sees any point"
        warnings.warn(f"scene {scene_dir}: {why}; it gets no CMD target (all points unseen)", stacklevel=2)
    (scene_dir / SETTINGS_FILE).unlink(missing_ok=True)
    add_arrays(scene_dir, {TARGET_KEY: target, SEEN_KEY: seen})
    record = {"settings": scene_settings(cfg, teacher, kind), "sources": sources, "stats": stats}
    write_json_atomic(scene_dir / SETTINGS_FILE, record)
    return stats


def view_kind(cfg: FeatureTargets, frames_dir: Path | None, scene_dir: Path) -> str:
    """``"frames"`` or ``"render"`` for one scene (raises where frames are required but absent)."""
    if cfg.views == "render":
        return "render"
    if has_frames(frames_dir):
        return "frames"
    if cfg.views == "frames":
        raise FileNotFoundError(
            f"scene {scene_dir.name}: feature_targets.views is 'frames' but "
            f"{frames_dir if frames_dir is not None else 'its raw data'} holds no exported frames "
            "(color/*.jpg); use views: render or auto"
        )
    return "render"


def run_feature_pass(
    scene_dirs: Sequence[Path],
    cfg: FeatureTargets,
    frames_dir: Callable[[Path], Path | None] | None = None,
    *,
    teacher: Any = None,
    desc: str = "CMD targets",
) -> dict[str, int]:
    """PointDC Eq. 3-6 on every scene of ``scene_dirs`` whose targets are missing or stale.

    ``frames_dir(scene_dir)`` names a scene's raw frame export (or None). ``teacher`` (a
    ``ViTTeacher``) is loaded from ``cfg`` when not given, once for the whole pass. Returns how many
    scenes were ``computed`` and ``skipped`` (already current).
    """
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if teacher is None:
        teacher = load_teacher(cfg)
    counts = {"computed": 0, "skipped": 0}
    todo = []
    for d in scene_dirs:
        fdir = frames_dir(d) if frames_dir is not None else None
        kind = view_kind(cfg, fdir, d)
        if is_current(d, scene_settings(cfg, teacher, kind)):
            counts["skipped"] += 1
        else:
            todo.append((d, kind, fdir))
    for d, kind, fdir in tqdm(todo, desc=desc, unit="scene", dynamic_ncols=True, disable=not todo):
        scene_targets(d, teacher, cfg, kind, fdir, device)
        counts["computed"] += 1
    return counts


def target_dim(scene_dirs: Sequence[Path], key: str = TARGET_KEY) -> int | None:
    """The feature dimension of the first scene holding ``<key>.npy`` (CMD's targets), or None."""
    for d in scene_dirs:
        f = Path(d) / f"{key}.npy"
        if f.is_file():
            arr = load_npy(f, mmap_mode="r")
            if arr.ndim != 2:
                raise ValueError(f"{f}: expected a (N, D) array of targets, got shape {arr.shape}")
            return int(arr.shape[1])
    return None


def as_feature_targets(value: FeatureTargets | dict[str, Any] | None) -> FeatureTargets | None:
    """Accept the dataclass or a plain dict (Python callers)."""
    if value is None or isinstance(value, FeatureTargets):
        return value
    return FeatureTargets(**dict(value))


__all__ = [
    "FEATURE_PASS_VERSION",
    "FeatureTargets",
    "SEEN_KEY",
    "TARGET_KEY",
    "as_feature_targets",
    "is_current",
    "load_teacher",
    "run_feature_pass",
    "scene_settings",
    "target_sources",
    "target_dim",
]
