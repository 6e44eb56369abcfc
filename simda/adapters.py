"""The trainable parts of SimDA: spatial adapters and temporal adapters."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import simda_kernels


class SpatialAdapter(nn.Module):
    """Residual branch of a spatial adapter: ``fc2(GELU(fc1(x)))``, D -> D/4 -> D.

    ``fc2`` starts at zero, so an inflated model starts exactly as the image model.
    """

    def __init__(self, dim: int, ratio: float = 0.25):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


def check_temporal_act(act: str) -> None:
    if act not in simda_kernels.reference.TEMPORAL_ACTS:
        raise ValueError(
            f"temporal_act must be one of {simda_kernels.reference.TEMPORAL_ACTS}, got {act!r}"
        )


class TemporalAdapter(nn.Module):
    """``T(x) = x + W_up(TConv(act(W_down x)))`` over the frames of a video feature map.

    W_down: per-token linear C -> R = C/2 (Kaiming-normal); act: GELU or identity; TConv:
    depthwise conv over time, kernel 3, zero padding of one frame, with bias; W_up: R -> C,
    zero-initialised, so the adapter starts as the identity.
    """

    def __init__(self, channels: int, act: str = "gelu"):
        super().__init__()
        check_temporal_act(act)
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 2:
            raise ValueError(f"channels must be an int >= 2 (rank C/2 >= 1), got {channels!r}")
        rank = channels // 2
        self.act = act
        self.w_down = nn.Parameter(torch.empty(rank, channels))
        self.b_down = nn.Parameter(torch.zeros(rank))
        self.conv_w = nn.Parameter(torch.empty(rank, 3))
        self.conv_b = nn.Parameter(torch.empty(rank))
        self.w_up = nn.Parameter(torch.zeros(channels, rank))
        self.b_up = nn.Parameter(torch.zeros(channels))
        nn.init.kaiming_normal_(self.w_down)
        bound = 1 / math.sqrt(3)  # nn.Conv3d's default for a depthwise (3, 1, 1) kernel
        nn.init.uniform_(self.conv_w, -bound, bound)
        nn.init.uniform_(self.conv_b, -bound, bound)

    def forward(self, x: torch.Tensor, frames: int, backend: str = "reference") -> torch.Tensor:
        """x: (B*F, C, H, W), frames folded b-major -> (B*F, C, H, W). ``backend``: the kernel
        of ``simda_kernels.fused_temporal_adapter`` (the model passes its video context's)."""
        if x.ndim != 4:
            raise ValueError(f"x must be 4-D (B*F, C, H, W), got shape {tuple(x.shape)}")
        bf, c, h, w = x.shape
        if (
            isinstance(frames, bool)
            or not isinstance(frames, (int, torch.SymInt))
            or frames < 1
            or bf % frames
        ):
            raise ValueError(
                f"frames must be an int >= 1 that divides x.shape[0] = B*F = {bf}, got {frames!r}"
            )
        video = x.view(bf // frames, frames, c, h, w).transpose(1, 2)  # (B, C, F, H, W) view
        weights = (self.w_down, self.b_down, self.conv_w, self.conv_b)
        if torch.is_autocast_enabled(x.device.type):
            # Like autocast's own GEMMs: input and (fp32 master) weights in the autocast dtype;
            # the op itself takes one dtype. The casts are differentiable.
            dtype = torch.get_autocast_dtype(x.device.type)
            video = video.to(dtype)
            weights = tuple(w.to(dtype) for w in weights)
        # y comes laid out like the video view, frames outside channels, so this is a view too
        y = simda_kernels.fused_temporal_adapter(video, *weights, self.act, backend)
        y = y.transpose(1, 2).reshape(bf, -1, h, w)  # (B*F, R, H, W)
        return x + F.conv2d(y, self.w_up[:, :, None, None], self.b_up)

    def extra_repr(self) -> str:
        return f"channels={self.w_down.shape[1]}, rank={self.w_down.shape[0]}, act={self.act!r}"
