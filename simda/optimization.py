"""``simda.optimize`` / ``simda.restore``: switch a model's SimDA layers to the fused kernels.

(The module is ``simda.optimization`` so that ``simda.optimize`` always names the function.)

Patching only changes which kernels the layers call, two entries of the ``VideoContext`` every
layer of a model shares: parameters, state dict and module classes stay as they are, so
``restore`` gives back exactly the model that was optimized.
"""

from __future__ import annotations

import warnings

import torch.nn as nn

from simda.attention import LatentShiftAttnProcessor, VideoContext
from simda_kernels._checks import check_backend
from simda_kernels.dispatch import ADAPTER_BACKENDS, LSA_BACKENDS


def _root(model_or_pipeline) -> nn.Module:
    if isinstance(model_or_pipeline, nn.Module):
        return model_or_pipeline
    unet = getattr(model_or_pipeline, "unet", None)
    if isinstance(unet, nn.Module):
        return unet
    raise TypeError(
        f"optimize expects a SimDA video UNet, a module containing one, or a pipeline with a "
        f".unet; got {type(model_or_pipeline).__name__}"
    )


def _contexts(root: nn.Module) -> list[tuple[VideoContext, bool, bool]]:
    """The video contexts of the model's layers: (context, has latent-shift attention, has
    temporal adapters). SimDA's, or Tune-A-Video's, whose sparse-causal attention is the
    ``"tav"`` layout."""
    found: dict[int, list] = {}
    for module in root.modules():
        proc = getattr(module, "processor", None)
        if isinstance(proc, LatentShiftAttnProcessor):
            found.setdefault(id(proc.context), [proc.context, False, False])[1] = True
        context = getattr(module, "simda_context", None)
        if isinstance(context, VideoContext) and hasattr(module, "temporal_adapter"):
            found.setdefault(id(context), [context, False, False])[2] = True
    return [tuple(entry) for entry in found.values()]


def optimize(
    model_or_pipeline,
    *,
    attention: bool = True,
    adapter: bool = True,
    attention_backend: str = "auto",
    adapter_backend: str = "auto",
):
    """Route latent-shift attention and the temporal adapters to the fused kernels.

    Works on a ``SimDAUNet``, any module containing SimDA layers (e.g. the Tune-A-Video
    baseline, whose sparse-causal attention is the ``"tav"`` layout) or a pipeline with a
    ``.unet``; returns the same object. ``"auto"`` picks the fused kernel where the device
    supports it (and, for attention, where it was measured faster), the reference elsewhere;
    pass ``attention_backend="triton"`` / ``adapter_backend="cuda"`` to force them.
    Idempotent; undone exactly by ``restore``. A plain ``UNet2DConditionModel`` has no layer
    these kernels apply to and is returned unchanged (with a warning).
    """
    check_backend(attention_backend, LSA_BACKENDS, "attention_backend")
    check_backend(adapter_backend, ADAPTER_BACKENDS, "adapter_backend")
    contexts = _contexts(_root(model_or_pipeline))
    if not contexts:
        warnings.warn(
            "optimize: no latent-shift attention or temporal adapter found; nothing changed",
            RuntimeWarning,
            stacklevel=2,
        )
    for context, has_attention, has_adapter in contexts:
        if context.before_optimize is None:
            context.before_optimize = {
                "attention_backend": context.attention_backend,
                "adapter_backend": context.adapter_backend,
            }
        if attention and has_attention:
            context.attention_backend = attention_backend
        if adapter and has_adapter:
            context.adapter_backend = adapter_backend
    return model_or_pipeline


def restore(model_or_pipeline):
    """Undo ``optimize``: every layer calls the kernel it called before. Returns the object."""
    for context, _, _ in _contexts(_root(model_or_pipeline)):
        if context.before_optimize is not None:
            context.attention_backend = context.before_optimize["attention_backend"]
            context.adapter_backend = context.before_optimize["adapter_backend"]
            context.before_optimize = None
    return model_or_pipeline


def backends(model_or_pipeline) -> dict[str, set[str]]:
    """The kernels a model currently uses: ``{"attention": {...}, "adapter": {...}}``."""
    contexts = _contexts(_root(model_or_pipeline))
    return {
        "attention": {c.attention_backend for c, has, _ in contexts if has},
        "adapter": {c.adapter_backend for c, _, has in contexts if has},
    }
