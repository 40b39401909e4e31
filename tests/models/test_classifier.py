"""CosineClassifier (PointDC Eq. 9) against a hand-computed cosine."""

from __future__ import annotations

import io
import math

import pytest
import torch

from unsup3d.models import CosineClassifier


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / math.sqrt(sum(x * x for x in a)) / math.sqrt(sum(y * y for y in b))


@pytest.mark.parametrize("temperature", [1.0, 0.1])
def test_logits_are_cosine_over_temperature(temperature: float) -> None:
    torch.manual_seed(0)
    clf = CosineClassifier(5, 3, temperature=temperature)
    x = torch.randn(4, 5)
    logits = clf(x)
    w = clf.weight.detach().tolist()
    for i, row in enumerate(x.tolist()):
        for c in range(3):
            assert logits[i, c].item() == pytest.approx(_cosine(row, w[c]) / temperature, rel=1e-5, abs=1e-6)


def test_eq9_softmax_equals_softmax_of_negative_cosine_distance() -> None:
    # Eq. 9 is written with the cosine distance 1 - cos; the constant cancels in the softmax.
    torch.manual_seed(1)
    clf = CosineClassifier(6, 4)
    x = torch.randn(7, 6)
    cos = torch.nn.functional.cosine_similarity(x[:, None], clf.weight.detach()[None], dim=2)
    torch.testing.assert_close(clf(x).softmax(1), (-(1 - cos)).softmax(1))


def test_unnormalised_input_is_release_fixed_classifier() -> None:
    torch.manual_seed(2)
    centroids = torch.randn(3, 4)
    clf = CosineClassifier(4, 3, learnable=False, normalize_input=False)
    clf.set_centroids(centroids)
    x = torch.randn(5, 4) * 3
    expected = x @ (centroids / centroids.norm(dim=1, keepdim=True)).T
    torch.testing.assert_close(clf(x), expected)


def test_set_centroids_argmax_is_nearest_centroid_by_cosine() -> None:
    torch.manual_seed(3)
    centroids = torch.randn(6, 8) * torch.rand(6, 1) * 10  # assorted norms: only directions count
    clf = CosineClassifier(8, 6, learnable=False)
    clf.set_centroids(centroids)
    torch.testing.assert_close(clf.weight.norm(dim=1), torch.ones(6))
    x = torch.randn(200, 8)
    pred = clf(x).argmax(1)
    nearest = torch.tensor([
        max(range(6), key=lambda c: _cosine(row, centroids[c].tolist())) for row in x.tolist()
    ])
    assert torch.equal(pred, nearest)


def test_learnable_vs_fixed_weights() -> None:
    learn = CosineClassifier(4, 2, learnable=True)
    fixed = CosineClassifier(4, 2, learnable=False)
    assert [n for n, _ in learn.named_parameters()] == ["weight"]
    assert list(fixed.parameters()) == [] and "weight" in dict(fixed.named_buffers())
    x = torch.randn(3, 4, requires_grad=True)
    learn(x).sum().backward()
    assert learn.weight.grad is not None and learn.weight.grad.abs().sum() > 0
    learn.set_centroids(torch.randn(2, 4), freeze=True)
    assert not learn.weight.requires_grad


@pytest.mark.parametrize("learnable", [True, False])
def test_state_dict_round_trip(learnable: bool) -> None:
    torch.manual_seed(4)
    src = CosineClassifier(8, 5, learnable=learnable, temperature=0.5)
    src.set_centroids(torch.randn(5, 8))
    buf = io.BytesIO()
    torch.save(src.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert set(state) == {"weight"}
    for dst_learnable in (True, False):
        dst = CosineClassifier(8, 5, learnable=dst_learnable, temperature=0.5)
        assert not torch.equal(dst.weight, src.weight)
        dst.load_state_dict(state)
        torch.testing.assert_close(dst.weight, src.weight, rtol=0, atol=0)
        x = torch.randn(3, 8)
        torch.testing.assert_close(dst(x), src(x))


def test_bad_inputs_raise() -> None:
    clf = CosineClassifier(4, 3)
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        clf.set_centroids(torch.randn(4, 4))
    with pytest.raises(ValueError, match="NaN"):
        clf.set_centroids(torch.full((3, 4), float("nan")))
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        clf(torch.randn(2, 5))
    with pytest.raises(ValueError, match="temperature"):
        CosineClassifier(4, 3, temperature=0.0)
