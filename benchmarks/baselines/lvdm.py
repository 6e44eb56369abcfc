"""LVDM architecture (re-implementation, labelled as such), on an SD-1.x UNet.

Per transformer block: spatial self-attention -> temporal self-attention with relative
positions (clamped to +-16 frames) -> cross-attention -> a second temporal attention -> FFN.
Each temporal attention has its own LayerNorm, q/k/v/out projections (out at zero) and
relative-position tables for keys and values. The temporal layers hold 99,404,000 parameters
at SD-1.5 size; they are what LVDM trains on top of the image model.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from diffusers import UNet2DConditionModel
from diffusers.models.attention import BasicTransformerBlock

from simda.attention import VideoContext
from simda.unet import VideoTransformerBlock, VideoUNet

LVDM_TEMPORAL_PARAMETERS = 99_404_000  # SD-1.5 size
MAX_RELATIVE = 16


class RelativeTemporalAttention(nn.Module):
    """Self-attention over frames, x: (B*N, F, D), with learned relative-position terms for
    keys and values: logits_ij = q_i . (k_j + r^k_{j-i}), out_i = sum_j a_ij (v_j + r^v_{j-i})."""

    def __init__(self, dim: int, heads: int, max_relative: int = MAX_RELATIVE):
        super().__init__()
        self.heads, self.max_relative = heads, max_relative
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)
        self.rel_k = nn.Parameter(torch.randn(2 * max_relative + 1, dim // heads) * 0.02)
        self.rel_v = nn.Parameter(torch.randn(2 * max_relative + 1, dim // heads) * 0.02)

    def forward(self, x):
        n, f, d = x.shape

        def split(t):
            return t.view(n, f, self.heads, -1).transpose(1, 2)  # (N, heads, F, dh)

        q, k, v = split(self.to_q(x)), split(self.to_k(x)), split(self.to_v(x))
        pos = torch.arange(f, device=x.device)
        rel = (pos[None, :] - pos[:, None]).clamp(-self.max_relative, self.max_relative)
        rk, rv = self.rel_k[rel + self.max_relative], self.rel_v[rel + self.max_relative]
        logits = q @ k.transpose(-1, -2) + torch.einsum("nhid,ijd->nhij", q, rk)
        attn = (logits * q.shape[-1] ** -0.5).softmax(-1)
        out = attn @ v + torch.einsum("nhij,ijd->nhid", attn, rv)
        return self.to_out(out.transpose(1, 2).reshape(n, f, d))


class LVDMTransformerBlock(VideoTransformerBlock):
    def _temporal(self, h, norm, attn):
        t = self.frames_to_tokens(h, self.video_context.frames)
        return h + self.tokens_to_frames(attn(norm(t)), h.shape[1])

    def video_forward(self, h, text, text_mask):
        h = h + self.attn1(self.norm1(h))
        h = self._temporal(h, self.norm_temporal1, self.temporal_attn1)
        h = self.cross_attention(h, text, text_mask)
        h = self._temporal(h, self.norm_temporal2, self.temporal_attn2)
        return h + self.ff(self.norm3(h))


def build_lvdm(unet: UNet2DConditionModel) -> VideoUNet:
    """Turn an image UNet into the LVDM architecture, in place (temporal layers trainable)."""
    unet.requires_grad_(False)
    context = VideoContext()
    for block in [m for m in unet.modules() if isinstance(m, BasicTransformerBlock)]:
        dim, heads = block.norm1.normalized_shape[0], block.attn1.heads
        like = block.norm1.weight
        block.__class__ = LVDMTransformerBlock
        block.video_context = context
        for i in (1, 2):
            setattr(block, f"norm_temporal{i}", nn.LayerNorm(dim).to(like))
            setattr(block, f"temporal_attn{i}", RelativeTemporalAttention(dim, heads).to(like))
    return VideoUNet(unet, context)
