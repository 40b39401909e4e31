"""HungarianMIoU against a brute-force search over every cluster -> class matching, in pure Python."""

from __future__ import annotations

import math
import warnings
from itertools import permutations

import numpy as np
import pytest
import torch

from tests._dist import run_distributed
from unsup3d.metrics import HungarianMIoU, hungarian_miou


def _matchings(num_clusters: int, num_classes: int):
    """Every one-to-one matching of min(K, C) clusters to classes, as {cluster: class}."""
    if num_clusters <= num_classes:
        for classes in permutations(range(num_classes), num_clusters):
            yield dict(enumerate(classes))
    else:
        for clusters in permutations(range(num_clusters), num_classes):
            yield {cluster: cls for cls, cluster in enumerate(clusters)}


def _score(points: list[tuple[int, int]], mapping: dict[int, int], num_classes: int):
    """IoU per class (NaN on an empty union), mIoU over the rest, accuracy, point by point."""
    ious = []
    for c in range(num_classes):
        tp = fp = fn = 0
        for p, t in points:
            predicted = mapping.get(p, -1)
            if predicted == c and t == c:
                tp += 1
            elif predicted == c:
                fp += 1
            elif t == c:
                fn += 1
        ious.append(tp / (tp + fp + fn) if tp + fp + fn else math.nan)
    valid = [v for v in ious if not math.isnan(v)]
    correct = sum(1 for p, t in points if mapping.get(p, -1) == t)
    return ious, sum(valid) / len(valid), correct / len(points)


def _brute_force(preds, target, num_clusters, num_classes, ignore_index=-1):
    points = [(int(p), int(t)) for p, t in zip(preds, target) if t != ignore_index and 0 <= t < num_classes]
    best, optimal = -1, []
    for mapping in _matchings(num_clusters, num_classes):
        matched = sum(1 for p, t in points if mapping.get(p) == t)
        if matched > best:
            best, optimal = matched, [mapping]
        elif matched == best:
            optimal.append(mapping)
    return points, optimal


def _noisy_clustering(rng, n, num_clusters, num_classes, ignore_frac=0.1):
    """Targets with some ignored points; clusters that mostly follow a hidden class -> cluster map.
    Classes have unequal frequencies, so that two matchings rarely tie."""
    frequency = rng.permutation(np.arange(1, num_classes + 1, dtype=float))
    target = rng.choice(num_classes, n, p=frequency / frequency.sum())
    hidden = rng.permutation(max(num_clusters, num_classes))[:num_classes] % num_clusters
    preds = np.where(rng.random(n) < 0.65, hidden[target], rng.integers(0, num_clusters, n))
    target[rng.random(n) < ignore_frac] = -1
    return preds, target


def _check_against_brute_force(result, preds, target, num_clusters, num_classes, ignore_index=-1):
    points, optimal = _brute_force(preds, target, num_clusters, num_classes, ignore_index)
    assignment = result["assignment"].tolist()
    assert len(assignment) == num_clusters
    mapping = {cluster: cls for cluster, cls in enumerate(assignment) if cls >= 0}
    assert len(mapping) == min(num_clusters, num_classes)
    assert mapping in optimal
    ious, miou, acc = _score(points, mapping, num_classes)
    np.testing.assert_allclose(result["iou"].numpy(), ious, rtol=1e-6)
    assert result["miou"].item() == pytest.approx(miou, rel=1e-6)
    assert result["acc"].item() == pytest.approx(acc, rel=1e-6)
    return optimal


@pytest.mark.parametrize("num_clusters,num_classes", [(3, 3), (4, 4), (5, 3), (6, 4), (2, 4)])
def test_matches_brute_force_over_several_updates(num_clusters, num_classes):
    rng = np.random.default_rng(num_clusters * 10 + num_classes)
    preds, target = _noisy_clustering(rng, 400, num_clusters, num_classes)
    # The first batch holds no point of class 0: it is seen only when the counts are accumulated.
    order = np.argsort(target == 0, kind="stable")
    preds, target = preds[order], target[order]
    metric = HungarianMIoU(num_classes, num_clusters)
    for chunk in np.array_split(np.arange(len(preds)), 3):
        metric.update(torch.from_numpy(preds[chunk]), torch.from_numpy(target[chunk]))
    assert (target[: len(preds) // 3] != 0).all()
    optimal = _check_against_brute_force(metric.compute(), preds, target, num_clusters, num_classes)
    # One best matching here, so the comparison does not rest on how ties are broken.
    assert len(optimal) == 1


def test_perfect_clustering_under_a_permutation():
    rng = np.random.default_rng(1)
    target = torch.from_numpy(rng.integers(0, 5, (4, 50)))
    perm = torch.tensor([3, 0, 4, 1, 2])
    out = hungarian_miou(perm[target], target, num_classes=5)
    assert out["miou"].item() == 1.0 and out["acc"].item() == 1.0
    assert torch.equal(out["assignment"][perm], torch.arange(5))


def test_more_clusters_than_classes_counts_unmatched_clusters_as_wrong():
    # Class 0: 4 points in cluster 0, 2 in cluster 2; class 1: 3 points in cluster 1, 1 in cluster 2.
    preds = torch.tensor([0, 0, 0, 0, 2, 2, 1, 1, 1, 2])
    target = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    out = hungarian_miou(preds, target, num_classes=2, num_clusters=3)
    assert out["assignment"].tolist() == [0, 1, -1]
    np.testing.assert_allclose(out["iou"].numpy(), [4 / 6, 3 / 4], rtol=1e-6)
    assert out["acc"].item() == pytest.approx(0.7)
    assert out["miou"].item() == pytest.approx((4 / 6 + 3 / 4) / 2)
    _check_against_brute_force(out, preds.numpy(), target.numpy(), 3, 2)


def test_fewer_clusters_than_classes_gives_unmatched_classes_zero():
    preds = torch.tensor([0, 0, 1, 1, 1, 0])
    target = torch.tensor([0, 0, 1, 1, 2, 2])
    out = hungarian_miou(preds, target, num_classes=3, num_clusters=2)
    assert out["assignment"].tolist() == [0, 1]
    np.testing.assert_allclose(out["iou"].numpy(), [2 / 3, 2 / 3, 0.0], rtol=1e-6)
    assert out["miou"].item() == pytest.approx(4 / 9)


def test_class_absent_everywhere_is_left_out_of_the_mean():
    preds = torch.tensor([0, 0, 0, 1, 1, 1, 0])
    target = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    out = hungarian_miou(preds, target, num_classes=3)
    assert out["assignment"].tolist() == [0, 1, 2]
    assert math.isnan(out["iou"][2].item())
    assert out["miou"].item() == pytest.approx((3 / 4 + 3 / 4) / 2)
    _check_against_brute_force(out, preds.numpy(), target.numpy(), 3, 3)


def test_ignore_index_and_out_of_range_targets_are_dropped():
    rng = np.random.default_rng(7)
    preds, target = _noisy_clustering(rng, 300, 4, 4, ignore_frac=0.0)
    target[rng.random(300) < 0.1] = 255
    target[rng.random(300) < 0.05] = 9  # not a class id: dropped like the references' mask
    preds[target == 255] = 77  # predictions of ignored points are not checked
    metric = HungarianMIoU(4, ignore_index=255)
    metric.update(torch.from_numpy(preds), torch.from_numpy(target))
    _check_against_brute_force(metric.compute(), preds, target, 4, 4, ignore_index=255)


def test_bad_input_is_refused():
    metric = HungarianMIoU(3)
    with pytest.raises(ValueError, match=r"cluster ids in \[0, 3\)"):
        metric.update(torch.tensor([0, 3]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="same shape"):
        metric.update(torch.tensor([0, 1]), torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="integer ids"):
        metric.update(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="num_clusters"):
        HungarianMIoU(3, num_clusters=0)


def test_reset_and_empty_state():
    metric = HungarianMIoU(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics warns about compute() before update()
        out = metric.compute()
    assert math.isnan(out["miou"].item()) and math.isnan(out["acc"].item())
    metric.update(torch.tensor([1, 1, 0]), torch.tensor([0, 0, 1]))
    assert metric.compute()["miou"].item() == 1.0
    metric.reset()
    metric.update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    assert metric.compute()["acc"].item() == pytest.approx(0.5)


def _half_each(rank: int, world_size: int, preds: np.ndarray, target: np.ndarray) -> dict:
    metric = HungarianMIoU(4, num_clusters=6)
    mine = np.array_split(np.arange(len(preds)), world_size)[rank]
    for chunk in np.array_split(mine, 2):
        metric.update(torch.from_numpy(preds[chunk]), torch.from_numpy(target[chunk]))
    return {key: value.numpy() for key, value in metric.compute().items()}


@pytest.mark.distributed
def test_two_processes_equal_one():
    rng = np.random.default_rng(3)
    preds, target = _noisy_clustering(rng, 1001, 6, 4)
    single = HungarianMIoU(4, num_clusters=6)
    single.update(torch.from_numpy(preds), torch.from_numpy(target))
    expected = {key: value.numpy() for key, value in single.compute().items()}
    for result in run_distributed(_half_each, 2, preds, target):
        assert result.keys() == expected.keys()
        for key in expected:
            np.testing.assert_array_equal(result[key], expected[key])
