"""Every scheduler diffusers offers for SD-1.x samples a SimDA model as DDIM does: the loop
scales each model input (``scale_model_input``), passes ``generator`` and ``eta`` where
``step`` takes them, and editing inverts with DDIM whichever scheduler samples."""

import functools
import inspect

import numpy as np
import pytest
import torch

from simda import toyworld
from simda.pipelines import SimDAPipeline, edit_video
from simda.schedulers import SCHEDULERS, make_scheduler

#: the step count each is run at. Heun and KDPM2 take the same 25 steps as DDIM (49 UNet
#: evaluations): at 13 steps (DDIM's 25 evaluations) both kept one blob of the right size in
#: 50-52 % of the 48 captions against DDIM's 83 % (measured on model v2, 2026-12-03)
STEPS = {
    "ddim": 25,
    "pndm": 25,
    "lms": 25,
    "euler": 25,
    "euler-ancestral": 25,
    "heun": 25,
    "kdpm2": 25,
    "dpm++2m": 20,
    "dpm++2m-sde": 20,
    "unipc": 15,
}
METRICS = ("colour", "shape", "size", "direction")
#: with the shipped model v1 (``prediction_type="sample"``, an x0-predicting image model):
#: schedulers that refuse x0 models (PNDM, Euler ancestral, KDPM2) or whose samples from it drift
#: more than 10 points from DDIM's. Known failures while such a model is shipped (strict: one
#: that starts to pass fails, to be taken off the list).
FAIL_WITH_X0_MODEL = {"pndm", "euler-ancestral", "kdpm2", "lms", "heun", "unipc", "dpm++2m-sde"}
#: with model v2 (velocity), measured 2026-12-03: Euler keeps one blob of the right size in
#: 8/12 guard clips against DDIM's 10/12, and on all 48 captions in 72.9 % against 83.3 %
#: (10.4 points; 79.2 % when the 48 are sampled in other batches): at the edge, a strict
#: known failure as above. Heun and KDPM2 (25 steps) and the others are within 10 points.
FAIL_WITH_V2_MODEL = {"euler"}
KNOWN_FAILURES = {"sample": FAIL_WITH_X0_MODEL, "v_prediction": FAIL_WITH_V2_MODEL}


def test_every_scheduler_has_a_step_count():
    assert set(STEPS) == set(SCHEDULERS)


@pytest.fixture(scope="module")
def tiny():
    pipe = SimDAPipeline.from_preset("tiny", seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_the_loop_scales_inputs_and_passes_generator_and_eta(tiny, name, monkeypatch):
    tiny.scheduler = make_scheduler(name, SimDAPipeline.from_preset("tiny").scheduler.config)
    scaled, stepped = [], []
    scale, step = tiny.scheduler.scale_model_input, tiny.scheduler.step
    monkeypatch.setattr(
        tiny.scheduler, "scale_model_input", lambda x, t: scaled.append(t) or scale(x, t)
    )
    spy = functools.wraps(step)(lambda *a, **k: stepped.append(set(k)) or step(*a, **k))
    monkeypatch.setattr(tiny.scheduler, "step", spy)  # keeps step's signature
    generator = torch.Generator().manual_seed(0)
    out = tiny(
        "x", num_frames=1, num_inference_steps=3, generator=generator, eta=0.5, output_type="latent"
    )
    assert torch.isfinite(out.frames).all()
    assert len(scaled) == len(stepped) == len(tiny.scheduler.timesteps) > 0
    accepted = set(inspect.signature(step).parameters)
    assert all(kw == {"generator", "eta"} & accepted for kw in stepped), stepped


#: the guard's captions: one clip of 12 is 8.3 points, so "within 10 points" allows one clip
#: either way; a larger gap is confirmed on all 48 captions (the other 36 added) before it fails
GUARD = tuple(toyworld.caption_subset(12))
REST = tuple(c for c in toyworld.CAPTIONS if c not in GUARD)


@functools.cache
def clips(name, captions):
    """Per-clip scores of the shipped model sampled with scheduler ``name`` (seed 0)."""
    pipe = toy_pipe()
    base = pipe.scheduler
    pipe.scheduler = make_scheduler(name, base.config)
    try:
        return toyworld.evaluate(
            pipe, seeds=[0], captions=list(captions), steps=STEPS[name], progress=False
        )["results"]
    finally:
        pipe.scheduler = base


@functools.cache
def toy_pipe():
    pipe = toyworld.load_shipped()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def scores(name, *parts):
    """``toyworld.summarise`` of ``name``'s clips over the caption lists ``parts``."""
    return toyworld.summarise([r for part in parts for r in clips(name, part)])


def gaps(name, *parts):
    """The metrics on which ``name`` is more than 10 points from DDIM: {metric: (its, DDIM's)}."""
    got, ref = scores(name, *parts), scores("ddim", *parts)
    return {m: (got[m], ref[m]) for m in METRICS if abs(got[m] - ref[m]) > 0.10 + 1e-9}


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in SCHEDULERS if n != "ddim"])
def test_each_scheduler_samples_the_toy_world_as_ddim_does(name, request):
    """Colour, shape, size and direction within 10 points of DDIM's at the scheduler's usual
    step count (without ``scale_model_input`` Euler's direction fell from 100 % to 33 %): on
    the 12 guard captions, or, where those differ by more, on all 48."""
    if toyworld.shipped_folder() is None:
        pytest.skip("no built-in model")
    prediction = toy_pipe().scheduler.config.prediction_type
    if name in KNOWN_FAILURES.get(prediction, ()):
        request.applymarker(
            pytest.mark.xfail(strict=True, reason=f"drifts on the shipped {prediction} model")
        )
    if gaps(name, GUARD):
        off = gaps(name, GUARD, REST)
        assert not off, f"{name} against DDIM on all 48 captions: {off}"


def test_editing_after_a_scheduler_swap_inverts_with_ddim(monkeypatch):
    """The inversion builds its own DDIM inverse scheduler from the pipeline's config (DDIM's
    ``final_alpha_cumprod`` is not Euler's); the reconstruction and the edit sample with the
    pipeline's scheduler."""
    from diffusers import DDIMInverseScheduler, EulerDiscreteScheduler

    pipe = SimDAPipeline.from_preset("tiny", seed=0)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    inverted = []
    step = DDIMInverseScheduler.step
    monkeypatch.setattr(
        DDIMInverseScheduler, "step", lambda s, *a: inverted.append(1) or step(s, *a)
    )
    frames = toyworld.sample(0, frames=2, size=64)[0]
    result = edit_video(pipe, frames, "a", "b", tune_steps=0, num_inference_steps=3, progress=False)
    assert len(inverted) == 3 and isinstance(pipe.scheduler, EulerDiscreteScheduler)
    assert result.edit.shape == frames.shape and result.edit.dtype == np.uint8


def test_a_scheduler_that_cannot_take_the_model_is_named_before_any_work(tiny, monkeypatch):
    from diffusers import PNDMScheduler

    from simda.errors import SimDAError

    tiny.scheduler = PNDMScheduler(skip_prk_steps=True, prediction_type="sample")
    monkeypatch.setattr(tiny, "embed_prompts", lambda *a: pytest.fail("work began"))
    with pytest.raises(
        SimDAError,
        match="PNDMScheduler cannot sample this model, whose prediction_type is 'sample'",
    ):
        tiny("x", num_frames=1, num_inference_steps=2)
