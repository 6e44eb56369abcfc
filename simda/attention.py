"""Latent-shift attention as a diffusers attention processor for ``attn1``, and the video
context every inflated layer of a model shares."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

import simda_kernels


@dataclass
class VideoContext:
    """What every inflated layer of one model needs to know, in one place.

    Per forward: ``frames`` is F; ``height``/``width`` are the latent size at the UNet's input,
    from which each transformer's token grid is recovered (downsampling halves it, rounding
    up). Per model: ``lsa_layout`` (``"paper"``, ``"released"``, ``"tav"``, or ``"self"`` for
    plain per-frame self-attention), and the kernels the layers call, ``attention_backend`` and
    ``adapter_backend`` (``simda.optimize`` sets them; ``before_optimize`` keeps what they were
    so that ``simda.restore`` gives them back).
    """

    frames: int = 1
    height: int = 0
    width: int = 0
    lsa_layout: str = "paper"
    attention_backend: str = "reference"
    adapter_backend: str = "reference"
    before_optimize: dict | None = None

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

    K and V are projected once for all frames; the op gathers the shifted tokens itself. The
    layout and the kernel come from the shared ``VideoContext`` (layout ``"self"``: each frame
    attends to itself only, as in the image model).
    """

    def __init__(self, context: VideoContext):
        self.context = context

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
        context = self.context
        if context.lsa_layout == "self":
            out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)
        else:
            height, width = context.grid(n)
            out = simda_kernels.latent_shift_attention(
                q,
                k,
                v,
                context.frames,
                height,
                width,
                context.lsa_layout,
                attn.scale,
                context.attention_backend,
            )
        out = out.transpose(1, 2).reshape(bf, n, -1)
        return attn.to_out[1](attn.to_out[0](out))
