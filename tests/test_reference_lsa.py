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


# ----------------------------------------------------------------------------- grouped form


@pytest.mark.parametrize("layout", reference.LSA_LAYOUTS)
def test_key_weights_count_the_sources_holding_each_group(layout):
    """W[t, g, s] = how many of frame t's two sources hold frame g's shift-s tokens, checked
    token by token against the naive loops above (on a grid holding every shift)."""
    frames = 9
    weights = reference.key_weights(frames, layout)
    assert weights.shape == (frames, frames, 5)
    for t, r, c in itertools.product(range(frames), range(4), range(4)):
        s = TABLE[r][c]
        for g in range(frames):
            want = sum(src == g for src in key_frames(layout, t, r, c))
            assert weights[t, g, s] == want, (t, g, s)


@pytest.mark.parametrize("layout", reference.LSA_LAYOUTS)
def test_every_frame_reads_at_most_six_runs(layout):
    """In grouped order, a frame reads at most 6 runs (consecutive groups of one frame with one
    weight), and in the paper layout from frame 4 on 29 of every 16 tokens' keys."""
    sizes = reference.shift_group_sizes(8, 8)
    for frames in range(1, 25):
        weights = reference.key_weights(frames, layout).tolist()
        for t in range(frames):
            runs = sum(
                1
                for g in range(frames)
                for s in range(5)
                if weights[t][g][s] and (s == 0 or weights[t][g][s - 1] != weights[t][g][s])
            )
            assert runs <= 6, (frames, t)
            read = sum(sizes[s] for g in range(frames) for s in range(5) if weights[t][g][s])
            if layout == "paper" and t >= 4:
                assert read == 29 * 64 // 16


@pytest.mark.parametrize("hw", [(4, 4), (3, 5), (6, 7), (1, 1), (9, 2)])
def test_grouped_order_holds_each_shift_group_contiguously(hw):
    h, w = hw
    order = reference.grouped_order(h, w)
    assert sorted(order.tolist()) == list(range(h * w))
    shifts = [TABLE[i // w % 4][i % w % 4] for i in order.tolist()]
    assert shifts == sorted(shifts)
    assert tuple(shifts.count(s) for s in range(5)) == reference.shift_group_sizes(h, w)
    if (h, w) == (4, 4):
        assert reference.shift_group_sizes(4, 4) == (3, 4, 4, 3, 2)


@pytest.mark.parametrize("order", reference.TOKEN_ORDERS)
def test_token_orders_round_trip(order):
    x = torch.randn(2, 3, 35, 4)
    moved = reference.from_raster(x, order, 5, 7)
    assert torch.equal(reference.to_raster(moved, order, 5, 7), x)
    assert torch.equal(moved, x[:, :, reference.token_order_index(order, 5, 7)])


@pytest.mark.parametrize("order", ["raster", "grouped"])
def test_the_ops_reference_forward_and_backward(order):
    """reference.lsa_forward / lsa_backward (the registered op's CPU kernels) against autograd
    through the public reference, in float64: output, base-2 log-sum-exp, gradients."""
    frames, h, w = 3, 3, 5
    q, k, v = (t.requires_grad_() for t in rand_qkv(2, frames, 2, h, w, 8))
    moved = [reference.from_raster(t, order, h, w) for t in (q, k, v)]
    out, lse2 = reference.lsa_forward(*moved, frames, h, w, "released", 0.3, order)
    want = reference.latent_shift_attention(q, k, v, frames, h, w, "released", 0.3)
    torch.testing.assert_close(reference.to_raster(out, order, h, w), want)
    logits = q @ reference.gather_shifted_kv(k, frames, h, w, "released").mT
    lse = torch.logsumexp(logits * 0.3, -1) * math.log2(math.e)
    torch.testing.assert_close(reference.to_raster(lse2[..., None], order, h, w)[..., 0], lse)
    grad = torch.randn_like(q)
    grads = reference.lsa_backward(
        reference.from_raster(grad, order, h, w), *moved, frames, h, w, "released", 0.3, order
    )
    for got, exact in zip(grads, torch.autograd.grad(want, (q, k, v), grad), strict=True):
        torch.testing.assert_close(reference.to_raster(got, order, h, w), exact)
