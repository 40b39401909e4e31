"""EpochSampler: seeded per-epoch order, sharding under torch.distributed, mid-epoch skip."""

from __future__ import annotations

import pytest

from tests._dist import run_distributed
from unsup3d.data.datasets import EpochSampler


def test_order_depends_only_on_seed_and_epoch() -> None:
    """Same seed and epoch: same order; another epoch: another order; no shuffle: identity."""
    a, b = EpochSampler(10, seed=3), EpochSampler(10, seed=3)
    a.set_epoch(2), b.set_epoch(2)
    assert list(a) == list(b)
    assert sorted(i for _, i in a) == list(range(10)) and {e for e, _ in a} == {2}
    b.set_epoch(3)
    assert [i for _, i in a] != [i for _, i in b]
    assert [i for _, i in EpochSampler(5, shuffle=False)] == [0, 1, 2, 3, 4]


def test_order_depends_on_the_seed() -> None:
    """Two seeds give two orders at the same epoch (a 1 in 10! chance of a tie), for several epochs."""
    for epoch in (0, 2, 7):
        orders = []
        for seed in (3, 4):
            s = EpochSampler(10, seed=seed)
            s.set_epoch(epoch)
            orders.append([i for _, i in s])
        assert sorted(orders[0]) == sorted(orders[1]) == list(range(10))
        assert orders[0] != orders[1], epoch


def test_skip_drops_the_first_items_once() -> None:
    s = EpochSampler(9, seed=1)
    full = list(s)
    s.skip = 4
    assert list(s) == full[4:]
    assert list(s) == full  # reset after one iteration


def _shards(rank: int, world: int, size: int) -> dict:
    out = {}
    for even in (True, False):
        s = EpochSampler(size, shuffle=True, seed=5, even=even)
        s.set_epoch(1)
        out[even] = ([i for _, i in s], len(s))
    whole = EpochSampler(size, shuffle=True, seed=5, shard=False)
    whole.set_epoch(1)
    out["unsharded"] = [i for _, i in whole]
    return out


@pytest.mark.distributed
def test_two_processes_share_the_one_process_order() -> None:
    size = 7
    one = EpochSampler(size, shuffle=True, seed=5)
    one.set_epoch(1)
    order = [i for _, i in one]
    r0, r1 = run_distributed(_shards, 2, size)
    # evaluation: each item exactly once, interleaved from the shared order
    assert r0[False][0] == order[0::2] and r1[False][0] == order[1::2]
    assert r0[False][1] + r1[False][1] == size
    # training: padded by wrapping so both ranks draw as many items
    assert r0[True][1] == r1[True][1] == 4
    assert sorted(set(r0[True][0] + r1[True][0])) == list(range(size))
    assert r0["unsharded"] == r1["unsharded"] == order
