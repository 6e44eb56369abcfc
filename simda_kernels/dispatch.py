"""Backend selection for the public ops."""

from __future__ import annotations

import json
import math
import numbers
import os
import warnings

import torch

from simda_kernels import lsa, reference, selfcheck, temporal_adapter
from simda_kernels._checks import check_backend, check_lsa_inputs, check_temporal_adapter_inputs

LSA_BACKENDS = ("auto", "reference", "triton")
ADAPTER_BACKENDS = ("auto", "reference", "cuda")
_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


#: Kernel benchmark results: each ``lsa-*.json`` here (e.g. ``lsa-sm90.json``) is the ``--json``
#: output of ``python -m benchmarks.bench_lsa`` on one card, which records its capability.
MEASURED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "measured")
#: A measured row counts only if the kernel agreed with the baseline there (forward output
#: with SDPA's; for training also the gradients with autograd through the naive path).
TRUSTED_ERROR = {"float16": 1e-2, "bfloat16": 5e-2, "float32": 1e-4}


def load_measurements(directory: str = MEASURED_DIR) -> dict[tuple[int, int], tuple[dict, ...]]:
    """The ``bench_lsa`` rows of the ``lsa-*.json`` files in ``directory``, by the GPU
    capability each file records. Read once, at import, so that the rule is plain Python over
    constants when ``torch.compile`` traces ``backend="auto"``."""
    found: dict[tuple[int, int], tuple[dict, ...]] = {}
    names = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
    for name in names:
        if not (name.startswith("lsa-") and name.endswith(".json")):
            continue
        try:
            with open(os.path.join(directory, name)) as f:
                data = json.load(f)
            capability = tuple(int(x) for x in data["capability"])
            rows = tuple(data["rows"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            warnings.warn(f"ignoring {name} in {directory}: {exc!r}", RuntimeWarning, stacklevel=2)
            continue
        found[capability] = found.get(capability, ()) + rows
    return found


MEASUREMENTS = load_measurements()


def _trusted(err, dtype_name: str) -> bool:
    return err is not None and err <= TRUSTED_ERROR.get(dtype_name, 0.0)  # NaN: False


def triton_wins(
    n_tokens: int, head_dim: int, dtype: torch.dtype, capability, backward: bool = False
) -> bool:
    """Whether the fused kernel was measured faster than gather+concat+SDPA at this shape.

    The rule reads ``MEASUREMENTS[capability]``: among the rows of the same dtype and head dim,
    the one with the nearest N decides if it is within a factor of 2. It compares forward
    times, or forward+backward times when ``backward``. That row must have no errors and its
    check against the baseline must have passed (the forward output, and for ``backward`` the
    gradients too); otherwise the reference is used. Rows are measured for the paper layout
    in raster token order at F = 16 and 24; the rule applies them to every layout, order and
    F. Without a measurement for this GPU architecture ``backend="auto"`` keeps the reference,
    so it is never slower than the naive path; ``backend="triton"`` forces the kernel.
    """
    name = str(dtype).split(".")[-1]
    rows = [
        r
        for r in MEASUREMENTS.get(tuple(capability), ())
        if r.get("dtype") == name and r.get("D") == head_dim and r.get("N", 0) > 0
    ]
    if not rows or n_tokens < 1:
        return False
    row = min(rows, key=lambda r: abs(math.log(r["N"] / n_tokens)))
    if abs(math.log(row["N"] / n_tokens)) > math.log(2) or row.get("errors"):
        return False
    if not _trusted(row.get("fused_max_err"), name):
        return False
    if backward and not _trusted(row.get("fused_grad_max_err"), name):
        return False
    suffix = "fwdbwd_ms" if backward else "ms"
    fused, naive = row.get(f"fused_{suffix}"), row.get(f"naive_{suffix}")
    return fused is not None and naive is not None and fused < naive


def _lsa_backend(backend, q, needs_grad=False):
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
            q.shape[2],
            q.shape[-1],
            q.dtype,
            torch.cuda.get_device_capability(q.device),
            backward=needs_grad,
        )
        and selfcheck.passed(
            "latent_shift_attention", q.device, q.dtype, selfcheck.check_latent_shift_attention
        )
    ):
        return "triton"
    return "reference"


def _scale(scale) -> float:
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite number (or None for 1/sqrt(D)), got {scale!r}")
    return float(scale)


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
    frames, height, width = int(frames), int(height), int(width)  # e.g. numpy ints
    if token_order not in lsa.TOKEN_ORDERS:
        raise ValueError(f"token_order must be one of {lsa.TOKEN_ORDERS}, got {token_order!r}")
    scale = q.shape[-1] ** -0.5 if scale is None else _scale(scale)
    class_major = token_order == "class_major"
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    if _lsa_backend(backend, q, needs_grad) == "triton":
        q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
        return torch.ops.simda.latent_shift_attention(
            q, k, v, frames, height, width, layout, scale, class_major
        )[0]
    if class_major:
        return lsa.reference_forward(q, k, v, frames, height, width, layout, scale, True)[0]
    return reference.latent_shift_attention(q, k, v, frames, height, width, layout, scale)


def _no_kernels_for(x) -> str | None:
    """Why the built extension cannot run on x's GPU (built only for newer architectures)."""
    archs = temporal_adapter.extension_archs()
    capability = torch.cuda.get_device_capability(x.device)
    if temporal_adapter.runs_on(capability, archs) is not False:
        return None
    why = temporal_adapter.arch_fit(capability, archs)
    return f"simda_kernels._C was {why} pip install --no-build-isolation ."


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
        why = _no_kernels_for(x)
        if why:
            raise RuntimeError(f"backend='cuda': {why}")
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
    why = _no_kernels_for(x)
    if why:
        warn_once("adapter-no-arch", f"{why}; the temporal adapter falls back to the reference")
        return "reference"
    check = selfcheck.check_temporal_adapter
    return (
        "cuda"
        if selfcheck.passed("fused_temporal_adapter", x.device, x.dtype, check)
        else "reference"
    )


def fused_temporal_adapter(x, w_down, b_down, conv_w, conv_b, act="gelu", backend="auto"):
    """``TConv(act(W_down x + b))`` (see ``simda_kernels.reference.fused_temporal_adapter``).

    x: (B, C, F, H, W) -> (B, R, F, H, W), laid out in x's order of frames and channels (for
    the model's frame-major x a view of a (B, F, R, H, W) tensor). backend: ``"auto"`` (the
    CUDA extension for CUDA tensors when it is built for the GPU and passed its self-check
    there, ``simda_kernels.selfcheck``; else the reference, with a warning on CUDA), ``"cuda"``
    (force the extension) or ``"reference"``.
    """
    check_backend(backend, ADAPTER_BACKENDS)
    check_temporal_adapter_inputs(x, w_down, b_down, conv_w, conv_b, act, reference.TEMPORAL_ACTS)
    if _adapter_backend(backend, x) == "cuda":
        return torch.ops.simda.fused_temporal_adapter(x, w_down, b_down, conv_w, conv_b, act)
    return reference.fused_temporal_adapter(x, w_down, b_down, conv_w, conv_b, act)
