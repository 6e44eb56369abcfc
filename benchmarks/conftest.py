"""pytest-benchmark setup: the ``--benchmark`` switch, and machine information recorded in
every JSON report.

    pytest benchmarks/ --benchmark [--benchmark-json out/bench.json]

measures every benchmark (SD-1.5 shapes in fp16 on a GPU, the tiny preset on a CPU), each for
pytest-benchmark's own ``--benchmark-min-rounds`` / ``--benchmark-max-time``; ``make test``
runs them once each, unmeasured (``--benchmark-disable``)."""

import datetime
import os

os.environ.setdefault("TRITON_INTERPRET", "0" if __import__("torch").cuda.is_available() else "1")

import torch  # noqa: E402


def pytest_addoption(parser):
    parser.addoption(
        "--benchmark",
        action="store_true",
        help="run the benchmarks only, and measure them (pytest-benchmark's --benchmark-only)",
    )


def pytest_configure(config):
    if config.getoption("--benchmark", default=False):
        config.option.benchmark_only = True


def pytest_benchmark_update_machine_info(config, machine_info):
    info = {"torch": torch.__version__, "date": datetime.date.today().isoformat()}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            driver=_driver(),
        )
    machine_info["simda"] = info


def _driver():
    try:
        import subprocess

        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return None
