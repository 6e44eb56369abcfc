"""Adapter weights as safetensors: only the ~25 M trained parameters, checked on load."""

from __future__ import annotations

import json
import os
import warnings

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from simda.adapters import SpatialAdapter, TemporalAdapter
from simda.errors import SimDAError

FORMAT = "simda-adapters-1"


def _is_trained(module: torch.nn.Module) -> bool:
    """Adapters, and layers a variant trains besides them (``_simda_trainable``, e.g. the
    widened ``conv_in`` of the super-resolution model)."""
    return isinstance(module, SpatialAdapter | TemporalAdapter) or getattr(
        module, "_simda_trainable", False
    )


def as_module(model, what: str = "model") -> torch.nn.Module:
    """``model`` itself, or the ``.unet`` of a pipeline."""
    if isinstance(model, torch.nn.Module):
        return model
    unet = getattr(model, "unet", None)
    if isinstance(unet, torch.nn.Module):
        return unet
    raise SimDAError(
        f"{what} must be a SimDA UNet (torch.nn.Module) or a pipeline with a .unet, got "
        f"{type(model).__name__}"
    )


def _matching_names(tensors: dict, own: dict) -> dict:
    """The file's tensors under the model's names when they differ only by the ``unet.``
    prefix of a SimDAUNet (a file saved from ``video_unet.unet``, loaded into ``video_unet``,
    or the other way round)."""
    if set(tensors) == set(own):
        return tensors
    added = {f"unet.{k}": v for k, v in tensors.items()}
    if set(added) == set(own):
        return added
    stripped = {k.removeprefix("unet."): v for k, v in tensors.items()}
    if all(k.startswith("unet.") for k in tensors) and set(stripped) == set(own):
        return stripped
    return tensors


def adapter_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters of every spatial and temporal adapter (and of layers a variant trains with
    them), under the model's own names (``model`` may be a pipeline: its ``.unet``)."""
    model = as_module(model)
    names = {
        f"{prefix}.{name}" if prefix else name
        for prefix, module in model.named_modules()
        if _is_trained(module)
        for name, _ in module.named_parameters()
    }
    return {k: v for k, v in model.state_dict().items() if k in names}


def atomic_save(tensors: dict, path: str, metadata: dict | None = None) -> None:
    """Write safetensors next to ``path`` and rename: a crash never leaves a broken file."""
    if os.path.isdir(path):
        raise SimDAError(f"{path!r} is a folder; give the path of a .safetensors file")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata
        )
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # like open(): safetensors writes owner-only files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _adapter_setup(model: torch.nn.Module) -> dict:
    """What adapter weights only make sense with: the temporal activation and the
    attention layout they were trained with."""
    acts = sorted({m.act for m in model.modules() if isinstance(m, TemporalAdapter)})
    setup = {"temporal_act": acts[0] if len(acts) == 1 else acts}
    layout = getattr(model, "lsa_layout", None)
    if isinstance(layout, str):
        setup["lsa_layout"] = layout
    return setup


def save_adapters(
    model: torch.nn.Module,
    path: str,
    dtype: torch.dtype | None = None,
    metadata: dict[str, str] | None = None,
) -> int:
    """Save the adapters of ``model`` (a SimDAUNet) to ``path`` (.safetensors).

    ``dtype=torch.float16`` halves the file (sd15: about 50 MB). ``metadata``: extra string
    entries for the file's header (e.g. a training step). Returns the parameter count.
    """
    if os.path.splitext(path)[1].lower() in (".bin", ".ckpt", ".pt", ".pth", ".pkl"):
        raise SimDAError(
            f"save_adapters writes safetensors: name the file .safetensors, not {path!r} "
            "(that suffix means a pickle to other tools)"
        )
    model = as_module(model)
    state = adapter_state_dict(model)
    if not state:
        raise SimDAError("this model has no SimDA adapters to save")
    if dtype is not None:
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise SimDAError(f"save_adapters: dtype must be a torch floating dtype, got {dtype!r}")
        state = {k: v.to(dtype) for k, v in state.items()}
    meta = {"format": FORMAT, "parameters": str(sum(v.numel() for v in state.values()))}
    meta["config"] = json.dumps(_adapter_setup(model))
    atomic_save(state, path, {**(metadata or {}), **meta})
    return sum(v.numel() for v in state.values())


def _is_pickle(path: str) -> bool:
    """Whether ``path`` is a torch.save file (zip or legacy pickle) rather than safetensors,
    whose first 8 bytes are its JSON header's length (then ``{``): any value of those bytes,
    pickle-like or not, is fine when the header they announce fits the file."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) == 9:
        header = int.from_bytes(head[:8], "little")
        if head[8:9] == b"{" and 8 + header <= os.path.getsize(path):
            return False  # a safetensors header
    legacy = len(head) > 1 and head[0] == 0x80 and head[1] in (2, 3, 4, 5)  # pickle protocol
    return head[:4] == b"PK\x03\x04" or legacy


def read_safetensors(path: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and metadata of a safetensors file, with a clear error for anything else."""
    if not os.path.isfile(path):
        raise SimDAError(f"weights file {path!r} does not exist")
    if _is_pickle(path):
        raise SimDAError(
            f"{path!r} is a pickled PyTorch checkpoint (torch.save), not safetensors: simda "
            "never unpickles weights (unpickling can run code). Convert it where you trust it: "
            "safetensors.torch.save_file(torch.load(path), 'weights.safetensors')"
        )
    try:
        with safe_open(path, framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as exc:  # not a safetensors file
        raise SimDAError(f"{path!r} is not a readable safetensors file: {exc}") from exc


def load_adapters(model: torch.nn.Module, path: str, strict: bool = True) -> dict:
    """Load adapter weights saved by ``save_adapters`` into ``model``.

    Names and shapes are checked; with ``strict`` any missing, unexpected or mis-shaped entry
    raises one error that lists them. Returns ``{"missing": [...], "unexpected": [...]}``.
    ``model`` may be a pipeline (its ``.unet``); a file saved from the inner image UNet
    (``video_unet.unet``) loads into the video UNet and the other way round.
    """
    model = as_module(model)
    tensors, meta = read_safetensors(path)
    if meta.get("format") != FORMAT:
        raise SimDAError(f"{path!r} is not a SimDA adapter file (format {meta.get('format')!r})")
    not_float = sorted(k for k, v in tensors.items() if not v.is_floating_point())
    if not_float:
        raise SimDAError(f"{path!r} holds non-float adapter weights (e.g. {not_float[:3]})")
    own = adapter_state_dict(model)
    tensors = _matching_names(tensors, own)
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    mismatched = sorted(
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(tensors)
        if tensors[k].shape != own[k].shape
    )
    if mismatched or (strict and (missing or unexpected)):
        problems = [
            f"{len(missing)} missing (e.g. {missing[:3]})" if missing else "",
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})" if unexpected else "",
            f"shape mismatches: {mismatched[:3]}" if mismatched else "",
        ]
        raise SimDAError(
            f"adapters in {path!r} do not fit this model: " + "; ".join(p for p in problems if p)
        )
    try:
        saved = json.loads(meta.get("config", "{}"))
    except ValueError:
        saved = {}
    own_setup = _adapter_setup(model)
    differs = [
        f"{k} {saved[k]!r} in the file, {own_setup[k]!r} in the model"
        for k in own_setup
        if isinstance(saved, dict) and k in saved and saved[k] != own_setup[k]
    ]
    if differs:
        warnings.warn(
            f"adapters in {path!r} were trained with another setup: " + "; ".join(differs),
            RuntimeWarning,
            stacklevel=2,
        )
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, value in tensors.items():
            if name in params:
                params[name].copy_(value.to(params[name].dtype))
    return {"missing": missing, "unexpected": unexpected}
