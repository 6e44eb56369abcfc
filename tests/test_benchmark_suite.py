"""The benchmark suite's own correctness: baseline architectures and the report."""

import functools
import json
import os

import pytest
import torch
from diffusers import UNet2DConditionModel

import simda
from benchmarks.baselines import (
    LVDM_TEMPORAL_PARAMETERS,
    TAV_TUNED_PARAMETERS,
    build_lvdm,
    build_tav,
)
from simda.cli import bench as report
from simda.optimization import backends
from simda.presets import unet2d_config


def image_unet(preset="tiny"):
    return UNet2DConditionModel(**unet2d_config(preset)).eval()


@pytest.mark.parametrize(
    "build, expected", [(build_tav, TAV_TUNED_PARAMETERS), (build_lvdm, LVDM_TEMPORAL_PARAMETERS)]
)
def test_peer_parameter_counts_at_sd15_size(build, expected):
    with torch.device("meta"):
        model = build(image_unet("sd15"))
    assert simda.count_parameters(model)["trainable"] == expected


def test_lvdm_starts_as_the_image_model():
    unet = image_unet()
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    reference = UNet2DConditionModel(**unet2d_config("tiny")).eval()
    reference.load_state_dict(unet.state_dict())
    model = build_lvdm(unet)
    x, text = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 5, 32)
    with torch.no_grad():
        want = torch.stack([reference(x[:, :, f], 10, text).sample for f in range(3)], 2)
        torch.testing.assert_close(model(x, 10, text).sample, want, rtol=1e-4, atol=1e-5)


def test_tav_attends_to_first_and_previous_frames():
    model = build_tav(image_unet())
    x, text = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 5, 32)
    with torch.no_grad():
        out = model(x, 10, text).sample
        x2 = x.clone()
        x2[:, :, 2] += 1.0  # the last frame is read by no other frame
        out2 = model(x2, 10, text).sample
    assert torch.equal(out[:, :, :2], out2[:, :, :2])
    assert not torch.equal(out[:, :, 2], out2[:, :, 2])


def test_optimize_reaches_the_tav_baseline():
    model = build_tav(image_unet())
    simda.optimize(model, attention_backend="triton")
    assert backends(model)["attention"] == {"triton"}
    simda.restore(model)


def fake_results(tmp_path, gpu):
    def bench(measure, arch, ms, peak, ckpt=None):
        extra = {
            "measure": measure,
            "arch": arch,
            "median_ms": ms,
            "peak_mib": peak,
            "tuned_parameters": 1000,
            "shape": "2x16x32x32",
            "preset": "sd15",
            "dtype": "float16",
        }
        if ckpt is not None:
            extra["checkpointing"] = ckpt
        return {"name": f"{measure}[{arch}]", "stats": {"median": ms / 1e3}, "extra_info": extra}

    rows = [
        bench("sampling", "simda_optimized", 1000, 900),
        bench("sampling", "tav", 1600, 950),
        bench("sampling", "lvdm", 1800, 1200),
        bench("edit_train_step", "simda_optimized", 100, 700, True),
        bench("edit_train_step", "tav", 350, 1000, True),
        {
            "name": "lsa",
            "stats": {"median": 0.002},
            "extra_info": {
                "op": "lsa",
                "path": "fused",
                "shape": "16x1024",
                "dtype": "float16",
                "direction": "fwd",
                "flops": 1e9,
            },
        },
        {
            "name": "lsa",
            "stats": {"median": 0.003},
            "extra_info": {
                "op": "lsa",
                "path": "naive",
                "shape": "16x1024",
                "dtype": "float16",
                "direction": "fwd",
            },
        },
    ]
    info = {
        "simda": {
            "gpu": "NVIDIA H100" if gpu else None,
            "torch": "2.x",
            "triton": "3.x",
            "date": "2026-11-26",
        }
    }
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"machine_info": info, "benchmarks": rows}))
    return str(path)


def test_report_tables_targets_and_charts(tmp_path, capsys):
    path = fake_results(tmp_path, gpu=True)
    assert report.main([path, "--output", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert "NVIDIA H100" in text
    assert "| sampling | 50-step sampling <= 1.2 s | 1000 ms (0.83x the limit) | met |" in text
    assert "| sampling | >= 2x faster than LVDM | 1.80x (target 2.0x) | MISSED |" in text
    assert "3.50x (target 3.0x) | met" in text
    assert "| 16x1024 | float16 | fwd | 3.000 | - | - | 2.000 | 1.50x | 0.5 |" in text
    assert (tmp_path / "report" / "speedup.png").stat().st_size > 1000
    assert (tmp_path / "report" / "memory.png").stat().st_size > 1000


def test_report_on_cpu_results_says_targets_are_for_gpus(tmp_path):
    path = fake_results(tmp_path, gpu=False)
    report.main([path, "--output", str(tmp_path / "r")])
    assert "targets apply to GPU runs" in (tmp_path / "r" / "report.md").read_text()


def test_simda_bench_without_results_is_a_user_error(tmp_path, capsys):
    from simda.cli import main

    assert main(["bench", str(tmp_path / "missing.json")]) == 2
    assert "no benchmark results" in capsys.readouterr().err


def _quick_kernel_bench(name, monkeypatch):
    """A kernel benchmark module at one tiny shape, each timed path run once (tests run with
    TRITON_INTERPRET=1, so bench_lsa's fused path is the Triton kernel in the interpreter)."""
    module = __import__(f"benchmarks.{name}", fromlist=["main"])
    tiny = {"bench_lsa": [(2, 16, 16, 4, 4)], "bench_adapter": [(1, 16, 3, 4, 4)]}[name]
    monkeypatch.setattr(module, "CPU_SHAPES", tiny)
    monkeypatch.setattr(module, "bench_ms", lambda fn, device: (fn(), 1.0)[1])
    if name == "bench_lsa":  # one video, one head: the interpreter runs every program
        one_head = functools.partial(module.run_shape, batch=1, heads=1)
        monkeypatch.setattr(module, "run_shape", one_head)
    return module


@pytest.mark.parametrize("name", ["bench_lsa", "bench_adapter"])
def test_kernel_benchmark_scripts_print_and_save_every_row(name, monkeypatch, tmp_path, capsys):
    module = _quick_kernel_bench(name, monkeypatch)
    out = tmp_path / "rows.json"
    assert module.main(["--dtype", "fp32", "fp16", "--json", str(out)]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| float")]
    saved = json.loads(out.read_text())
    assert len(table) == len(saved["rows"]) == 2
    for row in saved["rows"]:
        assert "errors" not in row
        # bench_lsa: the Triton kernel against SDPA / autograd through the naive path;
        # bench_adapter on CPU: the op's reference against eager Conv3d + GELU.
        assert 0 <= row["fused_max_err"] < 1e-2
        assert row.get("fused_grad_max_err", 0) < 1e-2


def test_kernel_benchmark_flags_a_wrong_kernel(monkeypatch, tmp_path):
    from benchmarks import bench_lsa

    bench = _quick_kernel_bench("bench_lsa", monkeypatch)
    right = bench_lsa.simda_kernels.latent_shift_attention
    monkeypatch.setattr(
        bench_lsa.simda_kernels, "latent_shift_attention", lambda *a, **k: right(*a, **k) * 1.1
    )
    out = tmp_path / "rows.json"
    assert bench.main(["--dtype", "fp32", "--json", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["fused_max_err"] > 1e-2 and row["fused_grad_max_err"] > 1e-2


def test_kernel_benchmark_survives_a_failing_path(monkeypatch, tmp_path, capsys):
    """A path that raises is reported as `err` with its reason; the other paths and rows are
    still measured, and the JSON is written."""
    bench = _quick_kernel_bench("bench_lsa", monkeypatch)

    def broken(*args, **kwargs):
        raise RuntimeError("kernel exploded\nsecond line")

    monkeypatch.setattr(bench.simda_kernels, "latent_shift_attention", broken)
    out = tmp_path / "rows.json"
    assert bench.main(["--dtype", "fp32", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 1
    assert rows[0]["fused_ms"] is None and rows[0]["naive_ms"] == 1.0
    assert "fused_ms: RuntimeError: kernel exploded" in text and "second line" not in text
    assert "| err |" in text


def test_compile_fresh_is_not_silently_eager_after_earlier_compilations():
    """torch.compile caches per function: past the recompile limit a new shape or dtype runs
    eagerly without an error, so a "compiled" benchmark row could measure eager code.
    compile_fresh (used by every compiled path of the benchmarks) starts from empty caches."""
    from benchmarks.kernel_bench import compile_fresh

    graphs = []

    def backend(gm, inputs):
        graphs.append(gm)
        return gm.forward

    def f(x):
        return x * 2 + 1

    # (config.patch, not monkeypatch: undoing a monkeypatch deletes the config entry)
    with torch._dynamo.config.patch(recompile_limit=1):
        torch.compile(f, backend=backend)(torch.randn(3))
        torch.compile(f, backend=backend)(torch.randn(3, dtype=torch.float64))
        assert len(graphs) == 1  # the limit was hit: the second call ran eagerly
        compile_fresh(f, backend=backend)(torch.randn(3, dtype=torch.float64))
        assert len(graphs) == 2
    torch._dynamo.reset()


def test_the_benchmark_switch_measures_with_pytest_benchmarks_own_rounds(tmp_path):
    """``pytest benchmarks/ --benchmark`` (what users are told to run) measures the
    benchmarks only, for at least ``--benchmark-min-rounds`` rounds each."""
    import json
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "bench.json"
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "benchmarks/"]
    argv += ["--benchmark", "--benchmark-min-rounds", "3", "--benchmark-max-time", "0"]
    argv += ["-k", "test_temporal_adapter and eager and not fwdbwd", "--benchmark-json"]
    result = subprocess.run(
        [*argv, str(out)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TRITON_INTERPRET": "1"},
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    runs = json.loads(out.read_text())["benchmarks"]
    assert runs and all(len(b["stats"]["data"]) == 3 for b in runs), [b["name"] for b in runs]
    assert all("median_ms" in b["extra_info"] for b in runs)
