"""``simda env``: what a bug report needs, true to this machine, with or without a GPU."""

import json
import types

import torch

from simda import env
from simda.cli import main
from simda_kernels import dispatch, selfcheck, temporal_adapter


def test_env_reports_this_machine(capsys):
    assert main(["env"]) == 0
    text = capsys.readouterr().out
    import simda

    assert text.startswith(f"simda {simda.__version__} (")
    assert f"torch           {torch.__version__}" in text
    assert "CUDA extension simda_kernels._C: " in text
    if not torch.cuda.is_available():
        assert "GPU: none" in text
        assert 'backend="auto": the PyTorch reference for both ops on CPU tensors' in text


def test_env_json_is_the_collected_data(capsys):
    assert main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["packages"]["torch"] == torch.__version__
    assert info["cuda_available"] == torch.cuda.is_available()
    assert info["extension"]["built"] == (temporal_adapter.extension(jit=False) is not None)
    assert len(info["gpus"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)


def test_env_never_builds_the_extension(monkeypatch):
    """With SIMDA_JIT_BUILD=1 set, `simda env` says so and compiles nothing."""
    monkeypatch.setenv("SIMDA_JIT_BUILD", "1")
    monkeypatch.setattr(temporal_adapter, "_EXT", None)
    monkeypatch.setattr(temporal_adapter, "_jit_build", lambda: 1 / 0)
    info = env.collect()
    assert info["extension"]["jit_opt_in"]
    if not info["extension"]["built"]:
        assert "SIMDA_JIT_BUILD=1 is set: it compiles on first use" in env.report(info)


def fake_gpus(monkeypatch, *capabilities, extension=True, archs=(900,), check=lambda d, t: None):
    """GPUs of these capabilities; the extension's self-check on them returns check(device,
    dtype) (passes by default)."""
    props = [
        types.SimpleNamespace(name=f"GPU{i}", major=a, minor=b, total_memory=80 * 2**30)
        for i, (a, b) in enumerate(capabilities)
    ]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(props))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props[i])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: props[i].name)
    monkeypatch.setattr(selfcheck, "_RESULTS", {})
    monkeypatch.setattr(selfcheck, "check_temporal_adapter", check)
    ext = (
        types.SimpleNamespace(__file__="/x/_C.so", archs=lambda: list(archs)) if extension else None
    )
    monkeypatch.setattr(temporal_adapter, "extension", lambda jit=None: ext)


def row(n, d=40, dtype="float16", fused=1.0, naive=2.0, fused_fb=1.0, naive_fb=2.0):
    return dict(
        dtype=dtype, D=d, N=n, fused_ms=fused, naive_ms=naive, fused_fwdbwd_ms=fused_fb,
        naive_fwdbwd_ms=naive_fb, fused_max_err=1e-3, fused_grad_max_err=1e-3,
    )  # fmt: skip


def test_env_names_the_shapes_where_auto_runs_the_fused_kernel(monkeypatch):
    rows = (
        row(1024),
        row(4096, fused_fb=3.0),  # inference only
        row(256, d=80, fused=3.0),  # training only
        row(64, dtype="bfloat16", fused=3.0, fused_fb=3.0),  # never
    )
    monkeypatch.setattr(dispatch, "MEASUREMENTS", {(9, 0): rows})
    fake_gpus(monkeypatch, (9, 0), (8, 0))
    info = env.collect()
    h, a = info["gpus"]
    assert h["lsa_measured"] and not a["lsa_measured"]
    fp16 = [
        {"dtype": "float16", "D": d, "N": n, "backend": "triton"}
        for d, n in ((40, 1024), (40, 4096), (80, 256))
    ]
    assert h["lsa_auto"] == {"forward": fp16[:2], "forward+backward": [fp16[0], fp16[2]]}
    assert a["lsa_auto"] == {"forward": [], "forward+backward": []}
    assert info["lsa_measurements"] == ["sm90"]
    text = env.report(info)
    assert "GPU 0: GPU0 (sm_90, 80.0 GiB)" in text
    assert (
        "latent_shift_attention -> the path measured fastest, at these shapes and at N within "
        "2x of them (same dtype and D): inference float16 D=40 N=1024 triton, float16 D=40 "
        "N=4096 triton; training float16 D=40 N=1024 triton, float16 D=80 N=256 triton" in text
    )
    assert "latent_shift_attention -> reference: no measurement for sm_80" in text
    assert "lsa-sm80.json" in text
    assert (  # sm_90: the self-check ran in every dtype
        "fused_temporal_adapter -> cuda (the extension; self-check passed in float16, bfloat16, "
        "float32)\n" in text + "\n"
    )
    assert h["adapter_self_check"] == {"float16": None, "bfloat16": None, "float32": None}
    assert a["adapter_self_check"] is None  # sm_80: no kernels in the build, nothing to check
    assert (
        "cuda (the extension); but built for sm_90, no kernels for sm_80: rebuild with "
        'TORCH_CUDA_ARCH_LIST="8.0"' in text
    )
    assert "CUDA extension simda_kernels._C: built for sm_90 (/x/_C.so)" in text
    json.dumps(info)  # `simda env --json` can print it


def test_env_on_a_gpu_without_the_extension(monkeypatch):
    monkeypatch.setattr(dispatch, "MEASUREMENTS", {})
    fake_gpus(monkeypatch, (9, 0), extension=False)
    text = env.report(env.collect())
    assert "fused_temporal_adapter -> reference (the extension is not built)" in text
    assert "Attention measurements (simda_kernels/measured): none" in text


def test_env_reports_failed_self_checks(monkeypatch):
    """The adapter's check fails in bf16 on this card: `auto` keeps the reference there and
    `simda env` says so, with the error; a Triton check that ran in this process is reported."""
    monkeypatch.setattr(dispatch, "MEASUREMENTS", {})

    def check(device, dtype):
        return "dx: relative error 3.0e-01 > 2.0e-02" if dtype == torch.bfloat16 else None

    fake_gpus(monkeypatch, (9, 0), check=check)
    triton = selfcheck.Result("latent_shift_attention", 0, "GPU0", torch.float16, "out: NaN")
    selfcheck._RESULTS[("latent_shift_attention", 0, torch.float16)] = triton
    info = env.collect()
    assert info["gpus"][0]["adapter_self_check"]["bfloat16"].startswith("dx: relative error")
    assert {"op": "latent_shift_attention", "device": 0, "name": "GPU0", "dtype": "float16",
            "passed": False, "error": "out: NaN"} in info["self_checks"]  # fmt: skip
    text = env.report(info)
    assert (
        "fused_temporal_adapter -> cuda in float16, float32; the reference where the self-check "
        "failed (bfloat16: dx: relative error 3.0e-01 > 2.0e-02)" in text
    )
    assert "self-check of the Triton attention, float16: failed: out: NaN" in text
    json.dumps(info)


def test_arch_fit_says_when_the_build_has_no_kernels_for_a_gpu():
    arch_fit = temporal_adapter.arch_fit
    assert arch_fit((8, 6), [800]) is None  # sm_80 code runs on sm_86
    assert arch_fit((9, 0), [750, 800, 900]) is None
    assert arch_fit((9, 0), None) is None and arch_fit((9, 0), []) is None  # unknown
    assert arch_fit((8, 0), [900]).startswith("built for sm_90, no kernels for sm_80")
    assert arch_fit((8, 0), [860]).startswith("built for sm_86, no kernels for sm_80")
    newer = arch_fit((12, 0), [800, 900])
    assert "runs here only from embedded PTX" in newer and 'TORCH_CUDA_ARCH_LIST="12.0"' in newer
