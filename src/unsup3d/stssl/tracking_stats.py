"""What the tracks of :func:`unsup3d.stssl.tracking.track_sequence` give: lengths, statistics, training pairs.

STSSL Sec. 4.3 reports that "63.73 % of the clusters are tracked for at least 3 frames, and 31.33 % for
at least 8 frames" on KITTI. In the authors' release a "cluster" with an id is a tracked object (class
``TrackDataClass``: "a cluster", ``start_frame``, ``end_frame``) and the only per-object statistic it
keeps is ``multi_view_map[id]``, the number of frames in which that id was seen; so the paper's
denominator is the number of tracks. :func:`tracking_stats` reports that (``share_ge3``,
``share_ge8``) and, for comparison, the same shares weighted by observations (``cluster_share_*``:
per-frame clusters whose track lasts that long).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["frame_pairs", "matched_pairs", "track_lengths", "tracking_stats"]


def _observations(tracks: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Every (track, frame) in which a track has points, sorted by track then frame."""
    ids = [np.unique(np.asarray(tr)[np.asarray(tr) >= 0]) for tr in tracks]
    track = np.concatenate([np.zeros(0, dtype=np.int64), *ids]).astype(np.int64)
    frame = np.concatenate([np.zeros(0, dtype=np.int64)] + [np.full(len(i), t) for t, i in enumerate(ids)])
    order = np.lexsort((frame, track))
    return track[order], frame[order].astype(np.int64)


def track_lengths(tracks: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, lengths)``: each track id and the number of frames in which it has points."""
    track, _ = _observations(tracks)
    return np.unique(track, return_counts=True)


def matched_pairs(tracks_a: np.ndarray, tracks_b: np.ndarray) -> np.ndarray:
    """Track ids present in both frames, sorted: STSSL's positive cluster pairs (Sec. 3.3, Eq. 3).

    ``tracks_a == i`` and ``tracks_b == i`` select the two views of object ``i``.
    """
    a, b = np.asarray(tracks_a), np.asarray(tracks_b)
    return np.intersect1d(a[a >= 0], b[b >= 0]).astype(np.int64)


def frame_pairs(tracks: Sequence[np.ndarray], interval: int) -> list[tuple[int, int, np.ndarray]]:
    """``(t, t + interval, ids)`` for every frame t whose tracks meet frame ``t + interval`` (ids nonempty).

    STSSL's inter-frame stage draws such pairs with an interval growing from 0 to 5.
    """
    if interval < 0:
        raise ValueError(f"frame_pairs: interval must be >= 0, got {interval}")
    out = []
    for t in range(len(tracks) - interval):
        ids = matched_pairs(tracks[t], tracks[t + interval])
        if len(ids):
            out.append((t, t + interval, ids))
    return out


def _majority(track: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each track id among the points, the most frequent key (ties: the smallest key)."""
    keys, key_idx = np.unique(key, return_inverse=True)
    tracks, track_idx = np.unique(track, return_inverse=True)
    pair, counts = np.unique(track_idx * len(keys) + key_idx, return_counts=True)
    t, k = pair // len(keys), pair % len(keys)
    # Sort by track, then count descending, then key ascending; the first row of each track wins.
    order = np.lexsort((k, -counts, t))
    t, k = t[order], k[order]
    first = np.r_[True, t[1:] != t[:-1]]
    return tracks[t[first]], keys[k[first]]


def _observation_keys(
    tracks: Sequence[np.ndarray],
    obs_track: np.ndarray,
    obs_frame: np.ndarray,
    keys: Sequence[np.ndarray | None],
) -> np.ndarray:
    """The majority key of each observation's points with a key >= 0; -1 where there is none."""
    out = np.full(len(obs_track), -1, dtype=np.int64)
    for t, key in enumerate(keys):
        if key is None:
            continue
        tr = np.asarray(tracks[t])
        key = np.asarray(key, dtype=np.int64)
        if key.shape != tr.shape:
            raise ValueError(f"tracking_stats: frame {t}: labels of shape {key.shape} for {tr.shape} points")
        ok = (tr >= 0) & (key >= 0)
        if not ok.any():
            continue
        ids, maj = _majority(tr[ok], key[ok])
        rows = np.flatnonzero(obs_frame == t)
        pos = np.searchsorted(ids, obs_track[rows])
        pos = np.minimum(pos, len(ids) - 1)
        hit = ids[pos] == obs_track[rows]
        out[rows[hit]] = maj[pos[hit]]
    return out


def _instance_keys(
    labels: Sequence[np.ndarray | None], instances: Sequence[np.ndarray | None]
) -> list[np.ndarray | None]:
    """One int64 key per point for (class, instance); -1 where the class is ignored."""
    keys: list[np.ndarray | None] = []
    for t, (lab, inst) in enumerate(zip(labels, instances, strict=True)):
        if lab is None or inst is None:
            keys.append(None)
            continue
        lab, inst = np.asarray(lab, dtype=np.int64), np.asarray(inst, dtype=np.int64)
        if inst.shape != lab.shape or (inst < 0).any() or (inst >= 2**32).any():
            raise ValueError(f"tracking_stats: frame {t}: instances must be ({len(lab)},) ids in [0, 2**32)")
        keys.append(np.where(lab >= 0, (lab << 32) | inst, -1))
    return keys


def _link_agreement(obs_track: np.ndarray, obs_key: np.ndarray) -> tuple[float, int]:
    """Share of links (a track's consecutive observations) whose two majority keys agree."""
    link = obs_track[1:] == obs_track[:-1]
    known = link & (obs_key[1:] >= 0) & (obs_key[:-1] >= 0)
    n = int(known.sum())
    agree = int((obs_key[1:][known] == obs_key[:-1][known]).sum())
    return (agree / n if n else float("nan")), n


def tracking_stats(
    tracks: Sequence[np.ndarray],
    labels: Sequence[np.ndarray | None] | None = None,
    instances: Sequence[np.ndarray | None] | None = None,
    thresholds: tuple[int, ...] = (3, 8),
) -> dict[str, float | int]:
    """Statistics of the tracks of a sequence (STSSL Sec. 4.3 "Performance of unsupervised tracking").

    - ``num_frames``, ``num_tracks``, ``num_clusters`` (observations: a track in a frame),
      ``num_links`` (a track's consecutive observations: the matched cluster pairs);
    - ``share_ge{k}``: share of tracks seen in at least k frames (the paper's figure, see the module
      docstring); ``cluster_share_ge{k}``: share of observations whose track is seen in >= k frames. A
      sequence of T frames bounds both: no track that starts after frame T - k can reach k;
    - ``mean_length``: mean number of frames a track is seen in;
    - with ``labels`` (per-point class ids, -1 ignored; None for a frame without labels):
      ``pair_purity``, the share of links whose two clusters have the same majority class, over
      ``labelled_links`` links where both sides have labelled points;
    - with ``instances`` too (per-point instance ids, consistent over the sequence as SemanticKITTI's):
      ``instance_purity``, the same with the majority (class, instance).
    """
    obs_track, obs_frame = _observations(tracks)
    _, lengths = np.unique(obs_track, return_counts=True)
    stats: dict[str, float | int] = {
        "num_frames": len(tracks),
        "num_tracks": len(lengths),
        "num_clusters": len(obs_track),
        "num_links": int((obs_track[1:] == obs_track[:-1]).sum()),
        "mean_length": float(lengths.mean()) if len(lengths) else float("nan"),
    }
    for k in thresholds:
        long = lengths >= k
        stats[f"share_ge{k}"] = float(long.mean()) if len(lengths) else float("nan")
        stats[f"cluster_share_ge{k}"] = (
            float(lengths[long].sum() / lengths.sum()) if len(lengths) else float("nan")
        )
    if labels is not None:
        if len(labels) != len(tracks):
            raise ValueError(f"tracking_stats: {len(tracks)} frames of tracks but {len(labels)} of labels")
        keys = _observation_keys(tracks, obs_track, obs_frame, labels)
        stats["pair_purity"], stats["labelled_links"] = _link_agreement(obs_track, keys)
        if instances is not None:
            if len(instances) != len(tracks):
                raise ValueError(
                    f"tracking_stats: {len(tracks)} frames of tracks but {len(instances)} of instances"
                )
            keys = _observation_keys(tracks, obs_track, obs_frame, _instance_keys(labels, instances))
            stats["instance_purity"], stats["instance_links"] = _link_agreement(obs_track, keys)
    return stats
