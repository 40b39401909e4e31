"""Resume from any checkpoint (DESIGN: "a run resumed from any checkpoint continues as if never
stopped"): an SVC run and an inter-frame run, stopped between epochs or killed inside one, then
resumed through the CLI's ``--ckpt_path``, end with the weights, clustering state and validation
metrics of an uninterrupted run with the same seed. Also the pieces that make it so: the resumable
loader (against what Lightning does with a plain one) and the per-sample feature dropout."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, Dataset

from unsup3d.data.datasets import EpochSampler
from unsup3d.data.resumable_loader import ResumableDataLoader
from unsup3d.lightning_cli import Unsup3DCLI
from unsup3d.models import MinkUNet
from unsup3d.stssl.byol import sample_dropout
from unsup3d.stssl.p2c import P2CModule

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


class Crash(RuntimeError):
    """The simulated kill of a run."""


class CrashAt(Callback):
    """Kills the run (raises :class:`Crash`) when training reaches optimizer step ``step`` (at the next
    batch's start, after the step's checkpoint is written) or the start of epoch ``epoch``."""

    def __init__(self, step: int | None = None, epoch: int | None = None) -> None:
        self.step, self.epoch = step, epoch

    def on_train_batch_start(self, trainer: Trainer, *args: Any) -> None:
        if self.step is not None and trainer.global_step >= self.step:
            raise Crash(f"killed at step {trainer.global_step}")

    def on_train_epoch_start(self, trainer: Trainer, *args: Any) -> None:
        if self.epoch is not None and trainer.current_epoch >= self.epoch:
            raise Crash(f"killed at the start of epoch {trainer.current_epoch}")


class RecordSteps(Callback):
    """Records where training starts (the first batch's global step, epoch and batch index) and how many
    batches it trains: a resumed run must pick up at the checkpoint, not train from step 0 again."""

    def __init__(self) -> None:
        self.first: tuple[int, int, int] | None = None
        self.batches = 0

    def on_train_batch_start(self, trainer: Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self.first is None:
            self.first = (trainer.global_step, trainer.current_epoch, batch_idx)

    def on_train_batch_end(self, *args: Any) -> None:
        self.batches += 1


# -- the loader ----------------------------------------------------------------------------------------


class _Items(Dataset):
    """Item ``(epoch, index)`` is the tensor ``[epoch, index]``: batches show what the sampler drew."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, item: tuple[int, int]) -> torch.Tensor:
        return torch.tensor(item, dtype=torch.float64)


def _loader(cls: type = ResumableDataLoader, num_workers: int = 0) -> DataLoader:
    return cls(
        _Items(), batch_size=3, sampler=EpochSampler(10, seed=4), num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )  # fmt: skip


def test_loader_counts_batches_taken_not_prefetched_and_skips_them_once() -> None:
    loader = _loader(num_workers=2)  # the workers prefetch up to 4 batches ahead
    loader.sampler.set_epoch(3)
    full = [b[:, 1].tolist() for b in loader]
    assert len(full) == 4 and {e for b in loader for e in b[:, 0].tolist()} == {3}
    it = iter(loader)
    next(it), next(it)
    assert loader.state_dict() == {"epoch": 3, "batches": 2}
    del it

    loader.load_state_dict({"epoch": 3, "batches": 2})
    rest = [b[:, 1].tolist() for b in loader]
    assert rest == full[2:]
    assert loader.state_dict() == {"epoch": 3, "batches": 4}  # the skipped batches count as handed out
    assert [b[:, 1].tolist() for b in loader] == full  # skipped once only

    loader.load_state_dict({"epoch": 2, "batches": 2})  # another epoch's state: nothing to skip here
    assert [b[:, 1].tolist() for b in loader] == full
    loader.load_state_dict({"epoch": 3, "batches": 4})  # a finished epoch: nothing left to skip
    assert [b[:, 1].tolist() for b in loader] == full
    with pytest.raises(TypeError, match="EpochSampler"):
        ResumableDataLoader(_Items(), batch_size=2)


class _Recorder(LightningModule):
    """A linear model that records, per step, the (epoch, index) items of its batch."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1, dtype=torch.float64)
        self.seen: list[tuple[int, list[list[float]]]] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.seen.append((self.current_epoch, batch.tolist()))
        return self.layer(batch / 10).pow(2).mean()

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)}


def _toy_fit(root: Path, cls: type, num_workers: int, callbacks: list, ckpt: Path | None = None) -> _Recorder:
    torch.manual_seed(0)
    model = _Recorder()
    trainer = Trainer(
        max_epochs=3, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=root, callbacks=callbacks,
    )  # fmt: skip
    try:
        trainer.fit(model, _loader(cls, num_workers), ckpt_path=ckpt)
    except Crash:
        pass
    return model


@pytest.mark.parametrize("num_workers", [0, 2])
def test_lightning_mid_epoch_resume_repeats_batches_with_a_plain_loader_and_not_with_ours(
    tmp_path: Path, num_workers: int
) -> None:
    full = _toy_fit(tmp_path / "full", ResumableDataLoader, num_workers, [])
    assert len(full.seen) == 12  # 3 epochs of 4 batches
    for cls, name in ((ResumableDataLoader, "ours"), (DataLoader, "plain")):
        steps = ModelCheckpoint(dirpath=tmp_path / name, every_n_train_steps=6, save_top_k=-1)
        first = _toy_fit(tmp_path / name, cls, num_workers, [steps, CrashAt(step=6)])
        ckpt = next((tmp_path / name).glob("*step=6.ckpt"))
        second = _toy_fit(tmp_path / f"{name}-resumed", cls, num_workers, [], ckpt)
        seen = first.seen + second.seen
        assert [e for e, _ in seen] == [e for e, _ in full.seen]  # Lightning's counters resume alike
        if cls is ResumableDataLoader:
            assert seen == full.seen
            torch.testing.assert_close(second.layer.weight, full.layer.weight)
        else:
            # Lightning 2.x starts the plain loader's epoch over, so the rest of epoch 1 repeats its
            # first batches; with workers they are even epoch 0's (the iterator is made before
            # set_epoch), which our loader avoids by starting at the first next().
            repeated = full.seen[0:2] if num_workers else full.seen[4:6]
            assert seen[:6] == full.seen[:6] and seen[6:8] == [(1, b) for _, b in repeated]
            assert seen[6:8] != full.seen[6:8]
            assert not torch.allclose(second.layer.weight, full.layer.weight)


# -- feature dropout -----------------------------------------------------------------------------------


def test_sample_dropout_depends_only_on_each_sample_key() -> None:
    x = torch.ones(3000, 8)
    item = torch.tensor([0] * 1000 + [1] * 2000)
    out = sample_dropout(x, 0.4, item, [(0, 1, 7), (0, 1, 9)])
    # F.dropout's law: zero with probability p, the rest scaled by 1 / (1 - p)
    reference = torch.nn.functional.dropout(torch.ones(10000), 0.4)
    assert set(out.unique().tolist()) == set(reference.unique().tolist())
    assert abs(float((out == 0).float().mean()) - 0.4) < 0.02
    # item 1 alone in another batch (other rows, other neighbours) gets the same mask for the same key
    alone = sample_dropout(x[:2000], 0.4, torch.zeros(2000, dtype=torch.long), [(0, 1, 9)])
    assert torch.equal(alone, out[1000:])
    other_key = sample_dropout(x[:2000], 0.4, torch.zeros(2000, dtype=torch.long), [(0, 2, 9)])
    assert not torch.equal(other_key, alone)
    assert torch.equal(sample_dropout(x, 0.0, item, [(0,), (1,)]), x)


# -- the stages through the CLI ------------------------------------------------------------------------


def _run(cfg: dict, root: Path, extra: list[str] | None = None) -> Unsup3DCLI | None:
    """``unsup3d fit`` with ``cfg`` written to ``root``; None when the run was killed."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    try:
        return Unsup3DCLI(args=["fit", "--config", str(path), *(extra or [])])
    except Crash:
        return None


def _resume(cfg: dict, root: Path, epochs: int, ckpt: Path) -> Unsup3DCLI:
    """The run of ``cfg`` resumed from ``ckpt`` (``--ckpt_path``), into ``root / "resumed"``, recording its
    steps (:class:`RecordSteps`)."""
    record = [{"class_path": f"{__name__}.RecordSteps"}]
    cfg = _trainer_cfg(cfg, root / "resumed", epochs, record)
    return _run(cfg, root / "resumed", ["--ckpt_path", str(ckpt)])


def _assert_resumed_at(
    resumed: Unsup3DCLI, ckpt: Path, *, step: int, epoch: int, batch: int, total: int
) -> None:
    """The checkpoint was written at optimizer step ``step`` and the resumed run trained from there: its
    first batch is at that step, in epoch ``epoch`` at batch index ``batch`` (the values worked out by
    hand from the steps an epoch), and it trained the ``total - step`` remaining batches only. A run that
    ignored ``--ckpt_path`` and trained again from step 0 with the same seed could end with the same
    weights, but not this."""
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"] == step
    [record] = [c for c in resumed.trainer.callbacks if isinstance(c, RecordSteps)]
    assert record.first == (step, epoch, batch)
    assert record.batches == total - step and resumed.trainer.global_step == total


def _trainer_cfg(cfg: dict, root: Path, max_epochs: int, callbacks: list[dict]) -> dict:
    cfg = copy.deepcopy(cfg)
    cfg["trainer"].update(
        max_epochs=max_epochs, default_root_dir=str(root), logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=callbacks,
    )  # fmt: skip
    return cfg


def _last(root: Path) -> list[dict]:
    # at every epoch's end, validation or not
    args = {"dirpath": str(root / "last"), "save_last": True, "save_on_train_epoch_end": True}
    return [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": args}]


def _every(root: Path, steps: int) -> list[dict]:
    args = {"dirpath": str(root / "steps"), "every_n_train_steps": steps, "save_top_k": -1}
    return [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": args}]


def _crash(**kw: int) -> list[dict]:
    return [{"class_path": f"{__name__}.CrashAt", "init_args": kw}]


def _assert_same_end(resumed: Unsup3DCLI, full: Unsup3DCLI, ckpt: Path) -> None:
    """Every weight and buffer, and the final validation metrics, as the uninterrupted run's; and the
    run did train after the checkpoint (else equality would prove nothing)."""
    got, want = resumed.model.state_dict(), full.model.state_dict()
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], msg=lambda m, k=k: f"{k}: {m}")
    at_ckpt = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    first_kernel = next(k for k in want if k.startswith("backbone.") and k.endswith("kernel"))
    assert not torch.allclose(at_ckpt[first_kernel], want[first_kernel])
    got, want = resumed.trainer.callback_metrics, full.trainer.callback_metrics
    for name in ("val/miou", "val/acc"):
        torch.testing.assert_close(got[name], want[name])


def _mid_epoch_state(ckpt: Path) -> list[dict]:
    loops = torch.load(ckpt, map_location="cpu", weights_only=True)["loops"]
    return loops["fit_loop"]["state_dict"]["combined_loader"]


@pytest.fixture
def _cli_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["unsup3d"])  # the CLI takes args=, not pytest's arguments


def _svc_config(rooms_root: Path) -> dict:
    cfg = yaml.safe_load((EXPERIMENTS / "quickstart" / "pointdc_svc.yaml").read_text())
    cfg["model"]["init_args"]["backbone"]["init_args"]["width"] = 0.25
    # clusterings at epochs 0, 2 and 4; the learnable classifier is fixed to the centroids from epoch 2
    cfg["model"]["init_args"].update(num_clusters=6, recluster_every=2, warmup_epochs=2, kmeans_iters=10)
    cfg["data"]["init_args"].update(
        num_scenes=3, num_val=1, frames_per_scene=2, data_root=str(rooms_root), voxel_size=0.2, batch_size=1
    )  # 2 training scenes: 2 steps an epoch
    cfg["trainer"].update(check_val_every_n_epoch=5)
    return cfg


def _assert_same_labels(resumed: Unsup3DCLI, full: Unsup3DCLI) -> None:
    """SVC's pseudo labels of the last clustering (kept outside the state dict) are the same."""
    got, want = resumed.model.labels.state(), full.model.labels.state()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.usefixtures("_cli_argv")
def test_svc_resumed_between_and_inside_epochs_ends_as_the_uninterrupted_run(
    rooms_root: Path, tmp_path: Path
) -> None:
    cfg, epochs = _svc_config(rooms_root), 5
    full = _run(_trainer_cfg(cfg, tmp_path / "full", epochs, []), tmp_path / "full")
    assert int(full.model.last_cluster_epoch) == 4 and not full.model.classifier.weight.requires_grad

    # stopped after epoch 0 (max_epochs=1), resumed from last.ckpt: clusters again at 2 and 4, warm-up ends
    root = tmp_path / "between"
    _run(_trainer_cfg(cfg, root, 1, _last(root)), root)
    ckpt = root / "last" / "last.ckpt"
    resumed = _resume(cfg, root, epochs, ckpt)
    _assert_resumed_at(resumed, ckpt, step=2, epoch=1, batch=0, total=10)  # 2 steps an epoch, 5 epochs
    _assert_same_end(resumed, full, ckpt)
    _assert_same_labels(resumed, full)

    # killed after step 5 (epoch 2, batch 0 of 2: past the warm-up, the classifier fixed), resumed there
    root = tmp_path / "inside"
    assert _run(_trainer_cfg(cfg, root, epochs, _every(root, 5) + _crash(step=5)), root) is None
    ckpt = next((root / "steps").glob("*step=5.ckpt"))
    assert _mid_epoch_state(ckpt) == [{"epoch": 2, "batches": 1}]
    resumed = _resume(cfg, root, epochs, ckpt)
    _assert_resumed_at(resumed, ckpt, step=5, epoch=2, batch=1, total=10)
    assert not resumed.model.classifier.weight.requires_grad
    _assert_same_end(resumed, full, ckpt)
    _assert_same_labels(resumed, full)


@pytest.fixture(scope="module")
def p2c_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("p2c") / "p2c.ckpt"
    torch.save({"state_dict": P2CModule(backbone=MinkUNet(4, width=0.25)).state_dict()}, path)
    return path


def _interframe_config(data_root: Path, p2c: Path) -> dict:
    cfg = yaml.safe_load((EXPERIMENTS / "quickstart" / "stssl_interframe.yaml").read_text())
    # tracks made with the P2C backbone at epoch 0, re-made with the trained one at epoch 2
    cfg["model"]["init_args"].update(
        init_checkpoint=str(p2c), retrack_every=2, val_points=500, min_cluster_points=5
    )
    cfg["data"]["init_args"].update(
        num_sequences=3, num_val=1, frames_per_sequence=3, azimuth_steps=256, voxel_size=0.2,
        max_voxels=1200, track_min_points=40, data_root=str(data_root), batch_size=2,
    )  # 6 training frames: 3 steps an epoch  # fmt: skip
    return cfg


@pytest.mark.usefixtures("_cli_argv")
def test_interframe_resumed_between_and_inside_epochs_ends_as_the_uninterrupted_run(
    tmp_path: Path, p2c_checkpoint: Path
) -> None:
    cfg, epochs = _interframe_config(tmp_path / "data", p2c_checkpoint), 3
    full = _run(_trainer_cfg(cfg, tmp_path / "full", epochs, []), tmp_path / "full")
    assert int(full.model.last_track_epoch) == 2
    assert full.trainer.callback_metrics["train/tracked_pairs"] > 0

    # killed at the start of epoch 1 (max_epochs stays 3: the cosine schedule spans the whole run)
    root = tmp_path / "between"
    assert _run(_trainer_cfg(cfg, root, epochs, _last(root) + _crash(epoch=1)), root) is None
    ckpt = root / "last" / "last.ckpt"
    resumed = _resume(cfg, root, epochs, ckpt)
    _assert_resumed_at(resumed, ckpt, step=3, epoch=1, batch=0, total=9)  # 3 steps an epoch, 3 epochs
    _assert_same_end(resumed, full, ckpt)
    # the tracks re-made after the resume point came from the same weights (a digest of them)
    assert resumed.model.track_version == full.model.track_version

    # killed after step 4 (epoch 1, batch 0 of 3), resumed there
    root = tmp_path / "inside"
    assert _run(_trainer_cfg(cfg, root, epochs, _every(root, 4) + _crash(step=4)), root) is None
    ckpt = next((root / "steps").glob("*step=4.ckpt"))
    assert _mid_epoch_state(ckpt) == [{"epoch": 1, "batches": 1}]
    resumed = _resume(cfg, root, epochs, ckpt)
    _assert_resumed_at(resumed, ckpt, step=4, epoch=1, batch=1, total=9)
    _assert_same_end(resumed, full, ckpt)
    assert resumed.model.track_version == full.model.track_version
