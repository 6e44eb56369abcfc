"""The ``simda`` command."""

from __future__ import annotations

import argparse
import sys
import time

import torch


def _demo(args) -> int:
    import simda

    torch.manual_seed(args.seed)
    model = simda.build_unet("tiny").eval()
    counts = simda.count_parameters(model)
    sample = torch.randn(1, 4, args.frames, 8, 8)
    text = torch.randn(1, 8, model.config.cross_attention_dim)
    start = time.perf_counter()
    with torch.no_grad():
        out = model(sample, 500, text)
    elapsed = time.perf_counter() - start
    print(f"SimDA tiny UNet: {counts['trainable']:,} trainable / {counts['total']:,} parameters")
    print(f"forward of {tuple(sample.shape)} -> {tuple(out.shape)} in {elapsed * 1e3:.1f} ms")
    sd15 = simda.count_parameters(simda.build_unet("sd15", device="meta"))
    print(f"SimDA sd15 UNet: {sd15['trainable']:,} trainable / {sd15['total']:,} parameters")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simda", description="SimDA text-to-video tools")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the tiny model end to end on CPU")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--frames", type=int, default=8)
    demo.set_defaults(func=_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
