"""The fused temporal adapter op: CUDA kernels of ``simda_kernels._C`` behind a custom op.

    y = TConv(act(W_down x + b_down))      x: (B, C, F, H, W) -> y: (B, R, F, H, W)

y is laid out in x's order of frames and channels (``reference.frames_outer``): for the
model's frame-major x, a (B, R, F, H, W) view of a contiguous (B, F, R, H, W) tensor, which
the model reads back as (B*F, R, H, W) without a copy; the backward reads its gradient in
whatever layout autograd hands it (tokens contiguous), so no layout copy surrounds the op.

Forward: one kernel (GEMM on tensor cores, bias, GELU, 3-tap conv over frames in shared
memory); only ``y`` is written. Backward recomputes the pre-activation instead of saving it
(saving it would cost as much memory as the eager path's intermediates, recomputing costs one
GEMM), so autograd keeps nothing but ``x`` and the weights. With ``p = W_down x + b_down``,
``a = act(p)`` and ``da[f] = w0 dy[f+1] + w1 dy[f] + w2 dy[f-1]``:

    dp = da * act'(p)          dW_down = dp x^T        dx = W_down^T dp
    db_down = sum dp           dconv_w[:, k] = sum dy[f] a[f+k-1]      dconv_b = sum dy
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F

from simda_kernels import reference

_EXT = None
_EXT_ERROR: str | None = None
CSRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "csrc")


def extension(jit: bool | None = None):
    """The compiled ``simda_kernels._C``, or ``None`` when it is not available.

    A prebuilt extension (``pip install --no-build-isolation .``) is used first. Otherwise,
    with ``jit=True`` or ``SIMDA_JIT_BUILD=1``, it is compiled just in time from ``csrc/`` of
    a source checkout with ``torch.utils.cpp_extension.load`` (about a minute, cached).
    """
    global _EXT, _EXT_ERROR
    if _EXT is not None:
        return _EXT
    if jit is None:
        jit = os.environ.get("SIMDA_JIT_BUILD", "0") == "1"
    if _EXT_ERROR is None or jit:  # a failed import is remembered, not retried every call
        try:
            from simda_kernels import _C

            _EXT = _C
            return _EXT
        except ImportError as exc:
            _EXT_ERROR = f"simda_kernels._C is not built ({exc})"
    if jit:
        _EXT = _jit_build()
    return _EXT


def extension_error() -> str:
    return _EXT_ERROR or "simda_kernels._C is not available"


_EXT_ARCHS: list = []  # the loaded extension's archs, once read


def extension_archs(ext=None) -> tuple[int, ...] | None:
    """The GPU architectures ``ext`` (default: the extension already loaded; this never loads
    or builds one) holds kernels for, as nvcc numbers them (900 for sm_90); None when unknown
    (no extension, or a build older than ``archs()``). Read once for the loaded extension (so
    that ``backend="auto"`` stays plain Python under torch.compile)."""
    loaded = ext is None or ext is _EXT
    ext = _EXT if ext is None else ext
    if ext is None:
        return None
    if loaded and _EXT_ARCHS and _EXT_ARCHS[0] is ext:
        return _EXT_ARCHS[1]
    fn = getattr(ext, "archs", None)
    archs = tuple(int(a) for a in fn()) if fn is not None else None
    if loaded:
        _EXT_ARCHS[:] = [ext, archs]
    return archs


def arch_names(archs) -> str:
    return ", ".join(f"sm_{a // 10}" for a in archs)  # nvcc's numbers: 900 is sm_90


def runs_on(capability, archs) -> bool | None:
    """Whether a build for ``archs`` has kernels for a GPU of ``capability``: True when one
    arch has the GPU's major version and at most its minor (sm_80 code runs on sm_86); False
    when every arch is newer than the GPU (nothing can run); None when unknown (no archs, or
    only older major versions, which run only if the build embedded PTX)."""
    if not archs:
        return None
    built = [(a // 100, a % 100 // 10) for a in archs]
    major, minor = capability
    if any(m == major and n <= minor for m, n in built):
        return True
    return None if any(b < (major, minor) for b in built) else False


def arch_fit(capability, archs) -> str | None:
    """Why a build for ``archs`` (nvcc's numbers, 900 = sm_90) may not run on a GPU of
    ``capability``, with the rebuild that fixes it; None when it holds kernels for the GPU or
    its architectures are unknown (see ``runs_on``)."""
    runs = runs_on(capability, archs)
    if runs or not archs:
        return None
    major, minor = capability
    built, fix = arch_names(archs), f'rebuild with TORCH_CUDA_ARCH_LIST="{major}.{minor}"'
    if runs is None:
        return f"built for {built}: runs here only from embedded PTX (+PTX builds); {fix}"
    return f"built for {built}, no kernels for sm_{major}{minor}: {fix}"


def _jit_build():
    from simda_kernels import _toolchain

    home = _toolchain.cuda_home()
    if home is None:
        raise RuntimeError("JIT build of simda_kernels._C needs nvcc on PATH or CUDA_HOME set")
    os.environ["CUDA_HOME"] = home  # read when torch.utils.cpp_extension is first imported
    from torch.utils import cpp_extension

    cpp_extension.CUDA_HOME = home  # in case it was imported before
    names = sorted(os.listdir(CSRC)) if os.path.isdir(CSRC) else []
    sources = [os.path.join(CSRC, name) for name in names if name.endswith((".cpp", ".cu"))]
    if not sources:
        raise RuntimeError(
            f"the JIT build needs the CUDA sources in {CSRC}, which an installed wheel does not "
            "have: run from a source checkout or the sdist, or build the extension at install "
            "time (pip install --no-build-isolation .)"
        )
    return cpp_extension.load(
        name="simda_kernels_C",
        build_directory=_toolchain.jit_build_directory("simda_kernels_C"),
        sources=sources,
        extra_include_paths=[CSRC, *_toolchain.nvidia_wheel_includes()],
        extra_cflags=["-O3"],
        extra_cuda_cflags=_toolchain.NVCC_FLAGS,
        verbose=os.environ.get("SIMDA_JIT_VERBOSE", "0") == "1",
    )


def _act_grad(p, act):
    if act == "none":
        return torch.ones_like(p)
    cdf = 0.5 * (1.0 + torch.erf(p * (1.0 / math.sqrt(2.0))))
    return cdf + p * torch.exp(-0.5 * p * p) / math.sqrt(2.0 * math.pi)


def reference_backward(grad, x, w_down, b_down, conv_w, act):
    """The op's backward written out in PyTorch (it runs as a kernel: no autograd inside).

    grad: (B, R, F, H, W), any layout; x: (B, C, F, H, W). Returns dx (laid out like the
    forward's y: in x's order of frames and channels), dw_down, db_down, dconv_w, dconv_b."""
    b, c, frames, h, w = x.shape
    r = w_down.shape[0]
    compute = torch.promote_types(x.dtype, torch.float32)
    g = grad.to(compute).transpose(1, 2).reshape(b, frames, r, h * w)  # (B, F, R, T)
    video = x.to(compute).transpose(1, 2).reshape(b, frames, c, h * w)  # (B, F, C, T)
    wf = w_down.to(compute)
    p = torch.matmul(wf, video) + b_down.to(compute)[:, None]
    a = F.gelu(p) if act == "gelu" else p
    # Transposed 3-tap conv: da[f] = w0 dy[f+1] + w1 dy[f] + w2 dy[f-1] (dy[-1] = dy[F] = 0).
    taps = conv_w.to(compute)[:, :, None]
    gp = F.pad(g, (0, 0, 0, 0, 1, 1))
    da = taps[:, 0] * gp[:, 2:] + taps[:, 1] * gp[:, 1:-1] + taps[:, 2] * gp[:, :-2]
    dp = da * _act_grad(p, act)
    ap = F.pad(a, (0, 0, 0, 0, 1, 1))
    dconv_w = torch.stack([(g * ap[:, k : k + frames]).sum((0, 1, 3)) for k in range(3)], 1)
    dx = torch.matmul(wf.t(), dp).view(b, frames, c, h, w).transpose(1, 2)
    dx = dx if reference.frames_outer(x) else dx.contiguous()
    return (
        dx.to(x.dtype),
        torch.matmul(dp, video.transpose(-1, -2)).sum((0, 1)).to(x.dtype),
        dp.sum((0, 1, 3)).to(x.dtype),
        dconv_w.to(x.dtype),
        g.sum((0, 1, 3)).to(x.dtype),
    )


def _require_extension():
    ext = extension()
    if ext is None:
        raise RuntimeError(
            f"{extension_error()}: build it with `pip install --no-build-isolation .` on a CUDA "
            "machine, or set SIMDA_JIT_BUILD=1 to compile it on first use"
        )
    return ext


@torch.library.custom_op("simda::fused_temporal_adapter", mutates_args=())
def adapter_op(
    x: torch.Tensor,
    w_down: torch.Tensor,
    b_down: torch.Tensor,
    conv_w: torch.Tensor,
    conv_b: torch.Tensor,
    act: str,
) -> torch.Tensor:
    return _require_extension().temporal_adapter_forward(x, w_down, b_down, conv_w, conv_b, act)


@torch.library.custom_op("simda::fused_temporal_adapter_backward", mutates_args=())
def adapter_backward_op(
    grad: torch.Tensor,
    x: torch.Tensor,
    w_down: torch.Tensor,
    b_down: torch.Tensor,
    conv_w: torch.Tensor,
    act: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(
        _require_extension().temporal_adapter_backward(grad, x, w_down, b_down, conv_w, act)
    )


@adapter_op.register_kernel("cpu")
def _adapter_cpu(x, w_down, b_down, conv_w, conv_b, act):
    return reference.fused_temporal_adapter(x, w_down, b_down, conv_w, conv_b, act)


@adapter_backward_op.register_kernel("cpu")
def _adapter_backward_cpu(grad, x, w_down, b_down, conv_w, act):
    return reference_backward(grad, x, w_down, b_down, conv_w, act)


def _like_frames(x, channels):
    """An empty (B, channels, F, H, W) tensor in x's order of frames and channels, as the
    kernels and the CPU kernels return y, dx (and use for dpre)."""
    b, _, f, h, w = x.shape
    if reference.frames_outer(x):
        return x.new_empty((b, f, channels, h, w)).transpose(1, 2)
    return x.new_empty((b, channels, f, h, w))


@adapter_op.register_fake
def _adapter_fake(x, w_down, b_down, conv_w, conv_b, act):
    return _like_frames(x, w_down.shape[0])


@adapter_backward_op.register_fake
def _adapter_backward_fake(grad, x, w_down, b_down, conv_w, act):
    return (  # the weight grads are contiguous
        _like_frames(x, x.shape[1]),
        w_down.new_empty(w_down.shape),
        b_down.new_empty(b_down.shape),
        conv_w.new_empty(conv_w.shape),
        w_down.new_empty(w_down.shape[:1]),
    )


def _setup_context(ctx, inputs, output):
    x, w_down, b_down, conv_w, _conv_b, ctx.act = inputs
    ctx.save_for_backward(x, w_down, b_down, conv_w)


def _backward(ctx, grad):
    # grad as autograd hands it (for the model: the frame-major layout y came in), not copied
    x, w_down, b_down, conv_w = ctx.saved_tensors
    return (*adapter_backward_op(grad, x, w_down, b_down, conv_w, ctx.act), None)


adapter_op.register_autograd(_backward, setup_context=_setup_context)
