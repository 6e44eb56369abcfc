"""The built-in toy-world model: where it lives, and how a trained one replaces it."""

from __future__ import annotations

import json
import os

import torch

from simda.checkpoint import complete_folder, replace_folder
from simda.errors import SimDAError
from simda.pipelines.t2v import SimDAPipeline, dtype_argument
from simda.toyworld.model import SAMPLING, is_toyworld

SHIPPED = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "toyworld"
)


def shipped_folder(target: str = SHIPPED) -> str | None:
    """The built-in model's folder: ``target``, or ``target.old`` when ``ship`` stopped between
    its two renames; None when neither holds a model."""
    return complete_folder(target, "model_index.json")


def load_shipped(**kwargs) -> SimDAPipeline | None:
    """The built-in model (``SimDAPipeline.from_pretrained`` arguments), None if absent."""
    folder = shipped_folder()
    return None if folder is None else SimDAPipeline.from_pretrained(folder, **kwargs)


def ship(model: str, target: str = SHIPPED) -> str:
    """Store the trained toy-world pipeline folder ``model`` as the built-in model, in fp16, at
    ``target`` (``checkpoint.replace_folder``: a failure at any point leaves a complete model
    at ``target`` or ``target.old``, ``shipped_folder``). Recommended settings the model does
    not record yet are the toy world's (``SAMPLING``)."""
    pipe = SimDAPipeline.from_pretrained(model, **dtype_argument(torch.float16))
    if not is_toyworld(pipe):
        raise SimDAError(f"--model {model!r} is not a toy-world model")
    pipe.register_to_config(sampling={**SAMPLING, **pipe.config.sampling})

    def save(folder: str) -> None:
        pipe.save_pretrained(folder)
        forget_origin(folder)

    replace_folder(target, save)
    return target


#: config keys that describe where a folder was read from on the machine that saved it (a
#: local path, the tokenizer's load flags), not the model: the built-in model carries none
ORIGIN_KEYS = ("_name_or_path", "is_local", "local_files_only")


def forget_origin(folder: str) -> None:
    """Drop ``ORIGIN_KEYS`` from every JSON config in ``folder`` (top level), in place."""
    for root, _, files in os.walk(folder):
        for name in files:
            if not name.endswith(".json"):
                continue
            path = os.path.join(root, name)
            with open(path, encoding="utf-8") as f:
                config = json.load(f)
            if not isinstance(config, dict) or not any(key in config for key in ORIGIN_KEYS):
                continue
            for key in ORIGIN_KEYS:
                config.pop(key, None)
            with open(path, "w", encoding="utf-8") as f:
                json.dump(config, f, indent=2, sort_keys=True)
                f.write("\n")
