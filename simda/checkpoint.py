"""SimDA's trained weights on disk: adapter files (only the ~25 M trained parameters, checked on
load), ``SimDAAdapters`` (the same as a diffusers model folder) and training checkpoints, each
written so that a crash never leaves a broken or mixed one."""

from __future__ import annotations

import glob
import json
import os
import shutil
import warnings

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from safetensors import safe_open
from safetensors.torch import save_file

from simda.adapters import SpatialAdapter, TemporalAdapter
from simda.errors import SimDAError
from simda.unet import SimDAUNet, as_module

FORMAT = "simda-adapters-1"


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
    """Parameters of every spatial and temporal adapter (and, for a ``SimDAUNet``, of the
    layers it trains with them, ``trainable_modules``), under the model's own names (``model``
    may be a pipeline: its ``.unet``)."""
    model = as_module(model)
    if isinstance(model, SimDAUNet):
        owners = model.adapter_modules()
    else:
        owners = {
            n: m
            for n, m in model.named_modules()
            if isinstance(m, SpatialAdapter | TemporalAdapter)
        }
    names = {f"{o}.{n}" for o, m in owners.items() for n, _ in m.named_parameters()}
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
        os.chmod(tmp, _file_mode())  # like open(): safetensors writes owner-only files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 less the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


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
    """Load adapter weights into ``model``: a file written by ``save_adapters`` or a folder
    written by ``SimDAAdapters.save_pretrained``.

    Names and shapes are checked; with ``strict`` any missing, unexpected or mis-shaped entry
    raises one error that lists them. Returns ``{"missing": [...], "unexpected": [...]}``.
    ``model`` may be a pipeline (its ``.unet``); a file saved from the inner image UNet
    (``video_unet.unet``) loads into the video UNet and the other way round.
    """
    model = as_module(model)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, SimDAAdapters.config_name)):
            raise SimDAError(
                f"{path!r} is a folder without {SimDAAdapters.config_name}: give a SimDAAdapters "
                "folder (SimDAAdapters.save_pretrained) or an adapter .safetensors file"
            )
        adapters = SimDAAdapters.from_pretrained(path, use_safetensors=True)
        tensors, saved = adapters.state_dict(), dict(adapters.config)
    else:
        tensors, meta = read_safetensors(path)
        if meta.get("format") != FORMAT:
            raise SimDAError(
                f"{path!r} is not a SimDA adapter file (format {meta.get('format')!r})"
            )
        try:
            saved = json.loads(meta.get("config", "{}"))
        except ValueError:
            saved = {}
    return _copy_checked(model, tensors, saved, f"adapters in {path!r}", strict)


def _copy_checked(model, tensors: dict, saved: dict, source: str, strict: bool = True) -> dict:
    """Copy ``tensors`` into the adapters of ``model`` (names with or without the ``unet.``
    prefix of a SimDA UNet), checking names, shapes and dtypes first; warn when ``saved`` (the
    setup they were trained with) differs from the model's."""
    not_float = sorted(k for k, v in tensors.items() if not v.is_floating_point())
    if not_float:
        raise SimDAError(f"{source} hold non-float weights (e.g. {not_float[:3]})")
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
        raise SimDAError(f"{source} do not fit this model: " + "; ".join(p for p in problems if p))
    own_setup = _adapter_setup(model)
    differs = [
        f"{k} {saved[k]!r} in the file, {own_setup[k]!r} in the model"
        for k in own_setup
        if isinstance(saved, dict) and k in saved and saved[k] != own_setup[k]
    ]
    if differs:
        warnings.warn(
            f"{source} were trained with another setup: " + "; ".join(differs),
            RuntimeWarning,
            stacklevel=3,
        )
    with torch.no_grad():
        for name, value in tensors.items():
            if name in own:
                own[name].copy_(value)  # state_dict tensors share the parameters' storage
    return {"missing": missing, "unexpected": unexpected}


# ----------------------------------------------------------------------------- SimDAAdapters


def _spec(module: torch.nn.Module) -> dict:
    """How to rebuild an adapter module (or a trained image-UNet layer) from the config."""
    if isinstance(module, SpatialAdapter):
        return {"kind": "spatial", "dim": module.fc1.in_features}
    if isinstance(module, TemporalAdapter):
        return {"kind": "temporal", "channels": module.w_down.shape[1], "act": module.act}
    if isinstance(module, torch.nn.Conv2d):
        return {
            "kind": "conv2d",
            "in_channels": module.in_channels,
            "out_channels": module.out_channels,
            "kernel_size": list(module.kernel_size),
            "stride": list(module.stride),
            "padding": list(module.padding),
        }
    raise SimDAError(f"SimDAAdapters cannot store a {type(module).__name__}")


def _build(spec: dict) -> torch.nn.Module:
    kind = spec.get("kind")
    if kind == "spatial":
        return SpatialAdapter(spec["dim"])
    if kind == "temporal":
        return TemporalAdapter(spec["channels"], spec["act"])
    if kind == "conv2d":
        args = ("in_channels", "out_channels", "kernel_size", "stride", "padding")
        return torch.nn.Conv2d(
            *(spec[a] if isinstance(spec[a], int) else tuple(spec[a]) for a in args)
        )
    raise SimDAError(f"SimDAAdapters: unknown module kind {kind!r} in the config")


class SimDAAdapters(ModelMixin, ConfigMixin):
    """SimDA's trained weights as a standalone diffusers model, like ``MotionAdapter``: every
    adapter of a SimDA UNet (and the layers it trains with them, e.g. the super-resolution
    variant's ``conv_in``) at its place in the image UNet, so that its state dict uses the
    image UNet's names (``down_blocks.0.attentions.0.transformer_blocks.0.attn_adapter...``).

    ``SimDAAdapters.from_unet(unet)`` takes a copy of a model's adapters; ``save_pretrained`` /
    ``from_pretrained`` write and read a folder (config.json + safetensors: about 50 MB in fp16
    at SD-1.5 size); ``load_into(unet)`` copies them into a SimDA UNet of the same shape
    (``SimDAPipeline.from_pretrained(sd_folder, adapters=...)`` and ``pipe.load_adapters`` do).
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        modules: dict | None = None,
        lsa_layout: str = "paper",
        temporal_act: str | list = "gelu",
    ):
        super().__init__()
        for path, spec in (modules or {}).items():
            parent = self
            *parents, leaf = path.split(".")
            for part in parents:
                if part not in parent._modules:
                    parent.add_module(part, torch.nn.Module())
                parent = parent._modules[part]
            parent.add_module(leaf, _build(spec))

    @classmethod
    def from_unet(cls, model) -> SimDAAdapters:
        """A copy of the adapters of ``model`` (a ``SimDAUNet`` or a pipeline), in its dtype
        and on its device."""
        unet = _simda_unet(model)
        modules = {k.removeprefix("unet."): _spec(m) for k, m in unet.adapter_modules().items()}
        setup = _adapter_setup(unet)
        adapters = cls(modules, lsa_layout=setup["lsa_layout"], temporal_act=setup["temporal_act"])
        state = {k.removeprefix("unet."): v for k, v in adapter_state_dict(unet).items()}
        adapters.load_state_dict(state)
        return adapters.to(device=unet.device, dtype=unet.dtype)

    def load_into(self, model) -> None:
        """Copy these weights into the adapters of ``model`` (a ``SimDAUNet`` or a pipeline),
        which must have the same ones, of the same shapes; a different temporal activation or
        attention layout gets a warning."""
        _copy_checked(_simda_unet(model), self.state_dict(), dict(self.config), "SimDAAdapters")


def _simda_unet(model) -> SimDAUNet:
    unet = as_module(model)
    if not isinstance(unet, SimDAUNet):
        raise SimDAError(f"expected a SimDA UNet or pipeline, got {type(unet).__name__}")
    return unet


# ----------------------------------------------------------------------------- whole folders


def fsync(path: str) -> None:
    """Flush a file (or, on POSIX, a folder's entries) to disk."""
    if os.path.isdir(path) and os.name != "posix":
        return  # folders cannot be opened for fsync on Windows
    fd = os.open(path, os.O_RDONLY if os.path.isdir(path) else os.O_RDWR)  # Windows: write
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def complete_folder(target: str, marker: str) -> str | None:
    """The complete folder ``replace_folder`` wrote at ``target``: the folder itself or, after a
    crash between its two renames, the old one it had moved aside (``target.old``); None when
    neither holds ``marker`` (a file every complete folder has)."""
    target = os.path.normpath(target)
    for folder in (target, target + ".old"):
        if os.path.isfile(os.path.join(folder, marker)):
            return folder
    return None


def replace_folder(target: str, write, sync: bool = False) -> None:
    """Write the folder ``target`` as one unit: ``write(tmp)`` fills a fresh sibling folder
    (``target.tmp-<pid>``; with ``sync`` its files are then flushed to disk), which replaces
    ``target`` by two renames: the old folder goes to ``target.old`` first and is deleted last.
    A failure at any point leaves a complete folder at ``target`` or ``target.old``
    (``complete_folder``); a failure before the renames puts the old folder back."""
    target = os.path.normpath(target)
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    for leftover in glob.glob(glob.escape(target) + ".tmp-*"):  # from crashed writes
        shutil.rmtree(leftover, ignore_errors=True)
    tmp, aside = f"{target}.tmp-{os.getpid()}", target + ".old"
    os.makedirs(tmp)
    try:
        write(tmp)
        mode = _file_mode()
        for folder, _, names in os.walk(tmp):
            for name in names:  # like open(): safetensors and diffusers write owner-only files
                os.chmod(os.path.join(folder, name), mode)
                if sync:
                    fsync(os.path.join(folder, name))
            if sync:
                fsync(folder)
        if os.path.isdir(target):
            if os.path.isdir(aside):  # left by a crash after an earlier swap: target is whole
                shutil.rmtree(aside)
            os.replace(target, aside)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.exists(target) and os.path.isdir(aside):
            os.replace(aside, target)
        raise
    if sync:
        fsync(parent)
    shutil.rmtree(aside, ignore_errors=True)
