"""BYOL projection / prediction heads and PointDC's distillation head."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unsup3d.models import DistillationHead, PredictionHead, ProjectionHead


def test_stssl_head_shapes_and_layout() -> None:
    proj, pred = ProjectionHead(), PredictionHead()
    x = torch.randn(32, 96)
    z = proj(x)
    assert z.shape == (32, 128)
    assert pred(z).shape == (32, 128)
    # Linear - BatchNorm1d - ReLU - Linear with the release's widths.
    kinds = [type(m) for m in proj.net]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert (proj.net[0].in_features, proj.net[0].out_features, proj.net[3].out_features) == (96, 128, 128)
    assert (pred.net[0].in_features, pred.net[0].out_features, pred.net[3].out_features) == (128, 256, 128)


def test_head_matches_manual_mlp_in_eval() -> None:
    torch.manual_seed(0)
    head = ProjectionHead(8, 16, 4).eval()
    lin1, bn, _, lin2 = head.net
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(10, 8)
    h = (x @ lin1.weight.T + lin1.bias - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)
    h = torch.relu(h * bn.weight + bn.bias)
    torch.testing.assert_close(head(x), h @ lin2.weight.T + lin2.bias)


def test_head_without_batch_norm() -> None:
    head = PredictionHead(batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in head.modules())
    assert head(torch.randn(3, 128)).shape == (3, 128)


def test_distillation_head_is_bias_free_linear() -> None:
    head = DistillationHead()
    assert head.linear.bias is None
    x = torch.randn(50, 128)
    out = head(x)
    assert out.shape == (50, 70)
    torch.testing.assert_close(out, x @ head.linear.weight.T)
    # Linear: no offset, so a zero feature maps to zero (a bias would break this).
    assert torch.count_nonzero(head(torch.zeros(1, 128))) == 0


def test_heads_reject_wrong_width() -> None:
    with pytest.raises(ValueError, match=r"\(N, 96\)"):
        ProjectionHead()(torch.randn(4, 95))
    with pytest.raises(ValueError, match="DistillationHead"):
        DistillationHead()(torch.randn(4, 96))
