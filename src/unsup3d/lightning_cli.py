"""``Unsup3DCLI``: the LightningCLI that runs unsup3d's recipes, with one-line config errors and checked
checkpoints. The console scripts (:mod:`unsup3d.cli`), ``unsup3d evaluate`` (:mod:`unsup3d.evaluate`),
the quickstart, notebooks and benchmarks all build their runs with it.

A config error (an unknown class, a misspelt argument, a value of the wrong type) is reported in one
line naming the key, with exit status 2.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch
from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_warn

#: values of ``ckpt_path`` that Lightning resolves itself rather than reading a file
_CKPT_KEYWORDS = ("best", "last", "hpc")


def set_cpu_threads() -> int:
    """Named fallback for CPU-only machines: run torch on ``UNSUP3D_CPU_THREADS`` threads (default 1).

    The built-in sparse convolution runs many small gather/scatter ops; intra-op threads cost more
    than they give there (the quickstart took 3.5 min on 1 thread and ~5x longer on 2 on a 2-core
    machine). ``OMP_NUM_THREADS``, when set, is respected; with CUDA nothing is changed. Returns the
    number of threads torch uses.
    """
    if torch.cuda.is_available() or "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    torch.set_num_threads(max(1, int(os.environ.get("UNSUP3D_CPU_THREADS", "1"))))
    return torch.get_num_threads()


def check_checkpoint(path: str | os.PathLike) -> Path:
    """Raise ``FileNotFoundError`` or ``ValueError`` naming ``path`` unless it is a Lightning checkpoint
    that loads with ``torch.load(weights_only=True)`` (tensors and plain containers: no pickled code).

    The file is memory-mapped, so the check reads the pickle, not the tensors.
    """
    from unsup3d.models.checkpoints import UnsafeCheckpointError, load_tensors

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        try:
            ckpt = load_tensors(path, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):  # the legacy (non-zip) format cannot be mapped: read it whole
                raise
            ckpt = load_tensors(path)
    except UnsafeCheckpointError:
        raise
    except Exception as e:  # zip, EOF, key errors: whatever torch trips on, the file is no checkpoint
        first = (str(e).strip().splitlines() or [""])[0]
        raise ValueError(f"{path}: not a PyTorch checkpoint (torch.load: {type(e).__name__} {first})") from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{path}: not a Lightning checkpoint (no 'state_dict' in it)")
    return path


# -- one-line config errors -----------------------------------------------------------------------
# jsonargparse reports a bad value under a subclass-typed key (model, data, a backbone) as a union that
# "does not validate", with every alternative's error and the whole given value; the one error that
# matters is nested inside. These patterns pick it out.

_KEY = re.compile(r'Parser key "([^"]+)":[ \t]*(.*)', re.S)
_CLASS = re.compile(r"Problem with given class_path '([^']+)':\s*(.*)", re.S)
_EXPECTED = re.compile(r"Expected a <class '([\w.]+)'>(?:\. Got value: (.*))?\s*$", re.S)
_NOT_SUBCLASS = re.compile(r"Import path (\S+) does not correspond to a subclass of (\w+)")
_NO_ATTRIBUTE = re.compile(r"module '([\w.]+)' has no attribute '(\w+)'")
_NO_MODULE = re.compile(r"No module named '([\w.]+)'")
_NOT_ACCEPTED = re.compile(r"Option '([^']+)' is not accepted")
_REQUIRED = re.compile(r"the following arguments are required: (.+)")
_NONE_ALTERNATIVE = "Expected a <class 'NoneType'>"


def condense_parse_error(message: str) -> str:
    """jsonargparse's error ``message`` as one line naming the key, the value and what was expected,
    e.g. ``data.init_args.batch_size: expected int, got 'abc'``; a message of another shape unchanged."""
    return _explain(message.strip(), "") or message.strip()


def _join(key: str, sub: str) -> str:
    return f"{key}.{sub}" if key else sub


def _after_header(rest: str) -> str:
    """The text after a ``header:`` line: what follows on its line, then the dedented lines below."""
    first, _, below = rest.partition("\n")
    return f"{first.strip()}\n{textwrap.dedent(below)}".strip()


def _list_items(lines: list[str], depth: int) -> list[str]:
    """The entries of a list of ``- `` lines at ``depth`` spaces, each with the lines under it
    dedented; the list ends at a line less indented than its entries' parent (``depth - 1``)."""
    items: list[list[str]] = []
    for line in lines:
        indent = len(line) - len(line.lstrip())
        if line.strip() and indent < depth - 1:
            break
        if line.strip().startswith("- ") and indent == depth:
            items.append([line.strip()[2:]])
        elif items:
            items[-1].append(line)
    return [f"{it[0]}\n{textwrap.dedent(chr(10).join(it[1:]))}".strip() for it in items]


def _union_items(text: str) -> list[str]:
    """The entries of the ``Errors:`` list of a union report, each dedented."""
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.strip() == "Errors:"), None)
    if start is None:
        return []
    return _list_items(lines[start + 1 :], len(lines[start]) - len(lines[start].lstrip()) + 2)


def _top_items(text: str) -> list[str]:
    """The entries of a list of ``- `` lines at the text's left margin, each with the lines under it."""
    return _list_items(text.splitlines(), 0)


def _given(text: str) -> str | None:
    m = re.search(r"^\s*Given value: (.*)$", text, re.M)
    return m[1] if m else None


def _why_not_importable(reason: str) -> str:
    if m := _NO_MODULE.search(reason):
        return f"no module {m[1]}"
    m = _NO_ATTRIBUTE.search(reason)
    assert m is not None
    try:
        names = [n for n in dir(importlib.import_module(m[1])) if not n.startswith("_")]
    except ImportError:
        names = []
    close = difflib.get_close_matches(m[2], names, n=1)
    return f"no {m[2]} in {m[1]}" + (f"; did you mean {close[0]}?" if close else "")


def _init_args(class_path: str) -> list[str]:
    """The init arguments ``class_path`` accepts, through ``**kwargs`` to its bases (for a hint)."""
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return []
    names: list[str] = []
    for klass in getattr(cls, "__mro__", ()):
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(vars(klass)["__init__"]).parameters.values()
        named = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        names += named[1:]  # not self
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names


def _explain(text: str, key: str) -> str | None:
    """One line for the error ``text`` under ``key``, or None where the text has an unknown shape."""
    if m := _KEY.match(text):
        return _explain(_after_header(m[2]), _join(key, m[1]))
    if text.startswith("- "):  # alternatives, e.g. a class given as a bare value: a path, or a union
        items = _top_items(text)
        union = [it for it in items if it.startswith("Does not validate")]
        return next((e for it in union + items if (e := _explain(it, key))), None)
    if text.startswith("Does not validate against any of the Union subtypes"):
        errors = [e for e in _union_items(text) if e != _NONE_ALTERNATIVE]
        expected = [m[1] for e in errors if (m := _EXPECTED.match(e))]
        if errors and len(expected) == len(errors):
            types = " or ".join(t.rpartition(".")[2] for t in expected)
            return f"{key}: expected {types}, got {_given(text)!r}"
        return _explain(errors[0], key) if len(errors) == 1 else None
    if m := _CLASS.match(text):
        path, reason = m[1], textwrap.dedent(m[2]).strip()
        if _NO_ATTRIBUTE.search(reason) or _NO_MODULE.search(reason):
            return f"{_join(key, 'class_path')}: {path} is not importable ({_why_not_importable(reason)})"
        if n := _NOT_ACCEPTED.search(reason):
            close = difflib.get_close_matches(n[1], _init_args(path), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            return f"{_join(key, 'init_args.' + n[1])}: {path} takes no such argument{hint}"
        if n := _REQUIRED.search(reason):
            return f"{_join(key, 'init_args.' + n[1].split(',')[0].strip())}: required by {path}, not given"
        return _explain(reason, _join(key, "init_args")) or f"{key}: {path}: {reason}"
    if m := _NOT_SUBCLASS.search(text):
        return f"{_join(key, 'class_path')}: {m[1]} is not a {m[2]}"
    if m := _EXPECTED.match(text):
        got = m[2].strip() if m[2] is not None else _given(text)
        return f"{key}: expected {m[1].rpartition('.')[2]}, got {got!r}"
    if key and "\n" not in text:
        return f"{key}: {text}"
    return None


class Unsup3DArgumentParser(LightningArgumentParser):
    """LightningCLI's parser, reporting a config error in one line instead of a page of usage and
    union-type noise (``JSONARGPARSE_DEBUG=1`` restores jsonargparse's own report)."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):
            super().error(message, ex)  # nested parsers raise; jsonargparse catches and reports
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        sys.stderr.write(f"{prog}: error: {condense_parse_error(message)}\n")
        self.exit(2)


class Unsup3DCLI(LightningCLI):
    """LightningCLI with unsup3d's defaults: subclass mode for model and data, one-line config errors,
    checkpoints loaded with ``weights_only=True`` (``--weights_only false`` for a trusted old one), and a
    saved config that a second run into the same log folder overwrites instead of refusing to start."""

    def __init__(self, args: Sequence[str] | None = None, run: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_class", Unsup3DArgumentParser)
        set_cpu_threads()
        super().__init__(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=args,
            run=run,
            auto_configure_optimizers=False,
            **kwargs,
        )

    def setup_parser(self, add_subcommands: bool, main_kwargs: dict, subparser_kwargs: dict) -> None:
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        if not add_subcommands:
            return
        for name, parser in self._subcommand_parsers.items():
            if "weights_only" in inspect.signature(getattr(Trainer, name)).parameters:
                parser.set_defaults(weights_only=True)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # As LightningCLI's, without its warning when both ``args`` and ``sys.argv`` are given: ``main``
        # always hands its arguments over explicitly.
        if isinstance(args, (dict, Namespace)):
            self.config = parser.parse_object(args)
        else:
            self.config = parser.parse_args(args)
        # LightningCLI reads a checkpoint's hyper-parameters before anything is built: check the file
        # first, so a missing, corrupt or pickled-code checkpoint is a one-line error naming it.
        sub = self.config.get("subcommand")
        ckpt = self.config[sub].get("ckpt_path") if sub else None
        if ckpt and str(ckpt) not in _CKPT_KEYWORDS and "://" not in str(ckpt):
            try:
                if self.config[sub].get("weights_only") is False:  # the user vouches for this file
                    if not Path(ckpt).is_file():
                        raise FileNotFoundError(f"{ckpt}: no such checkpoint file")
                else:
                    check_checkpoint(ckpt)
            except (FileNotFoundError, ValueError) as e:
                self._parser(sub).error(f"ckpt_path: {e}")

    def before_instantiate_classes(self) -> None:
        # A checkpoint file to restore (resume, validate, test) replaces every weight of the model (our
        # stages load strictly), so the stage's init_checkpoint, kept in the checkpoint's
        # hyper-parameters, need not be read again, nor even still exist.
        sub = self.subcommand
        ckpt = self.config[sub].get("ckpt_path") if sub else None
        model = self.config[sub].get("model") if sub else None
        init_args = model.get("init_args") if isinstance(model, Namespace) else None
        if ckpt and Path(str(ckpt)).is_file() and init_args is not None and init_args.get("init_checkpoint"):
            init_args.init_checkpoint = None
        # The checkpoint's backbone (class and arguments, stored by BackboneSpec) replaces the recipe's,
        # so a model trained with e.g. width 0.25 loads without the user repeating it.
        if ckpt and Path(str(ckpt)).is_file():
            from unsup3d.callbacks.backbone_spec import use_checkpoint_backbone

            if spec := use_checkpoint_backbone(model, str(ckpt)):
                rank_zero_warn(f"{ckpt}: building its own backbone {spec['class_path']}({spec['init_args']})")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The recipe's trainer, with :class:`~unsup3d.callbacks.backbone_spec.BackboneSpec` added so
        that every checkpoint records its backbone."""
        from unsup3d.callbacks.backbone_spec import BackboneSpec

        trainer = super().instantiate_trainer(**kwargs)
        if not any(isinstance(c, BackboneSpec) for c in trainer.callbacks):
            trainer.callbacks.append(BackboneSpec())
        return trainer
