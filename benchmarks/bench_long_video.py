"""Long videos on the built-in toy-world model: peak memory (RSS) and time against the number
of frames, with context windows and without.

    python -m benchmarks.bench_long_video [--frames 8 32 128 512] [--steps 25] [--json F]

Each measurement runs in a fresh process (its peak RSS is its own): load the model, sample one
clip of F frames (``guidance`` as recommended), decode it. With windows the UNet sees
``--window-batch`` windows of 8 frames at a time, so memory stays flat and time grows linearly
with F; without, both grow with F.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, resource, sys, time
import torch
from simda import toyworld
frames, steps, windows = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "on"
batch = int(sys.argv[4])
pipe = toyworld.load_shipped()
pipe.set_progress_bar_config(disable=True)
if windows:
    pipe.enable_free_noise(window_batch=batch)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
out = pipe("a red circle moving right", num_frames=frames, num_inference_steps=steps,
           generator=torch.Generator().manual_seed(0))
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"frames": frames, "windows": windows, "seconds": seconds,
                  "peak_mib": peak / 1024, "loaded_mib": base / 1024}))
"""


def measure(frames: int, steps: int, windows: bool, batch: int) -> dict:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(frames),
            str(steps),
            "on" if windows else "off",
            str(batch),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 32, 128, 512])
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--window-batch", type=int, default=4, help="windows per UNet call")
    parser.add_argument(
        "--without",
        type=int,
        nargs="*",
        default=[8, 32, 128, 512],
        help="frame counts to measure without windows too",
    )
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    rows = []
    print("| frames | windows | seconds | s / frame | peak RSS MiB | after loading MiB |")
    print("|---|---|---|---|---|---|")
    for frames in args.frames:
        for windows in (True, False):
            if not windows and frames not in args.without:
                continue
            r = measure(frames, args.steps, windows, args.window_batch)
            rows.append(r)
            print(
                f"| {frames} | {'on' if windows else 'off'} | {r['seconds']:.1f} | "
                f"{r['seconds'] / frames:.3f} | {r['peak_mib']:.0f} | {r['loaded_mib']:.0f} |",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"steps": args.steps, "window_batch": args.window_batch, "rows": rows}, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
