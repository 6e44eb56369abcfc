"""Scoring toy-world clips longer than the 8 frames the model was trained on.

Frames are read as the scorer reads them (``scoring``): the largest blob of bright pixels per
frame and its colour. Per clip: the blob's centre per frame, followed where the blob has the
caption's colour, an area between half and twice the caption shape's and does not touch the
border (a shape leaving the frame is not followed); over the steps between consecutive frames
where it is followed, the fraction that move along the captioned direction (at least
``MIN_STEP`` pixels that way), and the largest single jump in pixels; the fraction of frames
whose blob has the caption's colour. The targets: at least 90 % of steps along the direction,
no jump above twice the fastest training speed, colour at least 95 %.
"""

from __future__ import annotations

import numpy as np

from simda.toyworld.scoring import FOREGROUND, blob_colour, largest_blobs, shape_area
from simda.toyworld.world import DIRECTIONS, SHAPES, SPEEDS, parse_caption

FASTEST = SPEEDS[1] * 32  # pixels per frame: the fastest speed of the data set at 32x32
MAX_JUMP = 2 * FASTEST
MIN_STEP = 0.5  # pixels along the direction that count as moving that way


def blobs(clip: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
    """The largest bright blob of each frame ((F, H, W) masks, empty where nothing is bright)
    and its colour: None where there is no blob, it is no named colour, or its area is outside
    half the smallest to twice the largest shape's (a frame washed with colour has none)."""
    masks = largest_blobs(clip.max(-1) >= FOREGROUND)
    areas = [shape_area(s, clip.shape[1]) for s in SHAPES]
    colours = [
        blob_colour(frame[mask]) if 0.5 * min(areas) <= mask.sum() <= 2 * max(areas) else None
        for frame, mask in zip(clip, masks, strict=True)
    ]
    return masks, colours


def _followed(clip: np.ndarray, colours: set[str], shape: str) -> list[np.ndarray | None]:
    """The (y, x) centre of each frame's blob, None where it is not followed: its colour not
    in ``colours``, its area outside half to twice ``shape``'s, or touching the border."""
    expected = shape_area(shape, clip.shape[1])
    masks, found = blobs(clip)
    out = []
    for mask, colour in zip(masks, found, strict=True):
        edge = mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()
        ok = colour in colours and 0.5 * expected <= mask.sum() <= 2 * expected and not edge
        out.append(np.array([c.mean() for c in np.nonzero(mask)]) if ok else None)
    return out


def _steps(centres: list[np.ndarray | None]) -> list[np.ndarray]:
    """The moves between consecutive followed centres."""
    return [
        b - a for a, b in zip(centres, centres[1:], strict=False) if a is not None and b is not None
    ]


def _largest(steps: list[np.ndarray]) -> float:
    return max((float(np.hypot(*d)) for d in steps), default=0.0)


def track(clip: np.ndarray, caption: str) -> list[np.ndarray | None]:
    """The (y, x) centre of the caption's shape in each frame, None where it is not followed
    (no blob of the caption's colour, an area outside half to twice the shape's, or touching
    the border)."""
    colour, shape, _ = parse_caption(caption)
    return _followed(clip, {colour}, shape)


def frame_colours(clip: np.ndarray) -> list[str | None]:
    """Per frame, the colour of its largest bright blob, as ``blobs`` reads it."""
    return blobs(clip)[1]


def score_long(clip: np.ndarray, caption: str) -> dict:
    """``along`` (fraction of followed steps along the captioned direction, None without
    any), ``jump`` (largest step in pixels, 0 without any), ``steps`` (followed steps),
    ``colour`` (fraction of frames whose blob has the caption's colour)."""
    colour, _, direction = parse_caption(caption)
    steps = _steps(track(clip, caption))
    way = np.array(DIRECTIONS[direction], dtype=float)
    along = [float(d @ way) >= MIN_STEP for d in steps]
    return {
        "caption": caption,
        "steps": len(steps),
        "along": float(np.mean(along)) if steps else None,
        "jump": _largest(steps),
        "colour": float(np.mean([c == colour for c in frame_colours(clip)])),
    }


def switch_frame(clip: np.ndarray, colour: str) -> int | None:
    """The first frame from which the blob's colour is ``colour`` for the rest of the clip
    (None if it never is by the last frame)."""
    colours = frame_colours(clip)
    for f in range(len(clip)):
        if all(c == colour for c in colours[f:]):
            return f
    return None


def score_switch(clip: np.ndarray, before: str, after: str, key: int) -> dict:
    """A clip sampled with ``before`` up to frame ``key`` - 1 and ``after`` from ``key`` on
    (captions that differ in colour only): ``switch`` (``switch_frame`` of the new colour, None
    if it never takes over), ``delay`` (switch - key, None likewise), ``jump`` (the largest step
    of the blob's centre between consecutive frames where a shape of either colour is in view
    and clear of the border: the position should carry on through the switch)."""
    old, shape, _ = parse_caption(before)
    new, _, _ = parse_caption(after)
    steps = _steps(_followed(clip, {old, new}, shape))
    switch = switch_frame(clip, new)
    return {
        "before": before,
        "after": after,
        "key": key,
        "switch": switch,
        "delay": None if switch is None else switch - key,
        "jump": _largest(steps),
    }


#: two-prompt schedules of ``evaluate_switch``: the colour changes, shape and motion do not
SWITCHES = (
    ("a red circle moving right", "a blue circle moving right"),
    ("a green square moving down", "a yellow square moving down"),
    ("a yellow triangle moving left", "a red triangle moving left"),
    ("a blue circle moving up", "a green circle moving up"),
)
MAX_DELAY = 4  # frames after the key by which the new colour must have taken over


def evaluate_switch(
    pipe,
    frames: int,
    *,
    key: int | None = None,
    pairs=SWITCHES,
    seeds=(0,),
    steps: int | None = None,
    guidance: float | None = None,
    progress: bool = True,
) -> dict:
    """Sample each pair of ``pairs`` as ``{0: before, key - 1: before, key: after}`` (key:
    half the clip by default) and ``score_switch`` it: the share of clips whose colour
    switches within ``MAX_DELAY`` frames after the key (and not before it), the share whose
    largest jump stays within ``MAX_JUMP``, the mean delay of those that switch."""
    import torch
    from tqdm.auto import tqdm

    from simda.pipelines.t2v import progress_bars, to_uint8
    from simda.toyworld.evaluation import clip_seed

    key = frames // 2 if key is None else key
    if not 1 <= key < frames:
        raise ValueError(f"key must be in 1..{frames - 1} for {frames} frames, got {key}")
    results = []
    with progress_bars(pipe, False):
        for (before, after), s in tqdm(
            [(p, s) for s in seeds for p in pairs], disable=not progress, leave=False
        ):
            out = pipe(
                {0: before, key - 1: before, key: after},
                num_frames=frames,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=torch.Generator().manual_seed(clip_seed(before, s)),
            )
            results.append(score_switch(to_uint8(out.frames[0]), before, after, key))
    delays = [r["delay"] for r in results if r["delay"] is not None]
    return {
        "clips": len(results),
        "key": key,
        "switched": float(
            np.mean([d is not None and 0 <= d <= MAX_DELAY for d in [r["delay"] for r in results]])
        ),
        "mean_delay": float(np.mean(delays)) if delays else None,
        "within_jump": float(np.mean([r["jump"] <= MAX_JUMP for r in results])),
        "max_jump": max(r["jump"] for r in results),
        "results": results,
    }


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
    from simda.toyworld.evaluation import generate_clips

    clips = generate_clips(
        pipe,
        captions,
        seeds,
        frames=frames,
        steps=steps,
        guidance=guidance,
        batch=1,
        progress=progress,
    )
    results = [score_long(clip, c) for c, _, clip in clips]
    followed = [r["along"] for r in results if r["along"] is not None]
    return {
        "clips": len(results),
        "along": float(np.mean(followed)) if followed else 0.0,
        "within_jump": float(np.mean([r["jump"] <= MAX_JUMP for r in results])),
        "max_jump": max(r["jump"] for r in results),
        "colour": float(np.mean([r["colour"] for r in results])),
        "results": results,
    }
