"""The ablation benchmark's diagnostic teacher (benchmarks/_oracle_teacher.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks._oracle_teacher import class_table, oracle_features, write_oracle_targets
from unsup3d.pointdc.feature_pass import SETTINGS_FILE, is_current


def test_oracle_features_follow_the_class_table():
    table = class_table(3, 8, seed=0)
    assert table.shape == (4, 8)
    segment = np.array([0, 2, -1, 1, 7, 2])
    exact = oracle_features(segment, table, 0.0, np.random.default_rng(0))
    np.testing.assert_array_equal(exact, table[[0, 2, 3, 1, 3, 2]])  # ignored and unknown ids: the last row
    noisy = oracle_features(segment, table, 0.5, np.random.default_rng(0))
    assert 0.3 < float(np.std(noisy - exact)) < 0.7


def _scene(d, segment, seen, dim=16):
    d.mkdir(parents=True)
    n = len(segment)
    np.save(d / "coord.npy", np.zeros((n, 3), np.float32))
    np.save(d / "segment.npy", np.asarray(segment, np.int64))
    np.save(d / "cmd_target.npy", np.full((n, dim), 5.0, np.float16))
    np.save(d / "cmd_seen.npy", np.asarray(seen, bool))
    settings = {"feature_dim": dim, "teacher": "random"}
    (d / SETTINGS_FILE).write_text(json.dumps({"settings": settings, "stats": {}}))
    return settings


def test_write_oracle_targets(tmp_path):
    rng = np.random.default_rng(1)
    segment_a, segment_b = rng.integers(-1, 5, 400), rng.integers(-1, 5, 300)
    seen_a, seen_b = rng.random(400) < 0.6, rng.random(300) < 0.6
    settings = _scene(tmp_path / "a", segment_a, seen_a)
    _scene(tmp_path / "b", segment_b, seen_b)

    assert write_oracle_targets([tmp_path / "a", tmp_path / "b"], num_classes=5, noise=0.7, seed=3) == 2
    table = class_table(5, 16, seed=3)
    for name, segment, seen in (("a", segment_a, seen_a), ("b", segment_b, seen_b)):
        d = tmp_path / name
        target = np.load(d / "cmd_target.npy")
        assert target.dtype == np.float16 and target.shape == (len(segment), 16)
        assert not target[~seen].any()  # unseen points keep no target
        # the nearest class embedding of every seen point is its own class (one table for all scenes)
        nearest = np.linalg.norm(target[seen, None].astype(np.float32) - table[None], axis=2).argmin(1)
        expected = np.where(segment[seen] < 0, 5, segment[seen])
        assert (nearest == expected).mean() > 0.99
        record = json.loads((d / SETTINGS_FILE).read_text())
        assert "diagnostic" in record["oracle"]["what"] and record["oracle"]["noise"] == 0.7
    # the feature pass still finds the scenes current: a later preparation keeps the oracle targets
    assert is_current(tmp_path / "a", settings)


def test_write_oracle_targets_needs_a_feature_pass(tmp_path):
    (tmp_path / "a").mkdir()
    np.save(tmp_path / "a" / "segment.npy", np.zeros(3, np.int64))
    with pytest.raises(FileNotFoundError):
        write_oracle_targets([tmp_path / "a"], num_classes=2)
