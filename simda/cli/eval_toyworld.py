"""``simda eval-toyworld``: score generated toy-world clips against their captions."""

from __future__ import annotations

import argparse
import json
import os

from simda.cli import common
from simda.errors import SimDAError


def register(sub) -> None:
    p = sub.add_parser(
        "eval-toyworld",
        help="score generated toy-world clips: colour, shape, size, direction, speed, sharpness",
    )
    common.add_common(p)
    p.add_argument(
        "--seeds",
        type=common.positive_int,
        default=2,
        help="seeds per caption: --seed, --seed + 1, ... (default 2)",
    )
    p.add_argument(
        "--steps",
        type=common.positive_int,
        help="denoising steps (default: the model's recommendation)",
    )
    p.add_argument(
        "--guidance",
        type=float,
        help="guidance scale of every row, compared models included (default: the --model's "
        "recommendation)",
    )
    common.add_scheduler(p)
    p.add_argument(
        "--ablations", action="store_true", help="also score the model without each kind of adapter"
    )
    p.add_argument(
        "--compare",
        action="append",
        metavar="LABEL=MODEL_FOLDER",
        help="also score another saved pipeline under this label (e.g. an ablation retrained "
        "with `simda train --ablate`); repeatable",
    )
    p.add_argument(
        "--captions",
        type=int,
        help="score a fixed random subset of this many captions (default: all 48)",
    )
    p.add_argument(
        "--frames",
        dest="long_frames",
        type=common.positive_int,
        nargs="+",
        metavar="N",
        help="long clips instead: score clips of N frames (e.g. 16 24 32) with context windows "
        "and in one pass, side by side, and a colour switch half-way through (a two-prompt "
        "schedule); --context-frames, --context-stride, --weighting and --window-batch set the "
        "windows",
    )
    common.add_context(p)
    p.add_argument(
        "--report",
        help="write the table here (markdown, plus .json; default OUTPUT/eval-toyworld.md)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from simda import toyworld

    pipe = common.load_pipeline(args)
    if not toyworld.is_toyworld(pipe):
        raise SimDAError("eval-toyworld needs a toy-world model (32x32 pixels, space-to-depth)")
    if args.captions is not None and not 1 <= args.captions <= len(toyworld.CAPTIONS):
        raise SimDAError(f"--captions must be in 1..{len(toyworld.CAPTIONS)}, got {args.captions}")
    captions = toyworld.caption_subset(args.captions or len(toyworld.CAPTIONS))
    common.resolve_sampling(args, pipe)
    if args.long_frames:
        if args.ablations or args.compare:
            raise SimDAError("--frames scores the --model alone: drop --ablations and --compare")
        return run_long(args, pipe, captions)
    names = list(toyworld.ABLATIONS) if args.ablations else ["full model"]
    variants = {
        name: (lambda name=name: toyworld.ablate(pipe, **toyworld.ABLATIONS[name]))
        for name in names
    }
    for spec in args.compare or []:
        label, sep, folder = spec.partition("=")
        if not sep or not label or not folder:
            raise SimDAError(f"--compare expects LABEL=MODEL_FOLDER, got {spec!r}")
        if not os.path.isfile(os.path.join(folder, "model_index.json")):
            raise SimDAError(
                f"--compare {label!r}: {folder!r} is not a saved simda pipeline folder"
            )
        variants[label] = lambda folder=folder: common.load_pipeline(
            argparse.Namespace(**{**vars(args), "model": folder, "adapters": None})
        )
    rows = {}
    for name, make in variants.items():
        rows[name] = toyworld.evaluate(
            make(),
            seeds=range(args.seed, args.seed + args.seeds),
            steps=args.steps,
            guidance=args.guidance,
            captions=captions,
            progress=not args.quiet,
        )
        row = rows[name]
        checks = ", ".join(f"{m} {row[m]:.1%}" for m in toyworld.METRICS)
        print(f"{name}: {checks}, all {row['all']:.1%}, softness {row['softness']:.3f}")
    settings = _settings(args, pipe, captions)
    return _write(args, "eval-toyworld.md", toyworld.report(rows, settings), settings, rows)


def _settings(args, pipe, captions, **extra) -> dict:
    """The settings of a run, for the report and its JSON."""
    return {
        "captions": len(captions),
        "seeds per caption": args.seeds,
        "first seed": args.seed,
        "steps": args.steps,
        "scheduler": args.scheduler or type(pipe.scheduler).__name__,
        "guidance": args.guidance,
        "model": args.model or "built-in",
        **extra,
    }


def _write(args, default_name: str, text: str, settings: dict, rows) -> int:
    """Print the report and write it to ``--report`` (default OUTPUT/``default_name``), with
    the settings and rows beside it as .json."""
    print(text)
    report = args.report or os.path.join(args.output, default_name)
    os.makedirs(os.path.dirname(os.path.abspath(report)), exist_ok=True)
    with open(report, "w") as f:
        f.write(text)
    with open(os.path.splitext(report)[0] + ".json", "w") as f:
        json.dump({"settings": settings, "rows": rows}, f, indent=1)
    print(report)
    return 0


def run_long(args, pipe, captions) -> int:
    """``--frames``: the long-clip scores (``toyworld.long_video``) per length, windows on and
    off, and the colour-switch check; a markdown table and its JSON."""
    from simda.toyworld import long_video

    clip = pipe.config.sampling.get("num_frames")
    context = args.context_frames or clip
    seeds = range(args.seed, args.seed + args.seeds)
    rows = []
    for frames in args.long_frames:
        for mode in ("windows", "one pass"):
            if mode == "windows":
                if frames <= context:
                    continue  # windows are the single pass there (tested bit for bit)
                pipe.enable_free_noise(
                    context, args.context_stride, args.weighting, window_batch=args.window_batch
                )
            else:
                pipe.disable_free_noise()
            sampling = {"steps": args.steps, "guidance": args.guidance, "seeds": seeds}
            motion = long_video.evaluate_long(
                pipe, frames, captions=captions, progress=not args.quiet, **sampling
            )
            switch = long_video.evaluate_switch(pipe, frames, progress=not args.quiet, **sampling)
            row = {"frames": frames, "mode": mode, "motion": motion, "switch": switch}
            rows.append(row)
            print(
                f"{frames} frames, {mode}: along {motion['along']:.1%}, jumps within "
                f"{long_video.MAX_JUMP:.1f} px {motion['within_jump']:.1%}, colour "
                f"{motion['colour']:.1%}; colour switch within {long_video.MAX_DELAY} frames "
                f"{switch['switched']:.1%}"
            )
    pipe.disable_free_noise()
    settings = _settings(
        args,
        pipe,
        captions,
        **{
            "clip length trained on": clip,
            "context": f"{context} frames every {args.context_stride}, {args.weighting}",
        },
    )
    return _write(args, "eval-toyworld-long.md", long_report(rows, settings), settings, rows)


def long_report(rows: list[dict], settings: dict) -> str:
    from simda.toyworld import long_video

    lines = [
        "| frames | sampling | clips | steps along the direction | clips with no jump above "
        f"{long_video.MAX_JUMP:.1f} px | largest jump px | colour | colour switch within "
        f"{long_video.MAX_DELAY} frames | mean delay | switch clips with no jump |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        m, s = row["motion"], row["switch"]
        delay = "-" if s["mean_delay"] is None else f"{s['mean_delay']:.1f}"
        lines.append(
            f"| {row['frames']} | {row['mode']} | {m['clips']} | {m['along']:.1%} | "
            f"{m['within_jump']:.1%} | {m['max_jump']:.1f} | {m['colour']:.1%} | "
            f"{s['switched']:.1%} | {delay} | {s['within_jump']:.1%} |"
        )
    setting = ", ".join(f"{k} {v}" for k, v in settings.items())
    return (
        "\n".join(lines)
        + f"\n\n{setting}. Targets: at least 90 % of steps along the direction, no jump above "
        f"twice the fastest training speed, colour at least 95 %, the colour switch within "
        f"{long_video.MAX_DELAY} frames of its key (half the clip).\n"
    )
