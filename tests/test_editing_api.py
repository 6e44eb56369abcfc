"""The one-shot editing API: argument checks, the inversion cache key, state after failures."""

import os

import numpy as np
import pytest
import torch

from simda import toyworld
from simda.errors import SimDAError
from simda.pipelines import SimDAPipeline, edit_video, editing, tune
from simda.pipelines.editing import RELEASED_GUIDANCE, frozen_fingerprint, inverted_latents


def clip(frames=2, size=64, seed=0):
    return toyworld.sample(seed, frames=frames, size=size)[0]


@pytest.fixture
def pipe():
    pipe = SimDAPipeline.from_preset("tiny", seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_the_inversion_cache_key_covers_layout_scheduler_and_frozen_weights(pipe, tmp_path):
    cache = str(tmp_path / "cache")
    latents = pipe.encode_video(clip(), generator=torch.Generator().manual_seed(0))
    first = inverted_latents(pipe, latents, 2, cache)
    assert len(os.listdir(cache)) == 1
    again = inverted_latents(pipe, latents, 2, cache)
    assert torch.equal(first, again) and len(os.listdir(cache)) == 1  # same setup: a hit
    pipe.unet.set_lsa_layout("tav")
    tav = inverted_latents(pipe, latents, 2, cache)
    assert len(os.listdir(cache)) == 2  # another layout: a miss, computed afresh
    assert not torch.equal(first, tav)
    assert torch.equal(tav, pipe.invert(latents, 2, prompt=""))
    pipe.unet.set_lsa_layout("paper")
    assert torch.equal(inverted_latents(pipe, latents, 2, cache), first)
    assert len(os.listdir(cache)) == 2
    pipe.scheduler.register_to_config(steps_offset=1 - pipe.scheduler.config.steps_offset)
    inverted_latents(pipe, latents, 2, cache)
    assert len(os.listdir(cache)) == 3  # another scheduler config: a miss


def test_the_frozen_fingerprint_sees_a_change_of_the_base_weights(pipe):
    before = frozen_fingerprint(pipe.unet)
    assert frozen_fingerprint(pipe.unet) == before
    weight = pipe.unet.unet.conv_out.weight
    with torch.no_grad():
        weight.view(-1)[1] += 0.5  # not a sampled position: seen through the sum
    assert frozen_fingerprint(pipe.unet) != before


def test_tune_restores_eval_mode_and_checkpointing_after_a_failure(pipe, monkeypatch):
    calls = []

    def failing_loss(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the second step
        return loss(*args)

    loss = editing.diffusion_loss
    monkeypatch.setattr(editing, "diffusion_loss", failing_loss)
    pipe.unet.eval()
    with pytest.raises(KeyboardInterrupt):
        tune(pipe, clip(), "a square", steps=3)
    assert len(calls) == 2
    assert not pipe.unet.training and not pipe.unet.unet.is_gradient_checkpointing
    pipe.unet.enable_gradient_checkpointing()  # a caller's own setting is kept
    monkeypatch.setattr(editing, "diffusion_loss", loss)
    tune(pipe, clip(), "a square", steps=1)
    assert not pipe.unet.training and pipe.unet.unet.is_gradient_checkpointing


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(steps=2.5), "steps must be a non-negative int, got 2.5"),
        (dict(steps="2"), "steps must be a non-negative int, got '2'"),
        (dict(steps=True), "steps must be a non-negative int, got True"),
        (dict(steps=-1), "steps must be a non-negative int, got -1"),
        (dict(prompt=None), "prompt must be a string, got NoneType"),
        (dict(prompt=["a", "b"]), "prompt must be a string, got list"),
        (dict(mixed_precision="fp8"), "mixed_precision must be None, 'fp16' or 'bf16'"),
    ],
)
def test_tune_checks_its_arguments(pipe, change, message):
    kwargs = {"prompt": "a square", "steps": 1, "progress": False, **change}
    with pytest.raises(SimDAError, match=message):
        tune(pipe, clip(), **kwargs)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(source_prompt=None), "source_prompt must be a string"),
        (dict(edited_prompt=None), "edited_prompt must be a string"),
        (dict(edited_prompt=["b"]), "edited_prompt must be a string"),
        (dict(guidance_scale=float("nan")), "guidance_scale must be a finite number"),
        (dict(guidance_scale=float("inf")), "guidance_scale must be a finite number"),
        (dict(guidance_scale="7"), "guidance_scale must be a finite number"),
        (dict(tune_steps=None), "tune_steps must be a non-negative int, got None"),
        (dict(tune_steps=1.0), "tune_steps must be a non-negative int, got 1.0"),
        (dict(tune_steps=False), "tune_steps must be a non-negative int, got False"),
        (dict(num_inference_steps=0), "num_inference_steps must be an int"),
        (dict(mixed_precision="fp8"), "mixed_precision must be None, 'fp16' or 'bf16'"),
    ],
)
def test_edit_video_checks_every_argument_before_tuning(pipe, monkeypatch, change, message):
    def no_tuning(*args, **kwargs):
        raise AssertionError("tuned before the arguments were checked")

    monkeypatch.setattr(editing, "tune", no_tuning)
    kwargs = {
        "source_prompt": "a",
        "edited_prompt": "b",
        "tune_steps": 1,
        "num_inference_steps": 1,
        "progress": False,
        **change,
    }
    with pytest.raises(SimDAError, match=message):
        edit_video(pipe, clip(), **kwargs)


def test_edit_video_guidance_defaults_to_the_models_edit_guidance(pipe, monkeypatch):
    used = []
    call = SimDAPipeline.__call__

    def spy(self, prompt, **kwargs):
        used.append(kwargs["guidance_scale"])
        return call(self, prompt, **kwargs)

    monkeypatch.setattr(SimDAPipeline, "__call__", spy)
    frames = clip()
    result = edit_video(pipe, frames, "a", "b", tune_steps=0, num_inference_steps=1)
    assert result.edit.shape == frames.shape
    assert used == [1.0, editing.edit_guidance(pipe)] == [1.0, RELEASED_GUIDANCE]
    pipe.register_to_config(sampling={"edit_guidance_scale": 4.5})  # the model's own
    edit_video(pipe, frames, "a", "b", tune_steps=0, num_inference_steps=1, progress=False)
    assert used[-1] == 4.5
    edit_video(
        pipe,
        frames,
        "a",
        "b",
        tune_steps=0,
        num_inference_steps=1,
        guidance_scale=3,
        progress=False,
    )
    assert used[-1] == 3


def test_edit_video_tunes_the_pipelines_adapters_in_place(pipe):
    from simda.checkpoint import adapter_state_dict

    before = {k: v.clone() for k, v in adapter_state_dict(pipe.unet).items()}
    edit_video(pipe, clip(), "a", "b", tune_steps=1, num_inference_steps=1)
    after = adapter_state_dict(pipe.unet)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert np.isfinite([v.float().sum().item() for v in after.values()]).all()
