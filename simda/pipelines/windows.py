"""Context windows for clips longer than a model was trained on (diffusers' FreeNoise, at the
level of the whole UNet), and prompts that change over time.

A clip of F frames is covered by windows of ``context_length`` frames that start every
``context_stride`` frames (the last one ends at the clip's end). Every denoising step runs the
UNet on each window and blends the windows' predictions frame by frame with weights that sum to
one per frame, so that the UNet never sees more than ``context_length`` frames at once (memory
independent of F) and every frame is denoised in the context the model was trained with.

Weights of a window's positions ``i = 0 .. L-1`` (before the per-frame normalisation):

- ``flat``: 1.
- ``pyramid``: ``min(i + 1, L - i)``, highest in the middle (diffusers' default).
- ``delayed_reverse_sawtooth``: ``0.01`` for the first half, then ``L - i`` (diffusers').
- ``context``: SimDA's own reach. Latent-shift attention looks back at most 4 frames and the
  temporal adapters' conv one frame each way, so a window's first frames see less of the past
  than the model had in training and its last frame none of the future:
  ``min(1, (i + 1) / 5)`` for the first 4 positions, 1/2 for the last, 1 elsewhere; except where
  the window starts (ends) with the clip, whose first (last) frames had exactly that context in
  training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from simda.errors import SimDAError
from simda.pipelines.checks import is_int

WEIGHTINGS = ("pyramid", "flat", "delayed_reverse_sawtooth", "context")
NOISE_TYPES = ("shuffle_context", "repeat_context", "random")
#: how far latent-shift attention looks back (the largest shift of its table)
LSA_REACH = 4


@dataclass(frozen=True)
class FreeNoise:
    """Settings of ``SimDAPipeline.enable_free_noise`` (``context_length`` None: the clip
    length the model was trained on, from its config)."""

    context_length: int | None = None
    context_stride: int = 4
    weighting_scheme: str = "pyramid"
    noise_type: str = "shuffle_context"
    prompt_interpolation_callback: Callable | None = None
    window_batch: int = 1

    def __post_init__(self):
        for name in ("context_length", "context_stride", "window_batch"):
            value = getattr(self, name)
            if (value is not None or name != "context_length") and (not is_int(value) or value < 1):
                raise SimDAError(f"{name} must be an int >= 1, got {value!r}")
        if self.context_length is not None and self.context_stride > self.context_length:
            raise SimDAError(
                f"context_stride ({self.context_stride}) must be at most context_length "
                f"({self.context_length}): windows further apart would leave frames out"
            )
        if self.weighting_scheme not in WEIGHTINGS:
            raise SimDAError(
                f"weighting_scheme must be one of {WEIGHTINGS}, got {self.weighting_scheme!r}"
            )
        if self.noise_type not in NOISE_TYPES:
            raise SimDAError(f"noise_type must be one of {NOISE_TYPES}, got {self.noise_type!r}")
        callback = self.prompt_interpolation_callback
        if callback is not None and not callable(callback):
            raise SimDAError(f"prompt_interpolation_callback must be callable, got {callback!r}")


def windows(frames: int, length: int, stride: int) -> list[tuple[int, int]]:
    """``(start, end)`` of the windows over ``frames`` frames: every ``stride`` frames from 0,
    and one ending at the last frame; one window when the clip fits in one."""
    if frames <= length:
        return [(0, frames)]
    starts = list(range(0, frames - length + 1, stride))
    if starts[-1] != frames - length:
        starts.append(frames - length)
    return [(s, s + length) for s in starts]


def position_weights(scheme: str, length: int, first: bool, last: bool) -> torch.Tensor:
    """Weights of a window's ``length`` positions; ``first``/``last``: the window starts/ends
    with the clip."""
    i = torch.arange(length, dtype=torch.float64)
    if scheme == "flat":
        return torch.ones(length, dtype=torch.float64)
    if scheme == "pyramid":
        return torch.minimum(i + 1, length - i)
    if scheme == "delayed_reverse_sawtooth":
        return torch.where(i < length // 2, torch.full_like(i, 0.01), length - i)
    weights = torch.clamp((i + 1) / (LSA_REACH + 1), max=1.0)  # "context"
    if first:
        weights[:] = 1.0
    if not last and length > 1:
        weights[-1] = min(weights[-1].item(), 0.5)
    return weights


def blend_weights(frames: int, spans: list[tuple[int, int]], scheme: str) -> list[torch.Tensor]:
    """Per window, the weight of each of its frames in the blended prediction: normalised so
    that the weights of every frame, over the windows that hold it, sum to one."""
    raw = [position_weights(scheme, end - start, start == 0, end == frames) for start, end in spans]
    total = torch.zeros(frames, dtype=torch.float64)
    for (start, end), w in zip(spans, raw, strict=True):
        total[start:end] += w
    return [w / total[start:end] for (start, end), w in zip(spans, raw, strict=True)]


def arrange_noise(noise: torch.Tensor, length: int, stride: int, kind: str, generator=None):
    """Initial noise (B, C, F, h, w) of a clip longer than one window: ``random`` leaves it;
    ``repeat_context`` gives frame ``f`` the noise of frame ``f mod length``;
    ``shuffle_context`` gives each chunk of ``stride`` frames after the first window the noise
    of the chunk one window earlier, its frames in a random order (FreeNoise: windows start
    from correlated noise, which keeps them consistent, without repeating exactly)."""
    frames = noise.shape[2]
    if kind == "random" or frames <= length:
        return noise
    noise = noise.clone()
    if kind == "repeat_context":
        return noise[:, :, torch.arange(frames) % length]
    if isinstance(generator, list | tuple):
        generator = generator[0]
    device = generator.device if generator is not None else "cpu"
    for start in range(length, frames, stride):
        size = min(stride, frames - start)
        source = start - length + torch.randperm(size, generator=generator, device=device).cpu()
        noise[:, :, start : start + size] = noise[:, :, source]
    return noise


def check_prompt_schedule(schedule, frames: int) -> None:
    """``{frame: prompt}``: int keys inside the clip, string prompts, at least one entry."""
    if not isinstance(schedule, dict) or not schedule:
        raise SimDAError(
            f"a prompt schedule is a non-empty dict {{frame: prompt}}, got {schedule!r}"
        )
    for frame, prompt in schedule.items():
        if not is_int(frame) or not 0 <= frame < frames:
            raise SimDAError(
                f"prompt schedule keys must be frame indices in 0..{frames - 1}, got {frame!r}"
            )
        if not isinstance(prompt, str):
            raise SimDAError(f"prompt schedule values must be strings, got {prompt!r}")


def interpolate_prompts(keyed: dict[int, torch.Tensor], frames: int, callback=None) -> torch.Tensor:
    """Per-frame text embeddings (1, F, L, D) from embeddings (1, L, D) keyed by frame:
    constant before the first key and after the last, linear between keys, or
    ``callback(start_frame, end_frame, start_embeds, end_embeds)`` returning the
    (end - start + 1, L, D) embeddings of frames start..end (diffusers' FreeNoise signature)."""
    keys = sorted(keyed)
    out = keyed[keys[0]][:, None].repeat(1, frames, 1, 1)
    out[:, keys[-1] :] = keyed[keys[-1]][:, None]
    for a, b in zip(keys, keys[1:], strict=False):
        if callback is not None:
            part = callback(a, b, keyed[a], keyed[b])
            if not isinstance(part, torch.Tensor) or tuple(part.shape) != (
                b - a + 1,
                *out.shape[2:],
            ):
                got = tuple(part.shape) if isinstance(part, torch.Tensor) else type(part).__name__
                raise SimDAError(
                    f"prompt_interpolation_callback must return ({b - a + 1}, L, D) = "
                    f"{(b - a + 1, *out.shape[2:])} for frames {a}..{b}, got {got}"
                )
            out[0, a : b + 1] = part.to(out)
        else:
            t = torch.linspace(0, 1, b - a + 1, dtype=out.dtype, device=out.device)
            out[:, a : b + 1] = torch.lerp(keyed[a][:, None], keyed[b][:, None], t[:, None, None])
    return out


class FreeNoiseMixin:
    """``enable_free_noise`` / ``disable_free_noise`` of a pipeline whose config records the
    clip length its model was trained on (``config.sampling["num_frames"]``)."""

    def enable_free_noise(
        self,
        context_length: int | None = None,
        context_stride: int = 4,
        weighting_scheme: str = "pyramid",
        noise_type: str = "shuffle_context",
        prompt_interpolation_callback=None,
        window_batch: int = 1,
    ) -> None:
        """Context windows for clips longer than ``context_length`` frames (default: the clip
        length the model was trained on, ``config.sampling["num_frames"]``), as diffusers'
        FreeNoise: every step runs the UNet on windows of ``context_length`` frames, one every
        ``context_stride`` frames, and blends their predictions (``weighting_scheme``:
        ``"pyramid"``, ``"flat"``, ``"delayed_reverse_sawtooth"``, ``"context"``); the initial
        noise follows ``noise_type`` (``"shuffle_context"``, ``"repeat_context"``,
        ``"random"``). Memory stays that of ``window_batch`` windows (run by one UNet call: on
        a CPU a few windows per call save most of the per-call time); see
        ``simda.pipelines.windows``."""
        self._free_noise = FreeNoise(
            context_length,
            context_stride,
            weighting_scheme,
            noise_type,
            prompt_interpolation_callback,
            window_batch,
        )
        self.context_length()  # a model that records no clip length needs one given

    def disable_free_noise(self) -> None:
        self._free_noise = None

    @property
    def free_noise_enabled(self) -> bool:
        return getattr(self, "_free_noise", None) is not None

    def context_length(self) -> int:
        """Frames per window: ``enable_free_noise``'s, else the trained clip length (checked
        against the stride: windows further apart would leave frames out)."""
        given = self._free_noise.context_length if self.free_noise_enabled else None
        length = given or self.config.sampling.get("num_frames")
        if length is None:
            raise SimDAError(
                "context_length: this model records no clip length it was trained on "
                '(config.sampling["num_frames"]): give enable_free_noise(context_length=...)'
            )
        stride = self._free_noise.context_stride if self.free_noise_enabled else 1
        if stride > length:
            raise SimDAError(
                f"context_stride ({stride}) must be at most the context length ({length}, the "
                "model's clip length): windows further apart would leave frames out"
            )
        return length

    def check_context(self, frames: int) -> None:
        """A clip of ``frames`` frames fits the context windows' settings: one clear error
        before any work (an explicit ``context_length`` longer than the clip, a stride beyond
        the model's clip length)."""
        if not self.free_noise_enabled:
            return
        self.context_length()
        given = self._free_noise.context_length
        if given is not None and given > frames:
            raise SimDAError(
                f"context_length {given} is longer than the clip ({frames} frames): give a "
                "shorter one, or disable_free_noise()"
            )

    def context_windows(self, frames: int) -> list[tuple[int, int]]:
        """The ``(start, end)`` windows a clip of ``frames`` frames is denoised in: the whole
        clip when context windows are off or it fits in one."""
        if not self.free_noise_enabled:
            return [(0, frames)]
        return windows(frames, self.context_length(), self._free_noise.context_stride)
