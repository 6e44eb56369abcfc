"""Pure PyTorch ground truth of every op in ``simda_kernels``.

These functions define the semantics; the Triton and CUDA kernels are tested against them.
They are also the CPU kernels of the registered ops and the fallback path everywhere else.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from simda_kernels._checks import check_lsa_inputs, check_temporal_adapter_inputs

# Causal latent shift: the token at (row mod 4, col mod 4) is taken from frame ``t - s``.
SHIFT_TABLE = (
    (4, 3, 2, 1),
    (3, 2, 1, 0),
    (2, 1, 0, 0),
    (1, 2, 3, 4),
)
LSA_LAYOUTS = ("paper", "released", "tav")
TOKEN_ORDERS = ("raster", "class_major", "grouped")
TEMPORAL_ACTS = ("gelu", "none")


def shift_offsets(height: int, width: int, device=None) -> torch.Tensor:
    """Frame offset of every token of a ``height x width`` grid, raster order: ``(N,)`` int64."""
    table = torch.tensor(SHIFT_TABLE, dtype=torch.long, device=device)
    rows = torch.arange(height, device=device) % 4
    cols = torch.arange(width, device=device) % 4
    return table[rows[:, None], cols[None, :]].reshape(-1)


def token_classes(height: int, width: int, device=None) -> torch.Tensor:
    """Class ``c = 4 * (row % 4) + (col % 4)`` of every token, raster order: ``(N,)`` int64."""
    rows = torch.arange(height, device=device)[:, None] % 4
    cols = torch.arange(width, device=device)[None, :] % 4
    return (rows * 4 + cols).reshape(-1)


def class_major_order(height: int, width: int, device=None) -> torch.Tensor:
    """Raster index of every token in class-major order: ``(N,)`` int64.

    Class-major order groups tokens by class ``c = 4 * (row % 4) + (col % 4)`` (c ascending),
    raster order within a class. ``x_class_major = x_raster[..., order, :]``.
    """
    return torch.sort(token_classes(height, width, device), stable=True).indices


def class_major_inverse(height: int, width: int, device=None) -> torch.Tensor:
    """Class-major index of every raster token: ``x_raster = x_class_major[..., inverse, :]``."""
    return torch.argsort(class_major_order(height, width, device))


def grouped_order(height: int, width: int, device=None) -> torch.Tensor:
    """Raster index of every token in grouped order: ``(N,)`` int64.

    Grouped order sorts tokens by shift ``s`` (``SHIFT_TABLE``, 0 to 4), then by class, then
    raster order. Which keys a query reads depends only on its frame, and every (source frame,
    shift group) it reads is one contiguous run of this order (see ``key_weights``).
    ``x_grouped = x_raster[..., order, :]``.
    """
    key = shift_offsets(height, width, device) * 16 + token_classes(height, width, device)
    return torch.sort(key, stable=True).indices


def token_order_index(token_order: str, height: int, width: int, device=None) -> torch.Tensor:
    """Raster index of the token at every position of ``token_order`` (``TOKEN_ORDERS``)."""
    if token_order == "raster":
        return torch.arange(height * width, device=device)
    if token_order == "class_major":
        return class_major_order(height, width, device)
    if token_order == "grouped":
        return grouped_order(height, width, device)
    raise ValueError(f"token_order must be one of {TOKEN_ORDERS}, got {token_order!r}")


def shift_group_sizes(height: int, width: int) -> tuple[int, ...]:
    """Number of tokens of each shift 0..4 on a ``height x width`` grid (Python ints)."""
    sizes = [0] * 5
    for r, row in enumerate(SHIFT_TABLE):
        for c, s in enumerate(row):
            sizes[s] += ((height - r + 3) // 4) * ((width - c + 3) // 4)
    return tuple(sizes)


def _source_frames(f, s, layout):
    """Frames of the two key sources of query frames ``f`` (F, 1) for tokens of shift ``s``
    (1, X): two (F, X) tensors (see ``key_source_frames``)."""
    prev = (f - 1).clamp(min=0)

    def shifted(t):  # frame of S(x)_t's tokens
        return torch.where(t >= s, t - s, t)

    shape = (f.shape[0], s.shape[1])
    if layout == "paper":
        return f.expand(shape), shifted(f)
    if layout == "released":
        return shifted(prev), shifted(f)
    if layout == "tav":
        return torch.zeros_like(f).expand(shape), prev.expand(shape)
    raise ValueError(f"layout must be one of {LSA_LAYOUTS}, got {layout!r}")


def key_source_frames(frames: int, height: int, width: int, layout: str, device=None):
    """Source frame of every key of every query frame: ``(F, 2, N)`` int64.

    Query frame ``f`` attends over ``2N`` keys: key ``(j, n)`` (source ``j`` in {0, 1}, token
    ``n``) is token ``n`` of frame ``src[f, j, n]``. With ``S(x)_t[n] = x[t - s_n][n]`` when
    ``t >= s_n`` and ``x[t][n]`` otherwise (``s_n`` from ``SHIFT_TABLE``):

    - ``"paper"``:    ``[x_f, S(x)_f]``
    - ``"released"``: ``[S(x)_{max(f-1, 0)}, S(x)_f]``
    - ``"tav"``:      ``[x_0, x_{max(f-1, 0)}]`` (Tune-A-Video's sparse-causal attention)
    """
    s = shift_offsets(height, width, device=device)[None, :]  # (1, N)
    f = torch.arange(frames, device=device)[:, None]  # (F, 1)
    return torch.stack(_source_frames(f, s, layout), dim=1)


def key_weights(frames: int, layout: str, device=None) -> torch.Tensor:
    """How many of query frame t's two key sources hold frame g's shift-s tokens:
    ``W[t, g, s]``, ``(F, F, 5)`` int64 with values 0, 1, 2.

    This is LSA in grouped form: query frame ``t`` attends over the tokens of every
    (frame g, shift group s) with ``W[t, g, s] > 0``, each counted ``W[t, g, s]`` times by
    the softmax over the concatenated keys, i.e. ``+log W`` on its logit (a token held by both
    sources, such as shift 0 in the paper layout, gets ``+log 2``).
    """
    f = torch.arange(frames, device=device)[:, None]
    s = torch.arange(5, device=device)[None, :]
    g = torch.arange(frames, device=device)[None, :, None]
    return sum((src[:, None, :] == g).long() for src in _source_frames(f, s, layout))


def gather_shifted_kv(t: torch.Tensor, frames: int, height: int, width: int, layout: str):
    """Materialise the ``2N`` keys (or values) of every query frame.

    t: (B*F, heads, N, D) -> (B*F, heads, 2N, D)
    """
    bf, heads, n, d = t.shape
    b = bf // frames
    src = key_source_frames(frames, height, width, layout, device=t.device)  # (F, 2, N)
    flat = src * n + torch.arange(n, device=t.device)  # index into the (F*N) token axis
    per_video = t.view(b, frames, heads, n, d).transpose(1, 2).reshape(b, heads, frames * n, d)
    gathered = per_video.index_select(2, flat.reshape(-1))  # (B, heads, F*2N, D)
    gathered = gathered.view(b, heads, frames, 2 * n, d).transpose(1, 2)
    return gathered.reshape(bf, heads, 2 * n, d)


def latent_shift_attention(q, k, v, frames, height, width, layout="paper", scale=None):
    """Latent-shift attention: each frame's queries attend over its own and shifted keys.

    q, k, v: (B*F, heads, N, D), frames folded b-major (``index = b*F + f``), N = height*width.
    Returns (B*F, heads, N, D). ``scale`` defaults to ``D ** -0.5``.
    """
    check_lsa_inputs(q, k, v, frames, height, width, layout, LSA_LAYOUTS)
    kk = gather_shifted_kv(k, frames, height, width, layout)
    vv = gather_shifted_kv(v, frames, height, width, layout)
    return F.scaled_dot_product_attention(q, kk, vv, scale=scale)


def to_raster(t, token_order: str, height: int, width: int):
    """(..., N, D) tokens in ``token_order`` -> raster order."""
    if token_order == "raster":
        return t
    index = token_order_index(token_order, height, width, t.device)
    return t.index_select(-2, torch.argsort(index))


def from_raster(t, token_order: str, height: int, width: int):
    """(..., N, D) tokens in raster order -> ``token_order``."""
    if token_order == "raster":
        return t
    return t.index_select(-2, token_order_index(token_order, height, width, t.device))


def _per_video(t, frames):
    """(B*F, heads, N, D) -> (B, heads, F*N, D)"""
    bf, heads, n, d = t.shape
    return (
        t.reshape(bf // frames, frames, heads, n, d)
        .transpose(1, 2)
        .reshape(-1, heads, frames * n, d)
    )


def _per_frame(t, frames):
    """(B, heads, F*X, D) -> (B*F, heads, X, D)"""
    b, heads, _, d = t.shape
    return t.reshape(b, heads, frames, -1, d).transpose(1, 2).reshape(b * frames, heads, -1, d)


def _concatenated(q, k, v, frames, height, width, layout, scale):
    """Logits over the materialised 2N keys (fp32, fp64 for fp64 inputs), with those keys,
    values and their index into the video's (F*N) tokens."""
    n = q.shape[2]
    src = key_source_frames(frames, height, width, layout, device=q.device)  # (F, 2, N)
    index = (src * n + torch.arange(n, device=q.device)).reshape(-1)
    dtype = torch.promote_types(q.dtype, torch.float32)
    kk = _per_frame(_per_video(k.to(dtype), frames).index_select(2, index), frames)
    vv = _per_frame(_per_video(v.to(dtype), frames).index_select(2, index), frames)
    return torch.matmul(q.to(dtype), kk.transpose(-1, -2)) * scale, kk, vv, index


def lsa_forward(q, k, v, frames, height, width, layout, scale, token_order="raster"):
    """The registered op's forward in PyTorch: ``(out, lse2)``, ``lse2`` (B*F, heads, N) fp32
    the base-2 log-sum-exp of each query's scaled logits over its 2N keys."""
    q, k, v = (to_raster(t, token_order, height, width) for t in (q, k, v))
    logits, _, vv, _ = _concatenated(q, k, v, frames, height, width, layout, scale)
    lse = torch.logsumexp(logits, -1)
    out = torch.matmul(torch.exp(logits - lse[..., None]), vv).to(q.dtype)
    return from_raster(out, token_order, height, width), from_raster(
        lse[..., None], token_order, height, width
    )[..., 0] * math.log2(math.e)


def lsa_backward(grad_out, q, k, v, frames, height, width, layout, scale, token_order="raster"):
    """dq, dk, dv of ``lsa_forward`` written out (no autograd: it runs as a kernel).

    dV_cat = P^T dO, dS = P (dO V_cat^T - delta), dQ = scale dS K_cat, dK_cat = scale dS^T Q;
    the gradients of the gathered keys are scattered back onto the frames they came from.
    """
    grad_out, q, k, v = (to_raster(t, token_order, height, width) for t in (grad_out, q, k, v))
    logits, kk, vv, index = _concatenated(q, k, v, frames, height, width, layout, scale)
    p = torch.softmax(logits, -1)
    do = grad_out.to(p.dtype)
    dp = torch.matmul(do, vv.transpose(-1, -2))
    ds = p * (dp - (dp * p).sum(-1, keepdim=True))
    dq = torch.matmul(ds, kk) * scale

    def scatter(g_cat, like):
        flat = torch.zeros_like(_per_video(like.to(p.dtype), frames))
        flat.index_add_(2, index, _per_video(g_cat, frames))
        return _per_frame(flat, frames).to(like.dtype)

    dk = scatter(torch.matmul(ds.transpose(-1, -2), q.to(p.dtype)) * scale, k)
    dv = scatter(torch.matmul(p.transpose(-1, -2), do), v)
    return tuple(from_raster(t, token_order, height, width) for t in (dq.to(q.dtype), dk, dv))


def frames_outer(x: torch.Tensor) -> bool:
    """Whether ``x`` (B, C, F, H, W) holds its frames outside its channels in memory
    (``x.stride(2) > x.stride(1)``): diffusers' (B*F, C, H, W) feature map seen as a video, or
    channels-last. The temporal adapter's outputs are laid out the same way."""
    return x.stride(2) > x.stride(1)


def fused_temporal_adapter(x, w_down, b_down, conv_w, conv_b, act="gelu"):
    """Down-projection, activation and depthwise temporal conv of the temporal adapter.

    x: (B, C, F, H, W); w_down: (R, C); b_down: (R,); conv_w: (R, 3); conv_b: (R,)
    Returns ``TConv(act(W_down x + b_down))``: (B, R, F, H, W), zero-padded by one frame in time,
    laid out in x's order of frames and channels: where frames are outside channels
    (``frames_outer(x)``, the model's frame-major map) y is a view of a contiguous
    (B, F, R, H, W) tensor, so ``y.transpose(1, 2).reshape(B*F, R, H, W)`` copies nothing;
    otherwise y is contiguous. ``act`` is ``"gelu"`` (exact erf form) or ``"none"``.
    """
    check_temporal_adapter_inputs(x, w_down, b_down, conv_w, conv_b, act, TEMPORAL_ACTS)
    b, c, frames, h, w = x.shape
    r = w_down.shape[0]
    video = x.transpose(1, 2).reshape(b, frames, c, h * w)  # (B, F, C, T)
    pre = torch.matmul(w_down, video) + b_down[:, None]  # (B, F, R, T)
    a = F.gelu(pre) if act == "gelu" else pre
    # y[f] = conv_b + w0 a[f-1] + w1 a[f] + w2 a[f+1], with a[-1] = a[F] = 0
    a = F.pad(a, (0, 0, 0, 0, 1, 1))
    taps = conv_w[:, :, None]  # (R, 3, 1): tap k of every channel, broadcast over tokens
    y = conv_b[:, None] + taps[:, 0] * a[:, :-2] + taps[:, 1] * a[:, 1:-1] + taps[:, 2] * a[:, 2:]
    y = y.contiguous().view(b, frames, r, h, w).transpose(1, 2)
    return y if frames_outer(x) else y.contiguous()
