"""Checkpoints that know their backbone: its class and constructor arguments beside the weights.

:class:`BackboneSpec` writes ``checkpoint["unsup3d_backbone"]``, the spec of the module's
``backbone`` (:func:`unsup3d.models.spec.backbone_spec`: plain data, so the file still loads with
``weights_only=True``). ``Unsup3DCLI`` adds it to every run, and rebuilds the backbone from it when a
checkpoint is restored (``validate``, ``test``, ``unsup3d evaluate``, resumed ``fit``), so a model
trained with a non-default backbone (e.g. ``width: 0.25``) evaluates from the recipe alone.
"""

from __future__ import annotations

import importlib
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch import Callback, LightningModule, Trainer

from unsup3d.models.checkpoints import load_tensors
from unsup3d.models.spec import backbone_spec, plain

__all__ = ["CHECKPOINT_KEY", "BackboneSpec", "checkpoint_backbone", "use_checkpoint_backbone"]

CHECKPOINT_KEY = "unsup3d_backbone"


class BackboneSpec(Callback):
    """Store the spec of ``pl_module.backbone`` in every checkpoint (nothing when it has none)."""

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        backbone = getattr(pl_module, "backbone", None)
        spec = backbone_spec(backbone) if backbone is not None else None
        if spec is not None:
            checkpoint[CHECKPOINT_KEY] = spec


def checkpoint_backbone(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The backbone spec a loaded checkpoint holds, or None."""
    spec = checkpoint.get(CHECKPOINT_KEY)
    return spec if isinstance(spec, dict) and isinstance(spec.get("class_path"), str) else None


def use_checkpoint_backbone(model_config: Any, ckpt_path: str) -> dict[str, Any] | None:
    """Point a parsed model config (``Namespace(class_path, init_args)``) at the backbone the checkpoint
    ``ckpt_path`` was trained with, before anything is built; returns the spec when that changed the
    config (the recipe named another backbone), else None. A stage without a ``backbone`` argument, a
    checkpoint without a spec or one that does not load with ``weights_only=True`` leaves it as it is.
    """
    init_args = model_config.get("init_args") if isinstance(model_config, Namespace) else None
    if init_args is None or "backbone" not in init_args:
        return None
    try:
        spec = checkpoint_backbone(load_tensors(ckpt_path, mmap=True))
    except Exception:  # unreadable here: Lightning's own load reports it
        return None
    if spec is None:
        return None
    current = init_args.get("backbone")
    if isinstance(current, Namespace):
        current = current.as_dict()
    args = dict(spec.get("init_args", {}))
    if isinstance(current, dict) and _same_class(current.get("class_path"), spec["class_path"]):
        given = current.get("init_args") or {}
        try:
            if plain({**given, **args}) == plain(given):
                return None  # the recipe already builds it
        except TypeError:  # the recipe gives objects: rebuild from the checkpoint's plain arguments
            pass
    init_args.backbone = Namespace(class_path=spec["class_path"], init_args=Namespace(**args))
    return spec


def _same_class(a: Any, b: str) -> bool:
    """Whether two import paths name one class (``unsup3d.models.MinkUNet`` is
    ``unsup3d.models.minkunet.MinkUNet``)."""
    if a == b:
        return True
    try:
        paths = [str(p).rpartition(".") for p in (a, b)]
        found = [getattr(importlib.import_module(module), name) for module, _, name in paths]
    except (ImportError, AttributeError, ValueError):
        return False
    return found[0] is found[1]
