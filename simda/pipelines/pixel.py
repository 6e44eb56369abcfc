"""A fixed, lossless "autoencoder" for small pixel models: space-to-depth.

``encode`` folds each ``factor x factor`` patch of an RGB image into channels, (B, 3, H, W) ->
(B, 3 f^2, H/f, W/f); ``decode`` unfolds. Nothing is learned, so a model trained on it needs
no autoencoder training and reproduces colours exactly; it mimics the interface of diffusers'
``AutoencoderKL`` (``encode(x).latent_dist.sample()``, ``decode(z).sample``,
``config.scaling_factor``) so the pipelines take either.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class _Exact:
    """A point mass, shaped like diffusers' DiagonalGaussianDistribution."""

    mean: torch.Tensor

    @property
    def std(self) -> torch.Tensor:
        return torch.zeros_like(self.mean)

    def sample(self, generator=None) -> torch.Tensor:
        return self.mean

    def mode(self) -> torch.Tensor:
        return self.mean


class SpaceToDepthAutoencoder(nn.Module):
    def __init__(self, factor: int = 4, in_channels: int = 3):
        super().__init__()
        self.factor = factor
        self.config = SimpleNamespace(
            scaling_factor=1.0,
            latent_channels=in_channels * factor**2,
            _class_name="SpaceToDepthAutoencoder",
            factor=factor,
            in_channels=in_channels,
        )
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # device/dtype

    @property
    def spatial_scale(self) -> int:
        return self.factor

    @property
    def dtype(self) -> torch.dtype:
        return self._anchor.dtype

    def encode(self, x: torch.Tensor):
        return SimpleNamespace(latent_dist=_Exact(F.pixel_unshuffle(x, self.factor)))

    def decode(self, z: torch.Tensor):
        return SimpleNamespace(sample=F.pixel_shuffle(z, self.factor))

    def settings(self) -> dict:
        return {
            "_class_name": "SpaceToDepthAutoencoder",
            "factor": self.factor,
            "in_channels": self.config.in_channels,
        }
