"""The schedulers diffusers offers for SD-1.x, by the short names the CLI takes.

``pipe.scheduler = make_scheduler("euler", pipe.scheduler.config)`` is diffusers'
``EulerDiscreteScheduler.from_config(pipe.scheduler.config)``: the model's noise schedule and
``prediction_type`` carry over.
"""

from __future__ import annotations

from simda.errors import SimDAError

#: name -> (diffusers class, settings beside the model's config)
SCHEDULERS = {
    "ddim": ("DDIMScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "lms": ("LMSDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "kdpm2": ("KDPM2DiscreteScheduler", {}),
    "dpm++2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpm++2m-sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "unipc": ("UniPCMultistepScheduler", {}),
}


def make_scheduler(name: str, config):
    """The scheduler ``name`` (``SCHEDULERS``) for a model whose scheduler config is ``config``."""
    if name not in SCHEDULERS:
        raise SimDAError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {name!r}")
    import diffusers  # here: the CLI reads SCHEDULERS without loading diffusers

    cls, settings = SCHEDULERS[name]
    return getattr(diffusers, cls).from_config(config, **settings)
