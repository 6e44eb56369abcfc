"""Sweep the latent-shift attention kernels' launch configs on this GPU; print the fastest.

    python scripts/tune_lsa.py [--dtype fp16] [--grid quick|full] [--json out/gpu/tune.json]

For each pass (fwd, bwd_dq, bwd_dkdv) at the distinct (D, N) of the SD-1.5 shapes
(B=2, 16 frames, 8 heads), every candidate (block_m, block_n, num_warps, num_stages) is first
checked against the PyTorch reference (the forward output, or dq / dk / dv) and then timed; a
candidate that does not compile or fit (shared memory, registers) or gives a wrong answer is
reported as such, never picked. The backward passes are timed as the whole backward with only
that pass's config changed. The table shows the current config (``lsa_config``) next to the
fastest correct one: move the winners into ``simda_kernels.lsa.lsa_config``. Run it again
with ``SIMDA_LSA_DQ=atomic`` to time the backward that adds dQ with atomics (no dQ pass).
``--grid smoke`` runs two candidates at a tiny shape (CPU with TRITON_INTERPRET=1: it checks
the script, its timings mean nothing).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks.kernel_bench import DTYPES, bench_ms, describe, max_err  # noqa: E402
from simda_kernels import lsa, reference  # noqa: E402
from simda_kernels.dispatch import TRUSTED_ERROR  # noqa: E402

SD15 = [(16, 40, 64, 64), (16, 40, 32, 32), (16, 80, 32, 32), (16, 80, 16, 16), (16, 160, 16, 16)]
SHAPES = {  # grid: [(frames, D, height, width)], timed at (batch, heads)
    "full": (SD15, (2, 8)),
    "quick": ([SD15[0], SD15[2], SD15[4]], (2, 8)),
    "smoke": ([(2, 16, 4, 4)], (1, 1)),
}
CANDIDATES = {
    "full": dict(block_m=(32, 64, 128), block_n=(16, 32, 64, 128), warps=(4, 8), stages=(2, 3, 4)),
    "quick": dict(block_m=(64, 128), block_n=(32, 64), warps=(4, 8), stages=(2, 3)),
    "smoke": dict(block_m=(16, 32), block_n=(16,), warps=(1,), stages=(1,)),
}


def candidates(grid: str, pass_: str):
    c = CANDIDATES[grid]
    for bm, bn, w, st in itertools.product(c["block_m"], c["block_n"], c["warps"], c["stages"]):
        if pass_ == "bwd_dkdv" and bm > 64:  # the key-side kernel keeps BLOCK_N keys resident
            continue
        yield lsa.LaunchConfig(bm, bn, w, st)


def tensors(frames, d, height, width, dtype, device, batch, heads):
    shape = (batch * frames, height * width, heads, d)  # the model's memory layout
    q, k, v = (torch.randn(shape, device=device, dtype=dtype).transpose(1, 2) for _ in range(3))
    return q, k, v, torch.randn_like(q), (frames, height, width, "paper", d**-0.5, "raster")


def run_pass(pass_, q, k, v, grad, args):
    """The pass's launcher call(s): the forward, or the whole backward."""
    if pass_ == "fwd":
        return lambda: lsa.lsa_forward(q, k, v, *args)[:1]
    out, lse2 = lsa.lsa_forward(q, k, v, *args)
    return lambda: lsa.lsa_backward(grad, q, k, v, out, lse2, *args)


class Problem:
    """One shape: full-size tensors to time (B=2, 8 heads by default) and a small problem
    with the same N, D and grid (1 video of 3 frames, 1 head) checked against the reference,
    whose materialised 2N logits would not fit at full size."""

    def __init__(self, frames, d, height, width, dtype, device, batch=2, heads=8):
        self.timed = tensors(frames, d, height, width, dtype, device, batch, heads)
        self.small = tensors(min(frames, 3), d, height, width, dtype, device, batch=1, heads=1)
        q, k, v, grad, args = self.small
        out, _ = reference.lsa_forward(q, k, v, *args)
        self.want = (out, *reference.lsa_backward(grad, q, k, v, *args))
        self.device = device

    def measure(self, pass_, config):
        """(ms, max error) of ``pass_`` under ``config``, or (None, why it is not a candidate)."""
        with lsa.launch_config(**{pass_: dataclasses.asdict(config)}):
            try:
                got = run_pass(pass_, *self.small)()
                want = self.want[:1] if pass_ == "fwd" else self.want[1:]
                err = max(map(max_err, got, want))
                if not err <= TRUSTED_ERROR[str(got[0].dtype).split(".")[-1]]:
                    return None, f"wrong (max err {err:.1e})"
                return bench_ms(run_pass(pass_, *self.timed), self.device), err
            except Exception as exc:  # does not compile or does not fit
                return None, describe(exc, width=80)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="fp16", choices=tuple(DTYPES))
    parser.add_argument("--grid", default="quick", choices=tuple(SHAPES))
    parser.add_argument("--json", help="write every measurement here")
    args = parser.parse_args(argv)
    if not lsa.HAS_TRITON:
        print("triton is not installed", file=sys.stderr)
        return 2
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not lsa.INTERPRET:
        print("no GPU: run with TRITON_INTERPRET=1 and --grid smoke", file=sys.stderr)
        return 2
    dtype = DTYPES[args.dtype]
    capability = torch.cuda.get_device_capability() if device == "cuda" else None
    card = torch.cuda.get_device_name() if device == "cuda" else "CPU (interpreter smoke run)"
    print(f"# launch-config sweep on {card}, {args.dtype}, grid {args.grid}")
    print("| pass | D | N | current config | ms | best config | ms | current / best | failed |")
    print("|---|---|---|---|---|---|---|---|---|")
    results = []
    shapes, (batch, heads) = SHAPES[args.grid]
    for frames, d, height, width in shapes:
        prob = Problem(frames, d, height, width, dtype, device, batch, heads)
        n = height * width
        for pass_ in lsa.PASSES:
            current = lsa.lsa_config(pass_, d, n, capability, dtype.itemsize)
            tried = {current: prob.measure(pass_, current)}
            for config in candidates(args.grid, pass_):
                if config not in tried:
                    tried[config] = prob.measure(pass_, config)
            timed = {c: ms for c, (ms, _) in tried.items() if ms is not None}
            best = min(timed, key=timed.get) if timed else None
            failed = len(tried) - len(timed)
            cur_ms = tried[current][0]

            def fmt(config):
                return "-" if config is None else (
                    f"{config.block_m}x{config.block_n} w{config.num_warps} s{config.num_stages}"
                )  # fmt: skip

            gain = f"{cur_ms / timed[best]:.2f}" if cur_ms and best else "-"
            print(
                f"| {pass_} | {d} | {n} | {fmt(current)} | "
                f"{'-' if cur_ms is None else f'{cur_ms:.3f}'} | {fmt(best)} | "
                f"{'-' if best is None else f'{timed[best]:.3f}'} | {gain} | {failed} |",
                flush=True,
            )
            results.append(
                {
                    "pass": pass_,
                    "D": d,
                    "N": n,
                    "frames": frames,
                    "current": dataclasses.asdict(current),
                    "best": None if best is None else dataclasses.asdict(best),
                    "tried": [
                        {**dataclasses.asdict(c), "ms": ms, "note": note if ms is None else None}
                        for c, (ms, note) in tried.items()
                    ],
                }
            )
            if args.json:
                with open(args.json, "w") as f:
                    json.dump({"card": card, "dtype": args.dtype, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
