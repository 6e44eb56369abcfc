"""Inflation of a Stable Diffusion 1.x image UNet into the SimDA video UNet.

``inflate`` works in place on a diffusers ``UNet2DConditionModel``: every
``BasicTransformerBlock`` gains the two spatial adapters and latent-shift attention, and every
ResNet that is followed by a transformer gains a temporal adapter. Parameter names of the image
model are unchanged, so its state dict still loads. ``SimDAUNet`` wraps the result and takes
video latents ``(B, C, F, H, W)``; ``SimDAUNet.from_unet2d`` does the same on a copy that shares
the image model's weights, leaving the image model as it was.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
from diffusers import ConfigMixin, ModelMixin, UNet2DConditionModel
from diffusers.configuration_utils import FrozenDict
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.resnet import ResnetBlock2D
from diffusers.utils import BaseOutput

from simda.adapters import SpatialAdapter, TemporalAdapter, check_temporal_act
from simda.attention import LatentShiftAttnProcessor, VideoContext
from simda.errors import SimDAError
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
        context = self.simda_context
        return self.temporal_adapter(out, context.frames, context.adapter_backend)


@dataclass
class VideoUNetOutput(BaseOutput):
    """``sample``: (B, C_out, F, H, W), the UNet's prediction for every frame."""

    sample: torch.Tensor


class VideoUNet(nn.Module):
    """An image ``UNet2DConditionModel`` with temporal layers, run on all frames of a video.

    forward(sample (B, C, F, H, W), timestep (scalar or (B,)), encoder_hidden_states (B, L, D),
    or (B, F, L, D) with a text per frame) -> ``VideoUNetOutput`` with ``.sample``
    (B, C_out, F, H, W), or a 1-tuple with
    ``return_dict=False``, as diffusers' UNets. Frames are folded b-major into the image model's
    batch; the temporal layers read F and the latent size from the shared ``VideoContext``.
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

    def check_layers(self) -> None:
        """Raise if a tool changed the layers in a way the video model cannot run."""

    def forward(
        self,
        sample,
        timestep,
        encoder_hidden_states,
        cross_attention_kwargs: dict | None = None,
        return_dict: bool = True,
    ):
        b, c, f, h, w = self._check_inputs(sample, timestep, encoder_hidden_states)
        self.check_layers()
        timestep = torch.as_tensor(timestep, device=sample.device)
        if timestep.ndim == 0:
            timestep = timestep.expand(b)
        self.context.frames, self.context.height, self.context.width = f, h, w
        if encoder_hidden_states.ndim == 4:  # one text per frame
            text = encoder_hidden_states.reshape(b * f, *encoder_hidden_states.shape[2:])
        else:
            text = encoder_hidden_states.repeat_interleave(f, dim=0)
        out = self.unet(
            sample.transpose(1, 2).reshape(b * f, c, h, w),
            timestep.repeat_interleave(f),
            text,
            cross_attention_kwargs=cross_attention_kwargs,
        ).sample
        out = out.view(b, f, -1, h, w).transpose(1, 2)
        return VideoUNetOutput(sample=out) if return_dict else (out,)

    def _check_inputs(self, sample, timestep, encoder_hidden_states):
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
        text = encoder_hidden_states
        if (
            not isinstance(text, torch.Tensor)
            or text.ndim not in (3, 4)
            or text.shape[0] != b
            or text.shape[-1] != d
            or (text.ndim == 4 and text.shape[1] != f)
        ):
            got = tuple(text.shape) if isinstance(text, torch.Tensor) else type(text).__name__
            raise ValueError(
                f"encoder_hidden_states must be a tensor (B={b}, L, D={d}), or (B={b}, F={f}, "
                f"L, D={d}) with a text per frame, got {got}"
            )
        weight = next(self.unet.parameters())
        given = (("sample", sample), ("encoder_hidden_states", encoder_hidden_states))
        # weights on meta are offloaded (accelerate's hooks bring them at call time); storage
        # dtypes that do not compute (fp8 of layerwise casting) are cast by their own hooks
        if weight.device.type != "meta":
            for name, t in given:
                if t.device != weight.device:
                    raise ValueError(
                        f"{name} is on {t.device} but the UNet's weights are on {weight.device}"
                    )
        compute = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
        if not torch.is_autocast_enabled(sample.device.type) and weight.dtype in compute:
            for name, t in given:
                if t.dtype != weight.dtype:
                    raise TypeError(
                        f"{name} is {t.dtype} but the UNet's weights are {weight.dtype}"
                    )
        if isinstance(timestep, str) or timestep is None:
            raise TypeError(f"timestep must be a number or a tensor, got {timestep!r}")
        shape = tuple(torch.as_tensor(timestep).shape)
        if shape not in ((), (b,)):
            raise ValueError(f"timestep must be a scalar or (B={b},), got {shape}")
        return b, c, f, h, w


#: SimDA's own entries of a ``SimDAUNet``'s config, beside the image UNet's
SIMDA_CONFIG_KEYS = ("lsa_layout", "temporal_act", "trainable_modules")


class SimDAUNet(VideoUNet, ModelMixin, ConfigMixin):
    """The SimDA video UNet: an inflated, frozen SD UNet with spatial and temporal adapters
    and latent-shift attention (see ``VideoUNet`` for the call).

    A diffusers model: ``save_pretrained`` / ``from_pretrained`` (config.json holds the image
    UNet's config plus ``SIMDA_CONFIG_KEYS``; one safetensors file holds every weight, adapters
    included), ``torch_dtype=``, ``variant=``. Attributes of the image UNet that the video UNet
    does not define itself are the image UNet's (``down_blocks``, ``mid_block``, ``up_blocks``,
    ``attn_processors``, ``load_lora_adapter``, ...), so that diffusers' LoRA loaders and tools
    that walk a UNet find them.

    ``trainable_modules`` names layers of the image UNet that train with the adapters (the
    super-resolution variant's widened ``conv_in``); ``trainable_parameters()`` lists what
    training updates: those and every adapter.
    """

    config_name = "config.json"
    _supports_gradient_checkpointing = True

    def __init__(self, unet: UNet2DConditionModel, context: VideoContext):
        super().__init__(unet, context)
        self.trainable_modules: list[str] = []
        #: adapters an ablation took out (``remove_components``): they no longer train
        self.ablated: set[str] = set()
        self._config_extras: dict = {}

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("_modules", {}).get("unet")
            if inner is None or name.startswith("__"):
                raise
            return getattr(inner, name)

    # ------------------------------------------------------------------ config

    @property
    def config(self) -> FrozenDict:
        return self._internal_dict

    @property
    def _internal_dict(self) -> FrozenDict:
        """The config diffusers saves and reads: the image UNet's, SimDA's, and entries
        diffusers registers (``_name_or_path``)."""
        return FrozenDict({**self.unet.config, **self._simda_config(), **self._config_extras})

    @_internal_dict.setter
    def _internal_dict(self, value) -> None:
        derived = {**self.unet.config, **self._simda_config()}
        changed = sorted(k for k in value if k in derived and value[k] != derived[k])
        if changed:
            raise ValueError(
                f"SimDAUNet's {', '.join(changed)} follow its layers: change the image UNet "
                "(unet.unet.register_to_config) or call set_lsa_layout"
            )
        self._config_extras = {k: v for k, v in value.items() if k not in derived}

    def _simda_config(self) -> dict:
        acts = sorted({m.act for m in self.modules() if isinstance(m, TemporalAdapter)})
        return {
            "lsa_layout": self.context.lsa_layout,
            "temporal_act": acts[0] if len(acts) == 1 else acts,
            "trainable_modules": list(self.trainable_modules),
        }

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs=False, **kwargs):
        """Build the model a config describes (``save_pretrained``'s config.json, or an image
        UNet's, which gives the default SimDA settings); weights stay as initialised."""
        config = {**dict(config or {}), **kwargs}
        settings = {k: config.pop(k) for k in SIMDA_CONFIG_KEYS if k in config}
        for key in [k for k in config if k.startswith("_")]:
            config.pop(key)
        model = inflate(
            UNet2DConditionModel.from_config(config),
            lsa_layout=settings.get("lsa_layout", "paper"),
            temporal_act=settings.get("temporal_act", "gelu"),
        )
        for name in settings.get("trainable_modules", ()):
            model.train_module(name)
        return (model, {}) if return_unused_kwargs else model

    @classmethod
    def from_unet2d(
        cls, unet: UNet2DConditionModel, *, lsa_layout: str = "paper", temporal_act: str = "gelu"
    ) -> SimDAUNet:
        """The SimDA video UNet of an image UNet, leaving ``unet`` as it was: the video UNet's
        frozen weights are ``unet``'s own tensors (same storage, no copy), its layers are new."""
        _check_inflatable(unet)
        return inflate(share_weights(unet), lsa_layout=lsa_layout, temporal_act=temporal_act)

    # ------------------------------------------------------------------ layers

    def simda_blocks(self) -> list[SimDATransformerBlock]:
        return [b for b in self.unet.modules() if isinstance(b, SimDATransformerBlock)]

    @property
    def lsa_layout(self) -> str:
        return self.context.lsa_layout

    def set_lsa_layout(self, layout: str) -> None:
        """Switch every block's attention to another layout (``MODEL_LSA_LAYOUTS``; ``"self"``:
        plain per-frame self-attention), keeping the kernel choice of ``simda.optimize``; a
        processor another tool put in place of latent-shift attention is replaced."""
        _check_layout(layout)
        self.context.lsa_layout = layout
        for block in self.simda_blocks():
            if not isinstance(block.attn1.processor, LatentShiftAttnProcessor):
                block.attn1.set_processor(LatentShiftAttnProcessor(self.context))

    def check_layers(self) -> None:
        if any(type(b).__name__.startswith("ToMe") for b in self.unet.modules()):  # tomesd
            raise SimDAError(
                "tomesd's token merging is not supported: it merges the tokens of each frame "
                "into fewer, so latent-shift attention can no longer find the token at the same "
                "position in earlier frames; undo it with tomesd.remove_patch"
            )
        for block in self.simda_blocks():
            processor = block.attn1.processor
            if not isinstance(processor, LatentShiftAttnProcessor):
                raise SimDAError(
                    f"the self-attention of the SimDA UNet runs {type(processor).__name__}, "
                    "not latent-shift attention (set_attn_processor, set_default_attn_processor "
                    "or fuse_qkv_projections replaced it): the frames would not see each other. "
                    "unet.set_lsa_layout(unet.lsa_layout) puts it back"
                )

    def train_module(self, name: str) -> None:
        """Train the image UNet's layer ``name`` (e.g. ``"conv_in"``) with the adapters."""
        module = self.unet.get_submodule(name)
        module.requires_grad_(True)
        if name not in self.trainable_modules:
            self.trainable_modules.append(name)

    def adapter_modules(self) -> dict[str, nn.Module]:
        """The modules SimDA adds or trains, by name: every adapter, and ``trainable_modules``."""
        found = {
            name: m
            for name, m in self.named_modules()
            if isinstance(m, SpatialAdapter | TemporalAdapter)
        }
        found.update({f"unet.{n}": self.unet.get_submodule(n) for n in self.trainable_modules})
        return found

    def named_trainable_parameters(self):
        """(name, parameter) of what SimDA trains: the parameters of ``adapter_modules`` but
        an ablation's removed adapters, whatever their ``requires_grad`` (tools such as peft's
        LoRA loader switch it off on every weight they do not add)."""
        for owner, module in self.adapter_modules().items():
            if owner not in self.ablated:
                for name, p in module.named_parameters():
                    yield f"{owner}.{name}", p

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_trainable_parameters()]


def _check_layout(layout):
    if layout not in MODEL_LSA_LAYOUTS:
        raise ValueError(f"lsa_layout must be one of {MODEL_LSA_LAYOUTS}, got {layout!r}")


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


#: instance attributes that tools install on a module to wrap its forward (accelerate's
#: offload hooks, DeepCache): a copy must not call back into the original module
_WRAPPERS = ("forward", "_hf_hook", "_old_forward")


def share_weights(module: nn.Module, _memo: dict | None = None) -> nn.Module:
    """A copy of ``module`` whose every parameter and buffer is the original's tensor (new
    ``Parameter`` objects on the same storage) and whose submodules are copies too, so that
    changing the copy's layers, classes or ``requires_grad`` leaves the original as it was."""
    memo = {} if _memo is None else _memo
    if id(module) in memo:
        return memo[id(module)]
    clone = module.__class__.__new__(module.__class__)
    memo[id(module)] = clone
    state = {
        k: copy.copy(v) if isinstance(v, dict | set | list) else v
        for k, v in module.__dict__.items()
        if k not in _WRAPPERS
    }
    state["_parameters"] = type(module._parameters)(
        (k, None if p is None else nn.Parameter(p.detach(), requires_grad=p.requires_grad))
        for k, p in module._parameters.items()
    )
    state["_modules"] = type(module._modules)(
        (k, None if m is None else share_weights(m, memo)) for k, m in module._modules.items()
    )
    clone.__dict__.update(state)
    return clone


def inflate(
    unet: UNet2DConditionModel,
    *,
    lsa_layout: str = "paper",
    temporal_act: str = "gelu",
    freeze: bool = True,
) -> SimDAUNet:
    """Turn a diffusers SD-1.x ``UNet2DConditionModel`` into the SimDA video UNet, in place
    (``SimDAUNet.from_unet2d`` leaves it as it was).

    The image model's weights are frozen (``freeze=True``); only the new adapters train.
    Returns a ``SimDAUNet`` that shares the given module.
    """
    _check_inflatable(unet)
    _check_layout(lsa_layout)
    check_temporal_act(temporal_act)  # before anything changes
    if freeze:
        unet.requires_grad_(False)
    context = VideoContext(lsa_layout=lsa_layout)
    for block in [m for m in unet.modules() if isinstance(m, BasicTransformerBlock)]:
        dim = block.norm1.normalized_shape[0]
        block.__class__ = SimDATransformerBlock
        block.attn_adapter = _new_like(block.norm1.weight, SpatialAdapter, dim)
        block.ffn_adapter = _new_like(block.norm1.weight, SpatialAdapter, dim)
        block.attn1.set_processor(LatentShiftAttnProcessor(context))
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
        for name, module in model.named_modules():
            if kinds and isinstance(module, kinds):
                out = (
                    (module.w_up, module.b_up)
                    if isinstance(module, TemporalAdapter)
                    else (module.fc2.weight, module.fc2.bias)
                )
                for p in out:
                    p.zero_()
                module.requires_grad_(False)
                if isinstance(model, SimDAUNet):
                    model.ablated.add(name)
    if lsa:
        model.set_lsa_layout("self")


def as_module(model, what: str = "model") -> nn.Module:
    """``model`` itself, or the ``.unet`` of a pipeline."""
    if isinstance(model, nn.Module):
        return model
    unet = getattr(model, "unet", None)
    if isinstance(unet, nn.Module):
        return unet
    raise SimDAError(
        f"{what} must be a SimDA UNet (torch.nn.Module) or a pipeline with a .unet, got "
        f"{type(model).__name__}"
    )


def count_parameters(model: nn.Module) -> dict:
    """Parameter counts: ``total``, ``trainable`` (what training updates), ``frozen``,
    ``spatial_adapters``, ``temporal_adapters`` (``model`` may be a pipeline: its ``.unet``)."""
    model = as_module(model)

    def numel(params):
        return sum(p.numel() for p in params)

    def of(kind):
        return numel(p for m in model.modules() if isinstance(m, kind) for p in m.parameters())

    total = numel(model.parameters())
    if isinstance(model, SimDAUNet):
        trainable = numel(model.trainable_parameters())
    else:
        trainable = numel(p for p in model.parameters() if p.requires_grad)
    return {
        "total": total,
        "trainable": trainable,
        "frozen": total - trainable,
        "spatial_adapters": of(SpatialAdapter),
        "temporal_adapters": of(TemporalAdapter),
    }
