"""Console scripts ``lightning`` and ``unsup3d``: LightningCLI in subclass mode.

Any stage (a ``LightningModule`` of :mod:`unsup3d.pointdc` or :mod:`unsup3d.stssl`) and any data module
(a generic one of :mod:`unsup3d.data`, or a method's, e.g. ``unsup3d.pointdc.datamodules``) is picked
by its ``class_path`` in a YAML config, so ``unsup3d fit --config experiments/<recipe>.yaml`` runs every
recipe without a registry. Besides LightningCLI's ``fit``, ``validate``, ``test`` and ``predict``,
``unsup3d`` has three commands of its own (the LightningCLI behind them all is
:class:`unsup3d.lightning_cli.Unsup3DCLI`):

    unsup3d preprocess --config RECIPE.yaml      # prepare the recipe's data alone (cached)
    unsup3d import SRC ROOT [--val-fraction F]   # PLY / NPY scans -> scene folders
    unsup3d evaluate --config RECIPE.yaml --ckpt_path C.ckpt [--split val|test]   # metric table

A config error (an unknown class, a misspelt argument, a value of the wrong type) is reported in one
line naming the key, with exit status 2.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Sequence
from typing import TextIO

from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule

from unsup3d.lightning_cli import Unsup3DCLI

#: what each command does, for ``unsup3d --help``
COMMANDS = {
    "fit": "train a stage (Trainer.fit); --ckpt_path resumes",
    "validate": "one validation pass (Trainer.validate)",
    "test": "one test pass (Trainer.test)",
    "predict": "predictions (Trainer.predict)",
    "preprocess": "prepare a recipe's data alone (cached: a second run does nothing) and say where it is",
    "import": "write a folder of PLY / NPY scans as scene folders (unsup3d import SRC ROOT --help)",
    "evaluate": "validate (or test) a checkpoint; print mIoU, accuracy and per-class IoU",
}


class _DataOnlyCLI(Unsup3DCLI):
    """Parses a whole recipe (so a typo anywhere is reported) but builds only its data module."""

    def instantiate_classes(self) -> None:
        if self.config.get("data") is None:
            self.parser.error("data: the config names no data module (a 'data:' section with a class_path)")
        # jsonargparse >= 4.49 names it ``instantiate``; earlier releases ``instantiate_classes``
        instantiate = getattr(self.parser, "instantiate", None) or self.parser.instantiate_classes
        self.config_init = instantiate(Namespace(data=self.config.data))
        self.datamodule = self.config_init.data
        self.model = None


PREPROCESS_HELP = """\
usage: unsup3d preprocess --config RECIPE.yaml [--data.init_args.KEY VALUE ...]

Run the data module of a recipe alone: prepare_data() (with progress bars) then setup("fit"), and
print where the prepared data is and how many scenes or frames each split holds. Preparation is
cached: a second run with the same settings reuses it. The recipe's model and trainer sections are
read (and checked) but not built, so the recipe you train with is the one to pass.
"""


def preprocess(argv: Sequence[str]) -> LightningDataModule:
    """``unsup3d preprocess``: prepare and set up a recipe's data module; print and return it."""
    if {"-h", "--help"} & set(argv):
        print(PREPROCESS_HELP, end="")
        raise SystemExit(0)
    cli = _DataOnlyCLI(args=list(argv), run=False, parser_kwargs={"prog": "unsup3d preprocess"})
    dm = cli.datamodule
    dm.prepare_data()
    dm.setup("fit")
    print(describe_prepared(dm))
    return dm


def describe_prepared(dm: LightningDataModule) -> str:
    """Where ``dm``'s prepared data is and the size of each split it set up."""
    from unsup3d.data.lidar_datamodules import LidarDataModule

    root = getattr(dm, "prepared_root", None) or getattr(dm, "data_root", None)
    lines = [f"{type(dm).__name__}: prepared data in {root}"]
    unit = "frames" if isinstance(dm, LidarDataModule) else "scenes"
    datasets = getattr(dm, "datasets", {}) or {}
    for split in ("train", "val", "test"):
        ds = datasets.get(split)
        if ds is not None:
            lines.append(f"  {split:<5} {len(ds):>6} {unit if len(ds) != 1 else unit[:-1]}")
    return "\n".join(lines)


def print_usage(file: TextIO = sys.stdout) -> None:
    """``unsup3d --help``: every command, LightningCLI's and unsup3d's."""
    width = max(map(len, COMMANDS))
    lines = [
        "usage: unsup3d COMMAND --config RECIPE.yaml [--SECTION.KEY VALUE ...]",
        "",
        "Learning 3D point-cloud semantics without labels (PointDC, STSSL) on PyTorch Lightning.",
        "",
        "commands:",
        *(f"  {name:<{width}}  {what}" for name, what in COMMANDS.items()),
        "",
        "'unsup3d COMMAND --help' lists a command's options; the recipes are under experiments/.",
    ]
    print("\n".join(lines), file=file)


def lightning_main(args: Sequence[str] | None = None) -> None:
    """Entry point of the ``lightning`` command (Lightning >= 2.5 ships none of its own)."""
    Unsup3DCLI(args=args, parser_kwargs={"prog": "lightning"})


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the ``unsup3d`` command: ``preprocess``, ``import`` and ``evaluate`` here, the rest
    LightningCLI's (``sys.exit(main())`` is the console script, so it returns None)."""
    argv = list(sys.argv[1:] if args is None else args)
    if not argv or argv[0] in ("-h", "--help"):
        print_usage(file=sys.stdout if argv else sys.stderr)
        raise SystemExit(0 if argv else 2)
    if not argv[0].startswith("-") and argv[0] not in COMMANDS:
        close = difflib.get_close_matches(argv[0], COMMANDS, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        sys.stderr.write(f"unsup3d: error: no command {argv[0]!r} ({hint}commands: {', '.join(COMMANDS)})\n")
        raise SystemExit(2)
    if argv[0] == "preprocess":
        preprocess(argv[1:])
    elif argv[0] == "import":
        from unsup3d.import_command import run_import

        run_import(argv[1:])
    elif argv[0] == "evaluate":
        from unsup3d.evaluate import evaluate

        evaluate(argv[1:])
    else:  # named, not sys.argv[0]: under ``python -m unsup3d.cli`` that is cli.py
        Unsup3DCLI(args=argv, parser_kwargs={"prog": "unsup3d"})


if __name__ == "__main__":
    main(sys.argv[1:])
