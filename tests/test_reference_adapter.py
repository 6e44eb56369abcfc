"""The reference temporal adapter against an explicit per-frame computation."""

import pytest
import torch
import torch.nn.functional as F

from simda_kernels import reference


def explicit(x, w_down, b_down, conv_w, conv_b, act):
    frames = x.shape[2]
    pre = [
        torch.einsum("bchw,rc->brhw", x[:, :, f], w_down) + b_down[:, None, None]
        for f in range(frames)
    ]
    a = [F.gelu(p) if act == "gelu" else p for p in pre]
    out = []
    for f in range(frames):
        y = conv_b[:, None, None].expand_as(a[f]).clone()
        for tap, g in enumerate((f - 1, f, f + 1)):
            if 0 <= g < frames:
                y = y + conv_w[:, tap, None, None] * a[g]
        out.append(y)
    return torch.stack(out, 2)


def params(c, r, dtype=torch.float64):
    return (
        torch.randn(r, c, dtype=dtype),
        torch.randn(r, dtype=dtype),
        torch.randn(r, 3, dtype=dtype),
        torch.randn(r, dtype=dtype),
    )


@pytest.mark.parametrize("act", reference.TEMPORAL_ACTS)
@pytest.mark.parametrize("frames", [1, 2, 3, 7])
@pytest.mark.parametrize("shape", [(1, 8, 3, 5), (2, 6, 4, 4)])
def test_matches_explicit(act, frames, shape):
    b, c, h, w = shape
    x = torch.randn(b, c, frames, h, w, dtype=torch.float64)
    p = params(c, c // 2)
    got = reference.fused_temporal_adapter(x, *p, act=act)
    assert got.shape == (b, c // 2, frames, h, w)
    torch.testing.assert_close(got, explicit(x, *p, act))


def test_gradcheck():
    x = torch.randn(1, 4, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    p = [t.requires_grad_() for t in params(4, 2)]
    assert torch.autograd.gradcheck(reference.fused_temporal_adapter, (x, *p))


@pytest.mark.parametrize(
    "index, value, match",
    [
        (0, torch.randn(2, 8, 3, 4), "x must be 5-D"),
        (1, torch.randn(4, 7), "w_down must have shape"),
        (2, torch.randn(5), "b_down must have shape"),
        (3, torch.randn(4, 2), "conv_w must have shape"),
        (4, torch.randn(4).half(), "conv_b has dtype"),
        (0, torch.randn(2, 8, 0, 4, 4), "x must have F >= 1"),
        (0, torch.randn(2, 8, 3, 4, 0), "x must have W >= 1"),
        (1, torch.randn(0, 8), "w_down must have R >= 1"),
    ],
)
def test_bad_inputs(index, value, match):
    args = [torch.randn(2, 8, 3, 4, 4), *params(8, 4, torch.float32)]
    args[index] = value
    with pytest.raises((ValueError, TypeError), match=match):
        reference.fused_temporal_adapter(*args)


def test_unknown_act():
    args = [torch.randn(1, 4, 2, 2, 2), *params(4, 2, torch.float32)]
    with pytest.raises(ValueError, match="act must be one of"):
        reference.fused_temporal_adapter(*args, act="relu")
