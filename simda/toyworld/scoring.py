"""Scoring one toy-world clip against its caption, the way a person would look at it.

The renderer draws one flat shape at full intensity on black, so a pixel belongs to the
drawing when its brightest channel is at least half of full (``FOREGROUND``), and each frame
is read as its largest 8-connected blob of such pixels. Per clip:

- ``size``: in every frame exactly one blob (other bright pixels at most ``STRAY`` of it) whose
  area is within ``AREA_TOLERANCE`` of the caption shape's rendered area;
- ``shape``: the renderer's own shapes, each scaled to the blob's area and centred on it, laid
  over the blob; the best intersection-over-union, averaged over the frames, picks the shape,
  which must reach ``MIN_IOU`` with a mean area between half and twice the shape's (a frame
  filled with colour is no square);
- ``colour``: the blob's mean colour is within ``COLOUR_TOLERANCE`` per channel of one of
  the four colours (none otherwise);
- ``direction``: the larger component of the blob centre's least-squares velocity, by sign,
  when the centre moves at least ``MIN_MOTION`` pixels per frame;
- ``speed``: the velocity along the caption's direction within the data's speed range
  (``SPEEDS``, widened by ``SPEED_TOLERANCE``), sideways drift under ``MAX_SIDEWAYS`` and every
  centre within ``MAX_WOBBLE`` of the fitted straight path;
- ``sharp``: ``softness``, the share of mid-intensity pixels (a quarter to three quarters of
  full) on the blob's edge (one pixel either side), at most ``MAX_SOFTNESS``: the renderer's
  edges have none, a blurred shape's mostly such pixels.

Rendered clips score 100 % on every check (tested on all 48 captions); each degenerate output
(a full-frame colour, a static or huge blob, two blobs, noise, one clip for every caption, a
circle whatever the caption, a blurred render) scores zero or chance on what it fakes.
"""

from __future__ import annotations

import numpy as np

from simda.toyworld.world import (
    COLOURS,
    DIRECTIONS,
    RADIUS,
    SHAPES,
    SPEEDS,
    parse_caption,
    shape_mask,
)

FOREGROUND = 128  # brightest channel, on 0..255: the renderer draws 0 or 255
MID = (64, 192)  # mid intensities: a quarter to three quarters of full
COLOUR_TOLERANCE = 100  # per channel, on 0..255
AREA_TOLERANCE = 0.3  # relative, around the caption shape's rendered area
STRAY = 0.1  # bright pixels outside the blob, relative to its area
MIN_IOU = 0.75  # a rendered shape's best match is above 0.9 (tested)
MIN_MOTION = 0.5  # pixels per frame: slower reads as standing still
SPEED_TOLERANCE = 0.2  # relative, around the data's speed range
MAX_SIDEWAYS = 0.3  # pixels per frame across the caption's direction
MAX_WOBBLE = 1.0  # pixels between a blob centre and the fitted straight path
MAX_SOFTNESS = 0.2
METRICS = ("colour", "shape", "size", "direction", "speed", "sharp")

# area of each shape of radius r over r^2 (``world.shape_mask``), and the vertical offset of its
# centre of mass from the centre it is drawn at, over r: the triangle spans -r..0.8r with its
# apex up, so its centroid lies two thirds of the way down, at 0.2r
_UNIT_AREA = {"circle": np.pi, "square": 1.7**2, "triangle": 0.5 * 2 * 1.8}
_CENTROID_DROP = {"circle": 0.0, "square": 0.0, "triangle": 0.2}
_OFFSETS = np.array([(dy, dx) for dy in (-0.5, 0.0, 0.5) for dx in (-0.5, 0.0, 0.5)])


def shape_area(shape: str, size: int) -> float:
    """The area in pixels of ``shape`` as the renderer draws it in a ``size`` frame (its
    continuous area; rendered masks differ from it by a few pixels)."""
    return _UNIT_AREA[shape] * (RADIUS * size) ** 2


def _grow(mask: np.ndarray) -> np.ndarray:
    """Dilation of boolean (..., H, W) masks by the 3x3 square (the 8-neighbourhood)."""
    return _neighbourhood(mask, np.maximum, False)


def _neighbourhood(values: np.ndarray, reduce, fill) -> np.ndarray:
    """``reduce`` (np.maximum, np.minimum) over each pixel's 3x3 neighbourhood of (..., H, W)
    ``values``, padded with ``fill``."""
    pad = [(0, 0)] * (values.ndim - 2) + [(1, 1), (1, 1)]
    padded = np.pad(values, pad, constant_values=fill)
    height, width = values.shape[-2:]
    out = values
    for dy in range(3):
        for dx in range(3):
            out = reduce(out, padded[..., dy : dy + height, dx : dx + width])
    return out


def largest_blobs(bright: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of each boolean (H, W) frame of ``bright`` (F, H, W),
    as (F, H, W) masks (all False for a frame with nothing bright). Labels start as pixel
    indices and each pixel takes its neighbourhood's smallest until nothing changes: then
    every component carries the index of its first pixel."""
    none = bright.size  # larger than every index
    labels = np.where(bright, np.arange(bright.size).reshape(bright.shape), none)
    while True:
        spread = np.where(bright, _neighbourhood(labels, np.minimum, none), none)
        if np.array_equal(spread, labels):
            break
        labels = spread
    out = np.zeros_like(bright)
    for f, frame in enumerate(labels):
        found, counts = np.unique(frame[frame < none], return_counts=True)
        if len(found):
            out[f] = frame == found[np.argmax(counts)]
    return out


def softness(intensity: np.ndarray, blob: np.ndarray) -> float:
    """Share of mid-intensity pixels on the edge of ``blob`` (boolean (H, W)): the pixels within
    one pixel of it that are not within one pixel of the outside. ``intensity``: (H, W)
    brightest channel, 0..255."""
    edge = _grow(blob) & _grow(~blob)
    values = intensity[edge]
    return float(((values > MID[0]) & (values < MID[1])).mean()) if values.size else 0.0


def shape_match(blob: np.ndarray) -> dict[str, float]:
    """Per shape, the best intersection-over-union of ``blob`` (boolean (H, W), non-empty,
    square) with the renderer's shape of the same area centred on the blob's centre of mass
    (trying half-pixel offsets: rasterisation moves a centre by up to that)."""
    ys, xs = np.nonzero(blob)
    cy, cx = ys.mean() + 0.5, xs.mean() + 0.5  # pixel centres, in the renderer's coordinates
    out = {}
    for shape in SHAPES:
        radius = np.sqrt(len(ys) / _UNIT_AREA[shape])
        ty = cy - _CENTROID_DROP[shape] * radius + _OFFSETS[:, 0, None, None]
        tx = cx + _OFFSETS[:, 1, None, None]
        templates = shape_mask(shape, ty, tx, radius, blob.shape[0])  # (9, H, W)
        inter = (templates & blob).sum((1, 2))
        union = (templates | blob).sum((1, 2))
        out[shape] = float((inter / union).max())
    return out


def blob_colour(pixels: np.ndarray) -> str | None:
    """The named colour within ``COLOUR_TOLERANCE`` per channel of the mean of (N, 3) pixels."""
    if not len(pixels):
        return None
    mean = pixels.mean(0)
    for name, rgb in COLOURS.items():  # the tolerance is under half of 255: one match at most
        if np.abs(mean - np.array(rgb)).max() <= COLOUR_TOLERANCE:
            return name
    return None


def _motion(t: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares velocity (vy, vx) in pixels per frame of (N, 2) centres at frames ``t``,
    and the largest distance of a centre from the fitted straight path."""
    (vy, y0), (vx, x0) = np.polyfit(t, centres[:, 0], 1), np.polyfit(t, centres[:, 1], 1)
    path = np.stack([y0 + vy * t, x0 + vx * t], 1)
    return np.array([vy, vx]), float(np.hypot(*(centres - path).T).max())


def check_clip(clip) -> None:
    if (
        not isinstance(clip, np.ndarray)
        or clip.dtype != np.uint8
        or clip.ndim != 4
        or clip.shape[3] != 3
        or clip.shape[1] != clip.shape[2]
    ):
        described = (
            f"{clip.dtype} array of shape {clip.shape}"
            if isinstance(clip, np.ndarray)
            else type(clip).__name__
        )
        raise ValueError(f"clip must be a uint8 (F, H, H, 3) array, got a {described}")


def score(clip: np.ndarray, text: str) -> dict:
    """Score a uint8 (F, H, H, 3) clip against its caption (module docstring): what was seen
    (colour, shape, direction: None when nothing qualifies; the speed along the caption's
    direction; the mean blob area and softness) and one boolean per check of ``METRICS``
    (``colour_ok`` ...) plus ``all_ok``, all of them at once."""
    check_clip(clip)
    colour, shape, direction = parse_caption(text)
    size = clip.shape[1]
    intensity = clip.max(-1)
    bright = intensity >= FOREGROUND
    largest = largest_blobs(bright)
    counts = largest.sum((1, 2))
    single = bool((bright.sum((1, 2)) - counts <= STRAY * counts).all())
    blobs = {f: largest[f] for f in np.nonzero(counts)[0].tolist()}  # frames with a blob
    areas = counts[counts > 0].tolist()
    frames = len(intensity)
    matches = [shape_match(b) for b in blobs.values()]
    # frames without a blob match nothing: they count as zero in the mean
    fit = {s: sum(m[s] for m in matches) / frames for s in SHAPES}
    best = max(fit, key=fit.get)
    scale = np.mean(areas) / shape_area(best, size) if areas else 0.0
    found_shape = best if fit[best] >= MIN_IOU and 0.5 <= scale <= 2 else None
    expected = shape_area(found_shape or shape, size)
    everywhere = len(blobs) == frames
    size_ok = (
        everywhere and single and all(abs(a - expected) <= AREA_TOLERANCE * expected for a in areas)
    )
    found_colour = blob_colour(
        np.concatenate([clip[f][b] for f, b in blobs.items()]) if blobs else np.zeros((0, 3))
    )
    moved, along, speed_ok = None, None, False
    if len(blobs) >= 2:  # frames without a blob fail size; the others still show the motion
        centres = np.array([[ys.mean(), xs.mean()] for ys, xs in map(np.nonzero, blobs.values())])
        velocity, wobble = _motion(np.array(list(blobs), dtype=np.float64), centres)
        if np.abs(velocity).max() >= MIN_MOTION:
            axis = int(np.argmax(np.abs(velocity)))  # 0: vertical, 1: horizontal
            moved = {(0, 1): "down", (0, -1): "up", (1, 1): "right", (1, -1): "left"}[
                axis, int(np.sign(velocity[axis]))
            ]
        heading = np.array(DIRECTIONS[direction], dtype=np.float64)  # (dy, dx)
        along = float(velocity @ heading)
        sideways = abs(float(velocity @ heading[::-1]))  # (dx, dy): the perpendicular axis
        low, high = (s * size for s in SPEEDS)
        speed_ok = (
            low * (1 - SPEED_TOLERANCE) <= along <= high * (1 + SPEED_TOLERANCE)
            and sideways <= MAX_SIDEWAYS
            and wobble <= MAX_WOBBLE
        )
    edges = [softness(intensity[f], b) for f, b in blobs.items()]
    soft = float(np.mean(edges)) if edges else 1.0
    checks = {
        "colour_ok": found_colour == colour,
        "shape_ok": found_shape == shape,
        "size_ok": size_ok,
        "direction_ok": moved == direction,
        "speed_ok": speed_ok,
        "sharp_ok": soft <= MAX_SOFTNESS,
    }
    return {
        "caption": text,
        "colour": found_colour,
        "shape": found_shape,
        "direction": moved,
        "speed": along,
        "area": float(np.mean(areas)) if areas else 0.0,
        "softness": soft,
        **checks,
        "all_ok": all(checks.values()),
    }
