"""The video super-resolution variant: the UNet sees ``[x_t, x_low]`` on channels.

``x_low`` is the low-resolution clip, upsampled to the target size and encoded by the VAE, so
it has the latent shape of ``x_t``. Training minimises ``||eps - eps_theta([x_t, x_low], c,
t)||^2``; sampling concatenates ``x_low`` at every DDIM step. ``conv_in`` is widened from 4 to
8 input channels with the new weights at zero (the pretrained behaviour is kept at start) and
trains with the adapters, since it is the only way ``x_low`` enters the model.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn as nn

from simda.errors import SimDAError
from simda.pipelines.checks import check_factor, check_generator, check_prompt, check_rgb_frames
from simda.pipelines.t2v import SimDAPipeline, to_uint8
from simda.video import resize_frames


def widen_conv_in(unet2d, extra_channels: int = 4) -> None:
    """Give ``unet2d.conv_in`` ``extra_channels`` more inputs, zero-initialised."""
    old = unet2d.conv_in
    new = nn.Conv2d(
        old.in_channels + extra_channels,
        old.out_channels,
        old.kernel_size,
        old.stride,
        old.padding,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels].copy_(old.weight)
        new.bias.copy_(old.bias)
    unet2d.conv_in = new
    unet2d.register_to_config(in_channels=old.in_channels + extra_channels)


def is_superres(pipe: SimDAPipeline) -> bool:
    """Whether the UNet takes the low-resolution clip's latents beside the noisy ones."""
    config = pipe.unet.config
    return config.in_channels == 2 * config.out_channels


def make_superres(pipe: SimDAPipeline, scale: int | None = None) -> SimDAPipeline:
    """Turn a text-to-video pipeline into the super-resolution variant, in place: ``conv_in``
    widened (the new inputs at zero) and trained with the adapters. ``scale``: the factor it
    is (to be) trained for, recorded in its config (``upscale`` warns at another)."""
    if scale is not None:
        check_factor("scale", scale, 2)
    if not is_superres(pipe):
        widen_conv_in(pipe.unet.unet, pipe.unet.config.out_channels)
    pipe.unet.train_module("conv_in")
    if scale is not None:
        pipe.register_to_config(superres_scale=scale)
    return pipe


def default_scale(pipe: SimDAPipeline) -> int:
    """The factor ``upscale`` uses when given none: the one the model was trained for, else 4."""
    return pipe.config.superres_scale or 4


def low_res_condition(
    pipe: SimDAPipeline, low_frames: np.ndarray, height: int, width: int, generator=None
) -> torch.Tensor:
    """uint8 low-res clip (F, h, w, 3) -> VAE latents of its upsampled frames (1, 4, F, ...)."""
    return pipe.encode_video(resize_frames(low_frames, (height, width)), generator=generator)


def check_scale(height: int, width: int, scale: int) -> None:
    """Training clips of ``height x width`` can be downsampled by ``scale`` (the ``--superres``
    scale) to make the variant's input."""
    if height % scale or width % scale:
        raise SimDAError(
            f"clips of {height}x{width} pixels cannot be downsampled by --superres {scale}: "
            "pick a size that is a multiple of it"
        )


def degrade(frames: np.ndarray, scale: int) -> np.ndarray:
    """The training input of the variant: the clip downsampled by ``scale``."""
    h, w = frames.shape[1:3]
    check_scale(h, w, scale)
    return resize_frames(frames, (h // scale, w // scale))


@torch.no_grad()
def upscale(
    pipe: SimDAPipeline,
    low_frames: np.ndarray,
    prompt: str,
    *,
    scale: int | None = None,
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    generator=None,
) -> np.ndarray:
    """Super-resolve a uint8 clip (F, h, w, 3) by ``scale``: uint8 (F, h*scale, w*scale, 3).

    ``scale`` defaults to the one the model was trained for (``make_superres(pipe, scale)``,
    recorded with it), else 4; steps and guidance to the model's recommended settings, else
    50 and 7.5 (as ``pipe(...)``). Samples with the pipeline's scheduler."""
    if not is_superres(pipe):
        raise SimDAError("this pipeline is not a super-resolution model (make_superres)")
    check_prompt(prompt)
    check_generator(generator)
    check_rgb_frames(low_frames, "low_frames", (4,), "(F, h, w, 3)")
    num_inference_steps, guidance_scale = pipe.sampling_settings(
        num_inference_steps, guidance_scale
    )
    trained = pipe.config.superres_scale
    if scale is None:
        scale = default_scale(pipe)
    check_factor("scale", scale, 1)
    if trained is not None and trained != scale:
        warnings.warn(
            f"this model was trained to upscale by {trained}, not {scale}: at another scale its "
            f"low-resolution input is unlike any it learned from (train with --superres {scale})",
            UserWarning,
            stacklevel=2,
        )
    f, h, w, _ = low_frames.shape
    height, width = h * scale, w * scale
    pipe.check_size(f, height, width)
    pipe.check_context(f)
    extra = low_res_condition(pipe, low_frames, height, width, generator)
    guided = guidance_scale > 1.0
    cond, uncond = pipe.encode_prompt(prompt, pipe._execution_device, 1, guided)
    shape = (1, pipe.unet.config.out_channels, f, *extra.shape[-2:])
    latents = pipe.prepare_latents(shape, generator)
    latents = pipe.denoise(
        latents, cond, uncond, num_inference_steps, guidance_scale, extra=extra, generator=generator
    )
    return to_uint8(pipe.postprocess(latents, "np")[0])
