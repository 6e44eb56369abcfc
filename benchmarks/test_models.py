"""Model level: SimDA (naive, LSA through FlexAttention, optimized, compiled) against the
Tune-A-Video and LVDM architectures on the same SD-1.5-shaped UNet (GPU) or the tiny preset
(CPU).

    pytest benchmarks/test_models.py --benchmark-only --benchmark-json out/models.json

- unet_step: one text-to-video UNet call with CFG (B=2 x 16 frames, 32x32 latents = 256^2)
- sampling: 50 DDIM steps with CFG plus the VAE decode of the 16 frames
- edit_train_step: forward+backward of the editing loss (24 frames, 64x64 latents = 512^2,
  batch 1), gradient checkpointing on and off
Each records tuned parameters and peak memory in extra_info.
"""

import pytest
import torch

import simda
from benchmarks.common import (
    ARCHS,
    COMPILE,
    DEVICE,
    DTYPE,
    GPU,
    SHAPES,
    build_arch,
    build_vae,
    run_benchmark,
    scheduler,
)

_CACHE = {}


def model(arch):
    if arch == "simda_compiled" and not COMPILE:
        pytest.skip("torch.compile runs on GPU (SIMDA_BENCH_COMPILE=1 to force)")
    if arch not in _CACHE:
        _CACHE.clear()  # one SD-sized model in memory at a time
        torch.cuda.empty_cache() if GPU else None
        _CACHE[arch] = build_arch(arch)
    return _CACHE[arch]


def info(arch, m):
    return {
        "arch": arch,
        "tuned_parameters": simda.count_parameters(m)["trainable"],
        "preset": SHAPES.preset,
    }


def text(batch):
    return torch.randn(batch, *SHAPES.text, device=DEVICE, dtype=DTYPE)


@pytest.mark.parametrize("arch", ARCHS)
def test_unet_step(benchmark, arch):
    m = model(arch).eval()
    b, f, h, w = SHAPES.t2v
    x = torch.randn(b, 4, f, h, w, device=DEVICE, dtype=DTYPE)
    cond = text(b)
    with torch.no_grad():
        run_benchmark(
            benchmark,
            lambda: m(x, 500, cond).sample,
            measure="unet_step",
            shape=f"{b}x{f}x{h}x{w}",
            **info(arch, m),
        )


@pytest.mark.parametrize("arch", ARCHS)
def test_sampling(benchmark, arch):
    m = model(arch).eval()
    vae = build_vae()
    sched = scheduler()
    b, f, h, w = SHAPES.t2v
    cond, uncond = text(1), text(1)

    def sample():
        sched.set_timesteps(SHAPES.sampling_steps, device=DEVICE)
        x = torch.randn(1, 4, f, h, w, device=DEVICE, dtype=DTYPE)
        for t in sched.timesteps:
            eps_u, eps_c = m(torch.cat([x, x]), t, torch.cat([uncond, cond])).sample.chunk(2)
            x = sched.step(eps_u + 7.5 * (eps_c - eps_u), t, x).prev_sample
        frames = x[0].transpose(0, 1) / vae.config.scaling_factor
        return torch.cat([vae.decode(frames[i : i + 8]).sample for i in range(0, f, 8)])

    with torch.no_grad():
        run_benchmark(
            benchmark,
            sample,
            measure="sampling",
            shape=f"{f}x{h * 8}x{w * 8}",
            steps=SHAPES.sampling_steps,
            **info(arch, m),
        )


@pytest.mark.parametrize("checkpointing", [True, False], ids=["ckpt", "no_ckpt"])
@pytest.mark.parametrize("arch", ["simda_naive", "simda_flex", "simda_optimized", "tav", "lvdm"])
def test_edit_train_step(benchmark, arch, checkpointing):
    if arch == "simda_flex" and not GPU:
        pytest.skip("FlexAttention has no CPU backward")
    m = model(arch).train()
    m.enable_gradient_checkpointing() if checkpointing else m.disable_gradient_checkpointing()
    b, f, h, w = SHAPES.edit
    x = torch.randn(b, 4, f, h, w, device=DEVICE, dtype=DTYPE)
    cond = text(b)
    params = [p for p in m.parameters() if p.requires_grad]

    def step():
        for p in params:
            p.grad = None
        m(x, 500, cond).sample.float().square().mean().backward()

    try:
        run_benchmark(
            benchmark,
            step,
            measure="edit_train_step",
            shape=f"{b}x{f}x{h}x{w}",
            checkpointing=checkpointing,
            **info(arch, m),
        )
    finally:
        m.disable_gradient_checkpointing()
        m.eval()
