"""A fixed, lossless "autoencoder" for small pixel models: space-to-depth.

``encode`` folds each ``factor x factor`` patch of an RGB image into channels, (B, 3, H, W) ->
(B, 3 f^2, H/f, W/f); ``decode`` unfolds. Nothing is learned, so a model trained on it needs
no autoencoder training and reproduces colours exactly; it mimics the interface of diffusers'
``AutoencoderKL`` (``encode(x).latent_dist.sample()``, ``decode(z).sample``,
``config.scaling_factor``) so the pipelines take either.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config


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


class SpaceToDepthAutoencoder(ModelMixin, ConfigMixin):
    """A diffusers model with no weights: its folder holds config.json only."""

    @register_to_config
    def __init__(
        self,
        factor: int = 4,
        in_channels: int = 3,
        scaling_factor: float = 1.0,
        latent_channels: int | None = None,
    ):
        super().__init__()
        self.register_to_config(latent_channels=in_channels * factor**2)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # device/dtype

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, subfolder=None, **kwargs):
        """The model of a folder's config.json (it has no weights to load)."""
        folder = os.path.join(str(pretrained_model_name_or_path), subfolder or "")
        model = cls.from_config(cls.load_config(folder))
        dtype = kwargs.get("torch_dtype")
        return model if dtype is None else torch.nn.Module.to(model, dtype)

    @property
    def spatial_scale(self) -> int:
        return self.config.factor

    @property
    def dtype(self) -> torch.dtype:
        return self._anchor.dtype

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        dist = _Exact(F.pixel_unshuffle(x, self.config.factor))
        return SimpleNamespace(latent_dist=dist) if return_dict else (dist,)

    def decode(self, z: torch.Tensor, return_dict: bool = True, generator=None):
        x = F.pixel_shuffle(z, self.config.factor)
        return SimpleNamespace(sample=x) if return_dict else (x,)

    def enable_slicing(self) -> None:
        """Nothing to do: every frame is folded on its own."""

    disable_slicing = enable_tiling = disable_tiling = enable_slicing
