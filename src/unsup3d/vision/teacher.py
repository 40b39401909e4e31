"""The frozen 2D teacher ``h`` of PointDC's Cross-Modal Distillation (Sec. 3.3, Eq. 5).

A self-supervised ViT (DINO, DINOv2, DINOv2 with registers) loaded through Hugging Face
``transformers``, turned into a dense feature extractor: images in, patch-feature maps out.
Loading never reaches the network by default (``local_files_only``): a name that is not in the local
Hugging Face cache fails at once with instructions, instead of retrying against an unreachable hub.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Architectures of the released checkpoints (their config.json on the hub), so that a model of the
# same shape can be built without the files when random weights are explicitly allowed.
_VIT_S = {"hidden_size": 384, "num_attention_heads": 6, "intermediate_size": 1536}
_VIT_B = {"hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072}
_DINO = {
    "model_type": "vit",
    "num_hidden_layers": 12,
    "image_size": 224,
    "layer_norm_eps": 1e-12,
    "qkv_bias": True,
    "hidden_act": "gelu",
}
_DINOV2 = {
    "model_type": "dinov2",
    "num_hidden_layers": 12,
    "image_size": 518,
    "patch_size": 14,
    "layer_norm_eps": 1e-6,
    "layerscale_value": 1.0,
    "mlp_ratio": 4,
    "qkv_bias": True,
}
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    "facebook/dino-vits8": {**_DINO, **_VIT_S, "patch_size": 8},
    "facebook/dino-vits16": {**_DINO, **_VIT_S, "patch_size": 16},
    "facebook/dino-vitb8": {**_DINO, **_VIT_B, "patch_size": 8},
    "facebook/dino-vitb16": {**_DINO, **_VIT_B, "patch_size": 16},
    "facebook/dinov2-small": {**_DINOV2, "hidden_size": 384, "num_attention_heads": 6},
    "facebook/dinov2-base": {**_DINOV2, "hidden_size": 768, "num_attention_heads": 12},
    "facebook/dinov2-with-registers-small": {
        **_DINOV2,
        "model_type": "dinov2_with_registers",
        "hidden_size": 384,
        "num_attention_heads": 6,
        "num_register_tokens": 4,
    },
    "facebook/dinov2-with-registers-base": {
        **_DINOV2,
        "model_type": "dinov2_with_registers",
        "hidden_size": 768,
        "num_attention_heads": 12,
        "num_register_tokens": 4,
    },
}
DEFAULT_TEACHER = "facebook/dino-vits8"


class TeacherWeightsNotFoundError(OSError):
    """The teacher's weights are neither a local folder nor in the local Hugging Face cache."""


def _model_class(model_type: str) -> type[nn.Module]:
    import transformers

    classes = {
        "vit": "ViTModel",
        "dinov2": "Dinov2Model",
        "dinov2_with_registers": "Dinov2WithRegistersModel",
    }
    if model_type not in classes or not hasattr(transformers, classes[model_type]):
        raise ValueError(
            f"unsupported teacher architecture {model_type!r}: expected one of {sorted(classes)} "
            f"(transformers {transformers.__version__})"
        )
    return getattr(transformers, classes[model_type])


def _build_config(config: Any) -> Any:
    from transformers import AutoConfig, PretrainedConfig

    if isinstance(config, PretrainedConfig):
        return config
    if not isinstance(config, Mapping) or "model_type" not in config:
        raise ValueError(
            f"teacher config must be a transformers config or a dict with 'model_type', got {config!r}"
        )
    kwargs = dict(config)
    return AutoConfig.for_model(kwargs.pop("model_type"), **kwargs)


def _instantiate(model_cls: type[nn.Module], config: Any) -> nn.Module:
    # ViT's pooler is a classification head (tanh over CLS) that dense features never use.
    if config.model_type == "vit":
        return model_cls(config, add_pooling_layer=False)
    return model_cls(config)


def _missing_weights_message(name: str, cause: BaseException, cache_dir: Any = None) -> str:
    cache = cache_dir or os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
    where = "is not a local model folder"
    if os.path.isdir(name):
        where = "is a folder without a loadable config.json and weights"
    elif os.path.isabs(name) or name.startswith((".", "~")):
        where = f"is not a local model folder ({os.path.abspath(os.path.expanduser(name))} does not exist)"
    return (
        f"cannot load the 2D teacher {name!r}: it {where} and not in the local Hugging Face "
        f"cache ({cache}); the hub is not contacted (local_files_only). To get the weights, on a "
        f"machine with network run `huggingface-cli download {name} --local-dir "
        f"./{name.split('/')[-1]}` (or `hf download`), copy that folder here and pass its path as the "
        f"teacher, or copy that machine's Hugging Face cache into $HF_HOME. For smoke tests only, "
        f"allow_random=True builds an untrained model of the same architecture. "
        f"(cause: {type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''})"
    )


class ViTTeacher(nn.Module):
    """A frozen ViT as a dense 2D feature extractor, ``h`` of PointDC Eq. 5.

    ``forward(images)`` takes ``(V, H, W, 3)`` or ``(V, 3, H, W)`` images, ``uint8`` 0-255 or float in
    ``[0, 1]``, and returns ``(V, D, h, w)`` float32 patch features of the last layer (after its
    layer norm), with the CLS and register tokens removed. Images are ImageNet-normalised and resized
    (bilinear, antialiased) to ``input_size`` if given, else to the nearest multiple of the patch size,
    so that the map covers exactly the whole image (what ``sample_features`` assumes).
    The model is frozen: no gradients, and ``train()`` leaves it in eval mode.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str = "",
        pretrained: bool = True,
        input_size: tuple[int, int] | None = None,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.pretrained = pretrained
        self.normalize = normalize
        cfg = model.config
        self.patch_size = int(cfg.patch_size)
        self.feature_dim = int(cfg.hidden_size)
        self.num_prefix_tokens = 1 + int(getattr(cfg, "num_register_tokens", 0) or 0)
        if input_size is not None and (input_size[0] % self.patch_size or input_size[1] % self.patch_size):
            raise ValueError(f"input_size {input_size} is not a multiple of the patch size {self.patch_size}")
        self.input_size = input_size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> ViTTeacher:
        """Always eval: the teacher is frozen (no dropout, fixed statistics)."""
        return super().train(False)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str] = DEFAULT_TEACHER,
        *,
        allow_random: bool = False,
        random_config_overrides: Mapping[str, Any] | None = None,
        local_files_only: bool = True,
        cache_dir: str | os.PathLike[str] | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> ViTTeacher:
        """Load a checkpoint from a local folder or the local HF cache (``local_files_only``).

        When the weights cannot be found: raise ``TeacherWeightsNotFoundError`` saying how to get them,
        or, with ``allow_random=True``, build a randomly initialised model of the same architecture
        (from ``KNOWN_CONFIGS``, updated with ``random_config_overrides``) and warn loudly that targets
        computed with it mean nothing. ``cache_dir`` overrides the Hugging Face cache;
        ``local_files_only=False`` lets transformers download where there is network. ``kwargs`` go to
        ``ViTTeacher`` (``input_size``, ``normalize``).
        """
        from transformers import AutoConfig

        name = os.path.expanduser(os.fspath(name_or_path))
        try:
            config = AutoConfig.from_pretrained(name, local_files_only=local_files_only, cache_dir=cache_dir)
            model = _model_class(config.model_type).from_pretrained(
                name,
                local_files_only=local_files_only,
                cache_dir=cache_dir,
                **({"add_pooling_layer": False} if config.model_type == "vit" else {}),
            )
        except OSError as err:
            if not allow_random:
                raise TeacherWeightsNotFoundError(_missing_weights_message(name, err, cache_dir)) from err
            if name not in KNOWN_CONFIGS:
                raise TeacherWeightsNotFoundError(
                    _missing_weights_message(name, err, cache_dir)
                    + f" No random fallback either: {name!r} is not one of the known architectures "
                    f"{sorted(KNOWN_CONFIGS)}."
                ) from err
            message = (
                f"RANDOM 2D TEACHER: the weights of {name!r} were not found, so an UNTRAINED model of the "
                f"same architecture is used (allow_random=True). Its features are noise: 2D targets, "
                f"distillation and any numbers computed from them are MEANINGLESS as results. "
                f"Use only for smoke tests."
            )
            log.warning(message)
            warnings.warn(message, UserWarning, stacklevel=2)
            config = {**KNOWN_CONFIGS[name], **dict(random_config_overrides or {})}
            return cls.from_config(config, seed=seed, name=name, **kwargs)
        model.eval()
        return cls(model, name=name, pretrained=True, **kwargs)

    @classmethod
    def from_config(cls, config: Any, *, seed: int = 0, name: str = "", **kwargs: Any) -> ViTTeacher:
        """A randomly initialised teacher (``seed`` makes it the same on every process) from a
        transformers config or a dict with ``model_type`` (``vit``, ``dinov2``, ``dinov2_with_registers``)."""
        config = _build_config(config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _instantiate(_model_class(config.model_type), config)
        return cls(model, name=name or f"random-{config.model_type}", pretrained=False, **kwargs)

    def _prepare(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or 3 not in (images.shape[1], images.shape[-1]):
            raise ValueError(
                f"teacher input must be (V, H, W, 3) or (V, 3, H, W) images, got {tuple(images.shape)}"
            )
        x = images.permute(0, 3, 1, 2) if images.shape[-1] == 3 else images
        x = x.float() / 255.0 if not x.is_floating_point() else x.float()
        p = self.patch_size
        h, w = x.shape[-2:]
        size = self.input_size or (max(p, round(h / p) * p), max(p, round(w / p) * p))
        if (h, w) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """Patch features ``(V, D, h, w)`` of ``images`` (see the class docstring)."""
        x = self._prepare(images.to(self.mean.device))
        dtype = next(self.model.parameters()).dtype
        extra = {"interpolate_pos_encoding": True} if self.model.config.model_type == "vit" else {}
        tokens = self.model(pixel_values=x.to(dtype), **extra).last_hidden_state
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        if tokens.shape[1] != self.num_prefix_tokens + h * w:
            raise RuntimeError(
                f"teacher {self.name!r} returned {tokens.shape[1]} tokens for a {h}x{w} patch grid with "
                f"{self.num_prefix_tokens} CLS/register tokens"
            )
        feats = tokens[:, self.num_prefix_tokens :].float()
        if self.normalize:
            feats = F.normalize(feats, dim=-1)
        return feats.transpose(1, 2).reshape(x.shape[0], self.feature_dim, h, w)
