"""The STSSL label-efficiency benchmark (benchmarks/stssl_label_efficiency.py): its fine-tuning rows
with ``Trainer.fit`` replaced by a recorder, so what each row would train on and start from is checked
without training."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Trainer

import benchmarks.stssl_label_efficiency as bench
from benchmarks.stssl_label_efficiency import ROWS, finetune
from unsup3d.models import MinkUNet
from unsup3d.stssl.p2c import P2CModule

WIDTH = 0.25


def _args(data_root: Path) -> argparse.Namespace:
    """The script's flags, tiny: 3 sequences of 8 frames (the last validates), a quarter labelled."""
    return argparse.Namespace(
        sequences=3, frames=8, azimuth_steps=128, data_seed=0, data_root=data_root, voxel_size=0.2,
        batch_size=1, max_voxels=1200, width=WIDTH, finetune_lr=0.1, finetune_epochs=1,
        finetune_augment=False, label_fraction=0.25,
    )  # fmt: skip


@pytest.fixture
def fits(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every ``Trainer.fit`` call's module (a copy of its weights as they start) and data module, set up
    for fitting; the module gets fixed metrics in place of trained ones."""
    calls: list[dict[str, Any]] = []

    def record(self: Trainer, model: Any, datamodule: Any = None, **kw: Any) -> None:
        datamodule.prepare_data()
        datamodule.setup("fit")
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        calls.append({"trainer": self, "module": model, "state": state, "dm": datamodule})
        model.last_metrics = {"miou": torch.tensor(0.25), "acc": torch.tensor(0.75)}

    monkeypatch.setattr(Trainer, "fit", record)
    return calls


def _checkpoint(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    torch.save({"state_dict": P2CModule(backbone=MinkUNet(4, width=WIDTH)).state_dict()}, path)
    return path


def _backbone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}


def test_finetune_rows_share_the_split_and_classifier_and_start_from_their_checkpoint(
    tmp_path: Path, fits: list[dict[str, Any]]
) -> None:
    """For seeds 3 and 4, the three rows: the seed's label split (2 of 8 scans of each of the 2 training
    sequences), the same initial classifier, and the backbone of each row's checkpoint (none: fresh)."""
    args = _args(tmp_path / "data")
    ckpts = (None, _checkpoint(tmp_path / "p2c.ckpt", 1), _checkpoint(tmp_path / "inter.ckpt", 2))
    assert len(ROWS) == 3
    results = {seed: [finetune(args, seed, ckpt) for ckpt in ckpts] for seed in (3, 4)}
    assert len(fits) == 6
    for i, (seed, rows) in enumerate(results.items()):
        calls = fits[3 * i : 3 * i + 3]
        for call, row, ckpt in zip(calls, rows, ckpts):
            dm, trainer = call["dm"], call["trainer"]
            assert trainer.max_epochs == args.finetune_epochs
            assert dm.label_fraction == 0.25 and dm.split_seed == seed and dm.seed == seed
            assert dm.train_labels and not dm.augment
            assert row == {"miou": 0.25, "acc": 0.75, "labelled_scans": 4}
            assert len(dm.datasets["train"]) == 4 and len(dm.datasets["val"]) == 8
            assert {f.sequence for f in dm.datasets["train"].frames} == {"00", "01"}
            backbone = _backbone(call["state"])
            if ckpt is None:
                continue
            want = _backbone(torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"])
            assert backbone.keys() == want.keys()
            assert all(torch.equal(backbone[k], want[k]) for k in want)
        # one split and one classifier initialisation per seed, whatever the backbone
        frames = [[(f.sequence, f.index) for f in c["dm"].datasets["train"].frames] for c in calls]
        assert frames[0] == frames[1] == frames[2]
        for key in ("classifier.weight", "classifier.bias"):
            assert torch.equal(calls[0]["state"][key], calls[1]["state"][key])
            assert torch.equal(calls[0]["state"][key], calls[2]["state"][key])
        # the fresh backbone is not a checkpoint's
        scratch, p2c = _backbone(calls[0]["state"]), _backbone(calls[1]["state"])
        assert any(not torch.equal(scratch[k], p2c[k]) for k in p2c)
    # the seed draws the classifier's initialisation
    assert not torch.equal(fits[0]["state"]["classifier.weight"], fits[3]["state"]["classifier.weight"])


# mIoU each (row, seed) is made to score; the table's means and standard deviations are worked out by hand
MIOU = {("scratch", 0): 0.1, ("scratch", 1): 0.2, ("p2c", 0): 0.3, ("p2c", 1): 0.5,
        ("p2c+interframe", 0): 0.4, ("p2c+interframe", 1): 0.4}  # fmt: skip


@pytest.mark.parametrize("per_seed", [False, True])
def test_main_pretrains_once_and_gives_each_row_its_checkpoint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, per_seed: bool
) -> None:
    """``main`` with pre-training and fine-tuning replaced by recorders: pre-training runs for the first
    seed only (or every seed with ``--pretrain-per-seed``); row scratch fine-tunes from nothing, row p2c
    from the P2C checkpoint, the last from the inter-frame one; the written row averages the seeds."""
    pretrained: list[int] = []
    tuned: list[tuple[int, Path | None]] = []
    written: list[tuple[str, dict]] = []

    def pretrain(args: argparse.Namespace, seed: int, out: Path) -> tuple[Path, Path]:
        pretrained.append(seed)
        return Path(f"p2c-{seed}"), Path(f"inter-{seed}")

    def tune(args: argparse.Namespace, seed: int, checkpoint: Path | None) -> dict[str, float]:
        tuned.append((seed, checkpoint))
        name = {None: "scratch", "p2c": "p2c", "inter": "p2c+interframe"}[
            checkpoint and checkpoint.name.split("-")[0]
        ]
        return {"miou": MIOU[name, seed], "acc": 0.9, "labelled_scans": 7}

    monkeypatch.setattr(bench, "pretrain", pretrain)
    monkeypatch.setattr(bench, "finetune", tune)
    monkeypatch.setattr(bench, "write_row", lambda name, row: written.append((name, row)))
    extra = ["--pretrain-per-seed"] if per_seed else []
    argv = ["stssl_label_efficiency.py", "--seeds", "0", "1", "--data-root", str(tmp_path), *extra]
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()

    assert pretrained == ([0, 1] if per_seed else [0])
    ck = 1 if per_seed else 0  # the checkpoints seed 1 fine-tunes from
    assert tuned == [
        (0, None), (0, Path("p2c-0")), (0, Path("inter-0")),
        (1, None), (1, Path(f"p2c-{ck}")), (1, Path(f"inter-{ck}")),
    ]  # fmt: skip
    [(name, row)] = written
    assert name == "stssl_label_efficiency" and row["labelled_scans"] == 7
    table = row["table"]
    assert list(table) == list(ROWS)
    assert table["scratch"] == {
        "miou": 15.0, "miou_std": 5.0, "acc": 90.0, "acc_std": 0.0, "per_seed_miou": [10.0, 20.0]
    }  # fmt: skip
    assert (table["p2c"]["miou"], table["p2c"]["miou_std"]) == (40.0, 10.0)
    assert (table["p2c+interframe"]["miou"], table["p2c+interframe"]["miou_std"]) == (40.0, 0.0)
    assert row["settings"]["seeds"] == [0, 1] and row["settings"]["pretrain_per_seed"] is per_seed
