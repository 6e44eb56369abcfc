"""Pure PyTorch ground truth of every op in ``simda_kernels``.

These functions define the semantics; the Triton and CUDA kernels are tested against them.
They are also the CPU kernels of the registered ops and the fallback path everywhere else.
"""

from __future__ import annotations

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
TEMPORAL_ACTS = ("gelu", "none")


def shift_offsets(height: int, width: int, device=None) -> torch.Tensor:
    """Frame offset of every token of a ``height x width`` grid, raster order: ``(N,)`` int64."""
    table = torch.tensor(SHIFT_TABLE, dtype=torch.long, device=device)
    rows = torch.arange(height, device=device) % 4
    cols = torch.arange(width, device=device) % 4
    return table[rows[:, None], cols[None, :]].reshape(-1)


def class_major_order(height: int, width: int, device=None) -> torch.Tensor:
    """Raster index of every token in class-major order: ``(N,)`` int64.

    Class-major order groups tokens by class ``c = 4 * (row % 4) + (col % 4)`` (c ascending),
    raster order within a class. Every key of one class shares one frame offset, so a
    class-major sequence holds each shifted source as 16 contiguous segments.
    ``x_class_major = x_raster[..., order, :]``.
    """
    rows = torch.arange(height, device=device)[:, None].expand(height, width)
    cols = torch.arange(width, device=device)[None, :].expand(height, width)
    cls = ((rows % 4) * 4 + cols % 4).reshape(-1)
    return torch.sort(cls, stable=True).indices


def class_major_inverse(height: int, width: int, device=None) -> torch.Tensor:
    """Class-major index of every raster token: ``x_raster = x_class_major[..., inverse, :]``."""
    return torch.argsort(class_major_order(height, width, device))


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
    prev = (f - 1).clamp(min=0)

    def shifted(t):  # frame of S(x)_t's tokens: (F, N)
        return torch.where(t >= s, t - s, t)

    n = s.shape[1]
    if layout == "paper":
        first, second = f.expand(-1, n), shifted(f)
    elif layout == "released":
        first, second = shifted(prev), shifted(f)
    elif layout == "tav":
        first, second = torch.zeros_like(f).expand(-1, n), prev.expand(-1, n)
    else:
        raise ValueError(f"layout must be one of {LSA_LAYOUTS}, got {layout!r}")
    return torch.stack([first, second], dim=1)


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
