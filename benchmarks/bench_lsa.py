"""Latent-shift attention: naive vs SDPA on pre-concatenated keys vs FlexAttention vs the
fused Triton kernel.

    python -m benchmarks.bench_lsa [--dtype fp16 bf16] [--json out.json]

One run, one card: the six SD-1.5 shapes of SPEC section 6 (B=2, 8 heads), forward and
forward+backward medians (triton.testing.do_bench), the forward's peak extra memory, TFLOP/s
(4*B*F*heads*N*2N*D per forward) against this card's bf16 matmul rate measured in the same run.
Each row first checks the fast paths against the baseline: their outputs against SDPA's and
their gradients against autograd through the naive path. Without a GPU it runs tiny shapes on
CPU as a smoke test (the kernel in the Triton interpreter when TRITON_INTERPRET=1, else the
reference; FlexAttention eagerly and forward only). The ``--json`` output, recorded as
``simda_kernels/measured/lsa-sm<XY>.json``, is what ``backend="auto"`` reads.
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F

import simda_kernels
from benchmarks.kernel_bench import (
    DTYPES,
    attempt,
    bench_ms,
    cell,
    geomean,
    matmul_tflops,
    max_err,
    num,
    parse_cli,
    peak_extra_mib,
    ratio,
    run_table,
)
from simda_kernels import lsa, reference

GPU_SHAPES = [  # (frames, tokens, head_dim, height, width)
    (16, 1024, 40, 32, 32),
    (16, 256, 80, 16, 16),
    (16, 4096, 40, 64, 64),
    (16, 1024, 80, 32, 32),
    (16, 256, 160, 16, 16),
    (24, 4096, 40, 64, 64),
]
CPU_SHAPES = [(4, 64, 40, 8, 8), (4, 16, 80, 4, 4)]


def naive(q, k, v, frames, height, width, layout="paper"):
    """What SimDA implementations do: gather the shifted frame, concatenate, SDPA."""
    kk = reference.gather_shifted_kv(k, frames, height, width, layout)
    vv = reference.gather_shifted_kv(v, frames, height, width, layout)
    return F.scaled_dot_product_attention(q, kk, vv)


#: the fast paths, by their column prefix: FlexAttention and the Triton kernel
FAST = ("flex", "fused")


def run_shape(frames, n, d, height, width, dtype, device, batch=2, heads=8):
    shape = (batch * frames, n, heads, d)  # the model's memory layout
    q, k, v = (torch.randn(shape, device=device, dtype=dtype).transpose(1, 2) for _ in range(3))
    kk = reference.gather_shifted_kv(k, frames, height, width, "paper")
    vv = reference.gather_shifted_kv(v, frames, height, width, "paper")
    grad = torch.randn_like(q)
    # On CPU the kernel runs only in the Triton interpreter (TRITON_INTERPRET=1, as in tests).
    fused_backend = "triton" if device == "cuda" or lsa.INTERPRET else "reference"

    def fast(backend):
        def attend(q=q, k=k, v=v):
            return simda_kernels.latent_shift_attention(
                q, k, v, frames, height, width, backend=backend
            )

        return attend

    paths = {
        "naive": lambda: naive(q, k, v, frames, height, width),
        "sdpa_preconcat": lambda: F.scaled_dot_product_attention(q, kk, vv),
        "self_attn_N": lambda: F.scaled_dot_product_attention(q, k, v),
        "flex": fast("flex"),
        "fused": fast(fused_backend),
    }
    row = {"frames": frames, "N": n, "D": d, "dtype": str(dtype).split(".")[-1]}
    for name in FAST:
        attempt(
            row, f"{name}_max_err", lambda f=paths[name]: max_err(f(), paths["sdpa_preconcat"]())
        )
    for name, fn in paths.items():
        attempt(row, f"{name}_ms", lambda fn=fn: bench_ms(fn, device))
        attempt(row, f"{name}_peak_mib", lambda fn=fn: peak_extra_mib(fn, device))
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]

    def fwd_bwd(fn_of):
        return lambda: torch.autograd.grad(fn_of(*leaves), leaves, grad)

    def naive_of(q, k, v):
        return naive(q, k, v, frames, height, width)

    attempt(row, "naive_fwdbwd_ms", lambda: bench_ms(fwd_bwd(naive_of), device))
    for name in FAST:
        if name == "flex" and device != "cuda":
            continue  # FlexAttention has no CPU backward
        attempt(
            row,
            f"{name}_grad_max_err",
            lambda f=paths[name]: max(map(max_err, fwd_bwd(f)(), fwd_bwd(naive_of)())),
        )
        attempt(row, f"{name}_fwdbwd_ms", lambda f=paths[name]: bench_ms(fwd_bwd(f), device))
    flops = 4 * batch * frames * heads * n * 2 * n * d
    row["fused_tflops"] = ratio(flops / 1e9, row["fused_ms"])
    return row


HEADER = (
    "| dtype | F | N | D | max err out / grads: flex, fused | naive ms | SDPA pre-concat ms "
    "| flex ms | fused ms | fused / pre-concat | naive / fused | flex / fused "
    "| fwd+bwd ms naive / flex / fused | peak MiB naive / self-attn / flex / fused "
    "| fused TFLOP/s |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def line(r, matmul) -> str:
    peaks = " / ".join(
        cell(r, f"{p}_peak_mib", ".0f") for p in ("naive", "self_attn_N", "flex", "fused")
    )
    errs = ", ".join(
        f"{cell(r, f'{p}_max_err', '.1e')} / {cell(r, f'{p}_grad_max_err', '.1e')}" for p in FAST
    )
    fwdbwd = " / ".join(cell(r, f"{p}_fwdbwd_ms") for p in ("naive", *FAST))
    util = ""
    if matmul is not None and r["fused_tflops"] is not None:
        util = f" ({100 * r['fused_tflops'] / matmul:.0f}% of matmul)"
    return (
        f"| {r['dtype']} | {r['frames']} | {r['N']} | {r['D']} | {errs} "
        f"| {cell(r, 'naive_ms')} | {cell(r, 'sdpa_preconcat_ms')} | {cell(r, 'flex_ms')} "
        f"| {cell(r, 'fused_ms')} | {num(ratio(r['fused_ms'], r['sdpa_preconcat_ms']), '.2f')} "
        f"| {num(ratio(r['naive_ms'], r['fused_ms']), '.2f')} "
        f"| {num(ratio(r['flex_ms'], r['fused_ms']), '.2f')} | {fwdbwd} | {peaks} "
        f"| {num(r['fused_tflops'], '.1f')}{util} |"
    )


def main(argv=None) -> int:
    args, device, card = parse_cli(__doc__, argv)
    matmul = matmul_tflops(device)
    print(f"# latent-shift attention on {card}, torch {torch.__version__}")
    if matmul:
        print(f"bf16 8192^3 matmul: {matmul:.0f} TFLOP/s")
    shapes = GPU_SHAPES if device == "cuda" else CPU_SHAPES
    rows = run_table(
        args,
        HEADER,
        [(*shape, DTYPES[dt], device) for dt in args.dtype for shape in shapes],
        run_shape,
        lambda r: line(r, matmul),
        card=card,
        capability=list(torch.cuda.get_device_capability()) if device == "cuda" else None,
        torch=torch.__version__,
        date=time.strftime("%Y-%m-%d"),
        command="python -m benchmarks.bench_lsa " + " ".join(argv or sys.argv[1:]),
        matmul_tflops=matmul,
    )
    print()
    for name in FAST:
        speedups = [ratio(r["naive_ms"], r[f"{name}_ms"]) for r in rows]
        print(f"{name}: forward geometric-mean speed-up over naive: {geomean(speedups)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
