"""The quickstart: PointDC end to end on the built-in synthetic rooms, on a CPU, in minutes.

    python -m unsup3d.quickstart

generates the rooms (ScanNet's raw layout), runs Cross-Modal Distillation, then Super-Voxel
Clustering from its checkpoint, and prints the final Hungarian-matched mIoU, accuracy and per-class
IoU on the validation rooms. Extra arguments go to every run, e.g. ``--trainer.max_epochs 2``.

Which distillation: where the recipe's 2D teacher (``facebook/dino-vits8``, DINO ViT-S/8) is in the
local Hugging Face cache, CMD distils it (``experiments/quickstart/pointdc_{cmd,svc}.yaml``);
where it is not, the quickstart says so and runs PointDC's teacher-free path instead
(``experiments/quickstart/pointdc_geometric_{cmd,svc}.yaml``: hand-made descriptors distilled, then
clustered with the network's features), so that its number means something.
``python -m unsup3d.quickstart --teacher PATH|NAME`` distils that teacher instead of the recipe's
(a local copy such as ``/models/dino-vits8``; it stops with a message where its weights are not
found). ``python -m unsup3d.quickstart random-teacher`` forces the 2D recipes with a RANDOM ViT
where the weights are missing (a smoke test of the 2D path: its targets carry no semantics).

    python -m unsup3d.quickstart stssl

runs STSSL's chain on the built-in synthetic LiDAR sequences instead: point-to-cluster
pre-training, inter-frame pre-training from its checkpoint, then fine-tuning with a few labelled
frames, and prints the fine-tuned mIoU and accuracy.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from unsup3d.lightning_cli import Unsup3DCLI
from unsup3d.metrics import format_metrics


def experiments_dir() -> Path:
    """``experiments/quickstart`` of the working directory, else of the source checkout."""
    here = Path("experiments/quickstart")
    return here if here.is_dir() else Path(__file__).resolve().parents[2] / "experiments" / "quickstart"


def _fit(config: Path, extra: Sequence[str]) -> Unsup3DCLI:
    """``unsup3d fit``, then, where its last epoch was not validated (a recipe validates every few
    epochs; ``--trainer.max_epochs`` may end between two), a validation of its last checkpoint: the
    metrics the quickstart prints are those of the weights it ends with."""
    print(f"\n=== unsup3d fit --config {config} {' '.join(extra)}", flush=True)
    cli = Unsup3DCLI(args=["fit", "--config", str(config), *extra])
    trainer = cli.trainer
    every = trainer.check_val_every_n_epoch
    if trainer.limit_val_batches and every and trainer.current_epoch % every:
        print(f"=== validating the last checkpoint (epoch {trainer.current_epoch - 1})", flush=True)
        trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=_last_checkpoint(cli), verbose=False)
    return cli


def _last_checkpoint(cli: Unsup3DCLI) -> str:
    cb = cli.trainer.checkpoint_callback
    return cb.last_model_path or cb.best_model_path


def stssl(extra: Sequence[str]) -> dict:
    """Run P2C, inter-frame, then fine-tuning; print and return the fine-tuned validation metrics."""
    root = experiments_dir()
    p2c = _fit(root / "stssl_p2c.yaml", extra)
    inter = _fit(
        root / "stssl_interframe.yaml", ["--model.init_args.init_checkpoint", _last_checkpoint(p2c), *extra]
    )
    tune = _fit(
        root / "finetune_synthetic.yaml",
        ["--model.init_args.init_checkpoint", _last_checkpoint(inter), *extra],
    )
    metrics = {k: v for k, v in tune.trainer.callback_metrics.items() if k.startswith("val/")}
    print("\nSTSSL quickstart: fine-tuned results on the synthetic validation sequence (%)")
    print(format_metrics(metrics))
    return metrics


def recipe_teacher(config: Path) -> str:
    """The 2D teacher a CMD recipe names (``data.init_args.feature_targets.teacher``)."""
    import yaml

    cfg = yaml.safe_load(config.read_text())
    return str(cfg["data"]["init_args"]["feature_targets"]["teacher"])


def teacher_available(name: str) -> bool:
    """Whether the pretrained weights of the 2D teacher ``name`` load on this machine, without network."""
    from unsup3d.vision.teacher import TeacherWeightsNotFoundError, ViTTeacher

    try:
        ViTTeacher.from_pretrained(name)
    except TeacherWeightsNotFoundError:
        return False
    return True


def pointdc_recipes(root: Path, mode: str = "auto", teacher: str | None = None) -> tuple[Path, Path, str]:
    """The (CMD, SVC) recipes the quickstart runs and why: the 2D ones where the teacher's weights are
    here (or ``mode`` is ``random-teacher``), else the teacher-free ones. ``teacher`` (a name or a local
    path) replaces the recipe's; it must be found: asked for by name, it is not swapped for the
    teacher-free path."""
    if teacher is not None:
        if mode == "random-teacher":
            raise SystemExit("quickstart: --teacher and random-teacher exclude each other")
        if not teacher_available(teacher):
            raise SystemExit(
                f"quickstart: no weights of the 2D teacher {teacher} on this machine (a local folder "
                "as written by `huggingface-cli download ... --local-dir`, or a name in the Hugging Face "
                "cache); see the README, 'Pretrained 2D teacher'"
            )
        return root / "pointdc_cmd.yaml", root / "pointdc_svc.yaml", f"2D teacher {teacher}"
    teacher = recipe_teacher(root / "pointdc_cmd.yaml")
    if mode == "random-teacher":
        return (
            root / "pointdc_cmd.yaml",
            root / "pointdc_svc.yaml",
            f"2D teacher {teacher} (random if missing)",
        )
    if teacher_available(teacher):
        return root / "pointdc_cmd.yaml", root / "pointdc_svc.yaml", f"2D teacher {teacher}"
    why = (
        f"teacher-free: the weights of the 2D teacher {teacher} are not on this machine, so CMD distils "
        "hand-made descriptors instead (see the README, 'Teacher-free PointDC')"
    )
    return root / "pointdc_geometric_cmd.yaml", root / "pointdc_geometric_svc.yaml", why


def take_teacher(args: Sequence[str]) -> tuple[str | None, list[str]]:
    """``--teacher X`` / ``--teacher=X`` taken out of the quickstart's arguments: (X or None, the rest)."""
    rest: list[str] = []
    teacher = None
    it = iter(args)
    for a in it:
        if a == "--teacher":
            teacher = next(it, None)
            if teacher is None:
                raise SystemExit("quickstart: --teacher needs a name or a path")
        elif a.startswith("--teacher="):
            teacher = a.split("=", 1)[1]
        else:
            rest.append(a)
    return teacher, rest


def main(argv: Sequence[str] | None = None) -> dict:
    """Run CMD then SVC (or, with ``stssl`` first, STSSL's chain); print and return the final metrics."""
    extra = list(sys.argv[1:] if argv is None else argv)
    if extra[:1] == ["stssl"]:
        return stssl(extra[1:])
    mode = "auto"
    if extra[:1] == ["random-teacher"]:
        mode, extra = "random-teacher", extra[1:]
    teacher, extra = take_teacher(extra)
    cmd_recipe, svc_recipe, why = pointdc_recipes(experiments_dir(), mode, teacher)
    print(f"PointDC quickstart: {why}", flush=True)
    teacher_args = [] if teacher is None else ["--data.init_args.feature_targets.teacher", teacher]
    cmd = _fit(cmd_recipe, [*teacher_args, *extra])
    svc = _fit(svc_recipe, ["--model.init_args.init_checkpoint", _last_checkpoint(cmd), *extra])
    metrics = {k: v for k, v in svc.trainer.callback_metrics.items() if k.startswith("val/")}
    path = why.split(":")[0]
    print(f"\nPointDC quickstart ({path}): Hungarian-matched results on the synthetic validation rooms (%)")
    print(format_metrics(metrics))
    return metrics


if __name__ == "__main__":
    main()
