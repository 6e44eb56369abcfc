"""The toy world: one coloured shape moving on black, with its caption, and the small
text-to-video model trained on it with SimDA's two-stage recipe (the built-in model).

``world`` makes the clips and captions, ``model`` the model's parts and its stage 1,
``scoring`` scores one clip against its caption, ``evaluation`` a model, ``ship`` stores a
trained model as the built-in one. The pipelines never import this package: what is toy-world
specific in a model is saved in its config (``SimDAPipeline.config.sampling``).
"""

from simda.toyworld.evaluation import (
    ABLATIONS,
    PRESENT_PIXELS,
    ablate,
    centre,
    clip_seed,
    colour_masks,
    edit_fidelity,
    evaluate,
    generate_clips,
    report,
    summarise,
)
from simda.toyworld.model import (
    EDIT_GUIDANCE,
    FACTOR,
    GUIDANCE,
    SAMPLING,
    base_unet_config,
    build_pipeline,
    check_new_model_folder,
    frame_batch,
    is_toyworld,
    one_cycle,
    train_base,
)
from simda.toyworld.scoring import COLOUR_TOLERANCE, METRICS, score
from simda.toyworld.ship import SHIPPED, load_shipped, ship, shipped_folder
from simda.toyworld.world import (
    CAPTIONS,
    COLOURS,
    DIRECTIONS,
    FRAMES,
    SHAPES,
    SIZE,
    VOCAB,
    caption,
    caption_subset,
    parse_caption,
    render,
    sample,
    shape_mask,
    write_dataset,
)

__all__ = [
    "ABLATIONS",
    "CAPTIONS",
    "COLOURS",
    "COLOUR_TOLERANCE",
    "DIRECTIONS",
    "EDIT_GUIDANCE",
    "FACTOR",
    "FRAMES",
    "GUIDANCE",
    "METRICS",
    "PRESENT_PIXELS",
    "SAMPLING",
    "SHAPES",
    "SHIPPED",
    "SIZE",
    "VOCAB",
    "ablate",
    "base_unet_config",
    "build_pipeline",
    "caption",
    "caption_subset",
    "centre",
    "check_new_model_folder",
    "clip_seed",
    "colour_masks",
    "edit_fidelity",
    "evaluate",
    "frame_batch",
    "generate_clips",
    "is_toyworld",
    "load_shipped",
    "one_cycle",
    "parse_caption",
    "render",
    "report",
    "sample",
    "score",
    "ship",
    "shape_mask",
    "shipped_folder",
    "summarise",
    "train_base",
    "write_dataset",
]
