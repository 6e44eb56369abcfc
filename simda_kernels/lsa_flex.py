"""Latent-shift attention through PyTorch's FlexAttention (``torch.nn.attention.flex_attention``).

Each video is one attention problem over its F*N tokens: queries in their own order, keys and
values in grouped order (``reference.grouped_order``; a gather when the tokens come in another
order). Query ``i`` of frame ``t = i // N`` and key ``j`` of frame ``g = j // N`` with shift
``s = group[j % N]`` interact when ``W[t, g, s] > 0`` (``reference.key_weights``), with

    score_ij = scale q_i . k_j + log W[t, g, s]

so a key both sources hold counts twice, as in the concatenation. The block mask is built from
that rule at the level of 128 x 128 blocks (no dense F*N x F*N mask): in grouped order a frame
reads at most 6 contiguous runs, so most blocks are empty or full. Gradients come from
FlexAttention's own backward through autograd.

On CUDA the call is ``torch.compile``d once per shape family (automatic dynamic shapes: a new
N reuses the code; a new head dim, dtype or grad mode compiles again); on CPU it runs eagerly,
which materialises the (F*N)^2 scores per head and has no backward (PyTorch's limits).
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import torch

from simda_kernels import reference

try:
    from torch.nn.attention.flex_attention import BlockMask, flex_attention

    HAS_FLEX = True
except ImportError:  # torch without FlexAttention
    HAS_FLEX = False

#: FlexAttention's block sparsity granularity (its default), in queries and keys
BLOCK = 128


@dataclass(frozen=True)
class FlexMask:
    block_mask: object  # BlockMask
    score_mod: object  # (score, b, h, q_idx, kv_idx) -> score


def _block_coverage(reads, block):
    """(any, all) of ``reads`` (F, L) over blocks of ``block`` keys: (F, L / block) each; a
    block holding positions beyond L is never full."""
    frames, length = reads.shape
    padded = torch.nn.functional.pad(reads, (0, -length % block), value=False)
    blocks = padded.view(frames, -1, block)
    return blocks.any(-1), blocks.all(-1)


def _indices(blocks):
    """(count, indices) of the true entries of each row of ``blocks``, as BlockMask wants
    them: (1, 1, Q) and (1, 1, Q, K) int32, indices first in ascending order."""
    count = blocks.sum(-1, dtype=torch.int32)
    order = torch.argsort((~blocks).to(torch.int8), dim=-1, stable=True).to(torch.int32)
    return count[None, None], order[None, None]


def flex_mask(frames, height, width, layout, device, block=BLOCK) -> FlexMask:
    """Block mask and score_mod of LSA over one video's F*N tokens (keys in grouped order).
    Built once per (frames, grid, layout, device) in eager code (``cached_flex_mask``); under
    torch.compile its construction is part of the graph."""
    n = height * width
    length = frames * n
    weights = reference.key_weights(frames, layout, device)  # (F, F, 5)
    sizes = reference.shift_group_sizes(height, width)
    group = torch.tensor([s for s in range(5) for _ in range(sizes[s])], device=device)  # (N,)
    log_w = torch.where(weights > 1, math.log(2.0), 0.0)

    def score_mod(score, b, h, q_idx, kv_idx):
        return score + log_w[q_idx // n, kv_idx // n, group[kv_idx % n]]

    def mask_mod(b, h, q_idx, kv_idx):
        return weights[q_idx // n, kv_idx // n, group[kv_idx % n]] > 0

    reads = (weights[:, :, group] > 0).reshape(frames, length)  # (F, F*N)
    any_, all_ = _block_coverage(reads, block)
    # which frames each query block holds: (Q, F); like the keys, a query block that runs
    # past the end is never full
    first = torch.arange(0, length, block, device=device)
    last = (first + block).clamp(max=length) - 1
    frame = torch.arange(frames, device=device)
    holds = (((first[:, None] // n) <= frame) & (frame <= (last[:, None] // n))).float()
    any_q = (holds @ any_.float()) > 0
    all_q = ((holds @ (~all_).float()) == 0) & (last - first + 1 == block)[:, None]
    partial = any_q & ~all_q
    block_mask = BlockMask.from_kv_blocks(
        *_indices(partial),
        *_indices(all_q),
        BLOCK_SIZE=block,
        mask_mod=mask_mod,
        seq_lengths=(length, length),
    )
    return FlexMask(block_mask, score_mod)


cached_flex_mask = functools.lru_cache(maxsize=32)(flex_mask)


def _key_index(height, width, token_order, device):
    """Memory position of every grouped position: keys in grouped order = keys[..., index, :]."""
    memory = torch.argsort(reference.token_order_index(token_order, height, width, device))
    return memory[reference.grouped_order(height, width, device)]


_cached_key_index = functools.lru_cache(maxsize=32)(_key_index)


@functools.cache
def _compiled():
    return torch.compile(flex_attention)


def _compile_settings():
    """A model's attention layers can need more compiled variants of flex_attention (head dims
    x dtypes x grad modes) than torch.compile's default 8 per function, past which it would
    silently run FlexAttention eagerly, materialising the (F*N)^2 scores. Allow 64, and fail
    loudly beyond that."""
    settings = {"recompile_limit": 64}
    if hasattr(torch._dynamo.config, "fail_on_recompile_limit_hit"):
        settings["fail_on_recompile_limit_hit"] = True
    return torch._dynamo.config.patch(**settings)


def _flex(q, k, v, score_mod, block_mask, scale):
    """flex_attention: compiled on CUDA (or inlined into an enclosing torch.compile), eager on
    CPU (tests replace this function)."""
    if torch.compiler.is_compiling():
        return flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)
    if q.is_cuda:
        with _compile_settings():
            return _compiled()(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)
    with warnings.catch_warnings():  # "called without torch.compile": eager is the CPU path
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)


def latent_shift_attention(q, k, v, frames, height, width, layout, scale, token_order="raster"):
    """LSA through FlexAttention. q, k, v: (B*F, heads, N, D), tokens in ``token_order``
    (``reference.TOKEN_ORDERS``), frames folded b-major. Returns (B*F, heads, N, D)."""
    bf, heads, n, d = q.shape
    b = bf // frames

    def per_video(t):  # (B*F, heads, N, D) -> (B, heads, F, N, D), a view
        return t.reshape(b, frames, heads, n, d).transpose(1, 2)

    compiling = torch.compiler.is_compiling()
    build = flex_mask if compiling else cached_flex_mask
    mask = build(frames, height, width, layout, q.device)
    if token_order == "grouped":
        kg, vg = per_video(k), per_video(v)
    else:  # one gather each, into (B, heads, F, N, D) memory
        index = (_key_index if compiling else _cached_key_index)(
            height, width, token_order, q.device
        )
        kg, vg = (per_video(t).index_select(3, index) for t in (k, v))
    q, kg, vg = (t.reshape(b, heads, frames * n, d) for t in (per_video(q), kg, vg))
    out = _flex(q, kg, vg, mask.score_mod, mask.block_mask, scale)
    return out.reshape(b, heads, frames, n, d).transpose(1, 2).reshape(bf, heads, n, d)
