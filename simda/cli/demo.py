"""``simda demo``: one-shot editing end to end on a synthetic clip, with a report."""

from __future__ import annotations

import os
import time

import numpy as np

from simda.cli import common

SOURCE = ("red", "square", "right")
EDIT = ("blue", "square", "right")


def register(sub) -> None:
    p = sub.add_parser("demo", help="tune, invert and edit a synthetic clip end to end")
    common.add_common(p)
    p.add_argument(
        "--tune-steps",
        type=common.positive_int,
        default=None,
        help="tuning steps (default: 60 on CPU, 300 on GPU)",
    )
    p.add_argument(
        "--steps",
        type=common.positive_int,
        default=None,
        help="DDIM steps of the inversion and the edit (default: 20 on CPU, 50 on GPU; the "
        "text-to-video part uses the model's own setting)",
    )
    p.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="guidance of the edit (default: the model's recommended edit guidance, 4.5 for "
        "the toy world, else 12.5)",
    )
    common.add_mixed_precision(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from simda import toyworld
    from simda.pipelines import edit_video
    from simda.pipelines.editing import edit_guidance
    from simda.unet import count_parameters
    from simda.video import side_by_side

    start = time.perf_counter()
    device = common.device(args.device)
    on_gpu = device.type == "cuda"
    tune_steps = args.tune_steps if args.tune_steps is not None else (300 if on_gpu else 60)
    steps = args.steps if args.steps is not None else (50 if on_gpu else 20)
    pipe = common.load_pipeline(args, device)
    size = pipe.default_size
    clip = toyworld.render(*SOURCE, frames=8, size=size, rng=np.random.default_rng(args.seed))
    source, edited = toyworld.caption(*SOURCE), toyworld.caption(*EDIT)
    common.logger.info(
        "one-shot edit of %d frames at %dx%d on %s: %r -> %r",
        clip.shape[0],
        size,
        size,
        device,
        source,
        edited,
    )
    toy = toyworld.is_toyworld(pipe)  # the shipped toy-world model
    guidance = args.guidance if args.guidance is not None else edit_guidance(pipe)
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
    settings = common.settings(
        args, tune_steps=tune_steps, steps=steps, guidance=guidance, source=source, edit=edited
    )
    paths = common.write_outputs(args.output, "demo", grid, settings) + t2v_paths
    paths.append(common.loss_plot(result.tuning.losses, os.path.join(args.output, "demo-loss.png")))
    counts = count_parameters(pipe.unet)
    tuning = result.tuning
    rows = [
        (
            "model",
            args.model or ("built-in toy world" if toy else "built-in tiny (random weights)"),
        ),
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
        shown, offset = toyworld.edit_fidelity(result.source, result.edit, SOURCE[0], EDIT[0])
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


T2V_CAPTIONS = (
    "a red circle moving right",
    "a blue square moving up",
    "a yellow triangle moving left",
    "a green circle moving down",
)


def _text_to_video(pipe, args, paths: list[str]) -> list[tuple[str, str]]:
    """Text-to-video with the toy-world model as shipped (before the edit tunes it): four
    captions, one clip each, scored by the toy-world scorer (``toyworld.score``); writes
    demo-t2v.*."""
    from simda import toyworld

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
    paths += common.write_outputs(
        args.output, "demo-t2v", grid, common.settings(args, captions=T2V_CAPTIONS)
    )
    seen = "; ".join(
        f"{r['colour'] or '-'} {r['shape'] or '-'} {r['direction'] or 'still'}" for r in scores
    )
    n = len(scores)
    passed = ", ".join(f"{m} {sum(r[f'{m}_ok'] for r in scores)}/{n}" for m in toyworld.METRICS)
    return [
        ("text-to-video captions (top to bottom)", "; ".join(T2V_CAPTIONS)),
        ("seen: colour, shape, motion", seen),
        ("checks passed", passed),
        ("clips passing every check", f"{sum(r['all_ok'] for r in scores)}/{n}"),
        (
            "edge softness (mean; rendered shapes 0)",
            f"{np.mean([r['softness'] for r in scores]):.2f}",
        ),
        ("text-to-video time (4 clips)", f"{seconds:.1f} s"),
    ]
