"""A backbone's class and constructor arguments as plain data, so that a checkpoint can rebuild it.

Checkpoints load with ``torch.load(weights_only=True)``: they may hold tensors and plain containers
only. A *spec* is therefore JSON-like, ``{"class_path": "unsup3d.models.MinkUNet", "init_args":
{"in_channels": 4, "width": 0.25, ...}}`` (str, int, float, bool, None, lists and dicts), the same
shape as a recipe's ``backbone:`` entry. A backbone class takes part by keeping its constructor's
arguments in an ``init_args`` dict attribute, as :class:`~unsup3d.models.MinkUNet` and
:class:`~unsup3d.models.Res16UNet` do.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

__all__ = ["backbone_spec", "build_from_spec", "plain"]

_SCALARS = (str, int, float, bool, type(None))


def plain(value: Any) -> Any:
    """``value`` with tuples turned into lists, or ``TypeError`` if it holds anything but str, int,
    float, bool, None, lists, tuples and str-keyed dicts (what ``weights_only=True`` loads)."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: plain(v) for k, v in value.items()}
    raise TypeError(f"not plain data: {type(value).__name__} {value!r}")


def backbone_spec(module: nn.Module) -> dict[str, Any] | None:
    """``{"class_path", "init_args"}`` of ``module``, or None when its class keeps no ``init_args``
    dict of plain data (then nothing can rebuild it)."""
    args = getattr(module, "init_args", None)
    if not isinstance(args, dict):
        return None
    try:
        init_args = plain(args)
    except TypeError:
        return None
    cls = type(module)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": init_args}


def build_from_spec(spec: dict[str, Any]) -> nn.Module:
    """The module a spec names, built from its arguments (``ValueError`` naming what is wrong)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("class_path"), str):
        raise ValueError(f"build_from_spec: need a dict with a 'class_path' string, got {spec!r}")
    module_name, _, name = spec["class_path"].rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(f"build_from_spec: {spec['class_path']} is not importable ({e})") from e
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"build_from_spec: {spec['class_path']} is not a torch.nn.Module")
    return cls(**spec.get("init_args", {}))
