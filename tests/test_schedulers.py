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

#: the step count each is usually run at (second-order ones evaluate the UNet twice a step)
STEPS = {
    "ddim": 25,
    "pndm": 25,
    "lms": 25,
    "euler": 25,
    "euler-ancestral": 25,
    "heun": 13,
    "kdpm2": 13,
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
#: with model v2 (velocity), measured 2026-12-03 against DDIM's 12/12 shape and 10/12 size:
#: Euler size 8/12, Heun shape 10/12, KDPM2 shape 9/12 (strict known failures, as above)
FAIL_WITH_V2_MODEL = {"euler", "heun", "kdpm2"}
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


@pytest.fixture(scope="module")
def toy():
    pipe = toyworld.load_shipped()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def ddim(toy):
    return score(toy, "ddim")


def score(pipe, name):
    base = pipe.scheduler
    pipe.scheduler = make_scheduler(name, base.config)
    try:
        return toyworld.evaluate(
            pipe, seeds=[0], captions=toyworld.caption_subset(12), steps=STEPS[name], progress=False
        )
    finally:
        pipe.scheduler = base


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in SCHEDULERS if n != "ddim"])
def test_each_scheduler_samples_the_toy_world_as_ddim_does(toy, ddim, name, request):
    """12 captions at the scheduler's usual step count: each metric within 10 points of
    DDIM's (without ``scale_model_input`` Euler's direction fell from 100 % to 33 %)."""
    prediction = toy.scheduler.config.prediction_type
    if name in KNOWN_FAILURES.get(prediction, ()):
        request.applymarker(
            pytest.mark.xfail(strict=True, reason=f"drifts on the shipped {prediction} model")
        )
    got = score(toy, name)
    for metric in METRICS:
        assert abs(got[metric] - ddim[metric]) <= 0.10 + 1e-9, (metric, got[metric], ddim[metric])


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
