"""The reference latent-shift attention against an independent, loop-by-loop computation."""

import itertools
import math

import pytest
import torch

from simda_kernels import reference

# Written out again here on purpose: the test must not share the table with the code under test.
TABLE = [[4, 3, 2, 1], [3, 2, 1, 0], [2, 1, 0, 0], [1, 2, 3, 4]]


def shifted_frame(t, r, c):
    s = TABLE[r % 4][c % 4]
    return t - s if t >= s else t


def key_frames(layout, f, r, c):
    """The two source frames of token (r, c) in the keys of query frame f."""
    if layout == "paper":
        return f, shifted_frame(f, r, c)
    if layout == "released":
        return shifted_frame(max(f - 1, 0), r, c), shifted_frame(f, r, c)
    return 0, max(f - 1, 0)  # tav


def naive_lsa(q, k, v, frames, height, width, layout):
    bf, heads, n, d = q.shape
    out = torch.empty_like(q)
    for b, f in itertools.product(range(bf // frames), range(frames)):
        keys, vals = [], []
        for j in range(2):
            for r, c in itertools.product(range(height), range(width)):
                src = (b * frames + key_frames(layout, f, r, c)[j], r * width + c)
                keys.append(k[src[0], :, src[1]])
                vals.append(v[src[0], :, src[1]])
        kk, vv = torch.stack(keys, 1), torch.stack(vals, 1)  # (heads, 2N, D)
        logits = q[b * frames + f] @ kk.transpose(-1, -2) / math.sqrt(d)
        out[b * frames + f] = torch.softmax(logits, -1) @ vv
    return out


def rand_qkv(b, frames, heads, h, w, d, dtype=torch.float64):
    return [torch.randn(b * frames, heads, h * w, d, dtype=dtype) for _ in range(3)]


@pytest.mark.parametrize("layout", reference.LSA_LAYOUTS)
@pytest.mark.parametrize("frames", [1, 2, 5, 16])
@pytest.mark.parametrize("hw", [(4, 4), (3, 5), (6, 7), (8, 4)])
def test_matches_naive(layout, frames, hw):
    h, w = hw
    q, k, v = rand_qkv(2 if frames < 16 else 1, frames, 2, h, w, 8)
    got = reference.latent_shift_attention(q, k, v, frames, h, w, layout)
    torch.testing.assert_close(
        got, naive_lsa(q, k, v, frames, h, w, layout), rtol=1e-10, atol=1e-10
    )


def test_source_frames_follow_the_table():
    src = reference.key_source_frames(6, 4, 4, "paper")
    assert src.shape == (6, 2, 16)
    assert (src[:, 0] == torch.arange(6)[:, None]).all()
    assert src[5, 1].tolist() == [5 - s for row in TABLE for s in row]
    assert src[0, 1].tolist() == [0] * 16  # frame 0 keeps its own tokens
    assert src[2, 1, 0].item() == 2  # offset 4 > frame 2: no wrap


def test_single_frame_paper_is_self_attention():
    q, k, v = rand_qkv(3, 1, 2, 5, 3, 8)
    got = reference.latent_shift_attention(q, k, v, 1, 5, 3, "paper")
    want = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), -1) @ v
    torch.testing.assert_close(got, want)


def test_scale_is_used():
    q, k, v = rand_qkv(1, 2, 1, 2, 2, 4)
    a = reference.latent_shift_attention(q, k, v, 2, 2, 2, scale=0.1)
    b = reference.latent_shift_attention(q * 0.2, k, v, 2, 2, 2)  # 0.2 * 0.5 = 0.1
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("layout", reference.LSA_LAYOUTS)
def test_gradcheck(layout):
    q, k, v = (t.requires_grad_() for t in rand_qkv(1, 3, 1, 2, 3, 4))
    assert torch.autograd.gradcheck(
        lambda q, k, v: reference.latent_shift_attention(q, k, v, 3, 2, 3, layout), (q, k, v)
    )


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a: {**a, "q": a["q"][0]}, "q must be 4-D"),
        (lambda a: {**a, "k": a["k"][:, :, :5]}, "same shape"),
        (lambda a: {**a, "height": 3}, "height\\*width"),
        (lambda a: {**a, "frames": 4}, "not divisible by frames"),
        (lambda a: {**a, "layout": "diagonal"}, "layout must be one of"),
        (lambda a: {**a, "v": a["v"].half()}, "v has dtype"),
        (lambda a: {**a, "frames": 0}, "frames must be >= 1"),
        (lambda a: {**a, **{n: a[n][..., :0] for n in "qkv"}}, "head dim D >= 1"),
    ],
)
def test_bad_inputs(change, match):
    q, k, v = rand_qkv(1, 3, 2, 2, 3, 4, torch.float32)
    args = change(dict(q=q, k=k, v=v, frames=3, height=2, width=3, layout="paper"))
    with pytest.raises((ValueError, TypeError), match=match):
        reference.latent_shift_attention(**args)


def test_non_tensor_is_a_type_error():
    q, k, v = rand_qkv(1, 2, 1, 2, 2, 4)
    with pytest.raises(TypeError, match="q must be a torch.Tensor"):
        reference.latent_shift_attention(q.tolist(), k, v, 2, 2, 2)


@pytest.mark.parametrize("scale", ["a", float("nan"), float("inf"), True, torch.tensor(0.5)])
def test_scale_must_be_a_finite_number(scale):
    import simda_kernels

    q, k, v = rand_qkv(1, 3, 2, 2, 3, 4, torch.float32)
    with pytest.raises(ValueError, match="scale must be a finite number"):
        simda_kernels.latent_shift_attention(q, k, v, 3, 2, 3, scale=scale)
