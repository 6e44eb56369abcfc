"""Backend selection for the public ops."""

from __future__ import annotations

import json
import math
import numbers
import os
import warnings

import torch

from simda_kernels import lsa, lsa_flex, reference, selfcheck, temporal_adapter
from simda_kernels._checks import check_backend, check_lsa_inputs, check_temporal_adapter_inputs

LSA_BACKENDS = ("auto", "reference", "flex", "triton")
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


#: the paths of a ``bench_lsa`` row: backend name -> the row's column prefix
MEASURED_PATHS = {"reference": "naive", "flex": "flex", "triton": "fused"}


def measured_backend(
    n_tokens: int, head_dim: int, dtype: torch.dtype, capability, backward: bool = False
) -> str:
    """The LSA backend measured fastest at this shape on this GPU architecture.

    The rule reads ``MEASUREMENTS[capability]``: among the rows of the same dtype and head dim,
    the one with the nearest N decides if it is within a factor of 2. It compares the naive
    path ("reference"), FlexAttention ("flex") and the Triton kernel ("triton") by forward
    time, or forward+backward time when ``backward``, and returns the fastest. A fast path
    counts only where its check against the baseline passed in that row (the forward output,
    and for ``backward`` the gradients too) and, for Triton, on sm_80 or newer; a row where
    any path failed is not used. Rows are measured for the paper layout in raster token order
    at F = 16 and 24; the rule applies them to every layout, order and F.

    Without a usable measurement the answer is "reference". The naive path's speed is known;
    the fast paths have no GPU result here yet, FlexAttention compiles for seconds per new
    shape family, and a guess could be slower than the path it replaces. So ``backend="auto"``
    is never slower than the naive path where a measurement exists and is the naive path where
    none does; ``backend="flex"`` or ``"triton"`` forces a fast path.
    """
    name = str(dtype).split(".")[-1]
    rows = [
        r
        for r in MEASUREMENTS.get(tuple(capability), ())
        if r.get("dtype") == name and r.get("D") == head_dim and r.get("N", 0) > 0
    ]
    if not rows or n_tokens < 1:
        return "reference"
    row = min(rows, key=lambda r: abs(math.log(r["N"] / n_tokens)))
    if abs(math.log(row["N"] / n_tokens)) > math.log(2) or row.get("errors"):
        return "reference"
    suffix = "fwdbwd_ms" if backward else "ms"
    times = {}
    for backend, column in MEASURED_PATHS.items():
        checked = backend == "reference" or (
            _trusted(row.get(f"{column}_max_err"), name)
            and (not backward or _trusted(row.get(f"{column}_grad_max_err"), name))
        )
        if checked and row.get(f"{column}_{suffix}") is not None:
            times[backend] = row[f"{column}_{suffix}"]
    if tuple(capability) < lsa.MIN_CAPABILITY:
        times.pop("triton", None)
    if "reference" not in times:
        return "reference"
    return min(times, key=lambda b: (times[b], b != "reference"))  # a tie keeps the reference


def _sm(capability) -> str:
    return f"sm_{capability[0]}{capability[1]}"


def _check_triton(q) -> None:
    """Why backend='triton' cannot run on q, as an error."""
    if not lsa.HAS_TRITON:
        raise RuntimeError("backend='triton' needs the triton package, which is not installed")
    if not (q.is_cuda or (lsa.INTERPRET and q.device.type == "cpu")):
        raise ValueError(
            f"backend='triton' needs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1); "
            f"q is on {q.device}"
        )
    if q.is_cuda:
        capability = tuple(torch.cuda.get_device_capability(q.device))
        if capability < lsa.MIN_CAPABILITY:
            raise RuntimeError(
                f"backend='triton' needs a GPU of compute capability 8.0 or newer (sm_80+); "
                f"{q.device} is {_sm(capability)}: use backend='flex' or 'reference'"
            )
    if q.dtype == torch.float64:
        raise TypeError("backend='triton' supports fp16, bf16 and fp32; q is float64")
    if q.shape[-1] > lsa.MAX_HEAD_DIM:
        raise ValueError(
            f"backend='triton' supports head dims up to {lsa.MAX_HEAD_DIM}, got D = {q.shape[-1]}"
        )


def _check_flex(q, needs_grad) -> None:
    """Why backend='flex' cannot run on q, as an error."""
    if not lsa_flex.HAS_FLEX:
        raise RuntimeError(
            f"backend='flex' needs torch.nn.attention.flex_attention (torch {torch.__version__})"
        )
    if not (q.is_cuda or q.device.type == "cpu"):
        raise ValueError(f"backend='flex' needs CUDA or CPU tensors; q is on {q.device}")
    if q.dtype == torch.float64:
        raise TypeError("backend='flex' supports fp16, bf16 and fp32; q is float64")
    if q.is_cuda and not lsa.HAS_TRITON:
        raise RuntimeError(
            "backend='flex' on CUDA compiles FlexAttention with torch.compile, which needs the "
            "triton package (not installed)"
        )
    if q.device.type == "cpu" and needs_grad:
        raise NotImplementedError(
            "backend='flex' on CPU computes the forward only (PyTorch's FlexAttention has no "
            "CPU backward): use backend='reference' to train on CPU"
        )


def _lsa_backend(backend, q, needs_grad=False):
    if backend == "triton":
        _check_triton(q)
    elif backend == "flex":
        _check_flex(q, needs_grad)
    if backend != "auto":
        return backend
    if not q.is_cuda:
        return "reference"
    if not lsa.HAS_TRITON:
        warn_once(
            "lsa-no-triton",
            "triton is not installed: latent_shift_attention falls back "
            "to the PyTorch reference on CUDA",
        )
        return "reference"
    if q.dtype == torch.float64 or q.shape[-1] > lsa.MAX_HEAD_DIM:
        return "reference"
    capability = torch.cuda.get_device_capability(q.device)
    choice = measured_backend(q.shape[2], q.shape[-1], q.dtype, capability, needs_grad)
    if choice == "flex" and not lsa_flex.HAS_FLEX:
        return "reference"
    if choice == "triton" and not selfcheck.passed(
        "latent_shift_attention", q.device, q.dtype, selfcheck.check_latent_shift_attention
    ):
        return "reference"  # the kernel disagreed with the reference on this card (warned)
    return choice


def _scale(scale) -> float:
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite number (or None for 1/sqrt(D)), got {scale!r}")
    return float(scale)


def latent_shift_attention(
    q, k, v, frames, height, width, layout="paper", scale=None, backend="auto", token_order="raster"
):
    """Latent-shift attention (see ``simda_kernels.reference.latent_shift_attention``).

    q, k, v: (B*F, heads, N, D) -> (B*F, heads, N, D).
    backend: ``"auto"`` (on CUDA the path measured fastest at this shape on this GPU
    architecture, ``measured_backend``; the reference where nothing is measured and on CPU),
    ``"reference"`` (gather + concat + SDPA), ``"flex"`` (PyTorch's FlexAttention: compiled on
    CUDA; eager and forward-only on CPU) or ``"triton"`` (the fused kernel, sm_80+; CPU tensors
    need ``TRITON_INTERPRET=1``). token_order: ``"raster"`` (row-major tokens, the default),
    ``"class_major"`` (``reference.class_major_order``) or ``"grouped"`` (tokens grouped by
    shift, ``reference.grouped_order``: the fast paths read keys in this order directly).
    """
    check_backend(backend, LSA_BACKENDS)
    check_lsa_inputs(q, k, v, frames, height, width, layout, reference.LSA_LAYOUTS)
    frames, height, width = int(frames), int(height), int(width)  # e.g. numpy ints
    check_backend(token_order, reference.TOKEN_ORDERS, "token_order")
    scale = q.shape[-1] ** -0.5 if scale is None else _scale(scale)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    chosen = _lsa_backend(backend, q, needs_grad)
    if chosen == "triton":
        q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
        return torch.ops.simda.latent_shift_attention(
            q, k, v, frames, height, width, layout, scale, token_order
        )[0]
    if chosen == "flex":
        return lsa_flex.latent_shift_attention(
            q, k, v, frames, height, width, layout, scale, token_order
        )
    q, k, v = (reference.to_raster(t, token_order, height, width) for t in (q, k, v))
    out = reference.latent_shift_attention(q, k, v, frames, height, width, layout, scale)
    return reference.from_raster(out, token_order, height, width)


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
