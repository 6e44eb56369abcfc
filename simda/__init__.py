"""SimDA: Simple Diffusion Adapter for efficient video generation.

Turns a frozen Stable Diffusion 1.x image UNet into a text-to-video model with ~25 M trainable
adapter parameters: spatial adapters, temporal adapters and latent-shift attention.

The public names below are imported on first use (PEP 562), so that ``import simda`` and the
``simda`` command's ``--help`` and argument errors do not wait for torch and diffusers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "MODEL_LSA_LAYOUTS": "simda.unet",
    "PRESETS": "simda.presets",
    "SCHEDULERS": "simda.schedulers",
    "SimDAAdapters": "simda.checkpoint",
    "SimDAPipeline": "simda.pipelines.t2v",
    "SimDAUNet": "simda.unet",
    "SpatialAdapter": "simda.adapters",
    "TemporalAdapter": "simda.adapters",
    "VideoUNet": "simda.unet",
    "build_unet": "simda.presets",
    "count_parameters": "simda.unet",
    "cpu_threads": "simda.cpu",
    "inflate": "simda.unet",
    "load_adapters": "simda.checkpoint",
    "make_scheduler": "simda.schedulers",
    "optimize": "simda.optimization",
    "restore": "simda.optimization",
    "save_adapters": "simda.checkpoint",
}
__all__ = [  # the keys of _EXPORTS (a test checks), spelled out for static analysers
    "MODEL_LSA_LAYOUTS",
    "PRESETS",
    "SCHEDULERS",
    "SimDAAdapters",
    "SimDAPipeline",
    "SimDAUNet",
    "SpatialAdapter",
    "TemporalAdapter",
    "VideoUNet",
    "build_unet",
    "count_parameters",
    "cpu_threads",
    "inflate",
    "load_adapters",
    "make_scheduler",
    "optimize",
    "restore",
    "save_adapters",
]


#: submodules reachable as attributes after a plain ``import simda`` (``simda.toyworld``)
_SUBMODULES = (
    "adapters",
    "attention",
    "checkpoint",
    "cli",
    "cpu",
    "env",
    "errors",
    "optimization",
    "pipelines",
    "presets",
    "schedulers",
    "toyworld",
    "unet",
    "video",
)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"simda.{name}")  # the import binds it here too
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'simda' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from simda.adapters import SpatialAdapter, TemporalAdapter
    from simda.checkpoint import SimDAAdapters, load_adapters, save_adapters
    from simda.cpu import cpu_threads
    from simda.optimization import optimize, restore
    from simda.pipelines import SimDAPipeline
    from simda.presets import PRESETS, build_unet
    from simda.schedulers import SCHEDULERS, make_scheduler
    from simda.unet import MODEL_LSA_LAYOUTS, SimDAUNet, VideoUNet, count_parameters, inflate
