"""Tune-A-Video architecture (re-implementation, labelled as such), on an SD-1.x UNet.

Per transformer block: sparse-causal self-attention (K/V = [first frame, previous frame], done
the naive way: gather, concatenate, SDPA), cross-attention, FFN, then temporal attention
``attn_temp`` over the frames of each token, ``(B*H*W, F, C)``, with its output projection at
zero. Tuned: ``attn1.to_q``, ``attn2.to_q`` and ``attn_temp`` (74,354,880 parameters at SD-1.5
size).
"""

from __future__ import annotations

import torch.nn as nn
from diffusers import UNet2DConditionModel
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention

from simda.attention import LatentShiftAttnProcessor, VideoContext
from simda.unet import VideoTransformerBlock, VideoUNet

TAV_TUNED_PARAMETERS = 74_354_880  # SD-1.5 size


class TAVTransformerBlock(VideoTransformerBlock):
    def video_forward(self, h, text, text_mask):
        h = h + self.attn1(self.norm1(h))  # sparse-causal ("tav" layout)
        h = self.cross_attention(h, text, text_mask)
        h = h + self.ff(self.norm3(h))
        t = self.frames_to_tokens(h, self.video_context.frames)
        t = t + self.attn_temp(self.norm_temp(t))
        return self.tokens_to_frames(t, h.shape[1])


def build_tav(unet: UNet2DConditionModel) -> VideoUNet:
    """Turn an image UNet into the Tune-A-Video architecture, in place."""
    unet.requires_grad_(False)
    context = VideoContext(lsa_layout="tav")
    for block in [m for m in unet.modules() if isinstance(m, BasicTransformerBlock)]:
        dim, heads = block.norm1.normalized_shape[0], block.attn1.heads
        like = block.norm1.weight
        block.__class__ = TAVTransformerBlock
        block.video_context = context
        block.attn1.set_processor(LatentShiftAttnProcessor(context))
        block.norm_temp = nn.LayerNorm(dim).to(like).requires_grad_(False)  # not tuned by TAV
        block.attn_temp = Attention(
            query_dim=dim, heads=heads, dim_head=dim // heads, bias=False, out_bias=True
        ).to(like)
        nn.init.zeros_(block.attn_temp.to_out[0].weight)
        for module in (block.attn1.to_q, block.attn2.to_q, block.attn_temp):
            module.requires_grad_(True)
    return VideoUNet(unet, context)
