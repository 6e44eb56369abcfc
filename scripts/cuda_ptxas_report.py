"""Compile the temporal adapter's CUDA kernels for GPU targets without a GPU, and report.

    python scripts/cuda_ptxas_report.py [--arch 75 80 90]

Compiles ``csrc/temporal_adapter.cu`` with the extension's nvcc flags and ``-Xptxas -v`` and
prints, per architecture, kernel (forward / backward), dtype and tile (wide: where a block may
use enough shared memory, e.g. sm_80 and sm_90; narrow: sm_75, some on sm_86/sm_89; see
docs/kernels.md): registers, stack and spills. Needs nvcc (the CUDA toolkit) and torch's
headers, no GPU.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from simda_kernels import _toolchain  # noqa: E402

DTYPES = {"6__half": "fp16", "13__nv_bfloat16": "bf16", "f": "fp32"}
ENTRY = re.compile(
    r"Compiling entry function '\w*temporal_adapter_(fwd|bwd)_kernelI(6__half|13__nv_bfloat16|f)"
    r"Lb([01])E\w*' for 'sm_(\d+)'"
)
STACK = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
REGS = re.compile(r"Used (\d+) registers")


def nvcc_command(archs: list[int], output: str) -> list[str]:
    from torch.utils import cpp_extension

    home = _toolchain.cuda_home()
    if home is None:
        raise SystemExit("needs nvcc on PATH or CUDA_HOME set")
    includes = [os.path.join(ROOT, "csrc"), *cpp_extension.include_paths()]
    includes += [os.path.join(home, "include"), *_toolchain.nvidia_wheel_includes()]
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    return [
        os.path.join(home, "bin", "nvcc"),
        "-std=c++20",  # what torch >= 2.12 builds extensions with (its headers need it)
        *_toolchain.NVCC_FLAGS,
        *_toolchain.torch_half_flags(),
        *gencode,
        "-Xptxas",
        "-v",
        *[f"-I{path}" for path in includes],
        "-c",
        os.path.join(ROOT, "csrc", "temporal_adapter.cu"),
        "-o",
        output,
    ]


def parse(log: str) -> list[dict]:
    """One row per compiled kernel: arch, kernel, dtype, tile (wide / narrow), registers,
    stack, spill stores and loads (bytes)."""
    rows, current = [], None
    for line in log.splitlines():
        entry = ENTRY.search(line)
        if entry:
            kernel, dtype, wide, arch = entry.groups()
            current = {
                "arch": int(arch),
                "kernel": {"fwd": "forward", "bwd": "backward"}[kernel],
                "dtype": DTYPES[dtype],
                "tile": "wide" if wide == "1" else "narrow",
            }
            rows.append(current)
            continue
        if current is None:
            continue
        stack = STACK.search(line)
        if stack:
            current["stack"], current["spill_stores"], current["spill_loads"] = map(
                int, stack.groups()
            )
        regs = REGS.search(line)
        if regs:
            current["registers"] = int(regs.group(1))
    return rows


def report(archs: list[int]) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = nvcc_command(archs, os.path.join(tmp, "temporal_adapter.o"))
        run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"nvcc failed:\n{run.stderr[-4000:]}")
    rows = parse(run.stdout + run.stderr)
    expected = 12 * len(archs)  # forward and backward x three dtypes x two tiles
    if len(rows) != expected:
        raise RuntimeError(f"expected {expected} kernels in ptxas's output, found {len(rows)}")
    return sorted(rows, key=lambda r: (r["arch"], r["kernel"] != "forward", r["dtype"], r["tile"]))


def markdown(rows: list[dict]) -> str:
    lines = [
        "| arch | kernel | dtype | tile | registers | stack (B) | spills st/ld (B) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| sm_{r['arch']} | {r['kernel']} | {r['dtype']} | {r['tile']} | {r['registers']} "
            f"| {r['stack']} | {r['spill_stores']} / {r['spill_loads']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[75, 80, 90])
    args = parser.parse_args(argv)
    print(markdown(report(args.arch)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
