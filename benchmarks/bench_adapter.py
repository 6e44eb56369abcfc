"""Temporal adapter: eager PyTorch vs torch.compile vs the fused CUDA kernel.

    python -m benchmarks.bench_adapter [--dtype fp16 bf16] [--json out.json]

One run, one card: SD-1.5 shapes (B=2 x 16 frames at 32x32 and 64x64 latents, C in
{320, 640, 1280}; 2 x 24 frames at 64x64), forward and forward+backward medians, activation
memory saved for backward, achieved bandwidth (read x, write y) and TFLOP/s against this card's
copy and bf16 matmul rates measured in the same run. x is diffusers' (B*F, C, H, W) map seen as
a video, as in the model: the fused op writes y frame-major and reads the gradient in that
layout, so no path here copies around the kernel. "whole-clip ms" is the fused forward
with every block walking all F frames (SIMDA_ADAPTER_FRAMES_PER_BLOCK=F), beside the automatic
choice, which splits the frames where the grid is small; "narrow ms" the fused forward with the
narrow tiles (64 channels x 64 tokens, SIMDA_ADAPTER_NARROW_TILES=1) instead of the 128-channel
ones sm_80 and sm_90 get, which doubles the blocks of a small grid. Eager is the module as
diffusers-style code writes it: 1x1x1 Conv3d, GELU, depthwise (3,1,1) Conv3d. Without a GPU:
tiny CPU smoke run.
"""

from __future__ import annotations

import os
from unittest import mock

import torch
import torch.nn.functional as F

import simda_kernels
from benchmarks.kernel_bench import (
    DTYPES,
    attempt,
    bench_ms,
    cell,
    compile_fresh,
    copy_tbps,
    geomean,
    matmul_tflops,
    max_err,
    num,
    parse_cli,
    ratio,
    run_table,
)

GPU_SHAPES = [  # (B, C, F, H, W)
    (2, 320, 16, 32, 32),
    (2, 320, 16, 64, 64),
    (2, 640, 16, 32, 32),
    (2, 640, 16, 64, 64),
    (2, 1280, 16, 32, 32),
    (2, 1280, 16, 64, 64),
    (2, 320, 24, 64, 64),
]
CPU_SHAPES = [(1, 32, 4, 8, 8)]


def eager(x, w_down, b_down, conv_w, conv_b):
    r, c = w_down.shape
    h = F.gelu(F.conv3d(x, w_down.view(r, c, 1, 1, 1), b_down))
    return F.conv3d(h, conv_w.view(r, 1, 3, 1, 1), conv_b, padding=(1, 0, 0), groups=r)


def saved_mib(fn, *leaves) -> float:
    """Bytes autograd keeps for backward beyond the inputs themselves."""
    inputs = {t.data_ptr() for t in leaves}
    total = [0]

    def pack(t):
        if t.data_ptr() not in inputs:
            total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*leaves)
    return total[0] / 2**20


def run_shape(b, c, frames, h, w, dtype, device):
    r = c // 2
    # diffusers' (B*F, C, H, W) feature map seen as a video: no copy.
    x = torch.randn(b, frames, c, h, w, device=device, dtype=dtype).transpose(1, 2)
    p = [torch.randn(s, device=device, dtype=dtype) * 0.05 for s in ((r, c), (r,), (r, 3), (r,))]
    fused_backend = "cuda" if device == "cuda" else "reference"

    def fused(x, *p):
        return simda_kernels.fused_temporal_adapter(x, *p, backend=fused_backend)

    compiled = compile_fresh(eager) if device == "cuda" else eager
    paths = {"eager": eager, "compiled": compiled, "fused": fused}
    row = {"shape": f"{b}x{c}x{frames}x{h}x{w}", "dtype": str(dtype).split(".")[-1]}
    leaves = [x.detach().requires_grad_(), *[t.requires_grad_() for t in p]]
    # the gradient as the model's up-projection hands it back: frame-major, like y
    grad = torch.randn(b, frames, r, h, w, device=device, dtype=dtype).transpose(1, 2)
    with torch.no_grad():
        attempt(row, "fused_max_err", lambda: max_err(fused(x, *p), eager(x, *p)))
    for name, fn in paths.items():
        with torch.no_grad():
            attempt(row, f"{name}_ms", lambda fn=fn: bench_ms(lambda: fn(x, *p), device))

        def step(fn=fn):
            torch.autograd.grad(fn(*leaves), leaves, grad)

        attempt(row, f"{name}_fwdbwd_ms", lambda step=step: bench_ms(step, device))
        attempt(row, f"{name}_saved_mib", lambda fn=fn: saved_mib(fn, *leaves))
    # the extension reads SIMDA_ADAPTER_FRAMES_PER_BLOCK and SIMDA_ADAPTER_NARROW_TILES at
    # every call
    with torch.no_grad(), mock.patch.dict(os.environ, SIMDA_ADAPTER_FRAMES_PER_BLOCK=str(frames)):
        attempt(row, "fused_whole_clip_ms", lambda: bench_ms(lambda: fused(x, *p), device))
    with torch.no_grad(), mock.patch.dict(os.environ, SIMDA_ADAPTER_NARROW_TILES="1"):
        attempt(row, "fused_narrow_ms", lambda: bench_ms(lambda: fused(x, *p), device))
    moved = (x.numel() + b * r * frames * h * w) * x.element_size()
    row["fused_gbps"] = ratio(moved / 1e6, row["fused_ms"])
    row["fused_tflops"] = ratio(2 * b * frames * h * w * c * r / 1e9, row["fused_ms"])
    return row


def floor_ms(b, c, frames, h, w, element_size, copy, matmul):
    """Read x once and write y once at the copy rate, or the GEMM at the matmul rate."""
    tokens = b * frames * h * w
    moved = (c + c // 2) * tokens * element_size
    return max(moved / (copy * 1e9), 2 * tokens * c * (c // 2) / (matmul * 1e9))


HEADER = (
    "| dtype | B x C x F x H x W | fused max err | eager ms | compiled ms | fused ms "
    "| whole-clip ms | narrow ms | eager / fused | compiled / fused | fused / floor "
    "| fwd+bwd eager / fused | saved MiB eager / fused | fused GB/s | fused TFLOP/s |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def line(r, copy, matmul) -> str:
    bw, tf = num(r["fused_gbps"], ".0f"), num(r["fused_tflops"], ".1f")
    if copy is not None and r["fused_gbps"] is not None:
        bw += f" ({100 * r['fused_gbps'] / 1e3 / copy:.0f}%)"
    if matmul is not None and r["fused_tflops"] is not None:
        tf += f" ({100 * r['fused_tflops'] / matmul:.0f}%)"
    return (
        f"| {r['dtype']} | {r['shape']} | {cell(r, 'fused_max_err', '.1e')} "
        f"| {cell(r, 'eager_ms')} | {cell(r, 'compiled_ms')} | {cell(r, 'fused_ms')} "
        f"| {cell(r, 'fused_whole_clip_ms')} | {cell(r, 'fused_narrow_ms')} "
        f"| {num(ratio(r['eager_ms'], r['fused_ms']), '.2f')} "
        f"| {num(ratio(r['compiled_ms'], r['fused_ms']), '.2f')} "
        f"| {num(ratio(r['fused_ms'], r['floor_ms']), '.1f')} "
        f"| {num(ratio(r['eager_fwdbwd_ms'], r['fused_fwdbwd_ms']), '.2f')} "
        f"| {cell(r, 'eager_saved_mib', '.1f')} / {cell(r, 'fused_saved_mib', '.1f')} "
        f"| {bw} | {tf} |"
    )


def main(argv=None) -> int:
    args, device, card = parse_cli(__doc__, argv)
    copy, matmul = copy_tbps(device), matmul_tflops(device)
    print(f"# temporal adapter on {card}, torch {torch.__version__}")
    if copy:
        print(f"device copy: {copy:.2f} TB/s, bf16 8192^3 matmul: {matmul:.0f} TFLOP/s")

    def run_row(shape, dtype):
        row = run_shape(*shape, dtype, device)
        elem = torch.finfo(dtype).bits // 8
        row["floor_ms"] = floor_ms(*shape, elem, copy, matmul) if copy else None
        return row

    shapes = GPU_SHAPES if device == "cuda" else CPU_SHAPES
    rows = run_table(
        args,
        HEADER,
        [(shape, DTYPES[dt]) for dt in args.dtype for shape in shapes],
        run_row,
        lambda r: line(r, copy, matmul),
        card=card,
        copy_tbps=copy,
        matmul_tflops=matmul,
    )
    speedups = [ratio(r["eager_ms"], r["fused_ms"]) for r in rows]
    print(f"\nforward geometric-mean speed-up over eager: {geomean(speedups)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
