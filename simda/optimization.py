"""``simda.optimize`` / ``simda.restore``: switch a model's SimDA layers to the fused kernels.

(The module is ``simda.optimization`` so that ``simda.optimize`` always names the function.)

Patching only changes which kernel each layer calls (an attribute on the attention processor
or the adapter module): parameters, state dict and module classes stay as they are, so
``restore`` gives back exactly the model that was optimized.
"""

from __future__ import annotations

import warnings

import torch.nn as nn

from simda.adapters import TemporalAdapter
from simda.attention import LatentShiftAttnProcessor
from simda_kernels._checks import check_backend
from simda_kernels.dispatch import ADAPTER_BACKENDS, LSA_BACKENDS

_SAVED = "_simda_backend_before_optimize"


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


def _layers(root: nn.Module, attention: bool, adapter: bool):
    """Objects with a ``backend`` attribute: LSA processors (SimDA's, or Tune-A-Video's
    sparse-causal attention built on the ``"tav"`` layout) and temporal adapters."""
    found = []
    for module in root.modules():
        proc = getattr(module, "processor", None)
        if attention and isinstance(proc, LatentShiftAttnProcessor):
            found.append(proc)
        if adapter and isinstance(module, TemporalAdapter):
            found.append(module)
    return found


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
    layers = _layers(_root(model_or_pipeline), attention, adapter)
    if not layers:
        warnings.warn(
            "optimize: no latent-shift attention or temporal adapter found; nothing changed",
            RuntimeWarning,
            stacklevel=2,
        )
    for layer in layers:
        if not hasattr(layer, _SAVED):
            setattr(layer, _SAVED, layer.backend)
        is_attention = isinstance(layer, LatentShiftAttnProcessor)
        layer.backend = attention_backend if is_attention else adapter_backend
    return model_or_pipeline


def restore(model_or_pipeline):
    """Undo ``optimize``: every layer calls the kernel it called before. Returns the object."""
    for layer in _layers(_root(model_or_pipeline), True, True):
        if hasattr(layer, _SAVED):
            layer.backend = getattr(layer, _SAVED)
            delattr(layer, _SAVED)
    return model_or_pipeline


def backends(model_or_pipeline) -> dict[str, set[str]]:
    """The kernels a model currently uses: ``{"attention": {...}, "adapter": {...}}``."""
    layers = _layers(_root(model_or_pipeline), True, True)
    return {
        "attention": {x.backend for x in layers if isinstance(x, LatentShiftAttnProcessor)},
        "adapter": {x.backend for x in layers if isinstance(x, TemporalAdapter)},
    }
