"""The toy world: one coloured shape moving on black, with its caption.

Clips are uint8 (F, H, W, 3); the caption is exactly ``"a {colour} {shape} moving
{direction}"``. Everything is a function of the seed.
"""

from __future__ import annotations

import itertools
import os

import numpy as np

from simda.errors import SimDAError

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
CAPTIONS = [f"a {c} {s} moving {d}" for c, s, d in itertools.product(COLOURS, SHAPES, DIRECTIONS)]
#: the words of every caption (the toy world's closed vocabulary)
VOCAB = ["a", "moving", *COLOURS, *SHAPES, *DIRECTIONS]
SIZE, FRAMES = 32, 8  # clips of the data set: 8 frames of 32x32 pixels
RADIUS = 0.16  # shape radius, as a fraction of the frame size (5.12 px at 32)
SPEEDS = (0.045, 0.07)  # speed range per frame, as a fraction of the size (1.44-2.24 px at 32)


def caption(colour: str, shape: str, direction: str) -> str:
    return f"a {colour} {shape} moving {direction}"


def caption_subset(n: int) -> list[str]:
    """A fixed pseudo-random subset of ``n`` of the 48 captions (all 48 in order for n=48)."""
    if n >= len(CAPTIONS):
        return list(CAPTIONS)
    order = np.random.default_rng(0).permutation(len(CAPTIONS))[:n]
    return [CAPTIONS[i] for i in sorted(order)]


def parse_caption(text: str) -> tuple[str, str, str]:
    words = text.split()
    if len(words) != 5 or words[0] != "a" or words[3] != "moving":
        raise ValueError(f"not a toy-world caption: {text!r}")
    return words[1], words[2], words[4]


def shape_mask(shape: str, cy: float, cx: float, radius: float, size: int) -> np.ndarray:
    """Boolean (size, size) mask of a shape centred at (cy, cx); arrays of centres shaped
    (N, 1, 1) give (N, size, size) masks."""
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dy, dx = y - cy, x - cx
    if shape == "circle":
        return dy**2 + dx**2 <= radius**2
    if shape == "square":
        return (np.abs(dy) <= radius * 0.85) & (np.abs(dx) <= radius * 0.85)
    # upward triangle: inside the apex-down bounds of three half-planes
    top, bottom = -radius, radius * 0.8
    half_width = (dy - top) / (bottom - top) * radius
    return (dy >= top) & (dy <= bottom) & (np.abs(dx) <= half_width)


def render(
    colour: str,
    shape: str,
    direction: str,
    *,
    frames: int = 8,
    size: int = 32,
    start: tuple[float, float] | None = None,
    speed: float | None = None,
    radius: float | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """One clip. Start position and speed are drawn from ``rng`` when not given, so that the
    shape stays fully inside the frame for the whole clip."""
    for name, value, choices in (
        ("colour", colour, tuple(COLOURS)),
        ("shape", shape, SHAPES),
        ("direction", direction, tuple(DIRECTIONS)),
    ):
        if value not in choices:
            raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    rng = rng or np.random.default_rng(0)
    radius = radius or size * RADIUS
    speed = speed if speed is not None else rng.uniform(*SPEEDS) * size
    travel = speed * (frames - 1)
    margin = radius + 1
    dy, dx = DIRECTIONS[direction]
    if start is None:

        def axis(d):
            lo = margin + (travel if d < 0 else 0)
            hi = size - margin - (travel if d > 0 else 0)
            return rng.uniform(lo, max(lo, hi))

        start = (axis(dy), axis(dx))
    clip = np.zeros((frames, size, size, 3), np.uint8)
    # all frames at once: centres (F, 1, 1), rounded to float32 like the pixel grid they meet
    f = np.arange(frames, dtype=np.float64)[:, None, None]
    cy, cx = ((c + d * speed * f).astype(np.float32) for c, d in zip(start, (dy, dx), strict=True))
    clip[shape_mask(shape, cy, cx, radius, size)] = COLOURS[colour]
    return clip


def sample(seed: int, *, frames: int = 8, size: int = 32) -> tuple[np.ndarray, str]:
    """A random clip and its caption, a function of ``seed`` alone."""
    rng = np.random.default_rng(seed)
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    shape = SHAPES[rng.integers(len(SHAPES))]
    direction = list(DIRECTIONS)[rng.integers(len(DIRECTIONS))]
    return render(colour, shape, direction, frames=frames, size=size, rng=rng), caption(
        colour, shape, direction
    )


def write_dataset(output: str, clips: int, seed: int = 0) -> str:
    """``clips`` random clips as GIF + caption .txt, the layout ``simda train --data`` reads,
    into a folder that holds no clips yet (two data sets would mix)."""
    from simda.video import write_video

    if isinstance(clips, bool) or not isinstance(clips, int) or clips < 1:
        raise SimDAError(f"clips (--clips) must be a positive integer, got {clips!r}")
    if os.path.isdir(output):
        held = [n for n in os.listdir(output) if n.endswith((".txt", ".csv"))]
        if held:  # captions make clips a data set (videos alone, e.g. outputs, are ignored)
            raise SimDAError(
                f"{output!r} already holds {len(held)} caption files: write the data set to "
                "another folder (a second set would mix with the first)"
            )
    os.makedirs(output, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(clips):
        clip, text = sample(int(rng.integers(2**31)), frames=FRAMES, size=SIZE)
        write_video(os.path.join(output, f"clip{i:05d}.gif"), clip)
        with open(os.path.join(output, f"clip{i:05d}.txt"), "w") as f:
            f.write(text + "\n")
    return output
