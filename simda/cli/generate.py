"""``simda generate PROMPT``: text to video."""

from __future__ import annotations

import time

from simda.cli import common


def register(sub) -> None:
    p = sub.add_parser("generate", help="text to video")
    p.add_argument("prompt", help="what the clip shows")
    common.add_common(p)
    common.add_sampling(p)
    p.add_argument("--negative", default=None, help="negative prompt (default: none)")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from simda.pipelines.t2v import to_uint8

    pipe = common.load_pipeline(args)
    common.resolve_sampling(args, pipe)
    start = time.perf_counter()
    out = pipe(
        args.prompt,
        num_frames=args.frames,
        height=args.height,
        width=args.width,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        negative_prompt=args.negative,
        generator=torch.Generator().manual_seed(args.seed),
    )
    seconds = time.perf_counter() - start
    name = args.name or f"{common.slug(args.prompt)}-s{args.seed}"
    frames = to_uint8(out.frames[0])
    for path in common.write_outputs(
        args.output, name, frames, common.settings(args, seconds=round(seconds, 3))
    ):
        print(path)
    return 0
