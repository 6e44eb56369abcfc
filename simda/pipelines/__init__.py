"""Pipelines: text-to-video, one-shot editing, super-resolution, adapter training."""

from simda.pipelines.editing import EditResult, TuneResult, edit_video, tune
from simda.pipelines.superres import make_superres, upscale
from simda.pipelines.t2v import SimDAPipeline, VideoOutput
from simda.pipelines.training import ClipDataset, TrainConfig, train

__all__ = [
    "ClipDataset",
    "EditResult",
    "SimDAPipeline",
    "TrainConfig",
    "TuneResult",
    "VideoOutput",
    "edit_video",
    "make_superres",
    "train",
    "tune",
    "upscale",
]
