"""Compile the latent-shift attention kernels for a GPU target without a GPU, and report.

    python scripts/triton_aot_report.py [--arch 90] [--quick] [--write-docs]

For each kernel variant at the SD-1.5 shapes (16 frames, 8 heads, model-layout tensors
(B*F, N, heads, D), the paper layout's key plan): registers and spills (ptxas -v), shared
memory, the tensor-core instruction of the score product (Q.K^T, or K.Q^T in the key-side
kernel) and of the other products (read from the TTGIR's MMA layouts: wgmma on sm_90, with the
number of warp groups along the rows, or mma.sync), whether two warp groups compute the same
rows, the number of key loops (``scf.for`` holding a product) and whether each of them is
software-pipelined (asynchronous copies inside it). Launch-time specialisation is emulated
(16-divisible pointers, and integers where their value is), so the code is what a GPU would
run. ``--write-docs`` puts the table into docs/kernels.md. Needs TRITON_INTERPRET unset.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from simda_kernels import lsa

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
BEGIN, END = "<!-- triton_aot_report: begin -->", "<!-- triton_aot_report: end -->"
ROWS = ("_lsa_rows_kernel", ("Q", "K", "V", "DO", "OUT"), ("LSE", "DELTA"))
KEYS = ("_lsa_bwd_dkdv_kernel", ("Q", "K", "V", "DO", "DK", "DV"), ("LSE", "DELTA", "DQ"))
KERNELS = {  # name: (launch-config pass, kernel, 16-bit tensors, fp32 tensors, constexprs)
    "fwd": ("fwd", *ROWS, {"BWD": False}),
    "bwd_dq": ("bwd_dq", *ROWS, {"BWD": True}),
    "bwd_dkdv": ("bwd_dkdv", *KEYS, {"ATOMIC_DQ": False}),
    "bwd_dkdv_atomic": ("bwd_dkdv", *KEYS, {"ATOMIC_DQ": True}),
}
SD15 = ((40, 64, 64), (80, 32, 32), (160, 16, 16))  # (D, H, W) of SD 1.x at 512 px
FULL = [(dt, d, h, w, order) for dt in ("fp16", "bf16") for d, h, w in SD15
        for order in ("raster", "grouped")]  # fmt: skip
QUICK = [("fp16", 40, 64, 64, "raster")]
FRAMES, HEADS = 16, 8
HEADER = (
    "| kernel | dtype | D | N | order | blocks | warps/stages | regs | spill B | smem KiB "
    "| S = Q.K^T | other products | rows twice | key loops | pipelined |"
)


def compile_variant(kind, dtype, head_dim, height, width, order, arch):
    """(compiled kernel, launch config) of one variant."""
    pass_, name, tensors, fp32_tensors, pass_consts = KERNELS[kind]
    fn = getattr(lsa, name)
    n = height * width
    element = 4 if dtype == "fp32" else 2
    cfgs = {p: lsa.lsa_config(p, head_dim, n, (arch // 10, arch % 10), element) for p in lsa.PASSES}
    cfg = cfgs[pass_]
    query_pass = "bwd_dq" if pass_ != "fwd" else "fwd"
    tables = lsa.plan(
        FRAMES, height, width, "paper", order, cfgs[query_pass].block_n,
        cfgs["bwd_dkdv"].block_n, torch.device("cpu"),
    )  # fmt: skip
    da, db = lsa.head_dim_chunks(head_dim)
    align = 16
    while (HEADS * head_dim) % align or head_dim % align:
        align //= 2
    consts = dict(
        D=head_dim,
        BLOCK_M=cfg.block_m,
        BLOCK_N=cfg.block_n,
        DA=da,
        DB=max(db, 16),
        HAS_B=db > 0,
        INDEXED=order != "grouped",
        ROW_MASK=n % cfg.block_m != 0,
        PRECISION="ieee" if dtype == "fp32" else "tf32",
        ALIGN=align,
        **pass_consts,
    )
    if name == ROWS[0]:
        consts["NEG_SCALE"] = False
    # Model layout (B*F, N, heads, D): strides in units of ALIGN elements.
    values = {
        "b": n * HEADS * head_dim // align,
        "h": head_dim // align,
        "n": HEADS * head_dim // align,
        "heads": HEADS,
        "frames": FRAMES,
        "N": n,
        "tiles_per_frame": tables.tiles.shape[1],
        "readers_per_group": tables.readers.shape[2],
    }
    signature, attrs = {}, {}
    for i, arg in enumerate(fn.arg_names):
        value = values.get(arg[-1] if arg.startswith("stride_") else arg)
        if arg in consts:
            signature[arg] = "constexpr"
        elif arg in tensors:
            signature[arg], attrs[(i,)] = f"*{dtype}", [["tt.divisibility", 16]]
        elif arg in fp32_tensors:
            signature[arg], attrs[(i,)] = "*fp32", [["tt.divisibility", 16]]
        elif arg in ("TILES", "KEY_TILES", "READERS", "ROWS"):  # the int32 plan tables
            signature[arg], attrs[(i,)] = "*i32", [["tt.divisibility", 16]]
        elif arg in ("qk_scale", "sm_scale"):
            signature[arg] = "fp32"
        else:
            signature[arg] = "i32"
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
        gpu = f"--gpu-name=sm_{arch}a" if arch >= 90 else f"--gpu-name=sm_{arch}"
        out = subprocess.run(
            [ptxas, "-v", gpu, path, "-o", os.devnull], capture_output=True, text=True
        ).stderr
    used = re.search(r"Used (\d+) registers", out)
    if used is None:
        raise RuntimeError(f"{ptxas} -v printed no register count:\n{out.strip()}")
    regs = int(used.group(1))
    spills = sum(int(x) for x in re.findall(r"(\d+) bytes spill", out))
    return regs, spills


def mma_layouts(ttgir: str) -> dict[str, tuple[int, list[int], list[int]]]:
    """``#mmaN`` -> (MMA version, warpsPerCTA, instrShape) of the TTGIR's MMA layouts."""
    found = {}
    pattern = (
        r"^(#mma\d*) = #ttg\.nvidia_mma<\{versionMajor = (\d+), .*?warpsPerCTA = \[([\d, ]+)\]"
    )
    for m in re.finditer(pattern + r".*?instrShape = \[([\d, ]+)\]", ttgir, re.M):
        ints = [[int(x) for x in g.split(",")] for g in m.group(3, 4)]
        found[m.group(1)] = (int(m.group(2)), *ints)
    return found


def products(ttgir: str) -> list[dict]:
    """Every matrix product in program order: its line, SSA names of the result and the
    accumulator it adds to, result rows and columns, and MMA layout name."""
    found, alias = [], {}
    for i, line in enumerate(ttgir.splitlines()):
        wait = re.search(r"%([\w]+)(?::\d+)? = ttng\.warp_group_dot_wait %([\w]+)", line)
        if wait:
            alias[wait.group(1)] = wait.group(2)
        dot = re.search(r"%([\w]+) = (?:tt\.dot|ttng\.warp_group_dot) %\S+, %\S+, %([\w]+)", line)
        if dot:
            out = re.search(r"-> tensor<(\d+)x(\d+)xf32, (#mma\d*)>", line)
            found.append(
                dict(line=i, name=dot.group(1), acc=dot.group(2), shape=out.group(1, 2),
                     layout=out.group(3))
            )  # fmt: skip
    for p in found:
        while p["acc"] in alias:
            p["acc"] = alias[p["acc"]]
    return found


def instruction(product, layouts) -> tuple[str, bool]:
    """The instruction of a product and whether warps repeat its rows."""
    version, warps, shape = layouts[product["layout"]]
    if version == 3:
        groups = warps[0] // 4
        text = f"wgmma m64n{shape[1]}k{shape[2]}" + (f" x{groups}wg" if groups > 1 else "")
    else:
        text = f"mma.sync m{shape[0]}n{shape[1]}" + (f"k{shape[2]}" if len(shape) > 2 else "")
    return text, warps[0] * 16 > int(product["shape"][0])


def key_loops(ttgir: str) -> list[tuple[int, int, bool]]:
    """(first line, last line, pipelined?) of each innermost ``scf.for`` holding a product."""
    lines = ttgir.splitlines()
    loops = []
    for i, line in enumerate(lines):
        if "scf.for" not in line:
            continue
        depth, j = 0, i
        for j in range(i, len(lines)):
            depth += lines[j].count("{") - lines[j].count("}")
            if depth <= 0:
                break
        body = "\n".join(lines[i + 1 : j])
        if "scf.for" not in body and ("_dot " in body or "tt.dot " in body):
            loops.append((i, j, "async_copy" in body or "async_tma" in body))
    return loops


def describe(kernel, cfg, arch):
    """The report cells of a compiled kernel after ``blocks``: S = Q.K^T is the first product
    of each key loop, with the products that add to it (the head dim's second chunk)."""
    ttgir, ptx = kernel.asm["ttgir"], kernel.asm["ptx"]
    regs, spills = ptxas_usage(ptx, arch)
    layouts = mma_layouts(ttgir)
    loops = key_loops(ttgir)
    found = products(ttgir)
    score = set()
    for lo, hi, _ in loops:
        inside = [p for p in found if lo < p["line"] < hi]
        score.add(inside[0]["name"])
    for p in found:
        if p["acc"] in score:
            score.add(p["name"])
    columns, twice = ([], []), False
    for p in found:
        text, repeat = instruction(p, layouts)
        twice |= repeat
        column = columns[0] if p["name"] in score else columns[1]
        if text not in column:
            column.append(text)
    return (
        f"{cfg.num_warps}/{cfg.num_stages} | {regs} | {spills} | "
        f"{kernel.metadata.shared / 1024:.1f} | {', '.join(columns[0])} | "
        f"{', '.join(columns[1])} | {'YES' if twice else 'no'} | {len(loops)} | "
        f"{'yes' if loops and all(p for *_, p in loops) else 'NO'} |"
    )


def report_lines(variants, arch):
    for dtype, d, h, w, order in variants:
        for kind in KERNELS:
            kernel, cfg = compile_variant(kind, dtype, d, h, w, order, arch)
            yield (
                f"| {kind} | {dtype} | {d} | {h * w} | {order} | {cfg.block_m}x{cfg.block_n} | "
                + describe(kernel, cfg, arch)
            )


def write_docs(table: str) -> None:
    path = os.path.join(DOCS, "kernels.md")
    with open(path) as f:
        text = f.read()
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    with open(path, "w") as f:
        f.write(f"{head}{BEGIN}\n{table}\n{END}{tail}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--quick", action="store_true", help="one variant (make test)")
    parser.add_argument("--write-docs", action="store_true", help="into docs/kernels.md")
    args = parser.parse_args(argv)
    if lsa.INTERPRET:
        print("unset TRITON_INTERPRET to compile for a GPU target", file=sys.stderr)
        return 2
    lines = [f"sm_{args.arch}, triton {triton.__version__}", HEADER, "|---" * 15 + "|"]
    print("\n".join(lines), flush=True)
    for line in report_lines(QUICK if args.quick else FULL, args.arch):
        print(line, flush=True)
        lines.append(line)
    if args.write_docs:
        write_docs("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
