"""On-device self-check of the fast kernels, before ``backend="auto"`` trusts them.

The first time ``auto`` would run a fast kernel on a GPU (once per process, op, device and
dtype), ``passed`` runs a small forward and backward of that kernel against the PyTorch
reference (milliseconds) and lets ``auto`` use it only if the output and every gradient agree
under the 2x rule: the kernel's error against a float64 reference is at most twice PyTorch's own
error in the dtype (or ``TOLERANCE``). Otherwise it warns once, naming the card and the error,
and ``auto`` keeps the reference there; ``backend="cuda"`` / ``"triton"`` still force the kernel.
``results()`` lists the checks that ran (``simda env`` reports them).

``passed(op, device, dtype, check)`` is generic: ``check(device, dtype)`` returns ``None`` when
the kernel agrees, else a description of the disagreement (an exception counts as one). The
checks of this package's two kernels are below it.
"""

from __future__ import annotations

import dataclasses
import warnings

import torch

#: relative error (against the largest reference value) every dtype may have, whatever
#: PyTorch's own error is
TOLERANCE = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}


@dataclasses.dataclass(frozen=True)
class Result:
    op: str
    device: int  # CUDA device index
    name: str  # the card, as torch.cuda.get_device_name says
    dtype: torch.dtype
    error: str | None  # None: the kernel agreed with the reference

    @property
    def passed(self) -> bool:
        return self.error is None


_RESULTS: dict[tuple[str, int, torch.dtype], Result] = {}


def within_twice(name: str, got: torch.Tensor, exact: torch.Tensor, own: torch.Tensor):
    """``None`` when ``got`` is within twice the error of ``own`` (the reference in got's dtype)
    from ``exact`` (the float64 reference), relative to exact's largest magnitude, or within
    ``TOLERANCE``; else what is wrong, starting with ``name``."""
    if tuple(got.shape) != tuple(exact.shape):
        return f"{name}: shape {tuple(got.shape)}, expected {tuple(exact.shape)}"
    if not torch.isfinite(got).all():
        return f"{name}: non-finite values (NaN: unwritten elements?)"
    scale = exact.abs().max().item() + 1e-6
    err = (got.double() - exact).abs().max().item() / scale
    bar = max(2 * (own.double() - exact).abs().max().item() / scale, TOLERANCE[got.dtype])
    return None if err <= bar else f"{name}: relative error {err:.2e} > {bar:.2e}"


def compare(names, got, exact, own) -> str | None:
    """``within_twice`` over matching sequences of results; the failures, joined."""
    errors = [within_twice(*args) for args in zip(names, got, exact, own, strict=True)]
    return "; ".join(e for e in errors if e) or None


@torch.compiler.assume_constant_result  # traced code sees a constant: decided outside the graph
def passed(op: str, device, dtype: torch.dtype, check) -> bool:
    """Whether ``op``'s fast kernel may run on ``device`` in ``dtype``: ``check(device, dtype)``
    runs the first time (per process, op, device and dtype), its result is kept. Only CUDA
    devices are checked (True elsewhere: no GPU code runs there)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return True
    index = device.index if device.index is not None else torch.cuda.current_device()
    key = (op, index, dtype)
    if key not in _RESULTS:
        _RESULTS[key] = _run(op, index, dtype, check)
    return _RESULTS[key].passed


def _run(op, index, dtype, check) -> Result:
    name = torch.cuda.get_device_name(index)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            error = check(torch.device("cuda", index), dtype)
    except Exception as exc:  # e.g. no kernel image for this GPU, a launch failure
        error = f"{type(exc).__name__}: {exc}"
    if error:
        warnings.warn(
            f"{op}: the self-check of the fast kernel failed on {name} (cuda:{index}, {dtype}): "
            f"{error}. backend='auto' uses the PyTorch reference there",
            RuntimeWarning,
            stacklevel=4,
        )
    return Result(op, index, name, dtype, error)


def results() -> list[Result]:
    """The checks run so far in this process, in the order they ran."""
    return list(_RESULTS.values())


def _randn(generator, *shape, scale=1.0):
    """float64 normal values from ``generator`` (the caller's RNG is left alone)."""
    return torch.randn(*shape, generator=generator, dtype=torch.float64) * scale


def _grads(fn, leaves, grad):
    """``fn(*leaves)`` and its gradients for ``grad``, with fresh leaves."""
    leaves = [t.detach().requires_grad_() for t in leaves]
    out = fn(*leaves)
    return out, torch.autograd.grad(out, leaves, grad)


def check_temporal_adapter(device, dtype) -> str | None:
    """The extension's forward and backward kernels on a frame-major video as the model holds
    it, (2, 160, 5, 8, 9): R = 80 rows of a tile, a partial token tile and channel step, the
    three-frame ring wrapping; output layout and values against the reference."""
    from simda_kernels import reference, temporal_adapter

    ext = temporal_adapter.extension()
    gen = torch.Generator().manual_seed(0)
    b, c, frames, h, w = 2, 160, 5, 8, 9
    r = c // 2
    video = _randn(gen, b, frames, c, h, w).transpose(1, 2)  # (B, C, F, H, W) view
    params = [_randn(gen, r, c, scale=c**-0.5), _randn(gen, r), _randn(gen, r, 3), _randn(gen, r)]
    grad = _randn(gen, b, frames, r, h, w).transpose(1, 2)  # as autograd hands it to the op
    leaves = [t.to(device, dtype) for t in (video, *params)]
    dy = grad.to(device, dtype)
    y = ext.temporal_adapter_forward(*leaves, "gelu")
    expected = temporal_adapter._like_frames(leaves[0], r).stride()
    if y.stride() != expected:
        return f"y: strides {y.stride()}, expected {expected} (the op's fake kernel)"
    got = (y, *ext.temporal_adapter_backward(dy, *leaves[:4], "gelu"))
    exact = _grads(reference.fused_temporal_adapter, [t.double() for t in leaves], dy.double())
    own = _grads(reference.fused_temporal_adapter, leaves, dy)
    names = ("y", "dx", "dw_down", "db_down", "dconv_w", "dconv_b")
    return compare(names, got, (exact[0], *exact[1]), (own[0], *own[1]))


def check_latent_shift_attention(device, dtype) -> str | None:
    """The Triton kernels' forward and backward (paper layout, 3 frames of 5x6 tokens: the
    shift table cut at both edges, one head of D = 40 padded to the kernel's 64) against the
    reference."""
    from simda_kernels import dispatch, reference

    gen = torch.Generator().manual_seed(0)
    frames, h, w = 3, 5, 6
    qkv = [_randn(gen, frames, 1, h * w, 40).to(device, dtype) for _ in range(3)]
    dout = _randn(gen, frames, 1, h * w, 40).to(device, dtype)

    def kernel(q, k, v):
        return dispatch.latent_shift_attention(q, k, v, frames, h, w, backend="triton")

    def ref(q, k, v):
        return reference.latent_shift_attention(q, k, v, frames, h, w)

    got = _grads(kernel, qkv, dout)
    exact = _grads(ref, [t.double() for t in qkv], dout.double())
    own = _grads(ref, qkv, dout)
    names = ("out", "dq", "dk", "dv")
    return compare(names, (got[0], *got[1]), (exact[0], *exact[1]), (own[0], *own[1]))
