"""Readers for nuScenes LiDAR sweeps, nuScenes-lidarseg labels and the JSON tables that link them.

The authors of STSSL never released a nuScenes loader; this one reads the dataset's own files with no
dependency on ``nuscenes-devkit``. Layout under ``root``::

    <version>/{scene,sample,sample_data,ego_pose,calibrated_sensor,sensor,category,lidarseg}.json
    samples/LIDAR_TOP/*.pcd.bin                float32 x, y, z, intensity, ring (5 values a point)
    lidarseg/<version>/<token>_lidarseg.bin    uint8 general-class index per point (keyframes only)

``sensor``, ``category`` and ``lidarseg`` are optional (the last two come with nuScenes-lidarseg).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._checks import PathLike, check_count, read_binary, read_json, read_points

# fmt: off
# nuScenes-lidarseg's 32 general classes, in the order of their ``index`` in category.json (v1.0).
GENERAL_CLASS_NAMES: tuple[str, ...] = (
    "noise", "animal", "human.pedestrian.adult", "human.pedestrian.child",
    "human.pedestrian.construction_worker", "human.pedestrian.personal_mobility",
    "human.pedestrian.police_officer", "human.pedestrian.stroller", "human.pedestrian.wheelchair",
    "movable_object.barrier", "movable_object.debris", "movable_object.pushable_pullable",
    "movable_object.trafficcone", "static_object.bicycle_rack", "vehicle.bicycle", "vehicle.bus.bendy",
    "vehicle.bus.rigid", "vehicle.car", "vehicle.construction", "vehicle.emergency.ambulance",
    "vehicle.emergency.police", "vehicle.motorcycle", "vehicle.trailer", "vehicle.truck",
    "flat.driveable_surface", "flat.other", "flat.sidewalk", "flat.terrain", "static.manmade",
    "static.other", "static.vegetation", "vehicle.ego",
)

# The 16 classes of the lidarseg challenge (devkit ``LidarsegClassMapper``; its index minus one).
CLASS_NAMES: tuple[str, ...] = (
    "barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian",
    "traffic_cone", "trailer", "truck", "driveable_surface", "other_flat", "sidewalk", "terrain",
    "manmade", "vegetation",
)

# General -> challenge class (devkit ``get_fine2coarse``); the devkit's ignore class 0 is our -1.
GENERAL_TO_CHALLENGE: dict[str, str | None] = {
    "noise": None, "animal": None,
    "human.pedestrian.adult": "pedestrian", "human.pedestrian.child": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian", "human.pedestrian.police_officer": "pedestrian",
    "human.pedestrian.personal_mobility": None, "human.pedestrian.stroller": None,
    "human.pedestrian.wheelchair": None,
    "movable_object.barrier": "barrier", "movable_object.trafficcone": "traffic_cone",
    "movable_object.debris": None, "movable_object.pushable_pullable": None,
    "static_object.bicycle_rack": None,
    "vehicle.bicycle": "bicycle", "vehicle.bus.bendy": "bus", "vehicle.bus.rigid": "bus",
    "vehicle.car": "car", "vehicle.construction": "construction_vehicle",
    "vehicle.emergency.ambulance": None, "vehicle.emergency.police": None,
    "vehicle.motorcycle": "motorcycle", "vehicle.trailer": "trailer", "vehicle.truck": "truck",
    "flat.driveable_surface": "driveable_surface", "flat.other": "other_flat", "flat.sidewalk": "sidewalk",
    "flat.terrain": "terrain", "static.manmade": "manmade", "static.other": None,
    "static.vegetation": "vegetation", "vehicle.ego": None,
}

IGNORE_INDEX = -1

# nuscenes-devkit ``utils/splits.py`` (v1.2), as inclusive ranges of scene numbers: 700 / 150 / 150.
_SPLIT_RANGES: dict[str, tuple[tuple[int, int], ...]] = {
    "train": (
        (1, 2), (4, 11), (19, 34), (41, 76), (120, 135), (138, 139), (149, 152), (154, 155), (157, 168),
        (170, 185), (187, 188), (190, 196), (199, 200), (202, 204), (206, 214), (218, 220), (222, 222),
        (224, 264), (283, 306), (315, 318), (321, 321), (323, 324), (328, 328), (347, 386), (388, 403),
        (405, 408), (410, 459), (461, 465), (467, 469), (471, 472), (474, 480), (499, 502), (504, 515),
        (517, 518), (525, 539), (541, 546), (566, 566), (568, 568), (570, 578), (580, 580), (582, 600),
        (639, 679), (681, 681), (683, 689), (695, 698), (700, 701), (703, 719), (726, 728), (730, 731),
        (733, 741), (744, 744), (746, 747), (749, 752), (757, 765), (767, 769), (786, 787), (789, 792),
        (803, 806), (808, 813), (815, 817), (819, 822), (847, 856), (858, 858), (860, 866), (868, 873),
        (875, 878), (880, 880), (882, 903), (945, 945), (947, 947), (949, 949), (952, 953), (955, 961),
        (975, 984), (988, 992), (994, 1025), (1044, 1058), (1074, 1102), (1104, 1110),
    ),
    "val": (
        (3, 3), (12, 18), (35, 36), (38, 39), (92, 110), (221, 221), (268, 278), (329, 332), (344, 346),
        (519, 524), (552, 565), (625, 627), (629, 630), (632, 638), (770, 771), (775, 775), (777, 778),
        (780, 784), (794, 800), (802, 802), (904, 917), (919, 931), (962, 963), (966, 969), (971, 972),
        (1059, 1073),
    ),
    "test": (
        (77, 91), (111, 119), (140, 140), (142, 148), (265, 266), (279, 282), (307, 314), (333, 343),
        (481, 498), (547, 551), (601, 604), (606, 624), (827, 831), (833, 842), (844, 846), (932, 933),
        (935, 943), (1026, 1043),
    ),
    "mini_train": tuple((n, n) for n in (61, 553, 655, 757, 796, 1077, 1094, 1100)),
    "mini_val": ((103, 103), (916, 916)),
}
# fmt: on


def split_scenes(split: str) -> tuple[str, ...]:
    """Scene names (``"scene-0001"``) of an official split: train, val, test, mini_train, mini_val."""
    if split not in _SPLIT_RANGES:
        raise ValueError(f"unknown nuScenes split {split!r}; expected one of {sorted(_SPLIT_RANGES)}")
    return tuple(f"scene-{n:04d}" for a, b in _SPLIT_RANGES[split] for n in range(a, b + 1))


def read_sweep(path: PathLike, *, drop_nonfinite: bool = False) -> np.ndarray:
    """Read a ``.pcd.bin`` LiDAR sweep: float32 ``(N, 5)`` of x, y, z, intensity, ring index.

    NaN or infinite values are an error naming the file, unless ``drop_nonfinite`` (then those points
    are removed with a warning; do not use it where lidarseg labels must line up).
    """
    return read_points(path, 5, drop_nonfinite)


def read_lidarseg(path: PathLike, num_points: int | None = None) -> np.ndarray:
    """Read a ``*_lidarseg.bin`` file: int64 ``(N,)`` general-class index (0..31) per point."""
    labels = read_binary(path, np.uint8)
    check_count(len(labels), num_points, path)
    return labels.astype(np.int64)


def challenge_lut(categories: list[dict[str, Any]] | None = None) -> np.ndarray:
    """Lookup table general-class index -> challenge class 0..15 (-1 ignored).

    ``categories`` is the lidarseg ``category`` table (records with ``name`` and ``index``), which is
    authoritative for the index of each name; without it the v1.0 order ``GENERAL_CLASS_NAMES`` is used.
    """
    if categories is None:
        categories = [{"name": n, "index": i} for i, n in enumerate(GENERAL_CLASS_NAMES)]
    pairs = [(c["index"], c["name"]) for c in categories if c.get("index") is not None]
    lut = np.full(max(i for i, _ in pairs) + 1, -2, dtype=np.int64)
    for index, name in pairs:
        if name not in GENERAL_TO_CHALLENGE:
            raise ValueError(f"category {name!r} (index {index}) is not a nuScenes-lidarseg general class")
        coarse = GENERAL_TO_CHALLENGE[name]
        lut[index] = IGNORE_INDEX if coarse is None else CLASS_NAMES.index(coarse)
    return lut


_DEFAULT_LUT = challenge_lut()


def map_labels(
    general: np.ndarray, lut: np.ndarray | None = None, path: PathLike | None = None
) -> np.ndarray:
    """General-class indices -> int64 challenge classes 0..15 (``CLASS_NAMES``), -1 ignored."""
    lut = _DEFAULT_LUT if lut is None else lut
    general = np.asarray(general)
    bad = (general < 0) | (general >= len(lut))
    out = np.full(general.shape, -2, dtype=np.int64)
    out[~bad] = lut[general[~bad]]
    if (out == -2).any():
        unknown = np.unique(general[out == -2])[:10].tolist()
        where = f"{path}: " if path is not None else ""
        raise ValueError(f"{where}lidarseg indices {unknown} are not in the category table")
    return out


def quaternion_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrix of a unit quaternion given as ``(w, x, y, z)`` (nuScenes' order)."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def read_table(path: PathLike, keys: tuple[str, ...] = ("token",)) -> list[dict[str, Any]]:
    """Read one table: a JSON list of records, each with at least ``keys``; errors name the file."""
    records = read_json(path)
    if not isinstance(records, list):
        found = type(records).__name__
        raise ValueError(f"{path}: a nuScenes table is a JSON list of records, found a {found}")
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise ValueError(f"{path}: record {i} is a {type(rec).__name__}, not an object")
        missing = [k for k in keys if k not in rec]
        if missing:
            raise ValueError(f"{path}: record {i} (token {rec.get('token')!r}) lacks {missing}")
    return records


@dataclass(frozen=True)
class LidarSequence:
    """The LiDAR keyframes of one scene (2 Hz, the frames lidarseg labels cover), in time order."""

    scene: str
    sample_tokens: tuple[str, ...]
    sample_data_tokens: tuple[str, ...]
    lidar_paths: tuple[Path, ...]
    lidarseg_paths: tuple[Path | None, ...]
    poses: np.ndarray  # float64 (T, 4, 4): LiDAR -> global, ego_pose @ calibrated_sensor
    timestamps: np.ndarray  # int64 (T,): microseconds

    def __len__(self) -> int:
        return len(self.sample_tokens)


# fmt: off
_KEYS = {
    "scene": ("token", "name", "first_sample_token", "nbr_samples"),
    "sample": ("token", "timestamp", "scene_token", "next"),
    "sample_data": (
        "token", "sample_token", "ego_pose_token", "calibrated_sensor_token", "filename", "timestamp",
        "is_key_frame",
    ),
    "ego_pose": ("token", "translation", "rotation"),
    "calibrated_sensor": ("token", "sensor_token", "translation", "rotation"),
    "sensor": ("token", "channel"),
    "category": ("token", "name"),
    "lidarseg": ("token", "sample_data_token", "filename"),
}
# fmt: on
_OPTIONAL = ("sensor", "category", "lidarseg")


class NuScenesTables:
    """The tables of one nuScenes version, loaded once and indexed by token.

    ``NuScenesTables(root, "v1.0-mini").sequence("scene-0061")`` gives that scene's LiDAR keyframes
    with their files, lidarseg files (where present) and poses in the global frame.
    """

    def __init__(self, root: PathLike, version: str = "v1.0-trainval", channel: str = "LIDAR_TOP") -> None:
        self.root = Path(root)
        self.version = version
        self.channel = channel
        self.table_dir = self.root / version
        if not self.table_dir.is_dir():
            raise FileNotFoundError(f"{self.table_dir}: no table folder for nuScenes version {version!r}")
        self.tables: dict[str, dict[str, dict[str, Any]]] = {}
        for name, keys in _KEYS.items():
            path = self._path(name)
            if name in _OPTIONAL and not path.is_file():
                continue
            by_token: dict[str, dict[str, Any]] = {}
            for rec in read_table(path, keys):
                if rec["token"] in by_token:
                    raise ValueError(f"{path}: token {rec['token']!r} appears twice")
                by_token[rec["token"]] = rec
            self.tables[name] = by_token
        self._keyframes = self._index_keyframes()
        self._lidarseg = {
            rec["sample_data_token"]: self.root / rec["filename"]
            for rec in self.tables.get("lidarseg", {}).values()
        }

    def _path(self, table: str) -> Path:
        return self.table_dir / f"{table}.json"

    def _get(self, table: str, token: str, referrer: str, field: str) -> dict[str, Any]:
        try:
            return self.tables[table][token]
        except KeyError:
            raise ValueError(
                f"{self._path(referrer)}: {field} {token!r} is not a token of {self._path(table)}"
            ) from None

    def _calibrated_sensor(self, sd: dict[str, Any]) -> dict[str, Any]:
        token = sd["calibrated_sensor_token"]
        return self._get("calibrated_sensor", token, "sample_data", "calibrated_sensor_token")

    def _is_channel(self, sd: dict[str, Any]) -> bool:
        if "sensor" in self.tables:
            cs = self._calibrated_sensor(sd)
            sensor = self._get("sensor", cs["sensor_token"], "calibrated_sensor", "sensor_token")
            return sensor["channel"] == self.channel
        # Without sensor.json, the folder in the file name is the channel (samples/LIDAR_TOP/...).
        return f"/{self.channel}/" in f"/{sd['filename']}"

    def _index_keyframes(self) -> dict[str, dict[str, Any]]:
        keyframes: dict[str, dict[str, Any]] = {}
        for sd in self.tables["sample_data"].values():
            if sd["is_key_frame"] and self._is_channel(sd):
                if sd["sample_token"] in keyframes:
                    raise ValueError(
                        f"{self._path('sample_data')}: sample {sd['sample_token']!r} has two {self.channel} "
                        f"keyframes ({keyframes[sd['sample_token']]['token']!r}, {sd['token']!r})"
                    )
                keyframes[sd["sample_token"]] = sd
        return keyframes

    @property
    def scene_names(self) -> list[str]:
        """Names of the scenes in ``scene.json``, in file order."""
        return [rec["name"] for rec in self.tables["scene"].values()]

    def scenes_in_split(self, split: str) -> list[str]:
        """The scenes of an official split (``split_scenes``) that these tables hold, in file order."""
        wanted = set(split_scenes(split))
        return [name for name in self.scene_names if name in wanted]

    def label_lut(self) -> np.ndarray:
        """General -> challenge lookup table from this version's ``category.json`` (default order without)."""
        categories = self.tables.get("category")
        if categories is None or not any("index" in c for c in categories.values()):
            return challenge_lut()
        try:
            return challenge_lut(list(categories.values()))
        except ValueError as err:
            raise ValueError(f"{self._path('category')}: {err}") from None

    def lidarseg_path(self, sample_data_token: str) -> Path | None:
        """Path of the lidarseg label file of a LiDAR keyframe, or None without one."""
        return self._lidarseg.get(sample_data_token)

    def pose(self, sample_data_token: str) -> np.ndarray:
        """float64 (4, 4) pose of the sensor in the global frame: ``ego_pose @ calibrated_sensor``."""
        sd = self._get("sample_data", sample_data_token, "sample_data", "token")
        ego = self._get("ego_pose", sd["ego_pose_token"], "sample_data", "ego_pose_token")
        cs = self._calibrated_sensor(sd)
        return self._transform(ego, "ego_pose") @ self._transform(cs, "calibrated_sensor")

    def _transform(self, rec: dict[str, Any], table: str) -> np.ndarray:
        try:
            t = np.asarray(rec["translation"], dtype=np.float64)
            q = np.asarray(rec["rotation"], dtype=np.float64)
        except (TypeError, ValueError):
            t = q = np.empty(0)
        if t.shape != (3,) or q.shape != (4,) or not (np.isfinite(t).all() and np.isfinite(q).all()):
            raise ValueError(
                f"{self._path(table)}: record {rec['token']!r} needs a finite 3-vector translation and "
                f"4-vector rotation, found {rec['translation']!r}, {rec['rotation']!r}"
            )
        if abs(np.linalg.norm(q) - 1.0) > 1e-3:
            raise ValueError(
                f"{self._path(table)}: record {rec['token']!r} rotation {q.tolist()} is not a unit quaternion"
            )
        m = np.eye(4)
        m[:3, :3] = quaternion_matrix(q)
        m[:3, 3] = t
        return m

    def sequence(self, scene: str) -> LidarSequence:
        """The LiDAR keyframes of a scene (by name or token), following ``sample.next`` from the first."""
        rec = self.tables["scene"].get(scene)
        if rec is None:
            rec = next((r for r in self.tables["scene"].values() if r["name"] == scene), None)
        if rec is None:
            raise KeyError(f"{self._path('scene')}: no scene named {scene!r}")
        samples, token = [], rec["first_sample_token"]
        while token:
            referrer, field = ("sample", "next") if samples else ("scene", "first_sample_token")
            sample = self._get("sample", token, referrer, field)
            if len(samples) > rec["nbr_samples"] or sample["scene_token"] != rec["token"]:
                raise ValueError(
                    f"{self._path('sample')}: the 'next' chain of scene {rec['name']!r} leaves the scene or "
                    f"runs past its nbr_samples={rec['nbr_samples']} (at sample {token!r})"
                )
            samples.append(sample)
            token = sample["next"]
        if len(samples) != rec["nbr_samples"]:
            raise ValueError(
                f"{self._path('scene')}: scene {rec['name']!r} says nbr_samples={rec['nbr_samples']} "
                f"but its chain of samples has {len(samples)}"
            )
        sds = []
        for s in samples:
            if s["token"] not in self._keyframes:
                raise ValueError(
                    f"{self._path('sample_data')}: no {self.channel} keyframe for sample {s['token']!r}"
                )
            sds.append(self._keyframes[s["token"]])
        return LidarSequence(
            scene=rec["name"],
            sample_tokens=tuple(s["token"] for s in samples),
            sample_data_tokens=tuple(sd["token"] for sd in sds),
            lidar_paths=tuple(self.root / sd["filename"] for sd in sds),
            lidarseg_paths=tuple(self.lidarseg_path(sd["token"]) for sd in sds),
            poses=np.stack([self.pose(sd["token"]) for sd in sds]),
            timestamps=np.asarray([sd["timestamp"] for sd in sds], dtype=np.int64),
        )
