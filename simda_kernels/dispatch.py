"""Backend selection for the public ops."""

from __future__ import annotations

import warnings

import torch

from simda_kernels import lsa, reference, temporal_adapter
from simda_kernels._checks import check_backend, check_lsa_inputs, check_temporal_adapter_inputs

LSA_BACKENDS = ("auto", "reference", "triton")
ADAPTER_BACKENDS = ("auto", "reference", "cuda")
_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def triton_wins(n_tokens: int, head_dim: int, dtype: torch.dtype, capability) -> bool:
    """Shapes at which the fused kernel was measured faster than gather+concat+SDPA.

    ``backend="auto"`` uses Triton only there, so it is never slower than the naive path.
    No GPU measurement has been recorded yet (``benchmarks/bench_lsa.py`` produces one), so
    the rule is empty and ``auto`` keeps the reference on every shape; ``backend="triton"``
    forces the kernel.
    """
    return False


def _lsa_backend(backend, q):
    if backend == "reference":
        return "reference"
    fast_ok = lsa.HAS_TRITON and (q.is_cuda or (lsa.INTERPRET and q.device.type == "cpu"))
    if backend == "triton":
        if not lsa.HAS_TRITON:
            raise RuntimeError("backend='triton' needs the triton package, which is not installed")
        if not fast_ok:
            raise ValueError(
                f"backend='triton' needs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1); "
                f"q is on {q.device}"
            )
        if q.dtype == torch.float64:
            raise TypeError("backend='triton' supports fp16, bf16 and fp32; q is float64")
        if q.shape[-1] > lsa.MAX_HEAD_DIM:
            raise ValueError(
                f"backend='triton' supports head dims up to {lsa.MAX_HEAD_DIM}, "
                f"got D = {q.shape[-1]}"
            )
        return "triton"
    if q.is_cuda and not lsa.HAS_TRITON:
        warn_once(
            "lsa-no-triton",
            "triton is not installed: latent_shift_attention falls back "
            "to the PyTorch reference on CUDA",
        )
        return "reference"
    if (
        q.is_cuda
        and q.dtype != torch.float64
        and q.shape[-1] <= lsa.MAX_HEAD_DIM
        and triton_wins(
            q.shape[2], q.shape[-1], q.dtype, torch.cuda.get_device_capability(q.device)
        )
    ):
        return "triton"
    return "reference"


def latent_shift_attention(
    q, k, v, frames, height, width, layout="paper", scale=None, backend="auto", token_order="raster"
):
    """Latent-shift attention (see ``simda_kernels.reference.latent_shift_attention``).

    q, k, v: (B*F, heads, N, D) -> (B*F, heads, N, D).
    backend: ``"auto"`` (Triton on CUDA where measured faster, else the reference),
    ``"triton"`` (force the fused kernel; CPU tensors need ``TRITON_INTERPRET=1``) or
    ``"reference"``. token_order: ``"raster"`` (row-major tokens, the default) or
    ``"class_major"`` (tokens already grouped by shift class, ``reference.class_major_order``).
    """
    check_backend(backend, LSA_BACKENDS)
    check_lsa_inputs(q, k, v, frames, height, width, layout, reference.LSA_LAYOUTS)
    if token_order not in lsa.TOKEN_ORDERS:
        raise ValueError(f"token_order must be one of {lsa.TOKEN_ORDERS}, got {token_order!r}")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    class_major = token_order == "class_major"
    if _lsa_backend(backend, q) == "triton":
        q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
        return torch.ops.simda.latent_shift_attention(
            q, k, v, frames, height, width, layout, scale, class_major
        )[0]
    if class_major:
        return lsa.reference_forward(q, k, v, frames, height, width, layout, scale, True)[0]
    return reference.latent_shift_attention(q, k, v, frames, height, width, layout, scale)


def _adapter_backend(backend, x):
    if backend == "reference":
        return "reference"
    if backend == "cuda":
        if not x.is_cuda:
            raise ValueError(f"backend='cuda' needs CUDA tensors; x is on {x.device}")
        if x.dtype == torch.float64:
            raise TypeError("backend='cuda' supports fp16, bf16 and fp32; x is float64")
        if temporal_adapter.extension() is None:
            raise RuntimeError(
                f"backend='cuda': {temporal_adapter.extension_error()}; build it with "
                "`pip install --no-build-isolation .` or set SIMDA_JIT_BUILD=1"
            )
        return "cuda"
    if not x.is_cuda or x.dtype == torch.float64:
        return "reference"
    if temporal_adapter.extension() is None:
        warn_once(
            "adapter-no-ext",
            f"{temporal_adapter.extension_error()}: the temporal "
            "adapter falls back to the PyTorch reference on CUDA",
        )
        return "reference"
    return "cuda"


def fused_temporal_adapter(x, w_down, b_down, conv_w, conv_b, act="gelu", backend="auto"):
    """``TConv(act(W_down x + b))`` (see ``simda_kernels.reference.fused_temporal_adapter``).

    x: (B, C, F, H, W) -> (B, R, F, H, W). backend: ``"auto"`` (the CUDA extension for CUDA
    tensors when it is built, else the reference, with a warning on CUDA), ``"cuda"`` (force
    the extension) or ``"reference"``.
    """
    check_backend(backend, ADAPTER_BACKENDS)
    check_temporal_adapter_inputs(x, w_down, b_down, conv_w, conv_b, act, reference.TEMPORAL_ACTS)
    if _adapter_backend(backend, x) == "cuda":
        return torch.ops.simda.fused_temporal_adapter(x, w_down, b_down, conv_w, conv_b, act)
    return reference.fused_temporal_adapter(x, w_down, b_down, conv_w, conv_b, act)
