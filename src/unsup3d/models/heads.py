"""Small heads that sit on per-point (or pooled) backbone features.

- `ProjectionHead` / `PredictionHead`: the BYOL MLPs of STSSL (Eq. 2-4): Linear - BatchNorm1d - ReLU -
  Linear. STSSL's release: projector 96 -> 128 -> 128, predictor 128 -> 256 -> 128.
- `DistillationHead`: PointDC's CMD alignment layer (Eq. 7), the backbone's 128-d features mapped onto
  the 2D teacher's dimension (STEGO: 70). The release implements it as a 1x1x1 sparse convolution
  without bias, which on per-point features is exactly a bias-free linear map.

The pooling STSSL applies before its projector (dropout on points, max pool per cluster) belongs to the
training stage, not to these heads: they map an `(N, C_in)` tensor to `(N, C_out)`.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["MLPHead", "ProjectionHead", "PredictionHead", "DistillationHead"]


class MLPHead(nn.Module):
    """Linear - [BatchNorm1d] - ReLU - Linear, the two-layer MLP of BYOL.

    Args:
        in_channels: input feature dimension.
        hidden_channels: width of the hidden layer.
        out_channels: output feature dimension.
        batch_norm: put a BatchNorm1d after the first linear layer (STSSL and BYOL do).
    """

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int, batch_norm: bool = True):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("hidden_channels", hidden_channels),
                            ("out_channels", out_channels)):
            if value <= 0:
                raise ValueError(f"{type(self).__name__}: {name} must be positive, got {value}")
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.out_channels = out_channels
        layers: list[nn.Module] = [nn.Linear(in_channels, hidden_channels)]
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden_channels))
        layers += [nn.ReLU(inplace=True), nn.Linear(hidden_channels, out_channels)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Map `(N, in_channels)` features to `(N, out_channels)`."""
        if x.dim() != 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__}: expected features of shape (N, {self.in_channels}), "
                f"got {tuple(x.shape)}"
            )
        return self.net(x)


class ProjectionHead(MLPHead):
    """BYOL projector of STSSL (Eq. 2-4): 96 -> 128 -> 128 in the release."""

    def __init__(self, in_channels: int = 96, hidden_channels: int = 128, out_channels: int = 128,
                 batch_norm: bool = True):
        super().__init__(in_channels, hidden_channels, out_channels, batch_norm)


class PredictionHead(MLPHead):
    """BYOL predictor of STSSL (Eq. 2-4), online branch only: 128 -> 256 -> 128 in the release."""

    def __init__(self, in_channels: int = 128, hidden_channels: int = 256, out_channels: int = 128,
                 batch_norm: bool = True):
        super().__init__(in_channels, hidden_channels, out_channels, batch_norm)


class DistillationHead(nn.Module):
    """PointDC's CMD alignment layer (Eq. 7): per-point features onto the 2D teacher's dimension.

    PointDC's release (`alignlayer` in `models/pretrain_models.py`) is a 1x1x1 Minkowski convolution
    128 -> 70 (STEGO's dimension) without bias; on per-point features that is `nn.Linear(bias=False)`.

    Args:
        in_channels: backbone feature dimension (128 for `Res16UNet`).
        out_channels: teacher feature dimension (70 for STEGO, 384 for DINO ViT-S).
        bias: add a bias (the release has none).
    """

    def __init__(self, in_channels: int = 128, out_channels: int = 70, bias: bool = False):
        super().__init__()
        if in_channels <= 0 or out_channels <= 0:
            raise ValueError(
                f"DistillationHead: channels must be positive, got in={in_channels}, out={out_channels}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.linear = nn.Linear(in_channels, out_channels, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """Map `(N, in_channels)` point features to `(N, out_channels)` teacher-space features."""
        if x.dim() != 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"DistillationHead: expected features of shape (N, {self.in_channels}), got {tuple(x.shape)}"
            )
        return self.linear(x)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}"
