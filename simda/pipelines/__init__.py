"""Pipelines: text-to-video (``SimDAPipeline``, a diffusers ``DiffusionPipeline``), one-shot
editing, super-resolution, adapter training.

Importing this package also makes ``diffusers.DiffusionPipeline.from_pretrained`` recognise
folders that ``SimDAPipeline.save_pretrained`` wrote (their model_index.json names
``SimDAPipeline``, which diffusers looks up among its own names).
"""

import diffusers

from simda.pipelines.editing import EditResult, TuneResult, edit_video, tune
from simda.pipelines.superres import make_superres, upscale
from simda.pipelines.t2v import SimDAPipeline, SimDAPipelineOutput
from simda.pipelines.training import ClipDataset, TrainConfig, train

diffusers.SimDAPipeline = SimDAPipeline

__all__ = [
    "ClipDataset",
    "EditResult",
    "SimDAPipeline",
    "SimDAPipelineOutput",
    "TrainConfig",
    "TuneResult",
    "edit_video",
    "make_superres",
    "train",
    "tune",
    "upscale",
]
