"""Shared pieces of the benchmark suite: device mode, shapes, model builders, timers.

GPU mode (a CUDA device is present): SD-1.5-shaped UNets with random weights in fp16, the
shapes of the targets. CPU mode: the tiny preset at tiny shapes, so CI exercises every
benchmark with ``--benchmark-disable``. Every comparison runs in one process on one device.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

import simda
from benchmarks.baselines import build_lvdm, build_tav
from benchmarks.kernel_bench import compile_fresh
from simda.pipelines.t2v import SD_SCHEDULER, TINY_VAE
from simda.presets import unet2d_config

GPU = torch.cuda.is_available()
DEVICE = torch.device("cuda" if GPU else "cpu")
DTYPE = torch.float16 if GPU else torch.float32
COMPILE = os.environ.get("SIMDA_BENCH_COMPILE", "1" if GPU else "0") == "1"
ARCHS = ("simda_naive", "simda_flex", "simda_optimized", "simda_compiled", "tav", "lvdm")


@dataclass(frozen=True)
class ModelShapes:
    preset: str
    t2v: tuple  # (B, F, h, w) latents of one text-to-video UNet step (B=2: CFG)
    text: tuple  # (L, D) text embeddings
    edit: tuple  # (B, F, h, w) latents of one editing training step
    sampling_steps: int
    vae: dict | None  # None: SD's VAE shape


SHAPES = (
    ModelShapes("sd15", (2, 16, 32, 32), (77, 768), (1, 24, 64, 64), 50, None)
    if GPU
    else ModelShapes("tiny", (2, 4, 8, 8), (8, 32), (1, 4, 8, 8), 3, TINY_VAE)
)


def build_arch(name: str, shapes: ModelShapes = SHAPES) -> torch.nn.Module:
    """A video UNet of architecture ``name`` on DEVICE in DTYPE, random weights."""
    if name not in ARCHS:
        raise ValueError(f"unknown architecture {name!r}; one of {ARCHS}")
    torch.manual_seed(0)
    with torch.device(DEVICE):
        unet2d = UNet2DConditionModel(**unet2d_config(shapes.preset))
    unet2d.to(DTYPE)
    if name == "tav":
        return build_tav(unet2d)
    if name == "lvdm":
        return build_lvdm(unet2d)
    model = simda.inflate(unet2d)
    if name == "simda_optimized":
        simda.optimize(
            model,
            attention_backend="triton" if GPU else "reference",
            adapter_backend="cuda" if GPU else "reference",
        )
    if name == "simda_flex":  # FlexAttention for LSA, the fused adapter
        simda.optimize(
            model, attention_backend="flex", adapter_backend="cuda" if GPU else "reference"
        )
    if name == "simda_compiled":
        model = compile_fresh(model) if COMPILE else model
    return model


def build_vae(shapes: ModelShapes = SHAPES) -> AutoencoderKL:
    torch.manual_seed(0)
    with torch.device(DEVICE):
        vae = (
            AutoencoderKL(**shapes.vae)
            if shapes.vae
            else AutoencoderKL(
                block_out_channels=(128, 256, 512, 512),
                down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4,
                layers_per_block=2,
                sample_size=512,
            )
        )
    return vae.to(DTYPE)


def scheduler() -> DDIMScheduler:
    return DDIMScheduler(**SD_SCHEDULER)


def sync():
    if GPU:
        torch.cuda.synchronize()


def median_ms(fn, rounds: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in ms: CUDA events on GPU, perf_counter on CPU."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(rounds):
        if GPU:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def peak_mib(fn) -> float | None:
    """Peak CUDA memory allocated while ``fn`` runs, beyond what was allocated before."""
    if not GPU:
        return None
    sync()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    sync()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def run_benchmark(benchmark, fn, **extra) -> None:
    """pytest-benchmark timing of a synchronised ``fn`` (its own rounds: at least
    ``--benchmark-min-rounds``, more within ``--benchmark-max-time``), after one warm-up call,
    plus the CUDA-event median over as many rounds and the peak memory in ``extra_info``
    (both measured outside the timed rounds)."""

    def synced():
        fn()
        sync()

    benchmark.extra_info.update(extra)
    benchmark.extra_info["device"] = torch.cuda.get_device_name() if GPU else "cpu"
    benchmark.extra_info["dtype"] = str(DTYPE).split(".")[-1]
    disabled = getattr(benchmark, "disabled", False)
    if not disabled:
        synced()  # compile, allocate, autotune: not timed
    benchmark(synced)
    if not disabled:
        rounds = len(benchmark.stats.stats.data)
        benchmark.extra_info["median_ms"] = median_ms(fn, rounds, warmup=0)
        benchmark.extra_info["peak_mib"] = peak_mib(fn)
