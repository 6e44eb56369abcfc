"""Argument checks shared by the pipelines: each raises one ``SimDAError`` (a ``ValueError``)
that names the argument and what was expected."""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from simda.errors import SimDAError


def is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_factor(name: str, value, minimum: int) -> None:
    """``value`` is an int (not a bool) of at least ``minimum``."""
    if not is_int(value) or value < minimum:
        raise SimDAError(f"{name} must be an int >= {minimum}, got {value!r}")


def check_number(name: str, value, minimum: float | None = None) -> None:
    """``value`` is a finite real number (not a bool), at least ``minimum``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or (minimum is not None and value < minimum)
    ):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise SimDAError(f"{name} must be a finite number{bound}, got {value!r}")


def check_embeds(name: str, embeds, dim: int) -> None:
    if not isinstance(embeds, torch.Tensor) or embeds.ndim != 3 or embeds.shape[2] != dim:
        got = tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__
        raise SimDAError(f"{name} must be a tensor (B, L, {dim}), got {got}")


def check_rgb_frames(frames, name: str, ndims: tuple[int, ...], layout: str) -> None:
    """``frames`` is a uint8 numpy array of one of ``ndims`` dimensions, RGB last."""
    if (
        not isinstance(frames, np.ndarray)
        or frames.dtype != np.uint8
        or frames.ndim not in ndims
        or frames.shape[-1] != 3
    ):
        what = (
            f"{frames.dtype} array of shape {frames.shape}"
            if isinstance(frames, np.ndarray)
            else type(frames).__name__
        )
        raise SimDAError(f"{name} must be a uint8 RGB array {layout}, got {what}")


def check_prompt(prompt, name: str = "prompt") -> None:
    if not isinstance(prompt, str):
        raise SimDAError(f"{name} must be a string, got {type(prompt).__name__} {prompt!r}")


def check_generator(generator, videos: int | None = None) -> None:
    """``generator`` is None, a ``torch.Generator`` or a list of ``videos`` of them."""
    if generator is None or isinstance(generator, torch.Generator):
        return
    if (
        isinstance(generator, list | tuple)
        and all(isinstance(g, torch.Generator) for g in generator)
        and (videos is None or len(generator) == videos)
    ):
        return
    count = f"a list of {videos} (one per video)" if videos is not None else "a list of them"
    raise SimDAError(
        f"generator must be None, a torch.Generator (e.g. torch.Generator().manual_seed(0)) or "
        f"{count}, got {generator!r}"
    )
