"""Specs: plain data that rebuilds the same network; what a weights-only load can't hold is refused."""

from __future__ import annotations

import io

import pytest
import torch

from unsup3d.models import MinkUNet, Res16UNet, backbone_spec, build_from_spec
from unsup3d.models.spec import plain


@pytest.mark.parametrize(
    "net",
    [
        lambda: MinkUNet(in_channels=3, width=0.25, channels=(8, 8, 16, 16, 32, 32, 16, 16, 8)),
        lambda: Res16UNet(4, 24, planes=(8, 16, 16, 32), layers=(1, 2, 1, 1), width=0.5),
    ],
    ids=["minkunet", "res16unet"],
)
def test_spec_rebuilds_the_same_network_and_survives_a_weights_only_load(net) -> None:
    original = net()
    spec = backbone_spec(original)
    buffer = io.BytesIO()
    torch.save({"spec": spec}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)["spec"]
    assert loaded == spec
    rebuilt = build_from_spec(loaded)
    assert type(rebuilt) is type(original)
    want = {k: v.shape for k, v in original.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == want
    default = type(original)()
    assert {k: v.shape for k, v in default.state_dict().items()} != want  # the arguments mattered


def test_spec_refuses_what_is_not_plain() -> None:
    assert plain({"a": (1, 2.0, [True, None, "x"])}) == {"a": [1, 2.0, [True, None, "x"]]}
    with pytest.raises(TypeError, match="not plain data"):
        plain({"w": torch.zeros(2)})
    assert backbone_spec(torch.nn.Linear(2, 3)) is None  # keeps no init_args: nothing can rebuild it
    with pytest.raises(ValueError, match="not a torch.nn.Module"):
        build_from_spec({"class_path": "collections.OrderedDict", "init_args": {}})
    with pytest.raises(ValueError, match="not importable"):
        build_from_spec({"class_path": "unsup3d.models.NoSuchNet", "init_args": {}})
