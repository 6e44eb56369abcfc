"""One-shot video editing: tune the adapters on one clip, DDIM-invert it, sample the edit.

Released SimDA settings: 24 frames at 512x512, AdamW lr 5e-5, 300 steps, DDIM 50, guidance
12.5, inversion with the empty prompt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from simda.checkpoint import adapter_state_dict, atomic_save, read_safetensors
from simda.errors import SimDAError
from simda.pipelines.checks import check_number, check_prompt
from simda.pipelines.t2v import SimDAPipeline, progress_bars, to_uint8
from simda.pipelines.tuning import (
    autocast,
    check_count,
    check_mixed_precision,
    check_trainable_dtype,
    diffusion_loss,
    grad_scaler,
    step_generator,
    trainable_parameters,
    training,
)

RELEASED_GUIDANCE = 12.5  # guidance of the released editing settings
logger = logging.getLogger(__name__)


@dataclass
class TuneResult:
    losses: list[float] = field(default_factory=list)
    seconds_per_step: float = 0.0
    peak_memory_mib: float | None = None
    tuned_parameters: int = 0


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
    """Train the adapters on one clip (uint8 (F, H, W, 3)) with its prompt, in place.

    Only the adapters train (``trainable_parameters``: not a LoRA or anything else loaded into
    the image model). With context windows on (``pipe.enable_free_noise``) a clip longer than
    a window trains on one of its windows per step (memory of one window). Afterwards, also
    when tuning fails or is interrupted, the UNet is in eval mode with its ``requires_grad``
    flags and gradient checkpointing as they were (``tuning.training``)."""
    _check_clip(frames)
    check_count("steps", steps)
    check_prompt(prompt)
    check_mixed_precision(mixed_precision)
    unet = pipe.unet
    latents = pipe.encode_video(frames, generator=torch.Generator().manual_seed(seed))
    cond = pipe.embed_prompts([prompt])
    params = trainable_parameters(pipe)
    if steps:  # no tuning (steps=0) takes the weights as they are
        check_trainable_dtype(params)
    optimizer = torch.optim.AdamW(params, lr=lr)
    scaler = grad_scaler(pipe, mixed_precision)
    with training(unet, params, gradient_checkpointing):
        if pipe.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pipe.device)
        result = TuneResult(tuned_parameters=sum(p.numel() for p in params))
        start = time.perf_counter()
        bar = tqdm(range(steps), desc="tuning", disable=not progress, leave=False)
        for step in bar:
            optimizer.zero_grad(set_to_none=True)
            g = step_generator(seed, step)
            clip = latents
            spans = pipe.context_windows(latents.shape[2])
            if len(spans) > 1:  # a clip longer than a window: a random window per step
                first, last = spans[torch.randint(len(spans), (1,), generator=g).item()]
                clip = latents[:, :, first:last]
            with autocast(pipe, mixed_precision):
                loss = diffusion_loss(pipe, clip, cond, g)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            result.losses.append(loss.item())
            bar.set_postfix(loss=f"{result.losses[-1]:.4f}")
        result.seconds_per_step = (time.perf_counter() - start) / max(steps, 1)
        if pipe.device.type == "cuda":
            result.peak_memory_mib = torch.cuda.max_memory_allocated(pipe.device) / 2**20
    return result


def inverted_latents(
    pipe: SimDAPipeline, latents: torch.Tensor, steps: int, cache_dir: str | None = None
) -> torch.Tensor:
    """DDIM inversion with the empty prompt, cached on disk (safetensors).

    The cache key covers everything the inversion depends on: the clip latents, the inversion
    steps, the adapter weights (hashed in full), the LSA layout, the temporal activation, the
    scheduler config, the context windows' settings and a fingerprint of the frozen UNet
    weights (``frozen_fingerprint``)."""
    if cache_dir is None:
        return pipe.invert(latents, steps, prompt="")
    digest = hashlib.sha256(latents.float().cpu().numpy().tobytes())
    digest.update(str(steps).encode())
    adapters = adapter_state_dict(pipe.unet)
    for value in adapters.values():
        digest.update(value.float().cpu().numpy().tobytes())
    settings = {
        "lsa_layout": getattr(pipe.unet, "lsa_layout", None),
        "temporal_act": pipe.unet.config.temporal_act,
        # the inversion runs in windows when they are on: their settings change it
        "windows": pipe.context_windows(latents.shape[2]),
        "weighting": pipe._free_noise.weighting_scheme if pipe.free_noise_enabled else None,
        "scheduler": dict(pipe.scheduler.config),
    }
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    digest.update(frozen_fingerprint(pipe.unet, exclude=adapters.keys()))
    path = os.path.join(cache_dir, f"inverted-{digest.hexdigest()[:16]}.safetensors")
    if os.path.isfile(path):
        logger.info("inverted latents from the cache: %s", path)
        return read_safetensors(path)[0]["latents"].to(latents)
    inverted = pipe.invert(latents, steps, prompt="")
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
    original adapters back (``pipe.load_adapters``).

    The inversion runs DDIM (built from the pipeline scheduler's config); the reconstruction
    and the edit sample the inverted noise with the pipeline's own scheduler, the
    reconstruction with the source prompt and no guidance. ``guidance_scale`` None: the
    model's recommended edit guidance (``edit_guidance_scale`` of its saved sampling
    settings), else ``RELEASED_GUIDANCE`` (12.5). ``tune_steps=0`` edits without tuning (an
    ablation). Every argument is checked before anything is tuned. Frames in and out are
    uint8 (F, H, W, 3).
    """
    _check_clip(frames)
    check_prompt(source_prompt, "source_prompt")
    check_prompt(edited_prompt, "edited_prompt")
    check_count("tune_steps", tune_steps)
    pipe.check_steps(num_inference_steps)
    check_mixed_precision(mixed_precision)
    if guidance_scale is None:
        guidance_scale = edit_guidance(pipe)
    check_number("guidance_scale", guidance_scale)
    pipe.check_size(*frames.shape[:3])
    pipe.check_context(frames.shape[0])
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
    with progress_bars(pipe, progress):
        latents = pipe.encode_video(frames, generator=torch.Generator().manual_seed(seed))
        noise = inverted_latents(pipe, latents, num_inference_steps, cache_dir)

        def sample(prompt, guidance):  # from the inverted noise of the source video
            out = pipe(
                prompt,
                num_frames=frames.shape[0],
                height=frames.shape[1],
                width=frames.shape[2],
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance,
                latents=noise,
            )
            return to_uint8(out.frames[0])

        recon = sample(source_prompt, 1.0)
        edit = sample(edited_prompt, guidance_scale)
    return EditResult(frames, recon, edit, tuning)


def edit_guidance(pipe: SimDAPipeline) -> float:
    """The guidance an edit uses by default: the model's recommendation
    (``edit_guidance_scale`` in its sampling settings), else ``RELEASED_GUIDANCE``."""
    return pipe.config.sampling.get("edit_guidance_scale", RELEASED_GUIDANCE)
