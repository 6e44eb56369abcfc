"""Kernel level: latent-shift attention (naive, SDPA on pre-concatenated keys, FlexAttention,
the fused Triton kernel) and the temporal adapter, each path on the same data.

pytest benchmarks/test_kernels.py --benchmark-only --benchmark-json out/kernels.json
"""

import pytest
import torch
import torch.nn.functional as F

import simda_kernels
from benchmarks.bench_adapter import GPU_SHAPES as ADAPTER_GPU_SHAPES
from benchmarks.bench_adapter import eager as adapter_eager
from benchmarks.bench_lsa import GPU_SHAPES as LSA_GPU_SHAPES
from benchmarks.bench_lsa import naive as lsa_naive
from benchmarks.common import DEVICE, GPU, run_benchmark
from benchmarks.kernel_bench import compile_fresh
from simda_kernels import lsa, lsa_flex, reference

DTYPES = [torch.float16, torch.bfloat16] if GPU else [torch.float32]
LSA_SHAPES = LSA_GPU_SHAPES if GPU else [(2, 16, 16, 4, 4)]
ADAPTER_SHAPES = ADAPTER_GPU_SHAPES if GPU else [(1, 16, 2, 4, 4)]
PASSES = ["fwd", "fwdbwd"]


def _ids(shape):
    return "x".join(map(str, shape))


def _run(benchmark, fn, leaves, grad, pass_, **extra):
    if pass_ == "fwd":
        with torch.no_grad():
            run_benchmark(benchmark, fn, **extra)
    else:
        run_benchmark(benchmark, lambda: torch.autograd.grad(fn(), leaves, grad), **extra)


@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("shape", LSA_SHAPES, ids=_ids)
@pytest.mark.parametrize("path", ["naive", "sdpa_preconcat", "flex", "fused"])
def test_latent_shift_attention(benchmark, path, shape, dtype, pass_):
    frames, n, d, h, w = shape
    if path == "fused" and not lsa.HAS_TRITON:
        pytest.skip("triton is not installed")
    if path == "flex" and not lsa_flex.HAS_FLEX:
        pytest.skip("no FlexAttention in this torch")
    if path == "flex" and pass_ == "fwdbwd" and not GPU:
        pytest.skip("FlexAttention has no CPU backward")
    if path == "sdpa_preconcat" and pass_ == "fwdbwd":
        pytest.skip("the pre-concatenated baseline is a forward bound")
    batch, heads = 2, 8
    q, k, v = (
        torch.randn(batch * frames, n, heads, d, device=DEVICE, dtype=dtype)
        .transpose(1, 2)
        .requires_grad_()
        for _ in range(3)
    )
    kk = reference.gather_shifted_kv(k.detach(), frames, h, w, "paper")
    vv = reference.gather_shifted_kv(v.detach(), frames, h, w, "paper")
    fns = {
        "naive": lambda: lsa_naive(q, k, v, frames, h, w),
        "sdpa_preconcat": lambda: F.scaled_dot_product_attention(q, kk, vv),
        "flex": lambda: simda_kernels.latent_shift_attention(q, k, v, frames, h, w, backend="flex"),
        "fused": lambda: simda_kernels.latent_shift_attention(
            q, k, v, frames, h, w, backend="triton"
        ),
    }
    flops = 4 * batch * frames * heads * n * 2 * n * d * (1 if pass_ == "fwd" else 3.5)
    _run(
        benchmark,
        fns[path],
        (q, k, v),
        torch.randn_like(q),
        pass_,
        op="lsa",
        path=path,
        shape=_ids(shape),
        direction=pass_,
        flops=flops,
    )


@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("shape", ADAPTER_SHAPES, ids=_ids)
@pytest.mark.parametrize("path", ["eager", "compiled", "fused"])
def test_temporal_adapter(benchmark, path, shape, dtype, pass_):
    b, c, frames, h, w = shape
    if path == "compiled" and not GPU:
        pytest.skip("torch.compile is measured on GPU only")
    if path == "fused" and not GPU:
        pytest.skip("the CUDA extension needs a GPU")
    r = c // 2
    x = torch.randn(b, frames, c, h, w, device=DEVICE, dtype=dtype).transpose(1, 2)
    p = [torch.randn(s, device=DEVICE, dtype=dtype) * 0.05 for s in ((r, c), (r,), (r, 3), (r,))]
    leaves = [x.requires_grad_(), *[t.requires_grad_() for t in p]]
    compiled = compile_fresh(adapter_eager) if path == "compiled" else None
    fns = {
        "eager": lambda: adapter_eager(*leaves),
        "compiled": lambda: compiled(*leaves),
        "fused": lambda: simda_kernels.fused_temporal_adapter(*leaves, backend="cuda"),
    }
    grad = torch.randn(b, r, frames, h, w, device=DEVICE, dtype=dtype)
    moved = (c + r) * b * frames * h * w * x.element_size()
    _run(
        benchmark,
        fns[path],
        leaves,
        grad,
        pass_,
        op="temporal_adapter",
        path=path,
        shape=_ids(shape),
        direction=pass_,
        bytes=moved,
        flops=2 * b * frames * h * w * c * r,
    )
