"""One-shot video editing: tune the adapters on one clip, DDIM-invert it, sample the edit.

Released SimDA settings: 24 frames at 512x512, AdamW lr 5e-5, 300 steps, DDIM 50, guidance
12.5, inversion with the empty prompt.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from simda.errors import SimDAError
from simda.pipelines.t2v import SimDAPipeline, diffusion_target, draw_noise

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


def _check_clip(frames) -> None:
    if not isinstance(frames, np.ndarray) or frames.ndim != 4:
        shape = frames.shape if isinstance(frames, np.ndarray) else type(frames).__name__
        raise SimDAError(f"frames must be one clip, a uint8 array (F, H, W, 3); got {shape}")


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
    """Train the adapters on one clip (uint8 (F, H, W, 3)) with its prompt."""
    _check_clip(frames)
    if steps < 0:
        raise SimDAError(f"steps must be >= 0, got {steps}")
    unet = pipe.unet
    latents = pipe.encode_video(frames, generator=torch.Generator().manual_seed(seed))
    cond = pipe.encode_prompt([prompt])
    params = trainable_parameters(unet)
    if steps:  # no tuning (steps=0) takes the weights as they are
        check_trainable_dtype(params)
    optimizer = torch.optim.AdamW(params, lr=lr)
    scaler = grad_scaler(pipe, mixed_precision)
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
    unet.eval()
    if gradient_checkpointing:
        unet.disable_gradient_checkpointing()
    return result


def inverted_latents(
    pipe: SimDAPipeline,
    latents: torch.Tensor,
    steps: int,
    cache_dir: str | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """DDIM inversion with the empty prompt, cached on disk (safetensors) by content hash of
    the clip latents, the inversion steps and the adapter weights."""
    if cache_dir is None:
        return pipe.invert(latents, steps, prompt="", progress=progress)
    from simda.checkpoint import adapter_state_dict, atomic_save, read_safetensors

    digest = hashlib.sha256(latents.float().cpu().numpy().tobytes())
    digest.update(str(steps).encode())
    for value in adapter_state_dict(pipe.unet).values():
        digest.update(value.float().cpu().numpy().tobytes())
    path = os.path.join(cache_dir, f"inverted-{digest.hexdigest()[:16]}.safetensors")
    if os.path.isfile(path):
        return read_safetensors(path)[0]["latents"].to(latents)
    inverted = pipe.invert(latents, steps, prompt="", progress=progress)
    atomic_save({"latents": inverted}, path)
    return inverted


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
    guidance_scale: float = RELEASED_GUIDANCE,
    seed: int = 0,
    cache_dir: str | None = None,
    mixed_precision: str | None = None,
    progress: bool = True,
) -> EditResult:
    """The whole one-shot edit: tune on the clip, invert it, sample with the edited prompt.

    The reconstruction samples the inverted noise with the source prompt and no guidance.
    ``tune_steps=0`` edits without tuning (an ablation).
    """
    if tune_steps < 0:
        raise SimDAError(f"tune_steps must be >= 0, got {tune_steps}")
    pipe.check_steps(num_inference_steps)
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
