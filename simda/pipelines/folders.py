"""Model folders on disk: the checks that name what is wrong with one, and the reader of
folders whose model_index.json does not list their components (diffusers reads the others): an
SD-1.x folder with a bare or no model_index.json, and the folders simda 0.1 wrote in its own
layout (before ``SimDAPipeline`` was a diffusers pipeline)."""

from __future__ import annotations

import json
import logging
import os

import diffusers
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from simda.checkpoint import load_adapters, read_safetensors
from simda.errors import SimDAError
from simda.pipelines.pixel import SpaceToDepthAutoencoder
from simda.pipelines.text import TinyTextEncoder, WordTokenizer
from simda.unet import inflate

SD_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
#: ``format`` of model_index.json in folders of simda 0.1's own layout
LEGACY_FORMAT = "simda-pipeline-1"
logger = logging.getLogger(__name__)


def check_model_folder(path: str) -> dict:
    """model_index.json of a model folder (empty when it has none), with one clear error for
    each way the folder can be wrong."""
    if not os.path.isdir(path):
        raise SimDAError(f"model folder {path!r} does not exist (simda loads local folders only)")
    missing = [p for p in SD_PARTS if not os.path.isdir(os.path.join(path, p))]
    if missing:
        hint = ""
        if os.path.isfile(os.path.join(path, "adapters.safetensors")):  # a training output
            hint = (
                f"; it holds adapters.safetensors: load those onto a model with --adapters "
                f"{os.path.join(path, 'adapters.safetensors')} (adapters=)"
            )
        raise SimDAError(
            f"model folder {path!r} is not a diffusers SD-1.x folder: missing "
            f"{', '.join(missing)} (expected {', '.join(SD_PARTS)}){hint}"
        )
    for part in ("unet", "vae"):
        files = os.listdir(os.path.join(path, part))
        if "config.json" not in files:
            raise SimDAError(f"model folder {path!r}: {part}/config.json is missing")
        if part == "vae" and _class_name(path, "vae") == "SpaceToDepthAutoencoder":
            continue  # no weights
        if not any(f.endswith(".safetensors") for f in files):
            raise SimDAError(
                f"model folder {path!r}: {part}/ has no .safetensors weights "
                "(pickled .bin/.ckpt weights are not loaded; convert them first)"
            )
    index_path = os.path.join(path, "model_index.json")
    if not os.path.isfile(index_path):
        return {}
    try:
        with open(index_path) as f:
            index = json.load(f)
    except json.JSONDecodeError as exc:
        raise SimDAError(
            f"model folder {path!r}: model_index.json is not valid JSON ({exc})"
        ) from exc
    if not isinstance(index, dict):
        raise SimDAError(
            f"model folder {path!r}: model_index.json must hold a JSON object, "
            f"got a {type(index).__name__}"
        )
    return index


def _class_name(path: str, part: str, name: str = "config.json") -> str | None:
    try:
        with open(os.path.join(path, part, name)) as f:
            return json.load(f).get("_class_name")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def lists_components(index: dict) -> bool:
    """Whether model_index.json names the class of every component (diffusers can load it)."""
    return all(isinstance(index.get(part), list) for part in SD_PARTS)


def load_parts(cls, path: str, index: dict, *, adapters=None, **kwargs):
    """A pipeline of ``cls`` from a folder whose model_index.json does not list its components:
    each part is read by the class its own config names. A folder of simda 0.1's layout (its
    index has ``format: simda-pipeline-1``) also holds ``adapters.safetensors``, the tiny text
    stack in its own files and the recommended settings; ``save_pretrained`` writes any of them
    in the current layout. ``variant`` selects weight files as in diffusers."""
    weights = {"use_safetensors": True, "variant": kwargs.get("variant")}
    try:
        unet2d = UNet2DConditionModel.from_pretrained(
            path, subfolder="unet", low_cpu_mem_usage=False, **weights
        )
        if _class_name(path, "vae") == "SpaceToDepthAutoencoder":
            with open(os.path.join(path, "vae", "config.json")) as f:
                settings = json.load(f)
            vae = SpaceToDepthAutoencoder(settings["factor"], settings.get("in_channels", 3))
        else:
            vae = AutoencoderKL.from_pretrained(
                path, subfolder="vae", low_cpu_mem_usage=False, **weights
            )
        kind = _class_name(path, "scheduler", "scheduler_config.json") or "DDIMScheduler"
        scheduler = getattr(diffusers, kind).from_pretrained(path, subfolder="scheduler")
        if index.get("text") == "tiny":
            tokenizer = WordTokenizer(os.path.join(path, "tokenizer", "word_tokenizer.json"))
            with open(os.path.join(path, "text_encoder", "config.json")) as f:
                text_encoder = TinyTextEncoder(**json.load(f))
            tensors, _ = read_safetensors(os.path.join(path, "text_encoder", "model.safetensors"))
            text_encoder.load_state_dict(
                {k.replace("layers.", "blocks.", 1): v for k, v in tensors.items()}
            )
        else:
            from transformers import CLIPTextModel, CLIPTokenizer

            tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer")
            text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", **weights)
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise SimDAError(f"model folder {path!r} could not be loaded: {exc}") from exc
    unet = inflate(
        unet2d,
        lsa_layout=index.get("lsa_layout", "paper"),
        temporal_act=index.get("temporal_act", "gelu"),
    )
    if index.get("superres"):
        unet.train_module("conv_in")
    own = os.path.join(path, "adapters.safetensors")
    if index.get("format") == LEGACY_FORMAT:
        logger.info("%s is in simda 0.1's layout; save_pretrained writes the current one", path)
        if not os.path.isfile(own):
            raise SimDAError(
                f"model folder {path!r} was saved by simda but its adapters.safetensors is "
                "missing (its adapters would start untrained)"
            )
        load_adapters(unet, own)
    pipe = cls(
        vae,
        text_encoder,
        tokenizer,
        unet,
        scheduler,
        adapters=adapters,
        sampling=index.get("sampling"),
        superres_scale=index.get("superres_scale"),
    )
    dtype = kwargs.get("torch_dtype", kwargs.get("dtype"))
    for module in (unet, text_encoder, vae):
        module.eval()  # as diffusers' from_pretrained leaves its models
        if dtype is not None:
            torch.nn.Module.to(module, dtype)  # ModelMixin.to warns on every dtype
    return pipe
