"""Map-style data sets over prepared scenes, with augmentation that depends only on
(seed, epoch, index), so a resumed or distributed run draws exactly what an uninterrupted one does.

The epoch reaches the data set through the indices themselves: :class:`EpochSampler` yields
``(epoch, index)`` pairs, and Lightning calls its ``set_epoch`` each epoch, which works with worker
processes where an attribute set on the data set in the main process would not. The sampler shards
itself under ``torch.distributed`` (see :class:`EpochSampler`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

from unsup3d.data.collate import voxelize
from unsup3d.data.scene_folder import read_scene
from unsup3d.data.transforms import Transform

FeatureFn = Callable[[dict[str, np.ndarray]], np.ndarray]


def color_features(sample: dict[str, np.ndarray]) -> np.ndarray:
    """RGB scaled to [-0.5, 0.5]."""
    return sample["color"].astype(np.float32) / 255.0 - 0.5


def color_coord_features(sample: dict[str, np.ndarray]) -> np.ndarray:
    """PointDC's network input (its release): RGB in [-0.5, 0.5], then the coordinates with x and y
    centred on the scene (z, the height above the floor, kept). Coordinates are in metres here (the
    release uses voxel units), so one input scale serves every voxel size."""
    coord = sample["coord"].astype(np.float32)
    centred = coord - np.array([*coord[:, :2].mean(0), 0.0], dtype=np.float32)
    return np.concatenate([color_features(sample), centred], axis=1)


def color_height_features(sample: dict[str, np.ndarray]) -> np.ndarray:
    """RGB in [-0.5, 0.5] and the height z only (4 channels): :func:`color_coord_features` without x
    and y. A point's place in the horizontal plane says nothing of its class, and where x and y are
    inputs the unaugmented features of a room's walls differ with their side of the room, which the
    clustering pass reads (the teacher-free recipe split the walls by side; README)."""
    coord = sample["coord"].astype(np.float32)
    return np.concatenate([color_features(sample), coord[:, 2:]], axis=1)


def xyz_intensity_features(sample: dict[str, np.ndarray]) -> np.ndarray:
    """STSSL's network input: x, y, z (metres) and the LiDAR return strength."""
    return np.concatenate([sample["coord"], sample["strength"][:, None]], axis=1).astype(np.float32)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one draw: a pure function of (seed, epoch, index)."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, index]))


class EpochSampler(DistributedSampler):
    """Yields ``(epoch, index)``; shuffles with a generator seeded by (seed, epoch).

    Distributed-aware, so Lightning uses it as it is instead of wrapping it: under
    ``torch.distributed`` each process takes every ``world_size``-th item of the one shared order
    (rank ``r`` takes items ``r, r + W, ...``). With ``even=True`` (training) the order is padded by
    wrapping around so every process draws as many batches as the others (DDP needs that); with
    ``even=False`` (evaluation, clustering passes) every item goes to exactly one process, so
    dataset-wide metrics equal one process's. ``shard=False`` gives every process all items.

    ``skip`` drops that many of this process's items from the start of the next iteration (then resets
    to 0): a run resumed from a mid-epoch checkpoint continues the epoch where it stopped.
    """

    def __init__(
        self, size: int, shuffle: bool = True, seed: int = 0, *, even: bool | None = None, shard: bool = True
    ) -> None:
        # DistributedSampler.__init__ needs an initialised process group; the rank is read per iteration.
        self.size, self.shuffle, self.seed, self.epoch = size, shuffle, seed, 0
        self.even = shuffle if even is None else even
        self.shard = shard
        self.skip = 0
        self.drop_last = False

    @property
    def num_replicas(self) -> int:  # type: ignore[override]
        if self.shard and dist.is_available() and dist.is_initialized():
            return dist.get_world_size()
        return 1

    @property
    def rank(self) -> int:  # type: ignore[override]
        return dist.get_rank() if self.num_replicas > 1 else 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _share(self) -> int:
        world, rank = self.num_replicas, self.rank
        if self.even:
            return -(-self.size // world)
        return len(range(rank, self.size, world))

    def __len__(self) -> int:
        return self._share()

    def order(self) -> list[int]:
        """This process's indices for the current epoch, before ``skip``."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1000003 + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        world, rank = self.num_replicas, self.rank
        if self.even and order and len(order) % world:
            order += order[: world - len(order) % world]
        return order[rank::world]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        mine, self.skip = self.order()[self.skip :], 0
        return iter([(self.epoch, i) for i in mine])


class SceneDataset(Dataset):
    """Scenes from scene folders, augmented then voxelised (see :mod:`unsup3d.data.collate`).

    ``superpoints_from`` names the stored array that serves as the super-voxels (``superpoint`` by
    default; e.g. ``region``, the teacher-free path's grown super-voxels)."""

    def __init__(
        self,
        scene_dirs: Sequence[Path],
        voxel_size: float,
        features: FeatureFn = color_coord_features,
        transform: Transform | None = None,
        keys: Sequence[str] = ("coord", "color", "segment", "superpoint"),
        seed: int = 0,
        superpoints_from: str = "superpoint",
    ) -> None:
        self.scene_dirs = list(scene_dirs)
        self.voxel_size, self.features, self.transform = voxel_size, features, transform
        self.keys, self.seed = tuple(keys), seed
        self.superpoints_from = superpoints_from

    def __len__(self) -> int:
        return len(self.scene_dirs)

    def load(self, index: int) -> dict[str, np.ndarray]:
        """The stored arrays of scene ``index``, plus ``point_index`` (each point's stored row)."""
        src = self.superpoints_from
        keys = [src if k == "superpoint" else k for k in self.keys]
        scene = read_scene(self.scene_dirs[index], keys)
        if src != "superpoint" and src in scene:  # another segmentation serves as the super-voxels
            scene["superpoint"] = scene.pop(src)
        scene["point_index"] = np.arange(len(scene["coord"]), dtype=np.int64)
        if "superpoint" in scene:  # collation renumbers "superpoint"; the stored id stays here
            scene["superpoint_id"] = scene["superpoint"].astype(np.int64, copy=True)
        return scene

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = item if isinstance(item, tuple) else (0, item)
        sample = self.load(index)
        if self.transform is not None:
            sample = self.transform(sample, sample_rng(self.seed, epoch, index))
        sample["scene_index"] = np.array(index)
        return voxelize(sample, self.voxel_size, self.features(sample))
