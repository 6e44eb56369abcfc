"""``simda demo``: one-shot editing end to end on a synthetic clip, with a report."""

from __future__ import annotations

import os
import time

import numpy as np

from simda import toyworld
from simda.video import side_by_side

SOURCE = ("red", "square", "right")
EDIT = ("blue", "square", "right")
PRESENT_PIXELS = 20  # a shape covers about 60-80 pixels at 32x32


def run_demo(args) -> int:
    from simda.cli import _device, _loss_plot, _settings, load_pipeline, write_outputs
    from simda.pipelines import edit_video
    from simda.unet import count_parameters

    start = time.perf_counter()
    device = _device(args.device)
    on_gpu = device.type == "cuda"
    tune_steps = args.tune_steps if args.tune_steps is not None else (300 if on_gpu else 60)
    steps = args.steps if args.steps is not None else (50 if on_gpu else 20)
    pipe = load_pipeline(args, device)
    size = pipe.default_size
    clip = toyworld.render(*SOURCE, frames=8, size=size, rng=np.random.default_rng(args.seed))
    source, edited = toyworld.caption(*SOURCE), toyworld.caption(*EDIT)
    print(
        f"demo: one-shot edit of {clip.shape[0]} frames at {size}x{size} on {device}: "
        f"{source!r} -> {edited!r}"
    )
    # toy world: toyworld.EDIT_GUIDANCE; other models: the released setting (12.5)
    toy = toyworld.is_toyworld(pipe)  # the shipped toy-world model
    guidance = args.guidance if args.guidance is not None else toyworld.edit_guidance(pipe)
    t2v_paths: list[str] = []
    t2v_rows = []
    if toy:
        t2v_rows = _text_to_video(pipe, args, t2v_paths)  # before tuning changes the adapters
    result = edit_video(
        pipe,
        clip,
        source,
        edited,
        tune_steps=tune_steps,
        num_inference_steps=steps,
        guidance_scale=guidance,
        seed=args.seed,
        mixed_precision=args.mixed_precision,
        cache_dir=os.path.join(args.output, ".cache"),
        progress=not args.quiet,
    )
    grid = side_by_side(result.source, result.reconstruction, result.edit)
    settings = _settings(
        args, tune_steps=tune_steps, steps=steps, guidance=guidance, source=source, edit=edited
    )
    paths = write_outputs(args.output, "demo", grid, settings) + t2v_paths
    paths.append(_loss_plot(result.tuning.losses, os.path.join(args.output, "demo-loss.png")))
    counts = count_parameters(pipe.unet)
    tuning = result.tuning
    rows = [
        ("model", pipe.config.get("path", "built-in tiny (random weights)")),
        ("device", str(device)),
        ("clip", f"{clip.shape[0]} frames, {size}x{size} px"),
        ("tuned parameters", f"{tuning.tuned_parameters:,} of {counts['total']:,}"),
        ("tuning steps", str(tune_steps)),
        ("time per tuning step", f"{tuning.seconds_per_step * 1e3:.0f} ms"),
        (
            "peak GPU memory",
            "-" if tuning.peak_memory_mib is None else f"{tuning.peak_memory_mib:.0f} MiB",
        ),
        (
            "loss first 10 -> last 10",
            f"{np.mean(tuning.losses[:10]):.4f} -> {np.mean(tuning.losses[-10:]):.4f}",
        ),
        ("DDIM steps (inversion, sampling), guidance", f"{steps}, {guidance:g}"),
        ("total time", f"{time.perf_counter() - start:.1f} s"),
    ]
    if toy:
        shown, offset = edit_fidelity(result.source, result.edit, SOURCE[0], EDIT[0])
        rows += [
            (f"edit: frames showing a {EDIT[0]} shape", f"{shown}/{len(result.edit)}"),
            (
                "edit: distance from the source shape's centre (mean over those frames)",
                "-" if offset is None else f"{offset:.1f} px",
            ),
        ]
    rows += t2v_rows
    table = "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    summary = os.path.join(args.output, "demo-summary.md")
    with open(summary, "w") as f:
        f.write(f"# simda demo\n\nside by side: input | reconstruction | edit\n\n{table}\n")
    print(table)
    for path in [*paths, summary]:
        print(path)
    return 0


def edit_fidelity(source, edit, source_colour: str, edit_colour: str):
    """How well a toy-world colour edit worked: the number of frames in which the edited colour
    covers at least ``PRESENT_PIXELS`` pixels, and the mean distance in pixels between its
    centre and the source shape's centre over those of them that also show the source shape
    (None when there are none)."""
    sources = toyworld.colour_masks(source)[source_colour]
    edits = toyworld.colour_masks(edit)[edit_colour]
    shown, distances = 0, []
    for src, new in zip(sources, edits, strict=True):
        if new.sum() < PRESENT_PIXELS:
            continue
        shown += 1
        if src.any():  # the source shape is in this frame too
            distances.append(float(np.hypot(*(toyworld.centre(src) - toyworld.centre(new)))))
    return shown, (float(np.mean(distances)) if distances else None)


T2V_CAPTIONS = (
    "a red circle moving right",
    "a blue square moving up",
    "a yellow triangle moving left",
    "a green circle moving down",
)


def _text_to_video(pipe, args, paths: list[str]) -> list[tuple[str, str]]:
    """Text-to-video with the toy-world model as shipped (before the edit tunes it): four
    captions, one clip each, scored by the toy-world detector; writes demo-t2v.*."""
    from simda.cli import _settings, write_outputs

    start = time.perf_counter()
    clips = {
        c: clip
        for c, _, clip in toyworld.generate_clips(
            pipe, list(T2V_CAPTIONS), seeds=[args.seed], progress=False
        )
    }
    seconds = time.perf_counter() - start
    scores = [toyworld.score(clip, c) for c, clip in clips.items()]
    grid = np.concatenate(list(clips.values()), axis=1)  # captions stacked vertically
    paths += write_outputs(args.output, "demo-t2v", grid, _settings(args, captions=T2V_CAPTIONS))
    detected = ", ".join(f"{r['colour']} {r['direction'] or 'still'}" for r in scores)
    return [
        ("text-to-video captions (top to bottom)", "; ".join(T2V_CAPTIONS)),
        ("detected colour and motion", detected),
        (
            "colour / direction right",
            f"{sum(r['colour_ok'] for r in scores)}/4, {sum(r['direction_ok'] for r in scores)}/4",
        ),
        ("text-to-video time (4 clips)", f"{seconds:.1f} s"),
    ]
