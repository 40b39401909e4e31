"""Writes a tiny, well-formed nuScenes table set for the reader tests.

Two scenes of a few keyframes each, linked by tokens as the real v1.0 tables are, with non-key sweeps
and a camera keyframe mixed in (the reader must skip both), lidarseg files for the first scene only,
and every LiDAR file a copy of the one real sweep. Returns what the tables were built from, so tests
compare the reader against these values rather than against the reader itself.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

VERSION = "v1.0-mini"


def _quat_wxyz(rot: Rotation) -> list[float]:
    x, y, z, w = rot.as_quat()
    return [float(w), float(x), float(y), float(z)]


def _pose(rot: Rotation, t: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = rot.as_matrix()
    m[:3, 3] = t
    return m


def write_tables(root: Path, sweep: Path, scene_sizes: tuple[int, ...] = (3, 2), seed: int = 0) -> dict:
    """Write ``root/v1.0-mini/*.json`` plus the files they name.

    Returns, per scene name, the expected sequence (tokens, paths, poses, timestamps, raw labels), and
    under ``"index_to_name"`` the category index of each general class name.
    """
    rng = np.random.default_rng(seed)
    num_points = sweep.stat().st_size // 20
    tables: dict[str, list[dict]] = {k: [] for k in (
        "scene", "sample", "sample_data", "ego_pose", "calibrated_sensor", "sensor", "category", "lidarseg",
    )}  # fmt: skip
    tables["sensor"] = [
        {"token": "sensor-lidar", "channel": "LIDAR_TOP", "modality": "lidar"},
        {"token": "sensor-cam", "channel": "CAM_FRONT", "modality": "camera"},
    ]
    lidar_rot = Rotation.from_euler("z", 90, degrees=True)  # the real LIDAR_TOP is yawed about 90 degrees
    lidar_t = np.array([0.94, 0.0, 1.84])
    tables["calibrated_sensor"] = [
        {"token": "cs-lidar", "sensor_token": "sensor-lidar", "translation": lidar_t.tolist(),
         "rotation": _quat_wxyz(lidar_rot), "camera_intrinsic": []},
        {"token": "cs-cam", "sensor_token": "sensor-cam", "translation": [1.7, 0.0, 1.5],
         "rotation": [0.5, -0.5, 0.5, -0.5], "camera_intrinsic": [[1266.4, 0, 816.3], [0, 1266.4, 491.5],
                                                                  [0, 0, 1]]},
    ]  # fmt: skip
    # Indices permuted and records shuffled: the reader must go by each record's index and name, not
    # by the v1.0 order or the record's position.
    names = [
        "noise", "animal", "human.pedestrian.adult", "human.pedestrian.child",
        "human.pedestrian.construction_worker", "human.pedestrian.personal_mobility",
        "human.pedestrian.police_officer", "human.pedestrian.stroller", "human.pedestrian.wheelchair",
        "movable_object.barrier", "movable_object.debris", "movable_object.pushable_pullable",
        "movable_object.trafficcone", "static_object.bicycle_rack", "vehicle.bicycle", "vehicle.bus.bendy",
        "vehicle.bus.rigid", "vehicle.car", "vehicle.construction", "vehicle.emergency.ambulance",
        "vehicle.emergency.police", "vehicle.motorcycle", "vehicle.trailer", "vehicle.truck",
        "flat.driveable_surface", "flat.other", "flat.sidewalk", "flat.terrain", "static.manmade",
        "static.other", "static.vegetation", "vehicle.ego",
    ]  # fmt: skip
    index = rng.permutation(len(names))
    tables["category"] = [
        {"token": f"cat-{i}", "name": names[i], "description": "", "index": int(index[i])}
        for i in rng.permutation(len(names))
    ]
    index_to_name = {int(index[i]): names[i] for i in range(len(names))}

    lidar_dir = root / "samples" / "LIDAR_TOP"
    sweep_dir = root / "sweeps" / "LIDAR_TOP"
    seg_dir = root / "lidarseg" / VERSION
    for d in (lidar_dir, sweep_dir, seg_dir, root / VERSION):
        d.mkdir(parents=True, exist_ok=True)

    expected: dict[str, dict] = {"index_to_name": index_to_name}
    time = 1_532_402_927_000_000
    for s, size in enumerate(scene_sizes):
        scene_name = f"scene-{[61, 103, 553][s]:04d}"  # one mini_train, one mini_val, ...
        sample_tokens = [f"s{s}-sample{i}" for i in range(size)]
        exp = {"sample_tokens": sample_tokens, "sd_tokens": [], "lidar": [], "lidarseg": [], "poses": [],
               "timestamps": [], "labels": []}  # fmt: skip
        for i, tok in enumerate(sample_tokens):
            time += 500_000
            tables["sample"].append({
                "token": tok, "timestamp": time, "scene_token": f"scene{s}",
                "prev": sample_tokens[i - 1] if i else "",
                "next": sample_tokens[i + 1] if i + 1 < size else "",
            })  # fmt: skip
            rot = Rotation.random(random_state=int(rng.integers(1 << 31)))
            t = rng.uniform(-500, 500, 3)
            ego_token = f"ego-{tok}"
            tables["ego_pose"].append({"token": ego_token, "timestamp": time, "translation": t.tolist(),
                                       "rotation": _quat_wxyz(rot)})  # fmt: skip
            sd_token = f"sd-{tok}"
            filename = f"samples/LIDAR_TOP/{scene_name}__LIDAR_TOP__{time}.pcd.bin"
            shutil.copyfile(sweep, root / filename)
            tables["sample_data"].append({
                "token": sd_token, "sample_token": tok, "ego_pose_token": ego_token,
                "calibrated_sensor_token": "cs-lidar", "timestamp": time, "fileformat": "pcd",
                "is_key_frame": True, "height": 0, "width": 0, "filename": filename, "prev": "", "next": "",
            })  # fmt: skip
            # Distractors: a camera keyframe of the same sample and a non-key LiDAR sweep after it.
            tables["sample_data"].append({
                "token": f"cam-{tok}", "sample_token": tok, "ego_pose_token": ego_token,
                "calibrated_sensor_token": "cs-cam", "timestamp": time, "fileformat": "jpg",
                "is_key_frame": True, "height": 900, "width": 1600,
                "filename": f"samples/CAM_FRONT/{tok}.jpg", "prev": "", "next": "",
            })  # fmt: skip
            tables["sample_data"].append({
                "token": f"sweep-{tok}", "sample_token": tok, "ego_pose_token": ego_token,
                "calibrated_sensor_token": "cs-lidar", "timestamp": time + 50_000, "fileformat": "pcd",
                "is_key_frame": False, "height": 0, "width": 0,
                "filename": f"sweeps/LIDAR_TOP/{tok}.pcd.bin", "prev": "", "next": "",
            })  # fmt: skip
            seg_path = None
            if s == 0:
                labels = rng.integers(0, 32, num_points).astype(np.uint8)
                seg_path = root / "lidarseg" / VERSION / f"{sd_token}_lidarseg.bin"
                labels.tofile(seg_path)
                tables["lidarseg"].append({"token": f"seg-{sd_token}", "sample_data_token": sd_token,
                                           "filename": str(seg_path.relative_to(root))})  # fmt: skip
                exp["labels"].append(labels.astype(np.int64))
            exp["sd_tokens"].append(sd_token)
            exp["lidar"].append(root / filename)
            exp["lidarseg"].append(seg_path)
            exp["poses"].append(_pose(rot, t) @ _pose(lidar_rot, lidar_t))
            exp["timestamps"].append(time)
        tables["scene"].append({
            "token": f"scene{s}", "log_token": "log0", "nbr_samples": size, "name": scene_name,
            "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1], "description": "",
        })  # fmt: skip
        expected[scene_name] = exp

    for name, records in tables.items():
        (root / VERSION / f"{name}.json").write_text(json.dumps(records, indent=1))
    return expected
