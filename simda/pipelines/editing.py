"""One-shot video editing: tune the adapters on one clip, DDIM-invert it, sample the edit.

Released SimDA settings: 24 frames at 512x512, AdamW lr 5e-5, 300 steps, DDIM 50, guidance
12.5, inversion with the empty prompt.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from simda.errors import SimDAError
from simda.pipelines.t2v import (
    SimDAPipeline,
    _temporal_act,
    check_prompt,
    diffusion_target,
    draw_noise,
)

RELEASED_GUIDANCE = 12.5  # guidance of the released editing settings


@dataclass
class TuneResult:
    losses: list[float] = field(default_factory=list)
    seconds_per_step: float = 0.0
    peak_memory_mib: float | None = None
    tuned_parameters: int = 0


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def step_generator(seed: int, step: int) -> torch.Generator:
    """Randomness of one training step, derived from (seed, step) alone: resumable."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def diffusion_loss(pipe: SimDAPipeline, latents, cond, generator, extra=None) -> torch.Tensor:
    """``||eps - eps_theta(x_t, c, t)||^2`` at a random timestep per clip (or the clean
    latents / velocity, for models trained with that ``prediction_type``)."""
    steps = pipe.scheduler.config.num_train_timesteps
    noise = draw_noise(latents.shape, generator).to(latents)
    t = torch.randint(0, steps, (latents.shape[0],), generator=generator).to(latents.device)
    noisy = pipe.scheduler.add_noise(latents, noise, t)
    x = noisy if extra is None else torch.cat([noisy, extra], 1)
    target = diffusion_target(pipe.scheduler, latents, noise, t)
    return F.mse_loss(pipe.unet(x, t, cond).float(), target.float())


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


def checkpointing_enabled(unet) -> bool:
    """Whether gradient checkpointing is on in ``unet`` (a video UNet or a diffusers one)."""
    inner = getattr(unet, "unet", unet)
    return bool(getattr(inner, "is_gradient_checkpointing", False))


def end_training(unet, checkpointing: bool) -> None:
    """After a training loop, also one that failed or was interrupted: ``unet`` back in eval
    mode (for sampling) and gradient checkpointing as the loop found it."""
    unet.eval()
    if checkpointing_enabled(unet) != checkpointing:
        if checkpointing:
            unet.enable_gradient_checkpointing()
        else:
            unet.disable_gradient_checkpointing()


def _check_clip(frames) -> None:
    if not isinstance(frames, np.ndarray) or frames.ndim != 4:
        shape = frames.shape if isinstance(frames, np.ndarray) else type(frames).__name__
        raise SimDAError(f"frames must be one clip, a uint8 array (F, H, W, 3); got {shape}")


MIXED_PRECISIONS = (None, "fp16", "bf16")


def _check_count(name: str, value) -> None:
    """``value`` is a non-negative int (not a bool, a float or a string)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise SimDAError(f"{name} must be a non-negative int, got {value!r}")


def _check_mixed_precision(value) -> None:
    if value not in MIXED_PRECISIONS:
        raise SimDAError(f"mixed_precision must be None, 'fp16' or 'bf16', got {value!r}")


def tune(
    pipe: SimDAPipeline,
    frames: np.ndarray,
    prompt: str,
    *,
    steps: int = 300,
    lr: float = 5e-5,
    seed: int = 0,
    gradient_checkpointing: bool = True,
    mixed_precision: str | None = None,
    progress: bool = True,
) -> TuneResult:
    """Train the adapters on one clip (uint8 (F, H, W, 3)) with its prompt, in place.

    Afterwards, also when tuning fails or is interrupted, the UNet is in eval mode and its
    gradient checkpointing as it was before (``end_training``)."""
    _check_clip(frames)
    _check_count("steps", steps)
    check_prompt(prompt)
    _check_mixed_precision(mixed_precision)
    unet = pipe.unet
    latents = pipe.encode_video(frames, generator=torch.Generator().manual_seed(seed))
    cond = pipe.encode_prompt([prompt])
    params = trainable_parameters(unet)
    if steps:  # no tuning (steps=0) takes the weights as they are
        check_trainable_dtype(params)
    optimizer = torch.optim.AdamW(params, lr=lr)
    scaler = grad_scaler(pipe, mixed_precision)
    was_checkpointing = checkpointing_enabled(unet)
    try:
        if gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        unet.train()
        if pipe.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pipe.device)
        result = TuneResult(tuned_parameters=sum(p.numel() for p in params))
        start = time.perf_counter()
        bar = tqdm(range(steps), desc="tuning", disable=not progress, leave=False)
        for step in bar:
            optimizer.zero_grad(set_to_none=True)
            with autocast(pipe, mixed_precision):
                loss = diffusion_loss(pipe, latents, cond, step_generator(seed, step))
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            result.losses.append(loss.item())
            bar.set_postfix(loss=f"{result.losses[-1]:.4f}")
        result.seconds_per_step = (time.perf_counter() - start) / max(steps, 1)
        if pipe.device.type == "cuda":
            result.peak_memory_mib = torch.cuda.max_memory_allocated(pipe.device) / 2**20
    finally:
        end_training(unet, was_checkpointing)
    return result


def inverted_latents(
    pipe: SimDAPipeline,
    latents: torch.Tensor,
    steps: int,
    cache_dir: str | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """DDIM inversion with the empty prompt, cached on disk (safetensors).

    The cache key covers everything the inversion depends on: the clip latents, the inversion
    steps, the adapter weights (hashed in full), the LSA layout, the temporal activation, the
    scheduler config and a fingerprint of the frozen UNet weights (``frozen_fingerprint``)."""
    if cache_dir is None:
        return pipe.invert(latents, steps, prompt="", progress=progress)
    from simda.checkpoint import adapter_state_dict, atomic_save, read_safetensors

    digest = hashlib.sha256(latents.float().cpu().numpy().tobytes())
    digest.update(str(steps).encode())
    adapters = adapter_state_dict(pipe.unet)
    for value in adapters.values():
        digest.update(value.float().cpu().numpy().tobytes())
    settings = {
        "lsa_layout": getattr(pipe.unet, "lsa_layout", None),
        "temporal_act": _temporal_act(pipe.unet),
        "scheduler": dict(pipe.scheduler.config),
    }
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    digest.update(frozen_fingerprint(pipe.unet, exclude=adapters.keys()))
    path = os.path.join(cache_dir, f"inverted-{digest.hexdigest()[:16]}.safetensors")
    if os.path.isfile(path):
        return read_safetensors(path)[0]["latents"].to(latents)
    inverted = pipe.invert(latents, steps, prompt="", progress=progress)
    atomic_save({"latents": inverted}, path)
    return inverted


@torch.no_grad()
def frozen_fingerprint(unet: torch.nn.Module, exclude=()) -> bytes:
    """A cheap fingerprint of the UNet weights other than ``exclude`` (the adapters, hashed in
    full by the caller): per tensor, its name, dtype and shape, its sum in float64 and 4
    values sampled at fixed positions. Any change of shape, any load of other weights and any
    change that moves a sum or a sampled value changes it; a change that leaves all of them
    exactly equal (e.g. two weights swapped away from the sampled positions) is not seen. It
    reads each tensor once (a float64 sum), cheap even for SD's 860M parameters, and syncs
    with the device once."""
    exclude = set(exclude)
    names, stats = [], []
    for name, tensor in unet.state_dict().items():
        if name in exclude:
            continue
        flat = tensor.detach().reshape(-1)
        names.append(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}")
        if flat.numel() == 0:
            continue
        n = flat.numel()
        picks = flat[torch.tensor([0, n // 3, (2 * n) // 3, n - 1], device=flat.device)]
        stats.append(torch.cat([flat.sum(dtype=torch.float64)[None], picks.double()]))
    digest = hashlib.sha256("\n".join(names).encode())
    if stats:
        digest.update(torch.cat(stats).cpu().numpy().tobytes())
    return digest.digest()


@dataclass
class EditResult:
    source: np.ndarray  # (F, H, W, 3) uint8
    reconstruction: np.ndarray
    edit: np.ndarray
    tuning: TuneResult


def edit_video(
    pipe: SimDAPipeline,
    frames: np.ndarray,
    source_prompt: str,
    edited_prompt: str,
    *,
    tune_steps: int = 300,
    lr: float = 5e-5,
    num_inference_steps: int = 50,
    guidance_scale: float | None = None,
    seed: int = 0,
    cache_dir: str | None = None,
    mixed_precision: str | None = None,
    progress: bool = True,
) -> EditResult:
    """The whole one-shot edit: tune on the clip, invert it, sample with the edited prompt.

    Tuning changes ``pipe``'s adapters in place: a second edit with the same ``pipe`` starts
    from the weights the first one tuned. To start fresh, reload the pipeline or load the
    original adapters back (``simda.checkpoint.load_adapters``).

    The reconstruction samples the inverted noise with the source prompt and no guidance.
    ``guidance_scale`` None: the model's edit guidance (``simda.toyworld.edit_guidance``:
    4.5 for a toy-world model, else ``RELEASED_GUIDANCE``, 12.5). ``tune_steps=0`` edits
    without tuning (an ablation). Every argument is checked before anything is tuned.
    """
    from simda.toyworld import edit_guidance  # here: toyworld imports this module

    _check_clip(frames)
    check_prompt(source_prompt, "source_prompt")
    check_prompt(edited_prompt, "edited_prompt")
    _check_count("tune_steps", tune_steps)
    pipe.check_steps(num_inference_steps)
    _check_mixed_precision(mixed_precision)
    if guidance_scale is None:
        guidance_scale = edit_guidance(pipe)
    if (
        isinstance(guidance_scale, bool)
        or not isinstance(guidance_scale, numbers.Real)
        or not math.isfinite(guidance_scale)
    ):
        raise SimDAError(f"guidance_scale must be a finite number or None, got {guidance_scale!r}")
    tuning = tune(
        pipe,
        frames,
        source_prompt,
        steps=tune_steps,
        lr=lr,
        seed=seed,
        mixed_precision=mixed_precision,
        progress=progress,
    )
    latents = pipe.encode_video(frames, generator=torch.Generator().manual_seed(seed))
    noise = inverted_latents(pipe, latents, num_inference_steps, cache_dir, progress)

    def sample(prompt, guidance):  # from the inverted noise of the source video
        out = pipe(
            prompt,
            num_frames=frames.shape[0],
            height=frames.shape[1],
            width=frames.shape[2],
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance,
            latents=noise,
            progress=progress,
        )
        return out.frames[0]

    recon = sample(source_prompt, 1.0)
    return EditResult(frames, recon, sample(edited_prompt, guidance_scale), tuning)
