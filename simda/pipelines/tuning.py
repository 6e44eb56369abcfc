"""What adapter training and one-shot tuning share: the trainable weights and their dtype
check, autocast and loss scaling, per-step randomness, the diffusion loss, and leaving the
model as it was found."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from simda.errors import SimDAError
from simda.pipelines.checks import is_int
from simda.pipelines.t2v import SimDAPipeline, draw_noise

MIXED_PRECISIONS = (None, "fp16", "bf16")


def check_count(name: str, value) -> None:
    """``value`` is a non-negative int (not a bool, a float or a string)."""
    if not is_int(value) or value < 0:
        raise SimDAError(f"{name} must be a non-negative int, got {value!r}")


def check_mixed_precision(value, name: str = "mixed_precision") -> None:
    if value not in MIXED_PRECISIONS:
        raise SimDAError(f"{name} must be None, 'fp16' or 'bf16', got {value!r}")


def step_generator(seed: int, step: int) -> torch.Generator:
    """Randomness of one training step, derived from (seed, step) alone: resumable."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def autocast(pipe: SimDAPipeline, mixed_precision: str | None):
    """fp16/bf16 autocast on GPU (no-op on CPU or when ``mixed_precision`` is None)."""
    if mixed_precision is None or pipe.device.type != "cuda":
        return torch.autocast("cpu", enabled=False)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[mixed_precision]
    return torch.autocast("cuda", dtype=dtype)


def grad_scaler(pipe: SimDAPipeline, mixed_precision: str | None) -> torch.amp.GradScaler:
    """Loss scaling for fp16 autocast on GPU (fp16 gradients of a mean-squared error over a
    whole clip underflow without it); disabled otherwise, where it passes everything through."""
    enabled = mixed_precision == "fp16" and pipe.device.type == "cuda"
    return torch.amp.GradScaler(pipe.device.type, enabled=enabled)


def trainable_parameters(pipe: SimDAPipeline) -> list[torch.nn.Parameter]:
    """What training updates: the adapters and the UNet's ``trainable_modules``, nothing else
    (not a LoRA loaded into the image model, not the frozen weights)."""
    return pipe.unet.trainable_parameters()


def check_trainable_dtype(params) -> None:
    """AdamW needs fp32 weights. On fp16 weights its second moment and eps underflow to 0, and
    the first step turns small-gradient weights into inf; on bf16 weights (8 bits of mantissa)
    most of its updates, a small fraction of a weight, round away. Train fp32 weights with
    fp16/bf16 autocast instead."""
    dtypes = {p.dtype for p in params}
    if torch.float16 in dtypes:
        raise SimDAError(
            "the adapters are float16, and AdamW on fp16 weights overflows (its eps and second "
            "moment underflow): load the model in fp32 (--dtype fp32) and train with "
            "mixed_precision='fp16' (--mixed-precision fp16)"
        )
    if torch.bfloat16 in dtypes:
        raise SimDAError(
            "the adapters are bfloat16, and AdamW on bf16 weights loses most of its updates "
            "(they round away in bf16's 8-bit mantissa): load the model in fp32 (--dtype fp32) "
            "and train with mixed_precision='bf16' (--mixed-precision bf16)"
        )


def noise_schedule(pipe: SimDAPipeline) -> DDPMScheduler:
    """The forward process the model is trained on: DDPM built from the pipeline scheduler's
    config (its betas and ``prediction_type``), whichever scheduler samples."""
    return DDPMScheduler.from_config(pipe.scheduler.config)


def diffusion_target(scheduler, latents, noise, t):
    """What the UNet learns to output, by the scheduler's ``prediction_type``: the noise
    (SD's epsilon), the clean latents ("sample") or the velocity."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "sample":
        return latents
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, t)
    raise SimDAError(f"unsupported prediction_type {kind!r}")


def diffusion_loss(
    pipe: SimDAPipeline, latents, cond, generator, extra=None, model=None
) -> torch.Tensor:
    """``||target - model(x_t, c, t)||^2`` at a random timestep per clip, with noise and
    timesteps drawn from ``generator`` on the CPU (the same on every device); the target is
    the noise, the clean latents or the velocity, by the model's ``prediction_type``.
    ``model``: what to call instead of ``pipe.unet`` (e.g. its DistributedDataParallel)."""
    schedule = noise_schedule(pipe)
    steps = schedule.config.num_train_timesteps
    noise = draw_noise(latents.shape, generator).to(latents)
    t = torch.randint(0, steps, (latents.shape[0],), generator=generator).to(latents.device)
    noisy = schedule.add_noise(latents, noise, t)
    x = noisy if extra is None else torch.cat([noisy, extra], 1)
    target = diffusion_target(schedule, latents, noise, t)
    out = (model or pipe.unet)(x.to(pipe.unet.dtype), t, cond).sample
    return F.mse_loss(out.float(), target.float())


def checkpointing_enabled(unet) -> bool:
    """Whether gradient checkpointing is on in ``unet`` (a video UNet or a diffusers one)."""
    inner = getattr(unet, "unet", unet)
    return bool(getattr(inner, "is_gradient_checkpointing", False))


@contextlib.contextmanager
def training(unet, params, gradient_checkpointing: bool):
    """``unet`` set up to train exactly ``params`` (``requires_grad`` on them only, train mode,
    gradient checkpointing if asked), and afterwards, also when training fails or is
    interrupted, back in eval mode (for sampling) with every ``requires_grad`` flag and its
    gradient checkpointing as they were."""
    flags = {p: p.requires_grad for p in unet.parameters()}
    checkpointing = checkpointing_enabled(unet)
    try:
        for p in flags:
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        if gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        unet.train()
        yield
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
        unet.eval()
        if checkpointing_enabled(unet) != checkpointing:
            if checkpointing:
                unet.enable_gradient_checkpointing()
            else:
                unet.disable_gradient_checkpointing()
