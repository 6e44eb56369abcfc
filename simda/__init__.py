"""SimDA: Simple Diffusion Adapter for efficient video generation.

Turns a frozen Stable Diffusion 1.x image UNet into a text-to-video model with ~25 M trainable
adapter parameters: spatial adapters, temporal adapters and latent-shift attention.
"""

from simda.adapters import SpatialAdapter, TemporalAdapter
from simda.checkpoint import load_adapters, save_adapters
from simda.optimize import optimize, restore
from simda.presets import PRESETS, build_unet
from simda.unet import MODEL_LSA_LAYOUTS, SimDAUNet, VideoUNet, count_parameters, inflate

__all__ = [
    "MODEL_LSA_LAYOUTS",
    "PRESETS",
    "SimDAUNet",
    "SpatialAdapter",
    "TemporalAdapter",
    "VideoUNet",
    "build_unet",
    "count_parameters",
    "inflate",
    "load_adapters",
    "optimize",
    "restore",
    "save_adapters",
]
__version__ = "0.1.0"
