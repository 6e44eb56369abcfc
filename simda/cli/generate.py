"""``simda generate PROMPT``: text to video."""

from __future__ import annotations

import argparse
import time

from simda.cli import common


def register(sub) -> None:
    p = sub.add_parser("generate", help="text to video")
    p.add_argument("prompt", help="what the clip shows")
    common.add_common(p)
    common.add_sampling(p)
    p.add_argument("--negative", default=None, help="negative prompt (default: none)")
    p.add_argument(
        "--prompt-at",
        action="append",
        metavar="FRAME:TEXT",
        type=_keyed_prompt,
        help="the prompt at frame FRAME: frames between two keys blend their prompts, frames "
        "after the last key keep its prompt (repeatable; the plain prompt is the key at frame "
        "0 unless one is given there)",
    )
    common.add_context(p)
    p.set_defaults(func=run)


def _keyed_prompt(text: str) -> tuple[int, str]:
    frame, sep, prompt = text.partition(":")
    try:
        index = int(frame)
    except ValueError:
        index = -1
    if not sep or index < 0 or not prompt.strip():
        raise argparse.ArgumentTypeError(f"must be FRAME:TEXT with FRAME >= 0, got {text!r}")
    return index, prompt.strip()


def run(args) -> int:
    import torch

    from simda.pipelines.t2v import to_uint8

    pipe = common.load_pipeline(args)
    common.resolve_sampling(args, pipe)
    common.apply_context(args, pipe, args.frames)
    prompt = args.prompt
    if args.prompt_at:
        prompt = {0: args.prompt, **dict(args.prompt_at)}
    start = time.perf_counter()
    out = pipe(
        prompt,
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
