"""SVC's clustering pass streams: it never holds every point's features (PointDC Eq. 8, issue 7), with
no feature cache (``feature_cache_mb=0``, ``cluster_pass``'s default); within a cache budget it keeps
pass 1's features for pass 2 instead of running the network twice, with the same labels.

The backbone is instrumented: a forward pre-hook counts the bytes of every live tensor (all of them,
found through the garbage collector) and of the numpy arrays held in the locals of the frames on the
stack, leaving out the batch being fed. Between the first forward of the pass and its last, what
the pass accumulates may only be its super-voxel means (with their scene and id), K-means'
assignments, the int16 pseudo labels, and what is left of the previous batch (one batch's features
and cosines). A pass that kept every point's features would add ``points x D x 4`` bytes over the
batches; the counter-example, a pass that does exactly that and returns the same answer, must
exceed the same bound, so the test can fail.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from types import FunctionType, ModuleType

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unsup3d.pointdc import clustering_pass
from unsup3d.pointdc.clustering_pass import cluster_pass
from unsup3d.vision.projection import superpoint_mean

NUM_CLUSTERS = 4


def _storages(obj: object, out: dict[int, int], depth: int = 6, seen: set[int] | None = None) -> None:
    """Add ``{data pointer: bytes}`` of the tensors and arrays reachable from ``obj`` through
    containers and plain objects' attributes (not modules, classes or functions)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth < 0:
        return
    seen.add(id(obj))
    if issubclass(type(obj), torch.Tensor):  # type(), not isinstance: no proxy's __class__ runs
        if obj.layout == torch.strided and obj.device.type != "meta":
            storage = obj.untyped_storage()
            out[storage.data_ptr()] = storage.nbytes()
    elif isinstance(obj, np.ndarray):
        while isinstance(obj.base, np.ndarray):
            obj = obj.base
        out[obj.ctypes.data] = obj.nbytes
    elif isinstance(obj, dict):
        for v in obj.values():
            _storages(v, out, depth - 1, seen)
    elif isinstance(obj, (list, tuple, set)):
        for v in obj:
            _storages(v, out, depth - 1, seen)
    elif hasattr(obj, "__dict__") and not isinstance(obj, (type, ModuleType, FunctionType, torch.nn.Module)):
        _storages(vars(obj), out, depth - 1, seen)


def held_bytes(exclude: object, full_collect: bool = False) -> int:
    """Bytes of all live tensors and of the arrays in the stack's locals, less those of ``exclude``."""
    held: dict[int, int] = {}
    # numpy arrays are not tracked by the collector: look where a pass keeps its state, its locals.
    # This comes first: reading ``f_locals`` refreshes each frame's cached snapshot of its locals,
    # which would otherwise still pin what the frame held at the previous sample.
    frame = sys._getframe(1)
    while frame is not None:
        _storages(dict(frame.f_locals), held, depth=4)
        frame = frame.f_back
    del frame
    # A full collection for the baseline: garbage of earlier tests collected between two samples
    # would otherwise read as memory the pass gave back. Later, the young generation is enough.
    gc.collect(2 if full_collect else 0)
    for obj in gc.get_objects():
        if issubclass(type(obj), torch.Tensor):
            _storages(obj, held)
    skip: dict[int, int] = {}
    _storages(exclude, skip)
    return sum(n for ptr, n in held.items() if ptr not in skip and ptr != 0)


class PassProbe:
    """Wraps a loader and a backbone: samples ``held_bytes`` before the first forward of the first
    stream and before the last forward of every stream, and records each forward's output shape."""

    def __init__(self, backbone: torch.nn.Module, dm) -> None:
        self.dm, self.num_batches = dm, len(dm.cluster_dataloader())
        self.stream = self.index = 0
        self.batch: dict | None = None
        self.samples: list[int] = []
        self.outputs: list[tuple[int, ...]] = []
        self.superpoints: list[int] = []
        backbone.register_forward_pre_hook(self._before)
        backbone.register_forward_hook(lambda m, a, out: self.outputs.append(tuple(out.shape)))

    def loader_fn(self) -> Iterator[dict]:
        self.stream += 1
        for index, batch in enumerate(self.dm.cluster_dataloader()):
            self.index = index
            if self.stream == 1:
                self.superpoints.append(int(batch["num_superpoints"]))
            self.batch = batch
            yield batch
            self.batch = None

    def _before(self, module: torch.nn.Module, args: tuple) -> None:
        first = self.stream == 1 and self.index == 0
        if first or self.index == self.num_batches - 1:
            self.samples.append(held_bytes(exclude=(self.batch, args), full_collect=first))

    def growth(self) -> int:
        return max(self.samples) - self.samples[0]

    def bound(self) -> int:
        """Bytes the pass may accumulate: PointDC Eq. 8's state plus one batch left over."""
        points = [shape[0] for shape in self.outputs[: self.num_batches]]
        d = self.outputs[0][1]
        s = sum(self.superpoints)
        means = s * (d * 4 + 8 + 8 + 8)  # float32 mean, scene, stored id, K-means assignment
        labels = sum(points) * 2  # int16 pseudo label per point
        # The previous batch's per-point features and cosines (and their softmax), plus up to four
        # int64 per-point index arrays, are still referenced when the next forward starts.
        leftover = max(points) * ((d + 2 * NUM_CLUSTERS) * 4 + 4 * 8)
        return means + labels + NUM_CLUSTERS * d * 4 + leftover


@torch.no_grad()
def hoarding_superpoint_features(backbone, loader, device, scale=None, cache=None):
    """The counter-example: ``superpoint_features`` that keeps every point's features until the
    stream ends and only then reduces them to super-voxel means (same result, O(points x D))."""
    assert scale is None  # the cosine clustering only (no descriptors)
    kept, scenes, ids = [], [], []
    for batch in loader:
        f = F.normalize(backbone(batch["sparse"].to(device), batch["inverse"].to(device)), dim=1)
        kept.append((f.cpu(), batch["superpoint"], batch["num_superpoints"]))
        raw = torch.full((batch["num_superpoints"],), -1, dtype=torch.long)
        sp = batch["superpoint"]
        raw[sp[sp >= 0]] = batch["superpoint_id"][sp >= 0]
        scenes.append(batch["scene_index"][batch["superpoint_batch"]])
        ids.append(raw)
    # Every collated super-voxel holds a point (ids are made consecutive), so none is dropped.
    feats = [superpoint_mean(f, sp, n)[0] for f, sp, n in kept]
    return torch.cat(feats), torch.cat(scenes), torch.cat(ids)


class PointFeatures(torch.nn.Module):
    """A stand-in backbone, linear on the voxel features: the pass's memory depends on the size of
    what the backbone returns (points x D), not on what it computes, and this keeps the test fast."""

    def __init__(self, in_channels: int = 6, out_channels: int = 128) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.linear = torch.nn.Linear(in_channels, out_channels)

    def forward(self, x, inverse: torch.Tensor) -> torch.Tensor:
        return self.linear(x.F)[inverse]


@pytest.fixture(scope="module")
def scene_folders(tmp_path_factory: pytest.TempPathFactory):
    """Eight training scenes of 6-10k random points in a 4 x 4 x 3 m box, super-voxels the 0.5 m
    cells (about 20 points each), loaded one scene a batch."""
    from unsup3d.data.scene_folder import write_scene
    from unsup3d.pointdc.datamodules import SceneFolderDataModule

    root = tmp_path_factory.mktemp("memory_scenes")
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("val", 1)):
        for i in range(count):
            n = int(rng.integers(6000, 10000))
            coord = (rng.random((n, 3)) * [4.0, 4.0, 3.0]).astype(np.float32)
            cell = np.floor(coord / 0.5).astype(np.int64)
            write_scene(
                root / split / f"scene{i}",
                {
                    "coord": coord,
                    "color": rng.integers(0, 256, (n, 3), dtype=np.uint8),
                    "segment": rng.integers(0, 5, n),
                    "superpoint": (cell[:, 0] * 8 + cell[:, 1]) * 6 + cell[:, 2],
                },
            )
    dm = SceneFolderDataModule(root=str(root), voxel_size=0.1, batch_size=1)
    dm.setup("fit")
    return dm


def _run(dm, pooled: bool) -> tuple[PassProbe, torch.Tensor, clustering_pass.PseudoLabels]:
    """One clustering pass over ``dm``: Eq. 9-10 labels (two streams) when ``pooled``, else Eq. 8's
    per-super-voxel labels (one stream)."""
    torch.manual_seed(0)
    backbone = PointFeatures().eval()
    probe = PassProbe(backbone, dm)
    centroids, labels = cluster_pass(
        backbone,
        probe.loader_fn,
        NUM_CLUSTERS,
        torch.device("cpu"),
        nonparametric=pooled,
        superpoint_pooling=pooled,
        niter=5,
    )
    return probe, centroids, labels


def test_cluster_pass_holds_superpoint_means_not_point_features(scene_folders, monkeypatch) -> None:
    probe, centroids, labels = _run(scene_folders, pooled=True)
    points = [shape[0] for shape in probe.outputs[: probe.num_batches]]
    d = probe.outputs[0][1]
    every_point = sum(points) * d * 4
    assert probe.stream == 2 and len(probe.samples) == 3  # both streams were sampled
    assert every_point > 4 * probe.bound() / 3  # the data makes hoarding visible over the bound
    assert probe.growth() <= probe.bound(), (probe.samples, probe.bound(), every_point)
    # What the pass hands back is the centroids and one int16 label a point.
    label_bytes = sum(t.numel() * t.element_size() for t in labels.by_point.values())
    assert label_bytes == sum(points) * 2 and centroids.shape == (NUM_CLUSTERS, d)

    # The counter-example: same centroids, but it holds every point's features and breaks the bound
    # (its first stream is what differs, so the one-stream Eq. 8 pass is enough to show it).
    monkeypatch.setattr(clustering_pass, "superpoint_features", hoarding_superpoint_features)
    hoarder, hoarded_centroids, _ = _run(scene_folders, pooled=False)
    torch.testing.assert_close(hoarded_centroids, centroids)
    assert hoarder.growth() > hoarder.bound(), (hoarder.samples, hoarder.bound())


class CountingFeatures(PointFeatures):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x, inverse: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().forward(x, inverse)


@pytest.mark.parametrize("pooled", [False, True])
def test_cluster_pass_reuses_pass_one_features_within_its_budget(scene_folders, pooled: bool) -> None:
    """Eq. 9 (and Eq. 10) labels from cached pass-1 features equal those of a second network pass; a
    budget the features do not fit in falls back to the second pass."""
    dm = scene_folders
    batches = len(list(dm.cluster_dataloader()))
    runs = {}
    for mb in (0.0, 64.0, 0.5):  # no cache; room for all (8 x ~8k points x 128 x 4 B = 33 MB); too small
        torch.manual_seed(0)
        backbone = CountingFeatures().eval()
        centroids, labels = cluster_pass(
            backbone, dm.cluster_dataloader, NUM_CLUSTERS, torch.device("cpu"), nonparametric=True,
            superpoint_pooling=pooled, niter=5, feature_cache_mb=mb,
        )  # fmt: skip
        runs[mb] = (backbone.calls, centroids, labels)
    assert [runs[mb][0] for mb in (0.0, 64.0, 0.5)] == [2 * batches, batches, 2 * batches]
    ref = runs[0.0]
    for mb in (64.0, 0.5):
        torch.testing.assert_close(runs[mb][1], ref[1], rtol=0, atol=0)
        assert runs[mb][2].by_point.keys() == ref[2].by_point.keys()
        for scene, table in ref[2].by_point.items():
            assert torch.equal(runs[mb][2].by_point[scene], table)
