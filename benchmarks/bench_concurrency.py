"""Concurrent CPU runs with and without simda's CPU thread policy (``simda.cpu``).

    python -m benchmarks.bench_concurrency [--repeats 1] [--json out.json]
    python -m benchmarks.bench_concurrency --train [--steps 20] [--json out.json]

generate (default): ``simda generate "a red circle moving right"`` (the built-in model) alone,
then two started at once; each run's wall time, process start to exit. "with the policy": the
command as shipped. "without": the same command from an interpreter that imported torch
first, which the command leaves alone: OpenMP's defaults, as before the policy. Target on 2
cores: each of the two concurrent runs at most 2x the lone run. A first row runs a one-thread
Python loop the same way: what two processes get from this machine's cores at best.

--train: ``torchrun --nproc_per_node 2 -m simda.cli train`` on 16 toy-world clips, global batch
2; steps per second from ``losses.jsonl`` (its first window, with the warm-up, left out):
torchrun's defaults (OMP_NUM_THREADS=1) before and with the policy, then with every rank given
all cores' threads (OMP_NUM_THREADS=cores) before and with the policy; one process for scale.

Timings mean something only on an otherwise idle machine: the load average is printed before
and after (a job that started meanwhile shows only in the second).
The variables the policy reads are removed from the runs' environment.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from simda.cpu import available_cores

POLICY_VARS = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "SIMDA_CPU_THREADS", "LOCAL_WORLD_SIZE")
WITH = [sys.executable, "-m", "simda.cli"]
# torch loaded before the command starts: it leaves the process's OpenMP settings alone
WITHOUT = [
    sys.executable,
    "-c",
    "import sys, torch; from simda.cli import main; sys.exit(main(sys.argv[1:]))",
]
# one thread of pure Python: two at once show what this machine's cores give two processes
LOOP = [sys.executable, "-c", "sum(i * i for i in range(40_000_000))"]


def clean_env(**extra: str) -> dict:
    return {**{k: v for k, v in os.environ.items() if k not in POLICY_VARS}, **extra}


def run(command: list[str], env: dict) -> float:
    """``command``'s wall time in seconds; a failure ends the benchmark with its stderr."""
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def at_once(commands: list[list[str]], env: dict) -> list[float]:
    """Start the commands together; each one's own wall time."""
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda c: run(c, env), commands))


def generate(prefix: list[str], output: str) -> list[str]:
    return [*prefix, "generate", "a red circle moving right", "--quiet", "--output", output]


def bench_generate(repeats: int, folder: str) -> list[dict]:
    cases = {  # name: the command, given an output folder
        "one-thread Python loop (the machine's floor)": lambda output: LOOP,
        "simda generate, without the policy": lambda output: generate(WITHOUT, output),
        "simda generate, with the policy": lambda output: generate(WITH, output),
    }
    rows = []
    for name, command in cases.items():
        env = clean_env()
        alone = [run(command(f"{folder}/alone"), env) for _ in range(repeats)]
        pair = [command(f"{folder}/a"), command(f"{folder}/b")]
        pairs = [t for _ in range(repeats) for t in at_once(pair, env)]
        row = {
            "case": name,
            "alone_s": statistics.median(alone),
            "concurrent_s": statistics.mean(pairs),
            "concurrent_each_s": pairs,
        }
        row["ratio"] = row["concurrent_s"] / row["alone_s"]
        print(
            f"| {name} | {row['alone_s']:.1f} | {row['concurrent_s']:.1f} "
            f"({', '.join(f'{t:.1f}' for t in pairs)}) | {row['ratio']:.2f}x "
            f"| {'yes' if row['ratio'] <= 2 else 'no'} |",
            flush=True,
        )
        rows.append(row)
    return rows


def steps_per_second(output: str) -> float:
    with open(os.path.join(output, "losses.jsonl")) as f:
        windows = [json.loads(line)["seconds_per_step"] for line in f if line.strip()]
    return 1 / statistics.mean(windows[1:])


def bench_train(steps: int, folder: str) -> list[dict]:
    data = os.path.join(folder, "data")
    run([*WITH, "toyworld", "data", "--clips", "16", "--output", data], clean_env())
    cores = str(available_cores())
    two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    before, after = [*two, "--no-python", *WITHOUT], [*two, "-m", "simda.cli"]
    cases = [  # (name, launcher, environment)
        ("1 process, with the policy", WITH, {}),
        ("torchrun defaults, without", before, {}),
        ("torchrun defaults, with the policy", after, {}),
        (f"OMP_NUM_THREADS={cores}, without", before, {"OMP_NUM_THREADS": cores}),
        (f"OMP_NUM_THREADS={cores}, with the policy", after, {"OMP_NUM_THREADS": cores}),
    ]
    rows = []
    for index, (name, launcher, extra) in enumerate(cases):
        output = os.path.join(folder, f"run{index}")
        argv = ["train", "--data", data, "--steps", str(steps), "--log-every", "5"]
        argv += ["--checkpoint-every", str(steps), "--batch-size", "2", "--device", "cpu"]
        seconds = run([*launcher, *argv, "--quiet", "--output", output], clean_env(**extra))
        row = {"case": name, "steps_per_s": steps_per_second(output), "wall_s": seconds}
        print(f"| {name} | {row['steps_per_s']:.2f} | {seconds:.0f} |", flush=True)
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--train", action="store_true", help="measure torchrun training instead")
    parser.add_argument("--repeats", type=int, default=1, help="lone runs and pairs per policy")
    parser.add_argument("--steps", type=int, default=20, help="training steps per run (--train)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be a positive integer, got {args.repeats}")
    if args.steps < 10:
        parser.error(f"--steps must be at least 10 (two 5-step windows), got {args.steps}")
    load = os.getloadavg()
    print(f"# {available_cores()} cores; load average {' '.join(f'{x:.2f}' for x in load)}")
    with tempfile.TemporaryDirectory() as folder:
        if args.train:
            print("| case (2 ranks unless said) | steps/s | wall s |\n|---|---|---|")
            rows = bench_train(args.steps, folder)
        else:
            print("| case | alone s | 2 at once s, mean (each) | ratio | <= 2x |")
            print("|---|---|---|---|---|")
            rows = bench_generate(args.repeats, folder)
    # another job that started meanwhile shows here, not in the load average before
    after = os.getloadavg()
    print(f"# load average after: {' '.join(f'{x:.2f}' for x in after)}")
    if args.json:
        result = {"cores": available_cores(), "load_average": [load, after], "rows": rows}
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
