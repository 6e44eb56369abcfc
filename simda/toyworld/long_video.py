"""Scoring toy-world clips longer than the 8 frames the model was trained on.

Per clip: the shape's centre per frame (the caption's colour, at least ``MIN_PIXELS`` pixels,
not touching the border: a shape leaving the frame is not followed); over the steps between
consecutive frames where it is followed, the fraction that move along the captioned direction
(at least ``MIN_STEP`` pixels that way), and the largest single jump in pixels; the fraction of
frames in which the caption's colour is the one with the most pixels. The targets: at least
90 % of steps along the direction, no jump above twice the fastest training speed, colour at
least 95 %.
"""

from __future__ import annotations

import numpy as np

from simda.toyworld.evaluation import MIN_PIXELS, centre, colour_masks
from simda.toyworld.world import COLOURS, DIRECTIONS, parse_caption

FASTEST = 0.07 * 32  # pixels per frame: the fastest speed of the data set (``world.render``)
MAX_JUMP = 2 * FASTEST
MIN_STEP = 0.5  # pixels along the direction that count as moving that way


def track(clip: np.ndarray, colour: str) -> list[np.ndarray | None]:
    """The (y, x) centre of the ``colour`` shape in each frame, None where it is not fully in
    view (fewer than ``MIN_PIXELS`` pixels, or touching the border)."""
    out = []
    for mask in colour_masks(clip)[colour]:
        edge = mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()
        out.append(centre(mask) if mask.sum() >= MIN_PIXELS and not edge else None)
    return out


def dominant_colours(clip: np.ndarray) -> list[str | None]:
    """Per frame, the colour with the most pixels (None when no colour has ``MIN_PIXELS``)."""
    masks = colour_masks(clip)
    out = []
    for f in range(len(clip)):
        counts = {name: int(masks[name][f].sum()) for name in COLOURS}
        best = max(counts, key=counts.get)
        out.append(best if counts[best] >= MIN_PIXELS else None)
    return out


def score_long(clip: np.ndarray, caption: str) -> dict:
    """``along`` (fraction of followed steps along the captioned direction, None without
    any), ``jump`` (largest step in pixels, 0 without any), ``steps`` (followed steps),
    ``colour`` (fraction of frames whose dominant colour is the caption's)."""
    colour, _, direction = parse_caption(caption)
    centres = track(clip, colour)
    steps = [
        b - a for a, b in zip(centres, centres[1:], strict=False) if a is not None and b is not None
    ]
    way = np.array(DIRECTIONS[direction], dtype=float)
    along = [float(d @ way) >= MIN_STEP for d in steps]
    return {
        "caption": caption,
        "steps": len(steps),
        "along": float(np.mean(along)) if steps else None,
        "jump": max((float(np.hypot(*d)) for d in steps), default=0.0),
        "colour": float(np.mean([c == colour for c in dominant_colours(clip)])),
    }


def switch_frame(clip: np.ndarray, colour: str) -> int | None:
    """The first frame from which the dominant colour is ``colour`` for the rest of the clip
    (None if it never is by the last frame)."""
    colours = dominant_colours(clip)
    for f in range(len(clip)):
        if all(c == colour for c in colours[f:]):
            return f
    return None


def evaluate_long(
    pipe,
    frames: int,
    *,
    captions: list[str],
    seeds=(0,),
    steps: int | None = None,
    guidance: float | None = None,
    progress: bool = True,
) -> dict:
    """``score_long`` over captions x seeds at ``frames`` frames, as the pipeline is set up
    (context windows on or off): the mean fraction of steps along the direction, the share of
    clips whose largest jump stays within ``MAX_JUMP``, the largest jump, mean colour."""
    import torch
    from tqdm.auto import tqdm

    from simda.pipelines.t2v import progress_bars, to_uint8
    from simda.toyworld.evaluation import clip_seed

    results = []
    with progress_bars(pipe, False):
        for c, s in tqdm(
            [(c, s) for s in seeds for c in captions], disable=not progress, leave=False
        ):
            out = pipe(
                c,
                num_frames=frames,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=torch.Generator().manual_seed(clip_seed(c, s)),
            )
            results.append(score_long(to_uint8(out.frames[0]), c))
    followed = [r["along"] for r in results if r["along"] is not None]
    return {
        "clips": len(results),
        "along": float(np.mean(followed)) if followed else 0.0,
        "within_jump": float(np.mean([r["jump"] <= MAX_JUMP for r in results])),
        "max_jump": max(r["jump"] for r in results),
        "colour": float(np.mean([r["colour"] for r in results])),
        "results": results,
    }
