"""Latent-shift attention as a diffusers attention processor for ``attn1``."""

from __future__ import annotations

from dataclasses import dataclass

import simda_kernels


@dataclass
class VideoContext:
    """What every inflated layer needs to know about the current forward.

    ``frames`` is F; ``height``/``width`` are the latent size at the UNet's input, from which
    each transformer's token grid is recovered (downsampling halves it, rounding up).
    """

    frames: int = 1
    height: int = 0
    width: int = 0

    def grid(self, n_tokens: int) -> tuple[int, int]:
        h, w = self.height, self.width
        if h < 1 or w < 1:
            raise RuntimeError(
                "latent-shift attention needs the latent size: call the SimDA video UNet "
                "(SimDAUNet), not the inflated 2D UNet inside it"
            )
        while h * w > n_tokens:
            h, w = -(-h // 2), -(-w // 2)
        if h * w != n_tokens:
            raise RuntimeError(
                f"no feature map of a {self.height}x{self.width} latent has {n_tokens} tokens"
            )
        return h, w


class LatentShiftAttnProcessor:
    """Self-attention replaced by latent-shift attention, reusing ``attn1``'s frozen weights.

    K and V are projected once for all frames; the op gathers the shifted tokens itself.
    """

    def __init__(self, context: VideoContext, layout: str = "paper", backend: str = "reference"):
        self.context = context
        self.layout = layout
        self.backend = backend

    def __call__(
        self,
        attn,
        hidden_states,
        encoder_hidden_states=None,
        attention_mask=None,
        temb=None,
        **kwargs,
    ):
        bf, n, _ = hidden_states.shape
        heads = attn.heads

        def split(t):  # (B*F, N, heads*D) -> (B*F, heads, N, D)
            return t.view(bf, n, heads, -1).transpose(1, 2)

        q = split(attn.to_q(hidden_states))
        k = split(attn.to_k(hidden_states))
        v = split(attn.to_v(hidden_states))
        height, width = self.context.grid(n)
        out = simda_kernels.latent_shift_attention(
            q, k, v, self.context.frames, height, width, self.layout, attn.scale, self.backend
        )
        out = out.transpose(1, 2).reshape(bf, n, -1)
        return attn.to_out[1](attn.to_out[0](out))
