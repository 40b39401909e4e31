"""unsup3d.models: sparse UNet backbones, BYOL / distillation heads and the cosine classifier."""

from unsup3d.models.checkpoints import convert_release_state_dict, load_release_weights
from unsup3d.models.classifier import CosineClassifier
from unsup3d.models.heads import DistillationHead, MLPHead, PredictionHead, ProjectionHead
from unsup3d.models.minkunet import MinkUNet
from unsup3d.models.res16unet import Res16UNet
from unsup3d.models.spec import backbone_spec, build_from_spec

__all__ = [
    "CosineClassifier",
    "DistillationHead",
    "MLPHead",
    "MinkUNet",
    "PredictionHead",
    "ProjectionHead",
    "Res16UNet",
    "backbone_spec",
    "build_from_spec",
    "convert_release_state_dict",
    "load_release_weights",
]
