"""Backend selection for the public ops."""

from __future__ import annotations

from simda_kernels import reference
from simda_kernels._checks import check_backend

LSA_BACKENDS = ("auto", "reference")
ADAPTER_BACKENDS = ("auto", "reference")


def latent_shift_attention(
    q, k, v, frames, height, width, layout="paper", scale=None, backend="auto"
):
    """Latent-shift attention (see ``simda_kernels.reference.latent_shift_attention``).

    q, k, v: (B*F, heads, N, D) -> (B*F, heads, N, D).
    """
    check_backend(backend, LSA_BACKENDS)
    return reference.latent_shift_attention(q, k, v, frames, height, width, layout, scale)


def fused_temporal_adapter(x, w_down, b_down, conv_w, conv_b, act="gelu", backend="auto"):
    """``TConv(act(W_down x + b))`` (see ``simda_kernels.reference.fused_temporal_adapter``).

    x: (B, C, F, H, W) -> (B, R, F, H, W).
    """
    check_backend(backend, ADAPTER_BACKENDS)
    return reference.fused_temporal_adapter(x, w_down, b_down, conv_w, conv_b, act)
