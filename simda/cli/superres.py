"""``simda superres VIDEO``: video super-resolution."""

from __future__ import annotations

import os

from simda.cli import common


def register(sub) -> None:
    p = sub.add_parser("superres", help="video super-resolution")
    p.add_argument("video", help="the low-resolution clip (mp4, gif, ...)")
    p.add_argument("--prompt", default="", help="what the clip shows")
    p.add_argument(
        "--scale",
        type=common.positive_int,
        help="upscaling factor (default: the one the model was trained for, else 4)",
    )
    common.add_common(p)
    common.add_sampling(p, superres=True)
    common.add_context(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from simda.pipelines import make_superres, upscale
    from simda.pipelines.superres import default_scale, is_superres
    from simda.video import read_video

    low = read_video(args.video, args.frames)  # a bad clip fails before the model loads
    pipe = common.load_pipeline(args)
    if not is_superres(pipe):
        common.logger.warning(
            "warning: %s was not trained for super-resolution (`simda train --superres SCALE`): "
            "its new input channels start at zero, so the output follows the prompt, not the "
            "low-resolution clip",
            args.model or "the built-in model",
        )
        make_superres(pipe)
    args.frames = len(low)  # the settings JSON records the frames read
    common.resolve_sampling(args, pipe)
    common.apply_context(args, pipe, len(low))
    args.scale = args.scale or default_scale(pipe)
    frames = upscale(
        pipe,
        low,
        args.prompt,
        scale=args.scale,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        generator=torch.Generator().manual_seed(args.seed),
    )
    stem = common.slug(os.path.splitext(os.path.basename(args.video))[0])
    name = args.name or f"{stem}-x{args.scale}"
    for path in common.write_outputs(args.output, name, frames, common.settings(args)):
        print(path)
    return 0
