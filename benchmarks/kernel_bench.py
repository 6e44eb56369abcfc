"""Shared pieces of the two kernel benchmarks (``bench_lsa``, ``bench_adapter``): command line,
timers, the card's reference rates, and a table that survives a failing path.

Each row is printed as soon as it is measured (a run cut short by a timeout keeps what it
measured) and the JSON is rewritten after every row. A path that raises is recorded in the
row's ``errors`` and shown as ``err`` instead of ending the run. Before timing, each row checks
the fast path's output against the baseline's (``max_err``): a speed-up of a wrong kernel is
not a result.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Iterable

import torch

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def compile_fresh(fn, **options):
    """``torch.compile(fn)`` from empty caches. A compiled function is recompiled for every new
    shape, dtype or grad mode, and past torch's recompile limit (8) it silently runs eagerly: a
    "compiled" column measured after a few other shapes would be eager PyTorch."""
    torch._dynamo.reset()
    return torch.compile(fn, **options)


def bench_ms(fn, device) -> float:
    """Median milliseconds of ``fn`` (CUDA: ``triton.testing.do_bench``; CPU: 5 calls)."""
    if device == "cuda":
        import triton.testing

        return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
    times = []
    for _ in range(5):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def peak_extra_mib(fn, device) -> float | None:
    """Peak CUDA memory ``fn`` allocates beyond what is allocated before it (None on CPU)."""
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def matmul_tflops(device, dtype=torch.bfloat16) -> float | None:
    """This card's 8192^3 matmul rate, the reference for TFLOP/s columns (None on CPU)."""
    if device != "cuda":
        return None
    a = torch.randn(8192, 8192, device=device, dtype=dtype)
    return 2 * 8192**3 / bench_ms(lambda: a @ a, device) / 1e9


def copy_tbps(device) -> float | None:
    """This card's device-to-device copy rate (read + write), the reference for GB/s."""
    if device != "cuda":
        return None
    a = torch.empty(1 << 28, device=device, dtype=torch.uint8)
    b = torch.empty_like(a)
    return 2 * a.numel() / bench_ms(lambda: b.copy_(a), device) / 1e9


def describe(exc: Exception, width: int = 200) -> str:
    """``Type: first line of the message``, cut to ``width`` characters."""
    first = (str(exc).strip().splitlines() or [""])[0][:width]
    return f"{type(exc).__name__}: {first}"


def attempt(row: dict, key: str, fn: Callable[[], object]):
    """``row[key] = fn()``; on an exception ``row[key] = None`` and the error is recorded."""
    try:
        row[key] = fn()
    except Exception as exc:  # a failing path must not end the table
        row[key] = None
        row.setdefault("errors", []).append(f"{key}: {describe(exc)}")
    return row[key]


def max_err(got, want) -> float:
    return (got.float() - want.float()).abs().max().item()


def num(value, spec: str = ".3f") -> str:
    """A table cell of a derived value: ``-`` when it cannot be computed."""
    return "-" if value is None else format(value, spec)


def cell(row: dict, key: str, spec: str = ".3f") -> str:
    """A table cell of a measurement: ``err`` when it failed, ``-`` when it does not apply."""
    if row.get(key) is None and any(e.startswith(f"{key}:") for e in row.get("errors", [])):
        return "err"
    return num(row.get(key), spec)


def ratio(a, b) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def geomean(values: Iterable) -> str:
    values = [v for v in values if v is not None and v > 0]
    return f"{statistics.geometric_mean(values):.2f}x" if values else "n/a"


def parse_cli(doc: str, argv=None):
    """(arguments, device, card name) of a kernel benchmark's command line."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--dtype", nargs="+", default=["fp16", "bf16"], choices=tuple(DTYPES))
    parser.add_argument("--json", help="write the raw rows here (rewritten after every row)")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    card = torch.cuda.get_device_name() if device == "cuda" else "CPU (smoke run, no timing result)"
    return args, device, card


def run_table(
    args, header: str, jobs: Iterable, run_row: Callable, line: Callable, **meta
) -> list[dict]:
    """Measure ``run_row(*job)`` for every job, printing ``line(row)`` under ``header`` as each
    row completes and rewriting ``args.json`` (``meta`` plus the rows so far) after each."""
    print(header, flush=True)
    rows = []
    for job in jobs:
        row = run_row(*job)
        rows.append(row)
        print(line(row), flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({**meta, "rows": rows}, f, indent=1)
    errors = [e for r in rows for e in r.get("errors", [])]
    if errors:
        print("\nerrors:\n" + "\n".join(f"- {e}" for e in errors))
    return rows
