"""``load_backbone``: a stage checkpoint's ``backbone.*`` weights copied into a backbone, and the guard
that refuses a checkpoint whose weights do not fit (an extra or a missing key, or none at all)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from unsup3d.training.common import build_backbone, load_backbone


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 4)
        self.bn = torch.nn.BatchNorm1d(4)


def _weights(seed: int) -> dict[str, torch.Tensor]:
    """A full set of ``_Net`` weights, hand-filled: random values, distinct from a fresh net's."""
    g = torch.Generator().manual_seed(seed)
    return {
        "lin.weight": torch.randn(4, 3, generator=g), "lin.bias": torch.randn(4, generator=g),
        "bn.weight": torch.rand(4, generator=g) + 1, "bn.bias": torch.randn(4, generator=g),
        "bn.running_mean": torch.randn(4, generator=g), "bn.running_var": torch.rand(4, generator=g) + 0.5,
        "bn.num_batches_tracked": torch.tensor(17),
    }  # fmt: skip


def _save(path: Path, state: dict[str, torch.Tensor], wrap: bool = True) -> Path:
    torch.save({"state_dict": state, "epoch": 3} if wrap else state, path)
    return path


def _stage_state(backbone: dict[str, torch.Tensor], prefix: str = "backbone.") -> dict[str, torch.Tensor]:
    """A stage's state dict: the backbone under ``prefix`` beside a head that is not the backbone's."""
    return {**{prefix + k: v for k, v in backbone.items()}, "classifier.weight": torch.ones(2, 4)}


@pytest.mark.parametrize("wrap", [True, False])
def test_loads_exactly_the_checkpoints_backbone_weights(tmp_path: Path, wrap: bool) -> None:
    """Every tensor of the backbone equals the checkpoint's ``backbone.<name>`` one, from a Lightning
    checkpoint (``state_dict`` inside) or a bare state dict; the head's weights are left out."""
    ref = _weights(1)
    path = _save(tmp_path / "stage.ckpt", _stage_state(ref), wrap)
    net = _Net()
    load_backbone(net, path)
    got = net.state_dict()
    assert set(got) == set(ref)
    for k, v in ref.items():
        assert torch.equal(got[k], v), k
    built = build_backbone(None, str(path), _Net)  # the stages' entry point loads the same weights
    assert all(torch.equal(built.state_dict()[k], v) for k, v in ref.items())


def test_another_prefix_picks_that_networks_weights(tmp_path: Path) -> None:
    """With ``prefix="target_backbone."`` the target branch's weights load, not the online one's."""
    online, target = _weights(1), _weights(2)
    path = _save(tmp_path / "byol.ckpt", {**_stage_state(online), **_stage_state(target, "target_backbone.")})
    net = _Net()
    load_backbone(net, path, prefix="target_backbone.")
    for k, v in target.items():
        assert torch.equal(net.state_dict()[k], v), k


def test_an_unexpected_key_is_an_error_naming_it(tmp_path: Path) -> None:
    """A ``backbone.*`` weight the backbone lacks: ValueError naming the checkpoint and the key."""
    state = _stage_state({**_weights(1), "head.weight": torch.zeros(2, 2)})
    path = _save(tmp_path / "extra.ckpt", state)
    msg = r"extra\.ckpt: backbone weights do not fit \(missing \[\], unexpected \['head\.weight'\]\)"
    with pytest.raises(ValueError, match=msg):
        load_backbone(_Net(), path)


def test_a_missing_key_is_an_error_naming_it(tmp_path: Path) -> None:
    """A backbone weight the checkpoint lacks: ValueError naming the checkpoint and the key."""
    weights = _weights(1)
    del weights["bn.running_var"]
    path = _save(tmp_path / "short.ckpt", _stage_state(weights))
    msg = r"short\.ckpt: backbone weights do not fit \(missing \['bn\.running_var'\], unexpected \[\]\)"
    with pytest.raises(ValueError, match=msg):
        load_backbone(_Net(), path)


def test_a_checkpoint_without_backbone_weights_is_an_error(tmp_path: Path) -> None:
    """No key under the prefix (here the weights sit at the top level): ValueError, not a silent no-op."""
    path = _save(tmp_path / "bare.ckpt", {**_weights(1), "classifier.weight": torch.ones(2, 4)})
    with pytest.raises(ValueError, match=re.escape("bare.ckpt: no 'backbone.*' weights")):
        load_backbone(_Net(), path)
