"""``unsup3d evaluate``: a checkpoint's Hungarian-matched mIoU, accuracy and per-class IoU.

    unsup3d evaluate --config experiments/quickstart/pointdc_svc.yaml \\
        --ckpt_path outputs/quickstart/svc/checkpoints/last.ckpt [--split val|test]

runs LightningCLI's ``validate`` (or ``test``) on the recipe with the checkpoint, so the model is
built exactly as ``unsup3d validate`` builds it (the checkpoint's own hyper-parameters over the
recipe's; its ``init_checkpoint`` is not read, the checkpoint's weights replace it), the data comes
from the recipe, and the checkpoint loads with ``weights_only=True``. The
stages log ``<split>/miou``, ``<split>/acc`` and ``<split>/iou/<class>`` (``training/evaluation.py``);
those are printed as a table and returned. Nothing is logged or saved unless the command line asks
(``--trainer.logger ...``).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from unsup3d.lightning_cli import Unsup3DCLI, check_checkpoint
from unsup3d.metrics import format_metrics

PROG = "unsup3d evaluate"


class CheckpointMismatch(RuntimeError):
    """The checkpoint's weights do not fit the model the config builds."""


class _EvaluateCLI(Unsup3DCLI):
    """``validate``/``test`` under the name the user typed (config errors say ``unsup3d evaluate``), with
    a checkpoint that does not fit the model reported in one line."""

    def setup_parser(self, add_subcommands: bool, main_kwargs: dict, subparser_kwargs: dict) -> None:
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        for parser in self._subcommand_parsers.values():
            parser.prog = PROG

    # LightningCLI runs a subcommand through a method of this name where the CLI has one.
    def validate(self, **kwargs: Any) -> Any:
        return self._loading(self.trainer.validate, kwargs)

    def test(self, **kwargs: Any) -> Any:
        return self._loading(self.trainer.test, kwargs)

    def _loading(self, run: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        try:
            return run(**kwargs)
        except RuntimeError as e:
            summary = summarize_load_error(str(e))
            if summary is None:
                raise
            raise CheckpointMismatch(f"{kwargs.get('ckpt_path')}: {summary}") from e


def summarize_load_error(text: str) -> str | None:
    """``load_state_dict``'s strict error (one line a key) as one line, or None for another error."""
    head = re.search(r"Error\(s\) in loading state_dict for (\w+)", text)
    if head is None:
        return None
    parts = []
    shape = r"torch\.Size\((\[.*?\])\)"
    shapes = re.findall(
        rf"size mismatch for (\S+): copying a param with shape {shape} from checkpoint, "
        rf"the shape in current model is {shape}",
        text,
    )
    if shapes:
        key, theirs, ours = shapes[0]
        parts.append(f"{len(shapes)} shapes differ, e.g. {key}: checkpoint {theirs}, model {ours}")
    for kind, label in (("Missing", "missing from the checkpoint"), ("Unexpected", "unknown to the model")):
        if found := re.search(rf"{kind} key\(s\) in state_dict: (.*)", text):
            keys = re.findall(r'"([^"]+)"', found[1])
            parts.append(f"{len(keys)} keys {label}, e.g. {keys[0]}" if keys else f"keys {label}")
    detail = "; ".join(parts) or "see load_state_dict"
    return f"does not fit the {head[1]} this config builds ({detail}); give the options it was trained with"


def _options() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        allow_abbrev=False,  # every other option belongs to the recipe (--data.init_args.*, ...)
        usage=f"{PROG} --config RECIPE.yaml --ckpt_path C.ckpt [--split {{val,test}}] [--KEY VALUE ...]",
        description="Validate (or test) a checkpoint on a recipe's data and print the Hungarian-matched "
        "mIoU, accuracy and per-class IoU. Other options are those of 'unsup3d validate --help'; the "
        "checkpoint's hyper-parameters build the model, as in 'unsup3d validate'.",
    )
    parser.add_argument("--ckpt_path", required=True, help="the checkpoint to evaluate")
    parser.add_argument(
        "--split", choices=("val", "test"), default="val", help="validate or test (default: val)"
    )
    return parser


def _given(args: Sequence[str], option: str) -> bool:
    return any(a == option or a.startswith((f"{option}=", f"{option}.")) for a in args)


def evaluate(argv: Sequence[str]) -> dict[str, float]:
    """Run ``unsup3d evaluate`` with ``argv`` (no command name); print the table and return the
    ``<split>/...`` metrics as floats."""
    opts, rest = _options().parse_known_args(list(argv))
    try:
        ckpt = check_checkpoint(opts.ckpt_path)
    except (FileNotFoundError, ValueError) as e:
        sys.stderr.write(f"{PROG}: error: ckpt_path: {e}\n")
        raise SystemExit(2) from e
    subcommand = "validate" if opts.split == "val" else "test"
    # Lightning's own results table and a logger run are off unless the command line asks for them;
    # after the recipe, whose logger would otherwise win.
    defaults = [d for d in ("--verbose=false", "--trainer.logger=false") if not _given(rest, d.split("=")[0])]
    args = [subcommand, *rest, *defaults, f"--ckpt_path={ckpt}"]
    try:
        cli = _EvaluateCLI(args=args, save_config_callback=None)
    except CheckpointMismatch as e:
        sys.stderr.write(f"{PROG}: error: ckpt_path: {e}\n")
        raise SystemExit(1) from e
    prefix = f"{opts.split}/"
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith(prefix)}
    if f"{prefix}miou" not in metrics or f"{prefix}acc" not in metrics:
        logged = ", ".join(sorted(metrics)) or "nothing"
        sys.stderr.write(
            f"{PROG}: error: {type(cli.model).__name__} logged no {prefix}miou / {prefix}acc on "
            f"{opts.split} (it logged {logged}); does the recipe's data module have a {opts.split} split?\n"
        )
        raise SystemExit(1)
    if cli.trainer.is_global_zero:  # under DDP every rank runs this command
        print(f"\n{type(cli.model).__name__} {ckpt} on {opts.split} (Hungarian-matched, %):")
        print(format_metrics(metrics, opts.split))
    return metrics
