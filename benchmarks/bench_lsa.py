"""Latent-shift attention: naive vs SDPA on pre-concatenated keys vs the fused Triton kernel.

    python -m benchmarks.bench_lsa [--dtype fp16 bf16] [--json out.json]

One run, one card: the six SD-1.5 shapes of SPEC section 6 (B=2, 8 heads), forward and
forward+backward medians (triton.testing.do_bench), the forward's peak extra memory, TFLOP/s
(4*B*F*heads*N*2N*D per forward) against this card's bf16 matmul rate measured in the same run.
Without a GPU it runs tiny shapes on CPU (interpreter off: reference paths only) as a smoke test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

import simda_kernels
from simda_kernels import reference

GPU_SHAPES = [  # (frames, tokens, head_dim, height, width)
    (16, 1024, 40, 32, 32),
    (16, 256, 80, 16, 16),
    (16, 4096, 40, 64, 64),
    (16, 1024, 80, 32, 32),
    (16, 256, 160, 16, 16),
    (24, 4096, 40, 64, 64),
]
CPU_SHAPES = [(4, 64, 40, 8, 8), (4, 16, 80, 4, 4)]
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def naive(q, k, v, frames, height, width, layout="paper"):
    """What SimDA implementations do: gather the shifted frame, concatenate, SDPA."""
    kk = reference.gather_shifted_kv(k, frames, height, width, layout)
    vv = reference.gather_shifted_kv(v, frames, height, width, layout)
    return F.scaled_dot_product_attention(q, kk, vv)


def bench_ms(fn, device) -> float:
    if device == "cuda":
        import triton.testing

        return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
    times = []
    for _ in range(5):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def peak_extra_mib(fn, device) -> float | None:
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def matmul_tflops(device, dtype=torch.bfloat16) -> float | None:
    if device != "cuda":
        return None
    a = torch.randn(8192, 8192, device=device, dtype=dtype)
    ms = bench_ms(lambda: a @ a, device)
    return 2 * 8192**3 / ms / 1e9


def run_shape(frames, n, d, height, width, dtype, device, batch=2, heads=8):
    shape = (batch * frames, n, heads, d)  # the model's memory layout
    q, k, v = (torch.randn(shape, device=device, dtype=dtype).transpose(1, 2) for _ in range(3))
    kk = reference.gather_shifted_kv(k, frames, height, width, "paper")
    vv = reference.gather_shifted_kv(v, frames, height, width, "paper")
    grad = torch.randn_like(q)
    fused_backend = "triton" if device == "cuda" else "reference"

    def fused():
        return simda_kernels.latent_shift_attention(
            q, k, v, frames, height, width, backend=fused_backend
        )

    paths = {
        "naive": lambda: naive(q, k, v, frames, height, width),
        "sdpa_preconcat": lambda: F.scaled_dot_product_attention(q, kk, vv),
        "self_attn_N": lambda: F.scaled_dot_product_attention(q, k, v),
        "fused": fused,
    }
    row = {"frames": frames, "N": n, "D": d, "dtype": str(dtype).split(".")[-1]}
    for name, fn in paths.items():
        row[f"{name}_ms"] = bench_ms(fn, device)
        row[f"{name}_peak_mib"] = peak_extra_mib(fn, device)
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]

    def fwd_bwd(fn_of):
        def run():
            out = fn_of(*leaves)
            torch.autograd.grad(out, leaves, grad)

        return run

    row["naive_fwdbwd_ms"] = bench_ms(
        fwd_bwd(lambda q, k, v: naive(q, k, v, frames, height, width)), device
    )
    row["fused_fwdbwd_ms"] = bench_ms(
        fwd_bwd(
            lambda q, k, v: simda_kernels.latent_shift_attention(
                q, k, v, frames, height, width, backend=fused_backend
            )
        ),
        device,
    )
    flops = 4 * batch * frames * heads * n * 2 * n * d
    row["fused_tflops"] = flops / row["fused_ms"] / 1e9
    return row


def markdown(rows, matmul) -> str:
    lines = [
        "| dtype | F | N | D | naive ms | SDPA pre-concat ms | fused ms | fused / pre-concat "
        "| naive / fused | fwd+bwd naive / fused | peak MiB naive / self-attn / fused "
        "| fused TFLOP/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        peaks = " / ".join(
            "-" if r[f"{p}_peak_mib"] is None else f"{r[f'{p}_peak_mib']:.0f}"
            for p in ("naive", "self_attn_N", "fused")
        )
        util = "" if matmul is None else f" ({100 * r['fused_tflops'] / matmul:.0f}% of matmul)"
        lines.append(
            f"| {r['dtype']} | {r['frames']} | {r['N']} | {r['D']} | {r['naive_ms']:.3f} | "
            f"{r['sdpa_preconcat_ms']:.3f} | {r['fused_ms']:.3f} | "
            f"{r['fused_ms'] / r['sdpa_preconcat_ms']:.2f} | {r['naive_ms'] / r['fused_ms']:.2f} | "
            f"{r['naive_fwdbwd_ms'] / r['fused_fwdbwd_ms']:.2f} | {peaks} | "
            f"{r['fused_tflops']:.1f}{util} |"
        )
    speedups = [r["naive_ms"] / r["fused_ms"] for r in rows]
    lines.append(
        f"\nforward geometric-mean speed-up over naive: {statistics.geometric_mean(speedups):.2f}x"
    )
    return "\n".join(lines)


def parse_cli(doc: str, argv=None):
    """(arguments, device, card name) of a kernel benchmark's command line."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--dtype", nargs="+", default=["fp16", "bf16"], choices=tuple(DTYPES))
    parser.add_argument("--json", help="write the raw rows here")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    card = torch.cuda.get_device_name() if device == "cuda" else "CPU (smoke run, reference only)"
    return args, device, card


def write_json(path: str | None, **payload) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(payload, f, indent=1)


def main(argv=None) -> int:
    args, device, card = parse_cli(__doc__, argv)
    matmul = matmul_tflops(device)
    print(f"# latent-shift attention on {card}, torch {torch.__version__}")
    if matmul:
        print(f"bf16 8192^3 matmul: {matmul:.0f} TFLOP/s")
    rows = [
        run_shape(*shape, DTYPES[dt], device)
        for dt in args.dtype
        for shape in (GPU_SHAPES if device == "cuda" else CPU_SHAPES)
    ]
    print(markdown(rows, matmul))
    write_json(args.json, card=card, matmul_tflops=matmul, rows=rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
