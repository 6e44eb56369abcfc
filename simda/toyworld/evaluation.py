"""Scoring toy-world clips against their captions, and the evaluation of a model."""

from __future__ import annotations

import copy

import numpy as np
import torch
from tqdm.auto import tqdm

from simda.pipelines.t2v import progress_bars, to_uint8
from simda.toyworld.world import CAPTIONS, COLOURS, FRAMES, SIZE, parse_caption
from simda.unet import remove_components

COLOUR_TOLERANCE = 100  # per channel, on 0..255
MIN_PIXELS = 10  # a shape covers about 30-80 pixels of a 32x32 frame


def _components(mask: np.ndarray) -> list[int]:
    """Sizes of the 4-connected components of a boolean (H, W) mask."""
    seen = np.zeros_like(mask, dtype=bool)
    sizes = []
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        stack, size = [start], 0
        seen[start] = True
        while stack:
            y, x = stack.pop()
            size += 1
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if (
                    0 <= ny < mask.shape[0]
                    and 0 <= nx < mask.shape[1]
                    and mask[ny, nx]
                    and not seen[ny, nx]
                ):
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        sizes.append(size)
    return sizes


def centre(mask: np.ndarray) -> np.ndarray:
    """(y, x) centre of the pixels of a non-empty boolean (H, W) mask."""
    ys, xs = np.mgrid[0 : mask.shape[0], 0 : mask.shape[1]]
    count = mask.sum()
    return np.array([(ys * mask).sum() / count, (xs * mask).sum() / count])


def colour_masks(clip: np.ndarray) -> dict[str, np.ndarray]:
    """Per colour, the (F, H, W) pixels close to it."""
    pixels = clip.astype(np.int16)
    return {
        name: (np.abs(pixels - np.array(rgb)) <= COLOUR_TOLERANCE).all(-1)
        for name, rgb in COLOURS.items()
    }


def score(clip: np.ndarray, text: str) -> dict:
    """Detect the shape by colour and score a clip against its caption.

    colour: the colour with the most pixels is the caption's; presence: in every frame that
    colour covers >= MIN_PIXELS and one connected blob holds >= 80% of them; direction: the
    larger component of the centroid's least-squares velocity, by sign, is the caption's.
    """
    colour, _shape, direction = parse_caption(text)
    masks = colour_masks(clip)
    found = max(masks, key=lambda c: masks[c].sum())
    mask = masks[found]
    counts = mask.sum((1, 2))
    present = bool((counts >= MIN_PIXELS).all()) and all(
        max(_components(m), default=0) >= 0.8 * m.sum() for m in mask
    )
    moved = None
    frames = np.nonzero(counts >= MIN_PIXELS)[0]
    if len(frames) >= 2:
        cy, cx = np.array([centre(mask[f]) for f in frames]).T
        vy, vx = np.polyfit(frames, cy, 1)[0], np.polyfit(frames, cx, 1)[0]
        if max(abs(vy), abs(vx)) > 0.1:  # pixels per frame
            moved = (
                ("down" if vy > 0 else "up")
                if abs(vy) > abs(vx)
                else ("right" if vx > 0 else "left")
            )
    return {
        "caption": text,
        "colour": found,
        "direction": moved,
        "colour_ok": found == colour,
        "direction_ok": moved == direction,
        "present": present,
    }


def generate_clips(
    pipe,
    captions: list[str],
    seeds,
    *,
    steps: int = 25,
    guidance: float | None = None,
    batch: int = 16,
    progress: bool = True,
):
    """Sample every caption with every seed: yields (caption, seed, clip). ``guidance``
    defaults to the model's recommended scale."""
    jobs = [(c, s) for s in seeds for c in captions]
    bar = tqdm(total=len(jobs), desc="sampling", disable=not progress, leave=False)
    with progress_bars(pipe, False):
        for i in range(0, len(jobs), batch):
            chunk = jobs[i : i + batch]
            out = pipe(
                [c for c, _ in chunk],
                num_frames=FRAMES,
                height=SIZE,
                width=SIZE,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=[torch.Generator().manual_seed(clip_seed(c, s)) for c, s in chunk],
            )
            for (c, s), clip in zip(chunk, to_uint8(out.frames), strict=True):
                yield c, s, clip
            bar.update(len(chunk))
    bar.close()


def clip_seed(caption: str, seed: int) -> int:
    """The noise seed of one (caption, seed) of an evaluation: distinct per caption."""
    return seed * 7919 + CAPTIONS.index(caption) if caption in CAPTIONS else seed


def evaluate(
    pipe,
    *,
    seeds=(0, 1),
    steps: int = 25,
    guidance: float | None = None,
    captions: list[str] | None = None,
    progress: bool = True,
) -> dict:
    """Colour, direction and presence accuracy over the captions x seeds."""
    results = [
        score(clip, c)
        for c, _s, clip in generate_clips(
            pipe, captions or CAPTIONS, seeds, steps=steps, guidance=guidance, progress=progress
        )
    ]
    n = len(results)
    return {
        "clips": n,
        "colour": sum(r["colour_ok"] for r in results) / n,
        "direction": sum(r["direction_ok"] for r in results) / n,
        "presence": sum(r["present"] for r in results) / n,
        "results": results,
    }


ABLATIONS = {
    "full model": {},
    "without temporal adapters": {"temporal": False},
    "without latent-shift attention (self-attention)": {"lsa": False},
    "without spatial adapters": {"spatial": False},
    "image model (no adapters, self-attention)": {
        "temporal": False,
        "spatial": False,
        "lsa": False,
    },
}


def ablate(pipe, *, temporal: bool = True, spatial: bool = True, lsa: bool = True):
    """A copy of ``pipe`` with components removed at inference (see
    ``simda.unet.remove_components``); the original is untouched."""
    clone = copy.copy(pipe)
    clone.unet = copy.deepcopy(pipe.unet)
    remove_components(clone.unet, temporal=not temporal, spatial=not spatial, lsa=not lsa)
    return clone


def report(rows: dict[str, dict], settings: dict) -> str:
    lines = ["| model | clips | colour | direction | presence |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['clips']} | {100 * r['colour']:.1f}% | "
            f"{100 * r['direction']:.1f}% | {100 * r['presence']:.1f}% |"
        )
    setting = ", ".join(f"{k} {v}" for k, v in settings.items())
    return "\n".join(lines) + f"\n\n{setting}. Chance is 25% for colour and direction.\n"


PRESENT_PIXELS = 20  # a shape covers about 60-80 pixels at 32x32


def edit_fidelity(source, edit, source_colour: str, edit_colour: str):
    """How well a toy-world colour edit worked: the number of frames in which the edited colour
    covers at least ``PRESENT_PIXELS`` pixels, and the mean distance in pixels between its
    centre and the source shape's centre over those of them that also show the source shape
    (None when there are none)."""
    sources = colour_masks(source)[source_colour]
    edits = colour_masks(edit)[edit_colour]
    shown, distances = 0, []
    for src, new in zip(sources, edits, strict=True):
        if new.sum() < PRESENT_PIXELS:
            continue
        shown += 1
        if src.any():  # the source shape is in this frame too
            distances.append(float(np.hypot(*(centre(src) - centre(new)))))
    return shown, (float(np.mean(distances)) if distances else None)
