"""Inflation of a Stable Diffusion 1.x image UNet into the SimDA video UNet.

``inflate`` works in place on a diffusers ``UNet2DConditionModel``: every
``BasicTransformerBlock`` gains the two spatial adapters and latent-shift attention, and every
ResNet that is followed by a transformer gains a temporal adapter. Parameter names of the image
model are unchanged, so its state dict still loads. ``SimDAUNet`` wraps the result and takes
video latents ``(B, C, F, H, W)``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from diffusers import UNet2DConditionModel
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import AttnProcessor2_0
from diffusers.models.resnet import ResnetBlock2D

from simda.adapters import SpatialAdapter, TemporalAdapter, check_temporal_act
from simda.attention import LatentShiftAttnProcessor, VideoContext
from simda_kernels.reference import LSA_LAYOUTS

#: LSA layouts of the model: the op's layouts, plus ``"self"`` (plain per-frame self-attention,
#: for tests and ablations).
MODEL_LSA_LAYOUTS = (*LSA_LAYOUTS, "self")


class VideoTransformerBlock(BasicTransformerBlock):
    """A diffusers ``BasicTransformerBlock`` run on the frames of videos folded into the batch,
    ``(B*F, N, D)``. Subclasses (SimDA here; Tune-A-Video and LVDM in ``benchmarks/``) write
    ``video_forward(h, text, text_mask)``; the block's image-model layers keep their names."""

    def forward(
        self,
        hidden_states,
        attention_mask=None,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        timestep=None,
        cross_attention_kwargs=None,
        class_labels=None,
        added_cond_kwargs=None,
    ):
        return self.video_forward(hidden_states, encoder_hidden_states, encoder_attention_mask)

    def video_forward(self, h, text, text_mask):
        raise NotImplementedError

    def cross_attention(self, h, text, text_mask):
        """``h + attn2(norm2(h), text)``: the image model's cross-attention, residual added."""
        return h + self.attn2(self.norm2(h), encoder_hidden_states=text, attention_mask=text_mask)

    @staticmethod
    def frames_to_tokens(h, frames):
        """(B*F, N, D) -> (B*N, F, D): one sequence over frames per token."""
        bf, n, d = h.shape
        return h.view(bf // frames, frames, n, d).transpose(1, 2).reshape(-1, frames, d)

    @staticmethod
    def tokens_to_frames(t, n):
        """(B*N, F, D) -> (B*F, N, D), the inverse of ``frames_to_tokens``."""
        bn, f, d = t.shape
        return t.view(bn // n, n, f, d).transpose(1, 2).reshape(-1, n, d)


class SimDATransformerBlock(VideoTransformerBlock):
    """SD's transformer block with SimDA's spatial adapters (in forward order):

    1. ``h = h + y + attn_adapter(y)``, ``y = LSA(norm1(h))``
    2. ``h = h + attn2(norm2(h), text)``
    3. ``h = h + ff(norm3(h)) + ffn_adapter(h)``  (the FFN adapter runs on raw ``h``)
    """

    def video_forward(self, h, text, text_mask):
        y = self.attn1(self.norm1(h))
        h = h + y + self.attn_adapter(y)
        h = self.cross_attention(h, text, text_mask)
        return h + self.ff(self.norm3(h)) + self.ffn_adapter(h)


class SimDAResnetBlock2D(ResnetBlock2D):
    """SD's ResNet block followed by a temporal adapter over the frames."""

    def forward(self, input_tensor, temb, *args, **kwargs):
        out = super().forward(input_tensor, temb, *args, **kwargs)
        return self.temporal_adapter(out, self.simda_context.frames)


class VideoUNet(nn.Module):
    """An image ``UNet2DConditionModel`` with temporal layers, run on all frames of a video.

    forward(sample (B, C, F, H, W), timestep (scalar or (B,)), encoder_hidden_states (B, L, D))
    -> (B, C_out, F, H, W). Frames are folded b-major into the image model's batch; the
    temporal layers read F and the latent size from the shared ``VideoContext``.
    """

    def __init__(self, unet: UNet2DConditionModel, context: VideoContext):
        super().__init__()
        self.unet = unet
        self.context = context

    @property
    def config(self):
        return self.unet.config

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def enable_gradient_checkpointing(self) -> None:
        self.unet.enable_gradient_checkpointing()

    def disable_gradient_checkpointing(self) -> None:
        self.unet.disable_gradient_checkpointing()

    def forward(self, sample, timestep, encoder_hidden_states):
        if not isinstance(sample, torch.Tensor) or sample.ndim != 5:
            shape = tuple(sample.shape) if isinstance(sample, torch.Tensor) else type(sample)
            raise ValueError(
                f"sample must be a 5-D video latent (B, C, F, H, W), got {shape}; "
                "for one image use F = 1"
            )
        b, c, f, h, w = sample.shape
        if c != self.config.in_channels:
            raise ValueError(f"sample has {c} channels, the UNet takes {self.config.in_channels}")
        if min(b, f, h, w) < 1:
            raise ValueError(f"sample needs B, F, H, W >= 1, got shape {tuple(sample.shape)}")
        d = self.config.cross_attention_dim
        if (
            not isinstance(encoder_hidden_states, torch.Tensor)
            or encoder_hidden_states.ndim != 3
            or encoder_hidden_states.shape[0] != b
            or encoder_hidden_states.shape[2] != d
        ):
            got = (
                tuple(encoder_hidden_states.shape)
                if isinstance(encoder_hidden_states, torch.Tensor)
                else type(encoder_hidden_states).__name__
            )
            raise ValueError(f"encoder_hidden_states must be a tensor (B={b}, L, D={d}), got {got}")
        weight = next(self.parameters())
        dtype = weight.dtype
        for name, t in (("sample", sample), ("encoder_hidden_states", encoder_hidden_states)):
            if t.device != weight.device:
                raise ValueError(
                    f"{name} is on {t.device} but the UNet's weights are on {weight.device}"
                )
        if not torch.is_autocast_enabled(sample.device.type):
            for name, t in (("sample", sample), ("encoder_hidden_states", encoder_hidden_states)):
                if t.dtype != dtype:
                    raise TypeError(f"{name} is {t.dtype} but the UNet's weights are {dtype}")
        if isinstance(timestep, str) or timestep is None:
            raise TypeError(f"timestep must be a number or a tensor, got {timestep!r}")
        timestep = torch.as_tensor(timestep, device=sample.device)
        if timestep.ndim == 0:
            timestep = timestep.expand(b)
        if timestep.shape != (b,):
            raise ValueError(f"timestep must be a scalar or (B={b},), got {tuple(timestep.shape)}")
        self.context.frames, self.context.height, self.context.width = f, h, w
        out = self.unet(
            sample.transpose(1, 2).reshape(b * f, c, h, w),
            timestep.repeat_interleave(f),
            encoder_hidden_states.repeat_interleave(f, dim=0),
        ).sample
        return out.view(b, f, -1, h, w).transpose(1, 2)


class SimDAUNet(VideoUNet):
    """The SimDA video UNet: an inflated, frozen SD UNet with spatial and temporal adapters
    and latent-shift attention (see ``VideoUNet`` for the call)."""

    def lsa_processors(self):
        return [
            b.attn1.processor for b in self.unet.modules() if isinstance(b, SimDATransformerBlock)
        ]

    @property
    def lsa_layout(self) -> str:
        proc = self.lsa_processors()[0]
        return proc.layout if isinstance(proc, LatentShiftAttnProcessor) else "self"

    def set_lsa_layout(self, layout: str) -> None:
        """Switch every block's attention to another layout (``MODEL_LSA_LAYOUTS``), keeping
        the kernel choice of ``simda.optimize``."""
        _check_layout(layout)
        for block in self.unet.modules():
            if isinstance(block, SimDATransformerBlock):
                old = block.attn1.processor
                new = _make_processor(self.context, layout)
                if isinstance(old, LatentShiftAttnProcessor):  # kept across "self" too
                    block.attn1._simda_kernel_choice = {
                        "backend": old.backend,
                        **{k: v for k, v in old.__dict__.items() if k.startswith("_simda")},
                    }
                kept = getattr(block.attn1, "_simda_kernel_choice", None)
                if isinstance(new, LatentShiftAttnProcessor) and kept:
                    new.__dict__.update(kept)
                block.attn1.set_processor(new)


def _check_layout(layout):
    if layout not in MODEL_LSA_LAYOUTS:
        raise ValueError(f"lsa_layout must be one of {MODEL_LSA_LAYOUTS}, got {layout!r}")


def _make_processor(context, layout):
    if layout == "self":
        return AttnProcessor2_0()
    return LatentShiftAttnProcessor(context, layout)


def _check_inflatable(unet):
    if not isinstance(unet, UNet2DConditionModel):
        raise TypeError(
            f"inflate expects a diffusers UNet2DConditionModel, got {type(unet).__name__}"
        )
    blocks = [m for m in unet.modules() if isinstance(m, BasicTransformerBlock)]
    if any(isinstance(b, VideoTransformerBlock) for b in blocks):
        raise ValueError("this UNet is already inflated")
    if not blocks:
        raise ValueError("this UNet has no transformer blocks: SimDA needs an SD-1.x style UNet")
    for b in blocks:
        if b.norm_type != "layer_norm" or b.only_cross_attention or b.pos_embed is not None:
            raise ValueError(
                "SimDA supports SD-1.x style transformer blocks (layer_norm, self- then "
                f"cross-attention); found norm_type={b.norm_type!r}, "
                f"only_cross_attention={b.only_cross_attention}"
            )


def _new_like(like, cls, *args):
    """A new module built directly on ``like``'s device (``meta`` included), in its dtype."""
    with torch.device(like.device):
        return cls(*args).to(like.dtype)


def inflate(
    unet: UNet2DConditionModel,
    *,
    lsa_layout: str = "paper",
    temporal_act: str = "gelu",
    freeze: bool = True,
) -> SimDAUNet:
    """Turn a diffusers SD-1.x ``UNet2DConditionModel`` into the SimDA video UNet, in place.

    The image model's weights are frozen (``freeze=True``); only the new adapters train.
    Returns a ``SimDAUNet`` that shares the given module.
    """
    _check_inflatable(unet)
    _check_layout(lsa_layout)
    check_temporal_act(temporal_act)  # before anything changes
    if freeze:
        unet.requires_grad_(False)
    context = VideoContext()
    for block in [m for m in unet.modules() if isinstance(m, BasicTransformerBlock)]:
        dim = block.norm1.normalized_shape[0]
        block.__class__ = SimDATransformerBlock
        block.attn_adapter = _new_like(block.norm1.weight, SpatialAdapter, dim)
        block.ffn_adapter = _new_like(block.norm1.weight, SpatialAdapter, dim)
        block.attn1.set_processor(_make_processor(context, lsa_layout))
    for part in [*unet.down_blocks, unet.mid_block, *unet.up_blocks]:
        for resnet in list(part.resnets)[: len(getattr(part, "attentions", []) or [])]:
            if type(resnet) is not ResnetBlock2D:
                raise ValueError(f"unsupported ResNet block {type(resnet).__name__}")
            resnet.__class__ = SimDAResnetBlock2D
            resnet.simda_context = context
            channels = resnet.conv2.out_channels
            resnet.temporal_adapter = _new_like(
                resnet.conv2.weight, TemporalAdapter, channels, temporal_act
            )
    return SimDAUNet(unet, context)


def remove_components(
    model: nn.Module, *, temporal: bool = False, spatial: bool = False, lsa: bool = False
) -> None:
    """Take SimDA components out of a model, for ablations: temporal or spatial adapters get
    their output projections zeroed and frozen (they become the identity and stay so during
    training), ``lsa=True`` switches latent-shift attention to plain self-attention."""
    kinds = (TemporalAdapter,) * temporal + (SpatialAdapter,) * spatial
    with torch.no_grad():
        for module in model.modules():
            if kinds and isinstance(module, kinds):
                out = (
                    (module.w_up, module.b_up)
                    if isinstance(module, TemporalAdapter)
                    else (module.fc2.weight, module.fc2.bias)
                )
                for p in out:
                    p.zero_()
                module.requires_grad_(False)
    if lsa:
        model.set_lsa_layout("self")


def count_parameters(model: nn.Module) -> dict:
    """Parameter counts: ``total``, ``trainable``, ``frozen``, ``spatial_adapters``,
    ``temporal_adapters`` (``model`` may be a pipeline: its ``.unet``)."""
    from simda.checkpoint import as_module

    model = as_module(model)

    def numel(params):
        return sum(p.numel() for p in params)

    def of(kind):
        return numel(p for m in model.modules() if isinstance(m, kind) for p in m.parameters())

    total = numel(model.parameters())
    trainable = numel(p for p in model.parameters() if p.requires_grad)
    return {
        "total": total,
        "trainable": trainable,
        "frozen": total - trainable,
        "spatial_adapters": of(SpatialAdapter),
        "temporal_adapters": of(TemporalAdapter),
    }
