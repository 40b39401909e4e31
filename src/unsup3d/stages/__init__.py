"""The LightningModules of each training stage: PointDC's CMD and SVC and its linear probe; STSSL's
point-to-cluster and inter-frame pre-training and its fine-tuning."""

from unsup3d.stages.cmd import CMDModule
from unsup3d.stages.finetune import FinetuneModule
from unsup3d.stages.interframe import InterFrameModule
from unsup3d.stages.linear_probe import LinearProbeModule
from unsup3d.stages.p2c import P2CModule
from unsup3d.stages.svc import SVCModule

__all__ = ["CMDModule", "FinetuneModule", "InterFrameModule", "LinearProbeModule", "P2CModule", "SVCModule"]
