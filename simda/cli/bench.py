"""``simda bench``: turn pytest-benchmark JSON into markdown tables and PNG bar charts.

    pytest benchmarks/ --benchmark --benchmark-json out/bench.json
    simda bench out/bench.json [more.json ...] [--output docs/bench]

Model level: time, peak memory and tuned parameters of every architecture per measurement,
the speed-up of SimDA (optimized) over each peer, and the targets (met, or missed by how much).
Kernel level: each path of latent-shift attention and the temporal adapter side by side.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict

TARGETS = [  # (measurement, description, check(rows) -> (ok, detail))
    ("sampling", "50-step sampling <= 1.2 s", lambda r: _le(r, "simda_optimized", None, 1200)),
    ("sampling", ">= 1.5x faster than TAV", lambda r: _ratio(r, "tav", 1.5)),
    ("sampling", ">= 2x faster than LVDM", lambda r: _ratio(r, "lvdm", 2.0)),
    ("edit_train_step[ckpt]", ">= 3x faster than TAV", lambda r: _ratio(r, "tav", 3.0)),
    ("edit_train_step[ckpt]", "<= 0.8x TAV's peak memory", lambda r: _mem(r, "tav", 0.8)),
    ("edit_train_step[no_ckpt]", ">= 3x faster than TAV", lambda r: _ratio(r, "tav", 3.0)),
    ("edit_train_step[no_ckpt]", "<= 0.8x TAV's peak memory", lambda r: _mem(r, "tav", 0.8)),
]
OURS = "simda_optimized"


def load(paths):
    """Machine info and one row per benchmark of pytest-benchmark JSON files; a file that is
    not one is a one-line error (SimDAError), not an empty report."""
    from simda.errors import SimDAError

    machine, rows = {}, []
    for path in paths:
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SimDAError(f"{path!r} is not readable JSON ({exc})") from exc
        if not isinstance(data, dict) or not data.get("benchmarks"):
            raise SimDAError(
                f"{path!r} is not a pytest-benchmark result with benchmarks in it (write one "
                "with `pytest benchmarks/ --benchmark-only --benchmark-json FILE`)"
            )
        machine = data.get("machine_info", machine)
        for bench in data.get("benchmarks", []):
            extra = bench.get("extra_info", {})
            ms = extra.get("median_ms") or bench["stats"]["median"] * 1e3
            rows.append({**extra, "ms": ms, "name": bench["name"]})
    return machine, rows


def _key(row):
    if "checkpointing" in row:
        return f"{row['measure']}[{'ckpt' if row['checkpointing'] else 'no_ckpt'}]"
    return row["measure"]


def model_tables(rows):
    groups = defaultdict(dict)
    for row in rows:
        if "measure" in row:
            groups[_key(row)][row["arch"]] = row
    return dict(groups)


def _le(group, arch, _unused, limit_ms):
    if arch not in group:
        return None, "not measured"
    ms = group[arch]["ms"]
    return ms <= limit_ms, f"{ms:.0f} ms ({ms / limit_ms:.2f}x the limit)"


def _ratio(group, peer, want):
    if OURS not in group or peer not in group:
        return None, "not measured"
    got = group[peer]["ms"] / group[OURS]["ms"]
    return got >= want, f"{got:.2f}x (target {want}x)"


def _mem(group, peer, want):
    ours, theirs = group.get(OURS, {}).get("peak_mib"), group.get(peer, {}).get("peak_mib")
    if ours is None or theirs is None:
        return None, "not measured (GPU only)"
    got = ours / theirs
    return got <= want, f"{got:.2f}x ({ours:.0f} vs {theirs:.0f} MiB; target <= {want}x)"


def _fmt_mib(v):
    return "-" if v is None else f"{v:,.0f}"


def markdown(machine, rows) -> str:
    info = machine.get("simda", {})
    device = info.get("gpu") or "CPU"
    out = [
        f"Device: **{device}**"
        + (
            f" ({info.get('gpu_memory_gib')} GiB, driver {info.get('driver')}, "
            f"CUDA {info.get('cuda')})"
            if info.get("gpu")
            else ""
        )
        + f"; torch {info.get('torch')}, triton {info.get('triton')}; {info.get('date')}."
    ]
    models = model_tables(rows)
    if models:
        preset = next(iter(next(iter(models.values())).values())).get("preset")
        out.append(
            f"\n### Model level ({preset} UNet, random weights, "
            f"{next(iter(next(iter(models.values())).values())).get('dtype')})\n"
        )
        out.append(
            "| measurement | architecture | median ms | peak MiB | tuned parameters "
            "| SimDA optimized speed-up |"
        )
        out.append("|---|---|---|---|---|---|")
        for key, group in models.items():
            ours = group.get(OURS, {}).get("ms")
            for arch, row in group.items():
                speedup = "-" if ours is None else f"{row['ms'] / ours:.2f}x"
                out.append(
                    f"| {key} ({row.get('shape')}) | {arch} | {row['ms']:.1f} | "
                    f"{_fmt_mib(row.get('peak_mib'))} | {row['tuned_parameters']:,} | "
                    f"{speedup} |"
                )
        out.append("\n### Targets\n")
        out.append("| measurement | target | result | |\n|---|---|---|---|")
        gpu = bool(info.get("gpu"))
        for key, text, check in TARGETS:
            if key not in models:
                continue
            ok, detail = check(models[key])
            status = ("met" if ok else "MISSED") if ok is not None else "-"
            if not gpu:
                status = "(CPU smoke run: targets apply to GPU runs)"
            out.append(f"| {key} | {text} | {detail} | {status} |")
    for op, title, paths in (
        ("lsa", "Latent-shift attention", ("naive", "sdpa_preconcat", "flex", "fused")),
        ("temporal_adapter", "Temporal adapter", ("eager", "compiled", "fused")),
    ):
        table = kernel_table(rows, op, paths)
        if table:
            out.append(f"\n### {title} (kernel level)\n")
            out.extend(table)
    return "\n".join(out)


def kernel_table(rows, op, paths):
    groups = defaultdict(dict)
    for row in rows:
        if row.get("op") == op:
            groups[(row["shape"], row["dtype"], row["direction"])][row["path"]] = row
    if not groups:
        return []
    base = paths[0]
    lines = [
        "| shape | dtype | pass | "
        + " | ".join(f"{p} ms" for p in paths)
        + f" | {base} / fused | fused TFLOP/s |",
        "|---|---|---|" + "---|" * (len(paths) + 2),
    ]
    for (shape, dtype, direction), group in sorted(groups.items()):
        cells = [f"{group[p]['ms']:.3f}" if p in group else "-" for p in paths]
        fused = group.get("fused")
        speed = f"{group[base]['ms'] / fused['ms']:.2f}x" if fused and base in group else "-"
        tflops = f"{fused['flops'] / fused['ms'] / 1e9:.1f}" if fused and "flops" in fused else "-"
        lines.append(
            f"| {shape} | {dtype} | {direction} | " + " | ".join(cells) + f" | {speed} | {tflops} |"
        )
    return lines


def charts(rows, folder) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = model_tables(rows)
    if not models:
        return []
    os.makedirs(folder, exist_ok=True)
    written = []
    for metric, label, name in (
        ("ms", "time relative to SimDA optimized (higher = SimDA faster)", "speedup.png"),
        ("peak_mib", "peak memory (MiB)", "memory.png"),
    ):
        keys = [k for k, g in models.items() if all(r.get(metric) is not None for r in g.values())]
        if not keys:
            continue
        archs = sorted({a for k in keys for a in models[k]})
        fig, ax = plt.subplots(figsize=(8, 3.5), dpi=110)
        width = 0.8 / len(archs)
        for i, arch in enumerate(archs):
            values = []
            for k in keys:
                row = models[k].get(arch)
                ours = models[k].get(OURS)
                if row is None:
                    values.append(0)
                elif metric == "ms" and ours:
                    values.append(row["ms"] / ours["ms"])
                else:
                    values.append(row[metric])
            ax.bar([j + i * width for j in range(len(keys))], values, width, label=arch)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))], keys, fontsize=8)
        ax.set_ylabel(label, fontsize=8)
        if metric == "ms":
            ax.axhline(1.0, color="k", lw=0.8)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(folder, name)
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="simda bench", description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="+", help="pytest-benchmark JSON files (--benchmark-json)")
    parser.add_argument(
        "--output", default="out/bench", help="folder for report.md and charts (default out/bench)"
    )
    args = parser.parse_args(argv)
    missing = [p for p in args.json if not os.path.isfile(p)]
    if missing:
        from simda.errors import SimDAError

        raise SimDAError(
            f"no benchmark results at {', '.join(missing)} (run `pytest benchmarks/ "
            "--benchmark --benchmark-json FILE` first)"
        )
    machine, rows = load(args.json)
    text = markdown(machine, rows)
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "report.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    for path in [os.path.join(args.output, "report.md"), *charts(rows, args.output)]:
        print(path)
    return 0


def register(sub) -> None:
    """``simda bench ARGS``: every argument but ``--debug`` goes to this module's own parser
    (see ``split_args``), ``--help`` included."""
    p = sub.add_parser("bench", help="benchmark tables and charts (see benchmarks/)")
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="benchmark JSON files, --output")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def split_args(argv: list[str]) -> argparse.Namespace:
    """``simda bench ARGS`` parsed by hand: argparse would take the report's options for
    ``simda``'s."""
    rest = argv[1:]
    return argparse.Namespace(
        command="bench",
        func=run,
        debug="--debug" in rest,
        quiet=False,
        bench_args=[a for a in rest if a != "--debug"],
    )


def run(args) -> int:
    return main(args.bench_args)
