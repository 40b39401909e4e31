"""Point-cloud augmentations, split as PointDC Eq. 12 needs them.

*Invariant* transforms (``pi_inv``) change what a point looks like but not where it is: colour
jitter, colour drop, Gaussian noise. The features a network gives should not change under them.
*Equivariant* transforms (``pi_equ``) move or select points: rotation about the up axis, flips,
scaling, cropping. A network's per-point output moves with the points, and so do the per-point
targets, because every per-point array of a sample is carried through the same indexing.

A sample is a ``dict`` of numpy arrays; arrays whose first dimension equals the number of points
(``len(sample["coord"])``) are per-point and follow crops. Every transform takes the sample and a
``numpy.random.Generator``, so a data set can make augmentation depend only on (seed, epoch, index)
and a resumed run sees the same draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

Sample = dict[str, np.ndarray]


def _num_points(sample: Sample) -> int:
    return len(sample["coord"])


def select_points(sample: Sample, keep: np.ndarray) -> Sample:
    """Index every per-point array of ``sample`` by ``keep`` (a bool mask or indices)."""
    n = _num_points(sample)
    return {
        k: (v[keep] if isinstance(v, np.ndarray) and v.ndim > 0 and len(v) == n else v)
        for k, v in sample.items()
    }


class Transform:
    """Base class: ``invariant`` says whether the transform leaves point positions unchanged."""

    invariant: bool = True

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        raise NotImplementedError


# -- invariant (pi_inv) -------------------------------------------------------------------------


@dataclass
class ColorJitter(Transform):
    """Random brightness, contrast and per-channel gain on ``color`` (uint8 or float in [0, 255])."""

    brightness: float = 0.2
    contrast: float = 0.2
    channel_gain: float = 0.05
    p: float = 0.8

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if "color" not in sample or rng.random() >= self.p:
            return sample
        color = sample["color"].astype(np.float32)
        mean = color.mean(0, keepdims=True)
        color = (color - mean) * (1 + rng.uniform(-self.contrast, self.contrast)) + mean
        color = color * (1 + rng.uniform(-self.brightness, self.brightness))
        color = color * (1 + rng.uniform(-self.channel_gain, self.channel_gain, size=(1, 3)))
        return {**sample, "color": np.clip(color, 0, 255).astype(sample["color"].dtype)}


@dataclass
class ColorDrop(Transform):
    """With probability ``p`` replace all colours by mid grey, so geometry alone must carry meaning."""

    p: float = 0.1

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if "color" not in sample or rng.random() >= self.p:
            return sample
        return {**sample, "color": np.full_like(sample["color"], 127)}


@dataclass
class GaussianNoise(Transform):
    """Zero-mean Gaussian noise on coordinates (metres, well under a voxel) and colours."""

    coord_sigma: float = 0.005
    color_sigma: float = 3.0

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        out = dict(sample)
        coord = sample["coord"]
        out["coord"] = (coord + rng.normal(0, self.coord_sigma, coord.shape)).astype(coord.dtype)
        if "color" in sample and self.color_sigma > 0:
            noise = rng.normal(0, self.color_sigma, sample["color"].shape)
            color = sample["color"].astype(np.float32) + noise
            if sample["color"].dtype.kind in "iu":  # round, not truncate: zero-mean noise stays zero-mean
                color = np.rint(color)
            out["color"] = np.clip(color, 0, 255).astype(sample["color"].dtype)
        return out


# -- equivariant (pi_equ) -----------------------------------------------------------------------


def _rotate(sample: Sample, rot: np.ndarray) -> Sample:
    out = dict(sample)
    out["coord"] = (sample["coord"] @ rot.T).astype(sample["coord"].dtype)
    if "normal" in sample:
        out["normal"] = (sample["normal"] @ rot.T).astype(sample["normal"].dtype)
    return out


@dataclass
class RandomRotateZ(Transform):
    """Rotation about the up (z) axis by an angle drawn from [-max_angle, max_angle] radians."""

    max_angle: float = np.pi
    invariant: bool = field(default=False, init=False)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        a = rng.uniform(-self.max_angle, self.max_angle)
        c, s = np.cos(a), np.sin(a)
        return _rotate(sample, np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64))


@dataclass
class RandomFlip(Transform):
    """Mirror x and/or y, each with probability ``p``."""

    p: float = 0.5
    invariant: bool = field(default=False, init=False)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        sign = np.where(rng.random(2) < self.p, -1.0, 1.0)
        return _rotate(sample, np.diag([sign[0], sign[1], 1.0]))


@dataclass
class RandomScale(Transform):
    """Isotropic scaling by a factor drawn from [low, high]."""

    low: float = 0.9
    high: float = 1.1
    invariant: bool = field(default=False, init=False)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        factor = rng.uniform(self.low, self.high)
        return {**sample, "coord": (sample["coord"] * factor).astype(sample["coord"].dtype)}


@dataclass
class RandomCrop(Transform):
    """Keep the points within a horizontal box of ``extent`` metres around a random point.

    Crops only scenes larger than ``extent``; a crop that would keep fewer than ``min_points``
    points is not made, so a batch never holds an empty scene.
    """

    extent: float = 6.0
    min_points: int = 1000
    invariant: bool = field(default=False, init=False)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        xy = sample["coord"][:, :2]
        if np.ptp(xy, axis=0).max() <= self.extent:
            return sample
        centre = xy[rng.integers(len(xy))]
        keep = np.all(np.abs(xy - centre) <= self.extent / 2, axis=1)
        if keep.sum() < self.min_points:
            return sample
        return select_points(sample, keep)


@dataclass
class Compose(Transform):
    """Apply transforms in order; invariant only if every member is."""

    transforms: Sequence[Transform] = ()

    @property
    def invariant(self) -> bool:  # type: ignore[override]
        return all(t.invariant for t in self.transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        for t in self.transforms:
            sample = t(sample, rng)
        return sample


def default_invariant() -> Compose:
    """PointDC's photometric perturbation: colour jitter and drop, small Gaussian noise."""
    return Compose([ColorJitter(), ColorDrop(), GaussianNoise()])


def default_equivariant(crop_extent: float | None = None) -> Compose:
    """PointDC's geometric perturbation: rotation about z, flips, scaling (and a crop if asked)."""
    ts: list[Transform] = [RandomRotateZ(), RandomFlip(), RandomScale()]
    if crop_extent:
        ts.append(RandomCrop(extent=crop_extent))
    return Compose(ts)
