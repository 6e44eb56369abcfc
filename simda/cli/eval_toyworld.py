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
    settings = {
        "captions": len(captions),
        "seeds per caption": args.seeds,
        "first seed": args.seed,
        "steps": args.steps,
        "scheduler": args.scheduler or type(pipe.scheduler).__name__,
        "guidance": args.guidance,
        "model": args.model or "built-in",
    }
    text = toyworld.report(rows, settings)
    print(text)
    report = args.report or os.path.join(args.output, "eval-toyworld.md")
    os.makedirs(os.path.dirname(os.path.abspath(report)), exist_ok=True)
    with open(report, "w") as f:
        f.write(text)
    with open(os.path.splitext(report)[0] + ".json", "w") as f:
        json.dump({"settings": settings, "rows": rows}, f, indent=1)
    print(report)
    return 0
