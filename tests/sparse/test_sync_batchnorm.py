"""Sparse BatchNorm under `convert_sync_batchnorm` (Lightning's ``sync_batchnorm=True``): 2 gloo processes
give what one process gives on the concatenated batch, and checkpoints keep torchsparse's key names."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests._dist import run_distributed
from tests.models._scenes import _batch, _scene
from unsup3d.models import MinkUNet, Res16UNet
from unsup3d.sparse import SparseTensor
from unsup3d.sparse import nn as spnn

ROWS = (37, 50)  # rows on rank 0 and rank 1: unequal on purpose


def _rows(rank: int, channels: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rank ``rank``'s features, sites and loss weights (the same on every call)."""
    g = torch.Generator().manual_seed(100 + rank)
    n = ROWS[rank]
    feats = torch.randn(n, channels, generator=g, dtype=torch.float64) * (1 + 2 * rank) + rank
    coords = torch.cat([torch.zeros(n, 1, dtype=torch.int32), torch.arange(3 * n).view(n, 3).int()], 1)
    return feats, coords, torch.randn(n, channels, generator=g, dtype=torch.float64)


def _norm(momentum: float | None) -> nn.Module:
    torch.manual_seed(0)
    bn = spnn.BatchNorm(4, momentum=momentum).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return bn


def _sync_norm_worker(rank: int, world: int, momentum: float | None) -> dict[str, torch.Tensor]:
    model = nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(_norm(momentum)))
    bn = model[0]
    # converted in place: the sparse module synchronises by itself, no torch SyncBatchNorm is left
    assert isinstance(bn, spnn.BatchNorm) and bn.sync
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    feats, coords, w = _rows(rank)
    out = {}
    for step in range(2):  # two steps: the running statistics' update is checked twice
        x = feats.clone().requires_grad_(True) if step == 0 else feats * 0.5 - 1
        y = model(SparseTensor(x, coords))
        if step == 0:
            (y.F * w).sum().backward()
            out.update(y=y.F.detach(), x_grad=x.grad, w_grad=bn.weight.grad, b_grad=bn.bias.grad)
        out[f"running_mean{step}"] = bn.running_mean.clone()
        out[f"running_var{step}"] = bn.running_var.clone()
    out["batches"] = bn.num_batches_tracked.clone()
    out["keys"] = sorted(bn.state_dict())
    return out


BACKBONES = {
    "minkunet": (lambda: MinkUNet(in_channels=4, width=0.25), 4),
    "res16unet": (lambda: Res16UNet(in_channels=6, width=0.25), 6),
}


def _net(name: str) -> nn.Module:
    # float64: a deep stack of BatchNorms amplifies float32 rounding, which differs between the
    # one-process kernel and the two all-reduces, beyond what a test can tell from a real fault
    torch.manual_seed(0)
    return BACKBONES[name][0]().double().train()


def _scene_batch(name: str, seeds: list[int]) -> SparseTensor:
    x, _ = _batch([_scene(s, n=1500, channels=BACKBONES[name][1]) for s in seeds])
    return SparseTensor(x.F.double(), x.C)


def _backbone_worker(rank: int, world: int, name: str) -> dict[str, object]:
    net = nn.SyncBatchNorm.convert_sync_batchnorm(_net(name))
    # as Lightning's ddp strategy does after sync_batchnorm: DDP accepts the converted CPU model
    ddp = nn.parallel.DistributedDataParallel(net)
    y = ddp(_scene_batch(name, [rank]))
    g = torch.Generator().manual_seed(7 + rank)
    (y * torch.randn(y.shape, generator=g, dtype=torch.float64)).sum().backward()
    grads = {k: p.grad.clone() for k, p in net.named_parameters()}
    converted = sum(isinstance(m, spnn.BatchNorm) and m.sync for m in net.modules())
    return {"y": y.detach(), "grads": grads, "state": net.state_dict(), "converted": converted}


def _worker(rank: int, world: int) -> dict[str, dict]:
    """Everything the tests below need from the two processes, in one launch (each costs seconds)."""
    out = {f"norm-{m}": _sync_norm_worker(rank, world, m) for m in (0.1, None)}
    out.update({name: _backbone_worker(rank, world, name) for name in BACKBONES})
    return out


@pytest.fixture(scope="module")
def two_processes() -> list[dict]:
    return run_distributed(_worker, 2)


@pytest.mark.distributed
@pytest.mark.parametrize("momentum", [0.1, None])
def test_sync_batchnorm_on_two_processes_equals_one_batchnorm_on_the_concatenation(
    momentum: float | None, two_processes: list[dict]
) -> None:
    ranks = [r[f"norm-{momentum}"] for r in two_processes]

    ref = nn.BatchNorm1d(4, momentum=momentum).double()
    ref.load_state_dict(_norm(momentum).state_dict())
    parts = [_rows(r) for r in range(2)]
    x = torch.cat([p[0] for p in parts]).requires_grad_(True)
    y = ref(x)
    (y * torch.cat([p[2] for p in parts])).sum().backward()
    running = [(ref.running_mean.clone(), ref.running_var.clone())]
    ref(torch.cat([p[0] for p in parts]) * 0.5 - 1)
    running.append((ref.running_mean.clone(), ref.running_var.clone()))

    split = list(ROWS)
    for r, got in enumerate(ranks):
        torch.testing.assert_close(got["y"], y.detach().split(split)[r])
        torch.testing.assert_close(got["x_grad"], x.grad.split(split)[r])
        for step, (mean, var) in enumerate(running):
            torch.testing.assert_close(got[f"running_mean{step}"], mean)
            torch.testing.assert_close(got[f"running_var{step}"], var)
        assert int(got["batches"]) == 2
        assert got["keys"] == sorted(ref.state_dict())
    # each process holds the gradient of its own rows' loss; DDP sums (averages) them
    torch.testing.assert_close(ranks[0]["w_grad"] + ranks[1]["w_grad"], ref.weight.grad)
    torch.testing.assert_close(ranks[0]["b_grad"] + ranks[1]["b_grad"], ref.bias.grad)
    # the statistics really are the global ones: a BatchNorm of rank 0's rows alone differs
    alone = nn.BatchNorm1d(4).double()
    alone.load_state_dict(_norm(0.1).state_dict())
    assert not torch.allclose(alone(parts[0][0]), ranks[0]["y"], atol=1e-3)


@pytest.mark.distributed
@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_converted_backbone_runs_and_equals_one_process_on_the_batch(
    name: str, two_processes: list[dict]
) -> None:
    ranks = [r[name] for r in two_processes]
    plain = _net(name)
    assert ranks[0]["converted"] == sum(isinstance(m, spnn.BatchNorm) for m in plain.modules()) > 0

    y = plain(_scene_batch(name, [0, 1]))
    sizes = [len(r["y"]) for r in ranks]
    weights = [
        torch.randn(r["y"].shape, generator=torch.Generator().manual_seed(7 + i), dtype=torch.float64)
        for i, r in enumerate(ranks)
    ]
    (y * torch.cat(weights)).sum().backward()
    for r, part in enumerate(y.detach().split(sizes)):
        torch.testing.assert_close(ranks[r]["y"], part)
    for key, p in plain.named_parameters():  # DDP averages the two ranks' gradients
        torch.testing.assert_close(ranks[0]["grads"][key], p.grad / 2)
        torch.testing.assert_close(ranks[1]["grads"][key], p.grad / 2)
    # the converted network's checkpoint has the plain network's keys and running statistics
    state = plain.state_dict()
    assert list(ranks[0]["state"]) == list(state)
    for key in state:
        if "running" in key:
            torch.testing.assert_close(ranks[0]["state"][key], state[key])
    _net(name).load_state_dict(ranks[1]["state"])


def test_state_dict_keys_are_torchsparse_names_and_old_checkpoints_load() -> None:
    ref = nn.BatchNorm1d(5)
    with torch.no_grad():
        for t in (ref.weight, ref.bias, ref.running_mean, ref.running_var):
            t.uniform_(0.5, 1.5)
    ref.num_batches_tracked.fill_(3)
    bn = spnn.BatchNorm(5)
    bn.load_state_dict(ref.state_dict())  # a checkpoint of torchsparse's BatchNorm (an nn.BatchNorm1d)
    assert list(bn.state_dict()) == list(ref.state_dict())
    for key, value in ref.state_dict().items():
        assert torch.equal(bn.state_dict()[key], value), key
    nested = nn.Sequential(nn.Identity(), spnn.BatchNorm(5))
    nested.load_state_dict({f"1.{k}": v for k, v in ref.state_dict().items()})
    assert torch.equal(nested[1].running_var, ref.running_var)
    with pytest.raises(RuntimeError, match="running_mean"):
        nested.load_state_dict({f"1.{k}": v for k, v in ref.state_dict().items() if k != "running_mean"})
    # eval mode on a sparse tensor is BatchNorm1d on its features
    x = SparseTensor(torch.randn(9, 5), torch.zeros(9, 4, dtype=torch.int32))
    torch.testing.assert_close(bn.eval()(x).F, ref.eval()(x.F))
    bn.momentum, bn.eps = 0.02, 1e-3
    assert (bn.bn.momentum, bn.bn.eps) == (0.02, 1e-3)
    # converted but without a process group (one process): plain batch statistics
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(spnn.BatchNorm(5)))
    assert synced[0].sync
    torch.testing.assert_close(synced.train()(x).F, nn.BatchNorm1d(5)(x.F))
