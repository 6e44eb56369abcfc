"""Compile the latent-shift attention kernels for a GPU target without a GPU, and report.

    python scripts/triton_aot_report.py [--arch 90] [--quick]

For each kernel variant: registers and spills (ptxas -v), shared memory, and whether the key
loop is software-pipelined (cp.async / TMA in the PTX). Launch-time specialisation is emulated
(16-divisible pointers and strides, as Triton does at run time), so the code is what a GPU
would run for model-layout tensors (B*F, N, heads, D). Needs TRITON_INTERPRET unset.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from simda_kernels import lsa

ROWS = ("_lsa_rows_kernel", ("Q", "K", "V", "DO", "OUT"), ("LSE", "DELTA"))
KERNELS = {  # pass: (kernel, 16-bit tensors, fp32 tensors, constexprs of the pass)
    "fwd": (*ROWS, {"BWD": False}),
    "bwd_dq": (*ROWS, {"BWD": True}),
    "bwd_dkdv": ("_lsa_bwd_dkdv_kernel", ("Q", "K", "V", "DO", "DK", "DV"), ("LSE", "DELTA"), {}),
}
DTYPES = {"fp16": "fp16", "bf16": "bf16", "fp32": "fp32"}
FULL = [  # (dtype, head_dim, n_tokens, layout, class_major)
    (dt, d, n, layout, cm)
    for dt in ("fp16", "bf16", "fp32")
    for d, n in ((40, 4096), (80, 1024), (160, 256), (64, 1024))
    for layout in ("paper",)
    for cm in (False, True)
] + [("fp16", 40, 1024, "released", False), ("fp16", 40, 1024, "tav", False)]
QUICK = [
    ("fp16", 40, 4096, "paper", False),
    ("bf16", 80, 1024, "released", True),
    ("fp32", 160, 256, "tav", False),
    ("fp16", 8, 64, "paper", True),
]


def compile_variant(kind, dtype, head_dim, n_tokens, layout, class_major, arch, heads=8):
    name, tensors, fp32_tensors, pass_consts = KERNELS[kind]
    fn = getattr(lsa, name)
    cfg = lsa.lsa_config(
        kind, head_dim, n_tokens, (arch // 10, arch % 10), 4 if dtype == "fp32" else 2
    )
    da, db = lsa.head_dim_chunks(head_dim)
    align = 16
    while (heads * head_dim) % align or head_dim % align:
        align //= 2
    consts = dict(
        LAYOUT=lsa.LAYOUT_CODES[layout],
        CLASS_MAJOR=class_major,
        PACKED_LO=lsa.SHIFT_PACKED[0],
        PACKED_HI=lsa.SHIFT_PACKED[1],
        BLOCK_M=cfg.block_m,
        BLOCK_N=cfg.block_n,
        DA=da,
        DB=max(db, 16),
        HAS_B=db > 0,
        PRECISION="ieee" if dtype == "fp32" else "tf32",
        D=head_dim,
        ALIGN=align,
        **pass_consts,
    )
    # Model layout (B*F, N, heads, D): strides in units of ALIGN elements.
    stride_of = {
        "b": n_tokens * heads * head_dim // align,
        "h": head_dim // align,
        "n": heads * head_dim // align,
    }
    signature, attrs = {}, {}
    for i, arg in enumerate(fn.arg_names):
        if arg in consts:
            signature[arg] = "constexpr"
        elif arg in tensors:
            signature[arg], attrs[(i,)] = f"*{DTYPES[dtype]}", [["tt.divisibility", 16]]
        elif arg in fp32_tensors:
            signature[arg], attrs[(i,)] = "*fp32", [["tt.divisibility", 16]]
        elif arg in ("qk_scale", "sm_scale"):
            signature[arg] = "fp32"
        else:
            signature[arg] = "i32"
            value = stride_of.get(arg[-1]) if arg.startswith("stride_") else None
            if value is not None and value % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(
        fn=fn,
        signature=signature,
        constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()},
        attrs=attrs,
    )
    kernel = triton.compile(
        src,
        target=GPUTarget("cuda", arch, 32),
        options=dict(num_warps=cfg.num_warps, num_stages=cfg.num_stages),
    )
    return kernel, cfg


def ptxas_path(arch: int) -> str:
    """The ptxas Triton itself runs for ``arch``: triton 3.9 ships two and assembles sm_90 with
    the newer one (its PTX is too new for the other)."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        return get_ptxas(arch).path
    except (ImportError, AttributeError):
        return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")


def ptxas_usage(ptx: str, arch: int) -> tuple[int, int]:
    ptxas = ptxas_path(arch)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        out = subprocess.run(
            [
                ptxas,
                "-v",
                f"--gpu-name=sm_{arch}a" if arch >= 90 else f"--gpu-name=sm_{arch}",
                path,
                "-o",
                os.devnull,
            ],
            capture_output=True,
            text=True,
        ).stderr
    used = re.search(r"Used (\d+) registers", out)
    if used is None:
        raise RuntimeError(f"{ptxas} -v printed no register count:\n{out.strip()}")
    regs = int(used.group(1))
    spills = sum(int(x) for x in re.findall(r"(\d+) bytes spill", out))
    return regs, spills


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--quick", action="store_true", help="a few variants (CI)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), help="only this dtype")
    args = parser.parse_args(argv)
    if lsa.INTERPRET:
        print("unset TRITON_INTERPRET to compile for a GPU target", file=sys.stderr)
        return 2
    print(f"sm_{args.arch}, triton {triton.__version__}")
    print(
        "| kernel | dtype | D | N | layout | order | blocks | warps/stages | regs | spill B "
        "| smem KiB | pipelined |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for dtype, d, n, layout, cm in QUICK if args.quick else FULL:
        if args.dtype and dtype != args.dtype:
            continue
        for kind in KERNELS:
            kernel, cfg = compile_variant(kind, dtype, d, n, layout, cm, args.arch)
            ptx = kernel.asm["ptx"]
            regs, spills = ptxas_usage(ptx, args.arch)
            pipelined = "cp.async" in ptx or "cp.async.bulk" in ptx
            print(
                f"| {kind} | {dtype} | {d} | {n} | {layout} | "
                f"{'class_major' if cm else 'raster'} | {cfg.block_m}x{cfg.block_n} | "
                f"{cfg.num_warps}/{cfg.num_stages} | {regs} | {spills} | "
                f"{kernel.metadata.shared / 1024:.1f} | {'yes' if pipelined else 'NO'} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
