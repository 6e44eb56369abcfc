"""Shared checks of the latent-shift attention backends against the reference.

Inputs sit between NaN guards, so an unmasked read past their ends fails (even one whose value
is then multiplied by a zero weight, which would pass silently and may fault on a GPU). Errors
are measured against a float64 ground truth; PyTorch's own error at the input dtype sets the
bar (at most 2x, FlagAttention's rule) with a floor at the dtype's usual tolerance.
"""

import math

import torch

import simda_kernels

# (layout, dtype, token_order, frames, height, width, head_dim): every layout and token order,
# F from 1 to 9, odd and non-square grids, N from 1 to 100, D from 8 to 128 (above: the head
# dim tests), fp32 and fp16 (the interpreter's bf16 products are wrong; bf16 runs on GPUs).
CASES = [
    ("paper", torch.float32, "raster", 3, 7, 11, 40),
    ("paper", torch.float32, "class_major", 2, 10, 10, 80),
    ("paper", torch.float16, "grouped", 9, 5, 7, 24),
    ("paper", torch.float16, "raster", 1, 1, 1, 40),
    ("paper", torch.float32, "grouped", 5, 3, 9, 128),
    ("released", torch.float32, "raster", 2, 1, 7, 8),
    ("released", torch.float32, "raster", 7, 5, 13, 40),
    ("released", torch.float16, "class_major", 3, 8, 8, 80),
    ("released", torch.float32, "grouped", 6, 9, 3, 16),
    ("tav", torch.float32, "raster", 1, 8, 8, 80),
    ("tav", torch.float32, "class_major", 4, 10, 10, 8),
    ("tav", torch.float16, "grouped", 4, 7, 11, 40),
]


def case_id(case):
    return "-".join(map(str, case)).replace("torch.", "")


def guarded(t):
    """t (same values and strides) in the middle of a NaN-filled buffer three times its size:
    a read past either end of t that is not masked off brings NaN into the result."""
    span = 1 + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride(), strict=True))
    buffer = torch.full((3 * span,), math.nan, dtype=t.dtype, device=t.device)
    out = buffer.as_strided(t.shape, t.stride(), span)
    out.copy_(t)
    return out


def make_qkv(frames, height, width, head_dim, dtype, device="cpu", batch=1, heads=1):
    """q, k, v in the model's layout: (B*F, N, heads, D) memory viewed as (B*F, heads, N, D),
    each guarded by NaN on both sides."""
    shape = (batch * frames, height * width, heads, head_dim)
    return [guarded(torch.randn(shape, device=device).to(dtype).transpose(1, 2)) for _ in range(3)]


def tolerance(dtype):
    return {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}[dtype]


def compare_with_reference(
    q, k, v, frames, height, width, layout, order="raster", scale=None, backend="triton", grads=True
):
    """The backend's output (and gradients) against the float64 reference."""
    dtype = q.dtype
    kwargs = dict(scale=scale, token_order=order)
    args = (frames, height, width, layout)
    grad = guarded(torch.randn_like(q))
    leaves = [t.detach().requires_grad_(grads) for t in (q, k, v)]
    out = simda_kernels.latent_shift_attention(*leaves, *args, backend=backend, **kwargs)
    got = [out, *(torch.autograd.grad(out, leaves, grad) if grads else ())]
    exact = [t.detach().double().requires_grad_(grads) for t in (q, k, v)]
    want = simda_kernels.latent_shift_attention(*exact, *args, backend="reference", **kwargs)
    wanted = [want, *(torch.autograd.grad(want, exact, grad.double()) if grads else ())]
    low = [t.detach().float().to(dtype).requires_grad_(grads) for t in (q, k, v)]
    base = simda_kernels.latent_shift_attention(*low, *args, backend="reference", **kwargs)
    bases = [base, *(torch.autograd.grad(base, low, grad) if grads else ())]
    for name, g, ref, b in zip(("out", "dq", "dk", "dv"), got, wanted, bases, strict=False):
        assert g.dtype == dtype and g.shape == ref.shape, name
        assert torch.isfinite(g).all(), f"{name}: NaN (unwritten, or read out of bounds)"
        err = (g.double() - ref).abs().max().item()
        bar = max(2 * (b.double() - ref).abs().max().item(), tolerance(dtype))
        assert err <= bar, f"{name}: max error {err:.2e} > {bar:.2e}"


def check_against_reference(
    layout, dtype, order, frames, height, width, head_dim, device="cpu", batch=1, heads=1, **kw
):
    q, k, v = make_qkv(frames, height, width, head_dim, dtype, device, batch, heads)
    compare_with_reference(q, k, v, frames, height, width, layout, order, **kw)
