"""Cosine classifier of PointDC's Super-Voxel Clustering (Eq. 9 and Eq. 11).

Eq. 9 scores a point against every centroid by the negative cosine distance and takes a softmax; as
the cosine distance is one minus the cosine similarity, that softmax equals ``softmax(cos(f, mu_c))``,
i.e. logits ``cos(f, mu_c) / tau`` with ``tau = 1``. PointDC's release uses no temperature in either
classifier (`SegHead` in the warm-up, the fixed `nn.Linear` after it), so `temperature` defaults to 1.

The release's non-parametric classifier (`get_fixclassifier`) normalises only the centroids and not
the point features, so its logits are ``|f| cos(f, mu_c)``; `normalize_input=False` reproduces that.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CosineClassifier"]


class CosineClassifier(nn.Module):
    """Logits ``cos(f, w_c) / temperature`` against one weight vector per class (PointDC Eq. 9).

    Args:
        in_features: feature dimension D.
        num_classes: number of classes (clusters) C.
        learnable: the weights are an `nn.Parameter` trained with the backbone (PointDC's warm-up,
            `SegHead`); otherwise a buffer set from K-means centroids by `set_centroids` (the
            non-parametric classifier of Eq. 9). Either way they are saved in the `state_dict` under
            ``weight``, so checkpoints of both kinds load into each other.
        temperature: tau, the logits are divided by it (1.0 in the release).
        normalize_input: L2-normalise the input features (a true cosine). False gives the release's
            fixed classifier, ``f . w_c / |w_c| / tau``.
    """

    weight: Tensor

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        learnable: bool = True,
        temperature: float = 1.0,
        normalize_input: bool = True,
    ):
        super().__init__()
        if in_features <= 0 or num_classes <= 0:
            raise ValueError(
                f"CosineClassifier: in_features and num_classes must be positive, got {in_features}, "
                f"{num_classes}"
            )
        if not temperature > 0:
            raise ValueError(f"CosineClassifier: temperature must be positive, got {temperature}")
        self.in_features = in_features
        self.num_classes = num_classes
        self.learnable = learnable
        self.temperature = float(temperature)
        self.normalize_input = normalize_input
        # The release initialises SegHead's clusters with randn; normalising keeps |w_c| = 1 from the start.
        init = F.normalize(torch.randn(num_classes, in_features), dim=1)
        if learnable:
            self.weight = nn.Parameter(init)
        else:
            self.register_buffer("weight", init, persistent=True)

    def forward(self, x: Tensor) -> Tensor:
        """Return `(N, num_classes)` logits for `(N, in_features)` features."""
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"CosineClassifier: expected features of shape (N, {self.in_features}), got {tuple(x.shape)}"
            )
        feats = F.normalize(x, dim=1) if self.normalize_input else x
        weight = F.normalize(self.weight, dim=1).to(feats.dtype)
        return F.linear(feats, weight) / self.temperature

    @torch.no_grad()
    def set_centroids(self, centroids: Tensor, freeze: bool = False) -> None:
        """Copy L2-normalised `(num_classes, in_features)` centroids into the weights (PointDC Eq. 9).

        Args:
            centroids: the K-means centroids (any norm; they are normalised here).
            freeze: stop gradients to the weights (a learnable classifier turned non-parametric). A
                classifier built with ``learnable=False`` is always frozen.
        """
        if centroids.shape != (self.num_classes, self.in_features):
            raise ValueError(
                f"CosineClassifier.set_centroids: expected centroids of shape "
                f"({self.num_classes}, {self.in_features}), got {tuple(centroids.shape)}"
            )
        if not torch.isfinite(centroids).all():
            raise ValueError("CosineClassifier.set_centroids: centroids contain NaN or inf")
        self.weight.copy_(F.normalize(centroids.to(self.weight), dim=1))
        if freeze and isinstance(self.weight, nn.Parameter):
            self.weight.requires_grad_(False)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, num_classes={self.num_classes}, learnable={self.learnable}, "
            f"temperature={self.temperature}, normalize_input={self.normalize_input}"
        )
