"""Built-in UNet shapes: ``tiny`` (CPU tests in seconds) and ``sd15`` (Stable Diffusion 1.5)."""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

from simda.unet import SimDAUNet, inflate

_SD_BLOCKS = {
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "layers_per_block": 2,
    "in_channels": 4,
    "out_channels": 4,
}

PRESETS = {
    # SD-1.5's UNet: 859,520,964 parameters.
    "sd15": {
        **_SD_BLOCKS,
        "sample_size": 64,
        "block_out_channels": (320, 640, 1280, 1280),
        "cross_attention_dim": 768,
        "attention_head_dim": 8,  # diffusers' name for the number of heads in SD-1.x
    },
    # Same topology (16 transformer blocks, 16 temporal adapters), tiny widths.
    "tiny": {
        **_SD_BLOCKS,
        "sample_size": 8,
        "block_out_channels": (32, 64, 64, 64),
        "norm_num_groups": 8,
        "cross_attention_dim": 32,
        "attention_head_dim": 2,
    },
}


def unet2d_config(preset: str) -> dict:
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {preset!r}")
    return dict(PRESETS[preset])


def build_unet(
    preset: str,
    *,
    device=None,
    dtype=None,
    lsa_layout: str = "paper",
    temporal_act: str = "gelu",
    **config_overrides,
) -> SimDAUNet:
    """A randomly initialised SimDA video UNet of a built-in shape.

    ``device="meta"`` builds it without allocating memory (e.g. to count parameters).
    ``config_overrides`` change the image model's config (e.g. ``in_channels=8``).
    """
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype (e.g. torch.float16), got {dtype!r}")
    config = {**unet2d_config(preset), **config_overrides}
    with torch.device(device or "cpu"):
        unet = UNet2DConditionModel(**config)
    if dtype is not None:
        unet.to(dtype)
    return inflate(unet, lsa_layout=lsa_layout, temporal_act=temporal_act)
