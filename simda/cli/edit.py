"""``simda edit VIDEO --prompt P --edit E``: one-shot video editing."""

from __future__ import annotations

import os

from simda.cli import common


def register(sub) -> None:
    p = sub.add_parser("edit", help="one-shot video editing")
    p.add_argument("video", help="the clip to edit (mp4, gif, ...)")
    p.add_argument("--prompt", required=True, help="what the clip shows")
    p.add_argument("--edit", required=True, help="the edited prompt")
    common.add_common(p)
    common.add_sampling(
        p,
        steps=50,
        why=", the released editing setting",
        guidance_default="the model's recommended edit guidance (4.5 for the toy world), else "
        "12.5, the released editing setting",
    )
    p.add_argument(
        "--tune-steps", type=common.positive_int, default=300, help="adapter tuning steps (300)"
    )
    p.add_argument(
        "--lr", type=common.positive_float, default=5e-5, help="AdamW learning rate (default 5e-5)"
    )
    common.add_mixed_precision(p)
    common.add_context(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from simda.pipelines import edit_video
    from simda.pipelines.editing import edit_guidance
    from simda.video import read_video, resize_frames, select_frames, side_by_side

    clip = read_video(args.video)  # a bad clip fails before the model loads
    pipe = common.load_pipeline(args)
    if args.guidance is None:
        args.guidance = edit_guidance(pipe)
    common.resolve_sampling(args, pipe)  # frames: the model's clip length unless --frames
    clip = select_frames(clip, args.frames, what=f"video {args.video!r}")
    frames = resize_frames(clip, (args.height, args.width))
    common.apply_context(args, pipe, len(frames))
    result = edit_video(
        pipe,
        frames,
        args.prompt,
        args.edit,
        tune_steps=args.tune_steps,
        lr=args.lr,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        seed=args.seed,
        cache_dir=os.path.join(args.output, ".cache"),
        mixed_precision=args.mixed_precision,
        progress=not args.quiet,
    )
    name = args.name or common.slug(args.edit)
    summary = common.tuning_summary(result.tuning)
    paths = common.write_outputs(args.output, name, result.edit, common.settings(args, **summary))
    grid = side_by_side(result.source, result.reconstruction, result.edit)
    paths += common.write_outputs(args.output, f"{name}-side-by-side", grid, common.settings(args))
    paths.append(
        common.loss_plot(result.tuning.losses, os.path.join(args.output, f"{name}-loss.png"))
    )
    for path in paths:
        print(path)
    return 0
