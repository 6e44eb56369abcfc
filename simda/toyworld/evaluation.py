"""The evaluation of a toy-world model: sampling every caption, scoring the clips
(``scoring``), ablations, and the fidelity of a colour edit."""

from __future__ import annotations

import copy

import numpy as np
import torch
from tqdm.auto import tqdm

from simda.pipelines.t2v import progress_bars, to_uint8
from simda.toyworld.scoring import COLOUR_TOLERANCE, METRICS, score
from simda.toyworld.world import CAPTIONS, COLOURS, FRAMES, SHAPES, SIZE, parse_caption
from simda.unet import remove_components


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


def generate_clips(
    pipe,
    captions: list[str],
    seeds,
    *,
    frames: int = FRAMES,
    steps: int | None = 25,
    guidance: float | None = None,
    batch: int = 16,
    progress: bool = True,
):
    """Sample every caption with every seed as clips of ``frames`` frames: yields (caption,
    seed, clip). ``steps`` and ``guidance`` default (None) to the model's recommendation."""
    jobs = [(c, s) for s in seeds for c in captions]
    bar = tqdm(total=len(jobs), desc="sampling", disable=not progress, leave=False)
    with progress_bars(pipe, False):
        for i in range(0, len(jobs), batch):
            chunk = jobs[i : i + batch]
            out = pipe(
                [c for c, _ in chunk],
                num_frames=frames,
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
    """Score every caption x seed (``score``): per check of ``METRICS`` and ``"all"`` the
    fraction of clips that pass it, the mean ``"softness"``, shape accuracy per caption shape
    (``"shape by kind"``), and the per-clip ``"results"``."""
    results = [
        score(clip, c)
        for c, _s, clip in generate_clips(
            pipe, captions or CAPTIONS, seeds, steps=steps, guidance=guidance, progress=progress
        )
    ]
    return summarise(results)


def summarise(results: list[dict]) -> dict:
    """The fractions and means of ``evaluate`` over per-clip ``score`` results."""
    n = len(results)
    by_kind = {}
    for kind in SHAPES:
        mine = [r["shape_ok"] for r in results if parse_caption(r["caption"])[1] == kind]
        if mine:
            by_kind[kind] = sum(mine) / len(mine)
    return {
        "clips": n,
        **{m: sum(r[f"{m}_ok"] for r in results) / n for m in METRICS},
        "all": sum(r["all_ok"] for r in results) / n,
        "softness": float(np.mean([r["softness"] for r in results])),
        "shape by kind": by_kind,
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
    """A markdown table of ``evaluate`` rows, and the settings under it."""
    kinds = "/".join(SHAPES)
    lines = [
        f"| model | clips | colour | shape | shape {kinds} | size | direction | speed | sharp "
        "| softness | all |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        per_kind = "/".join(f"{100 * r['shape by kind'].get(k, 0):.0f}" for k in SHAPES)
        cells = [f"{100 * r[m]:.1f}%" for m in ("colour", "shape")]
        cells.append(per_kind)
        cells += [f"{100 * r[m]:.1f}%" for m in ("size", "direction", "speed", "sharp")]
        cells += [f"{r['softness']:.3f}", f"{100 * r['all']:.1f}%"]
        lines.append(f"| {name} | {r['clips']} | " + " | ".join(cells) + " |")
    setting = ", ".join(f"{k} {v}" for k, v in settings.items())
    return (
        "\n".join(lines)
        + f"\n\n{setting}. Chance is 25% for colour and direction, 33% for shape.\n"
    )


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
