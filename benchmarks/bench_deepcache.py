"""DeepCache on a SimDA pipeline: time and toy-world scores with and without it.

    python -m benchmarks.bench_deepcache [--steps 25] [--interval 3] [--repeats 3]

Samples the built-in toy-world model on 12 captions (seed 0), alternating runs without and
with ``DeepCache.DeepCacheSDHelper`` (``cache_interval``, branch 0) so that both see the same
machine load; prints the median time of each, the speed-up and the scores.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main(argv=None) -> int:
    from DeepCache import DeepCacheSDHelper

    from simda import toyworld

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--interval", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    pipe = toyworld.load_shipped()
    pipe.set_progress_bar_config(disable=True)
    captions = toyworld.caption_subset(12)
    helper = DeepCacheSDHelper(pipe=pipe)
    helper.set_params(cache_interval=args.interval, cache_branch_id=0)
    times, scores = {"plain": [], "deepcache": []}, {}
    for _ in range(args.repeats):
        for name in times:
            if name == "deepcache":
                helper.enable()
            start = time.perf_counter()
            scores[name] = toyworld.evaluate(
                pipe, seeds=[0], captions=captions, steps=args.steps, progress=False
            )
            times[name].append(time.perf_counter() - start)
            if name == "deepcache":
                helper.disable()
    plain, cached = (statistics.median(times[k]) for k in ("plain", "deepcache"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, 12 captions x 8 frames")
    print(f"{args.steps} DDIM steps, DeepCache interval {args.interval}, branch 0")
    print("| | seconds (median) | colour | direction | presence |")
    print("|---|---|---|---|---|")
    for name, seconds in (("without", plain), ("with DeepCache", cached)):
        s = scores["plain" if name == "without" else "deepcache"]
        print(
            f"| {name} | {seconds:.2f} | {s['colour']:.0%} | {s['direction']:.0%} | "
            f"{s['presence']:.0%} |"
        )
    print(f"speed-up: {plain / cached:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
