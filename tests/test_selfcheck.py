"""The on-device self-check (simda_kernels.selfcheck): the first time backend="auto" would run
a fast kernel on a (faked) GPU it checks the kernel against the reference, and keeps the
reference, warning once with the card and the error, where they disagree."""

import sys
import types
import warnings

import pytest
import torch

from simda_kernels import dispatch, lsa, selfcheck, temporal_adapter
from tests.conftest import INTERPRET, requires_compiled_triton, requires_cuda


@pytest.fixture
def fake_gpu(monkeypatch):
    """CUDA available, GPU 0 a 'Fake H100' (sm_90), no self-check run yet."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake H100")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(selfcheck, "_RESULTS", {})
    monkeypatch.setattr(dispatch, "_warned", set())


def counting(result):
    """A check returning `result` (or raising it), which counts its calls."""

    def check(device, dtype):
        check.calls.append((device, dtype))
        if isinstance(result, Exception):
            raise result
        return result

    check.calls = []
    return check


def test_a_check_runs_once_per_op_device_and_dtype(fake_gpu):
    check = counting(None)
    for _ in range(3):
        assert selfcheck.passed("op", torch.device("cuda", 0), torch.float16, check)
    assert selfcheck.passed("op", "cuda", torch.float16, check)  # the current device: cuda:0
    assert selfcheck.passed("op", torch.device("cuda", 1), torch.float16, check)
    assert selfcheck.passed("op", torch.device("cuda", 0), torch.bfloat16, check)
    assert selfcheck.passed("other", torch.device("cuda", 0), torch.float16, check)
    assert len(check.calls) == 4
    assert check.calls[0] == (torch.device("cuda", 0), torch.float16)
    assert [(r.op, r.device, r.name, r.dtype, r.passed) for r in selfcheck.results()] == [
        ("op", 0, "Fake H100", torch.float16, True),
        ("op", 1, "Fake H100", torch.float16, True),
        ("op", 0, "Fake H100", torch.bfloat16, True),
        ("other", 0, "Fake H100", torch.float16, True),
    ]


def test_a_failing_check_warns_once_with_the_card_and_the_error(fake_gpu):
    check = counting("y: relative error 1.00e-01 > 1.00e-03")
    with pytest.warns(RuntimeWarning) as caught:
        assert not selfcheck.passed("op", torch.device("cuda", 0), torch.float16, check)
    message = str(caught[0].message)
    assert (
        "op: the self-check of the fast kernel failed on Fake H100 (cuda:0, torch.float16)"
        in message
    )
    assert "y: relative error 1.00e-01 > 1.00e-03" in message
    assert "backend='auto' uses the PyTorch reference there" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once
        assert not selfcheck.passed("op", torch.device("cuda", 0), torch.float16, check)
    assert len(check.calls) == 1
    assert selfcheck.results()[0].error == "y: relative error 1.00e-01 > 1.00e-03"


def test_an_exception_is_a_failed_check(fake_gpu):
    check = counting(RuntimeError("no kernel image is available for execution on the device"))
    with pytest.warns(RuntimeWarning, match="RuntimeError: no kernel image is available"):
        assert not selfcheck.passed("op", torch.device("cuda", 0), torch.float32, check)


def test_nothing_is_checked_without_cuda(monkeypatch):
    monkeypatch.setattr(selfcheck, "_RESULTS", {})
    check = counting("wrong")
    assert selfcheck.passed("op", torch.device("cpu"), torch.float32, check)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert selfcheck.passed("op", torch.device("cuda", 0), torch.float32, check)
    assert check.calls == [] and selfcheck.results() == []


def test_the_decision_is_a_constant_under_torch_compile(fake_gpu, monkeypatch):
    """`passed` runs outside the traced graph (once, with real tensors), so a fullgraph
    compile of code that asks it traces through."""
    # CUDA "available" to the self-check only: torch.compile's own code asks too
    monkeypatch.setattr(
        torch.cuda,
        "is_available",
        lambda: sys._getframe(1).f_globals.get("__name__") == selfcheck.__name__,
    )
    calls = []

    def check(device, dtype):
        calls.append(dtype)
        a = torch.randn(4, 4, dtype=torch.float64)
        return None if torch.allclose(a @ torch.eye(4, dtype=torch.float64), a) else "wrong"

    def fn(x):
        if selfcheck.passed("op", torch.device("cuda", 0), x.dtype, check):
            return x * 2
        return x * 3

    torch._dynamo.reset()
    x = torch.randn(3)
    torch.testing.assert_close(torch.compile(fn, fullgraph=True, backend="aot_eager")(x), x * 2)
    assert calls == [torch.float32]


# ------------------------------------------------------------------- the temporal adapter


@pytest.fixture(scope="module")
def kernels():
    from tests import cuda_emulator

    if cuda_emulator.cuda_include_dir() is None:
        pytest.skip("the CUDA emulator needs the CUDA headers (a toolkit or torch's nvidia wheels)")
    return cuda_emulator.load().sm90


def cuda_x(dtype):
    return types.SimpleNamespace(is_cuda=True, dtype=dtype, device=torch.device("cuda", 0))


def use_extension(monkeypatch, ext):
    """`ext` as simda_kernels._C, and the adapter's self-check run on the CPU (where the
    emulated kernels take CPU tensors) instead of cuda:0."""
    monkeypatch.setattr(temporal_adapter, "_EXT", ext)
    monkeypatch.setattr(temporal_adapter, "_EXT_ARCHS", [])
    real = selfcheck.check_temporal_adapter
    monkeypatch.setattr(
        selfcheck, "check_temporal_adapter", lambda device, dtype: real(torch.device("cpu"), dtype)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_auto_runs_the_extension_once_its_check_passed(fake_gpu, kernels, monkeypatch, dtype):
    from tests.cuda_emulator import EmulatedExtension

    ext = EmulatedExtension(kernels)
    use_extension(monkeypatch, ext)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dispatch._adapter_backend("auto", cuda_x(dtype)) == "cuda"
        assert dispatch._adapter_backend("auto", cuda_x(dtype)) == "cuda"
    assert ext.calls == 2  # one forward, one backward
    (result,) = selfcheck.results()
    assert (result.op, result.dtype, result.passed) == ("fused_temporal_adapter", dtype, True)


def test_auto_keeps_the_reference_where_a_broken_kernel_fails_its_check(
    fake_gpu, kernels, monkeypatch
):
    """A kernel whose dx is 1 % off: the reference under auto (one warning, naming the card
    and the gradient), the kernel still under backend='cuda', other dtypes checked apart."""
    from tests.cuda_emulator import EmulatedExtension

    class Broken(EmulatedExtension):
        def temporal_adapter_backward(self, *args):
            dx, *rest = super().temporal_adapter_backward(*args)
            return [dx * 1.01, *rest]

    use_extension(monkeypatch, Broken(kernels))
    with pytest.warns(RuntimeWarning, match=r"failed on Fake H100 \(cuda:0, torch.float32\): dx"):
        assert dispatch._adapter_backend("auto", cuda_x(torch.float32)) == "reference"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dispatch._adapter_backend("auto", cuda_x(torch.float32)) == "reference"
    assert dispatch._adapter_backend("cuda", cuda_x(torch.float32)) == "cuda"
    (result,) = selfcheck.results()
    assert result.error.startswith("dx: relative error") and "dw_down" not in result.error


def test_the_check_reads_the_layout_of_y(fake_gpu, kernels, monkeypatch):
    """A kernel returning the right values in another layout (NCDHW) than the fake kernel
    promises (frame-major for the model's x) fails: torch.compile would misread it."""
    from tests.cuda_emulator import EmulatedExtension

    class Contiguous(EmulatedExtension):
        def temporal_adapter_forward(self, *args):
            return super().temporal_adapter_forward(*args).contiguous()

    use_extension(monkeypatch, Contiguous(kernels))
    with pytest.warns(RuntimeWarning, match="y: strides"):
        assert dispatch._adapter_backend("auto", cuda_x(torch.float32)) == "reference"


# --------------------------------------------------------------------- the Triton attention


def fake_cuda_q(dtype=torch.float16):
    return types.SimpleNamespace(
        is_cuda=True, dtype=dtype, shape=(32, 8, 1024, 40), device=torch.device("cuda", 0)
    )


@pytest.mark.parametrize("error, backend", [(None, "triton"), ("out: relative error", "reference")])
def test_auto_runs_triton_only_once_its_check_passed(fake_gpu, monkeypatch, error, backend):
    row = dict(
        dtype="float16", D=40, N=1024, fused_ms=1.0, naive_ms=2.0, fused_fwdbwd_ms=1.0,
        naive_fwdbwd_ms=2.0, fused_max_err=1e-3, fused_grad_max_err=1e-3,
    )  # fmt: skip
    monkeypatch.setattr(dispatch, "MEASUREMENTS", {(9, 0): (row,)})
    monkeypatch.setattr(lsa, "HAS_TRITON", True)
    check = counting(error)
    monkeypatch.setattr(selfcheck, "check_latent_shift_attention", check)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert dispatch._lsa_backend("auto", fake_cuda_q()) == backend
        assert dispatch._lsa_backend("auto", fake_cuda_q(), needs_grad=True) == backend
    assert len(check.calls) == 1 and len(caught) == (error is not None)
    assert dispatch._lsa_backend("triton", fake_cuda_q()) == "triton"  # forced: no check


@pytest.mark.skipif(not (lsa.HAS_TRITON and INTERPRET), reason="needs the Triton interpreter")
def test_the_triton_check_agrees_on_the_interpreter():
    """The check itself, run on CPU tensors in the Triton interpreter (fp32)."""
    assert selfcheck.check_latent_shift_attention(torch.device("cpu"), torch.float32) is None


# ------------------------------------------------------------------------------ on a GPU
# (the adapter's: tests/test_temporal_adapter.py::test_gpu_selfcheck_passes)


@requires_cuda
@requires_compiled_triton
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gpu_triton_check_passes(dtype):
    if not lsa.HAS_TRITON:
        pytest.skip("triton is not installed")
    assert selfcheck.check_latent_shift_attention(torch.device("cuda"), dtype) is None
