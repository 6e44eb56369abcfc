"""Argument checks shared by the references and the fast paths: one clear error per mistake."""

from __future__ import annotations

import numbers

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _tensor(name, t, ndim, what):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {what}, got {type(t).__name__}")
    if t.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {what}, got shape {tuple(t.shape)}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating tensor (fp16, bf16, fp32, fp64), got {t.dtype}")


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):  # numpy ints too
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def _same(names, tensors):
    first_name, first = names[0], tensors[0]
    for name, t in zip(names[1:], tensors[1:], strict=True):
        if t.dtype != first.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but {first_name} has {first.dtype}")
        if t.device != first.device:
            raise ValueError(f"{name} is on {t.device} but {first_name} is on {first.device}")


def check_lsa_inputs(q, k, v, frames, height, width, layout, layouts):
    for name, t in (("q", q), ("k", k), ("v", v)):
        _tensor(name, t, 4, "of shape (B*F, heads, N, D)")
    _same(("q", "k", "v"), (q, k, v))
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(
            f"q, k and v must have the same shape (B*F, heads, N, D), got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[-1] < 1:
        raise ValueError(f"q, k and v need a head dim D >= 1, got shape {tuple(q.shape)}")
    _positive_int("frames", frames)
    _positive_int("height", height)
    _positive_int("width", width)
    if q.shape[0] % frames:
        raise ValueError(f"q.shape[0] = B*F = {q.shape[0]} is not divisible by frames = {frames}")
    if q.shape[2] != height * width:
        raise ValueError(
            f"q has N = {q.shape[2]} tokens but height*width = {height}*{width} = {height * width}"
        )
    if layout not in layouts:
        raise ValueError(f"layout must be one of {layouts}, got {layout!r}")


def check_temporal_adapter_inputs(x, w_down, b_down, conv_w, conv_b, act, acts):
    _tensor("x", x, 5, "of shape (B, C, F, H, W)")
    _tensor("w_down", w_down, 2, "of shape (R, C)")
    _tensor("b_down", b_down, 1, "of shape (R,)")
    _tensor("conv_w", conv_w, 2, "of shape (R, 3)")
    _tensor("conv_b", conv_b, 1, "of shape (R,)")
    names = ("x", "w_down", "b_down", "conv_w", "conv_b")
    _same(names, (x, w_down, b_down, conv_w, conv_b))
    c, r = x.shape[1], w_down.shape[0]
    for name, size in (("C", c), ("F", x.shape[2]), ("H", x.shape[3]), ("W", x.shape[4])):
        if size < 1:
            raise ValueError(f"x must have {name} >= 1 in (B, C, F, H, W), got {tuple(x.shape)}")
    if r < 1:
        raise ValueError(f"w_down must have R >= 1 rows, got shape {tuple(w_down.shape)}")
    if w_down.shape[1] != c:
        raise ValueError(f"w_down must have shape (R, C={c}) to match x, got {tuple(w_down.shape)}")
    for name, t, shape in (
        ("b_down", b_down, (r,)),
        ("conv_w", conv_w, (r, 3)),
        ("conv_b", conv_b, (r,)),
    ):
        if tuple(t.shape) != shape:
            raise ValueError(
                f"{name} must have shape {shape} (R={r} from w_down), got {tuple(t.shape)}"
            )
    if act not in acts:
        raise ValueError(f"act must be one of {acts}, got {act!r}")


def check_backend(backend, backends, name="backend"):
    if backend not in backends:
        raise ValueError(f"{name} must be one of {backends}, got {backend!r}")
