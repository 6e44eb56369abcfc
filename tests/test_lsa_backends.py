"""The public latent_shift_attention entry point: argument checks, each backend's refusals,
the measured `auto` rule, fullgraph torch.compile with every backend, and the whole SimDA UNet
giving the same output with each backend."""

import json
import os
import types
import warnings

import pytest
import torch

import simda
import simda_kernels
from simda_kernels import dispatch, lsa, lsa_flex, reference
from tests.conftest import requires_compiled_triton, requires_cuda
from tests.lsa_checks import make_qkv

needs_triton = pytest.mark.skipif(not lsa.HAS_TRITON, reason="triton is not installed")
needs_flex = pytest.mark.skipif(not lsa_flex.HAS_FLEX, reason="no FlexAttention in this torch")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"backend": "cuda"}, ValueError, "backend must be one of"),
        ({"token_order": "zigzag"}, ValueError, "token_order must be one of"),
        ({"layout": "diagonal"}, ValueError, "layout must be one of"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    q, k, v = make_qkv(2, 2, 2, 8, torch.float32)
    with pytest.raises(error, match=match):
        simda_kernels.latent_shift_attention(q, k, v, 2, 2, 2, **kwargs)


def test_sizes_may_be_numpy_ints():
    import numpy as np

    q, k, v = make_qkv(2, 3, 3, 8, torch.float32)
    sizes = (np.int64(2), np.int32(3), np.int64(3))
    got = simda_kernels.latent_shift_attention(q, k, v, *sizes, backend="reference")
    assert torch.equal(got, reference.latent_shift_attention(q, k, v, 2, 3, 3))


def test_reference_in_every_token_order_is_a_permutation_of_raster():
    q, k, v = make_qkv(3, 5, 7, 8, torch.float64)
    raster = reference.latent_shift_attention(q, k, v, 3, 5, 7)
    for order in reference.TOKEN_ORDERS:
        index = reference.token_order_index(order, 5, 7)
        moved = [t[:, :, index] for t in (q, k, v)]
        got = simda_kernels.latent_shift_attention(
            *moved, 3, 5, 7, backend="reference", token_order=order
        )
        torch.testing.assert_close(got, raster[:, :, index], rtol=1e-12, atol=1e-12)


def test_auto_uses_the_reference_on_cpu():
    q, k, v = make_qkv(2, 3, 3, 8, torch.float32)
    assert dispatch._lsa_backend("auto", q) == dispatch._lsa_backend("auto", q, True) == "reference"
    got = simda_kernels.latent_shift_attention(q, k, v, 2, 3, 3)
    assert torch.equal(got, reference.latent_shift_attention(q, k, v, 2, 3, 3))


def fake_cuda_q(monkeypatch, n=1024, d=40, dtype=torch.float16, capability=(9, 0)):
    """A stand-in for a CUDA q of shape (32, 8, n, d) on a GPU of ``capability``."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    return types.SimpleNamespace(
        is_cuda=True, dtype=dtype, shape=(32, 8, n, d), device=torch.device("cuda", 0)
    )


def row(n, d=40, dtype="float16", naive=2.0, flex=None, fused=None, err=1e-3, **extra):
    """A bench_lsa row: forward and forward+backward times (ms) per path, ``(fwd, fwd+bwd)``."""
    r = dict(dtype=dtype, D=d, N=n, naive_ms=naive, naive_fwdbwd_ms=naive)
    for column, times in (("flex", flex), ("fused", fused)):
        if times is not None:
            r.update({f"{column}_ms": times[0], f"{column}_fwdbwd_ms": times[1]})
            r.update({f"{column}_max_err": err, f"{column}_grad_max_err": err})
    return {**r, **extra}


def test_auto_on_cuda_picks_the_fastest_measured_path(monkeypatch):
    """`auto` on a (faked) GPU with measurements: per shape and pass, the fastest of naive,
    flex and triton; the reference at unmeasured shapes, dtypes, cards and head dims, and
    never triton below sm_80."""
    rows = (
        row(1024, flex=(1.5, 3.0), fused=(1.0, 2.5)),  # triton for inference, naive training
        row(4096, flex=(1.0, 1.5), fused=(1.2, 1.0)),  # flex inference, triton training
    )
    monkeypatch.setattr(dispatch, "MEASUREMENTS", {(9, 0): rows, (7, 5): rows})
    monkeypatch.setattr(lsa, "HAS_TRITON", True)
    pick = dispatch._lsa_backend
    assert pick("auto", fake_cuda_q(monkeypatch)) == "triton"
    assert pick("auto", fake_cuda_q(monkeypatch), needs_grad=True) == "reference"
    assert pick("auto", fake_cuda_q(monkeypatch, n=4096)) == "flex"
    assert pick("auto", fake_cuda_q(monkeypatch, n=4096), needs_grad=True) == "triton"
    assert pick("reference", fake_cuda_q(monkeypatch)) == "reference"
    assert pick("triton", fake_cuda_q(monkeypatch), needs_grad=True) == "triton"
    assert pick("auto", fake_cuda_q(monkeypatch, capability=(7, 5))) == "flex"  # no sm_75 triton
    for other in (
        dict(n=16384),
        dict(d=80),
        dict(dtype=torch.bfloat16),
        dict(dtype=torch.float64),
        dict(capability=(8, 0)),
    ):
        assert pick("auto", fake_cuda_q(monkeypatch, **other)) == "reference", other


def test_the_measured_rule(tmp_path, monkeypatch):
    """The nearest measured N within 2x decides; a path counts only where its output (and for
    training its gradients) agreed with the baseline; a row where anything failed is not
    used; ties keep the reference."""
    rows = [
        row(1024, fused=(1.0, 1.0)),
        row(256, fused=(1.0, 3.0)),  # forward wins, forward+backward loses
        row(4096, fused=(3.0, 3.0), flex=(2.5, 2.5)),  # slower
        row(64, fused=(1.0, 1.0), err=0.5),  # wrong output: never trusted
        row(16, fused=(1.0, 1.0), errors=["fused_ms: RuntimeError"]),  # a path failed here
        row(20, fused=(1.0, 1.0)),  # wins, but 16 (failed) is nearer to 17
        row(8, fused=(1.0, 1.0), err=float("nan")),  # NaN output
        row(128, fused=(1.0, 1.0), fused_grad_max_err=0.5),  # wrong gradients: inference only
        row(512, fused=(2.0, 2.0)),  # a tie with the naive path
    ]
    (tmp_path / "lsa-sm90.json").write_text(json.dumps({"capability": [9, 0], "rows": rows}))
    (tmp_path / "lsa-broken.json").write_text("{not json")
    with pytest.warns(RuntimeWarning, match="ignoring lsa-broken.json"):
        measured = dispatch.load_measurements(str(tmp_path))
    assert list(measured) == [(9, 0)]
    monkeypatch.setattr(dispatch, "MEASUREMENTS", measured)

    def pick(n, d=40, dtype=torch.float16, capability=(9, 0), backward=False):
        return dispatch.measured_backend(n, d, dtype, capability, backward)

    assert pick(1024) == pick(1024, backward=True) == pick(1500) == "triton"
    assert pick(1024, d=80) == pick(1024, dtype=torch.bfloat16) == "reference"  # not measured
    assert pick(1024, capability=(8, 0)) == "reference"  # no measurement for sm_80
    assert pick(256) == "triton" and pick(256, backward=True) == "reference"
    assert {pick(n) for n in (4096, 64, 17, 8, 512, 20000)} == {"reference"}
    assert pick(128) == "triton" and pick(128, backward=True) == "reference"


def test_the_measured_rule_traces_under_torch_compile(monkeypatch):
    monkeypatch.setattr(dispatch, "MEASUREMENTS", {(9, 0): (row(1024, fused=(1.0, 1.0)),)})
    torch._dynamo.reset()

    @torch.compile(fullgraph=True, backend="eager")
    def pick(x):
        return x * 2 if dispatch.measured_backend(1024, 40, torch.float16, (9, 0)) else x

    assert torch.equal(pick(torch.ones(3)), torch.full((3,), 2.0))


def test_shipped_measurements_are_benchmark_outputs():
    """Files in simda_kernels/measured are `bench_lsa --json` outputs of a named card (a guard
    for when the first GPU run records one; none is shipped yet)."""
    for name in os.listdir(dispatch.MEASURED_DIR):
        if name.endswith(".json"):
            with open(os.path.join(dispatch.MEASURED_DIR, name)) as f:
                data = json.load(f)
            assert data["card"] and data["rows"], name
            major, minor = data["capability"]
            assert name == f"lsa-sm{major}{minor}.json", name


@needs_triton
def test_triton_refusals_and_the_no_triton_fallback(monkeypatch):
    q, k, v = make_qkv(1, 2, 2, 8, torch.float32)
    monkeypatch.setattr(lsa, "INTERPRET", False)
    with pytest.raises(ValueError, match="backend='triton' needs CUDA tensors .* q is on cpu"):
        simda_kernels.latent_shift_attention(q, k, v, 1, 2, 2, backend="triton")
    turing = fake_cuda_q(monkeypatch, capability=(7, 5))
    with pytest.raises(RuntimeError, match=r"compute capability 8.0 or newer .* is sm_75"):
        dispatch._lsa_backend("triton", turing)
    monkeypatch.setattr(lsa, "HAS_TRITON", False)
    with pytest.raises(RuntimeError, match="backend='triton' needs the triton package"):
        simda_kernels.latent_shift_attention(q, k, v, 1, 2, 2, backend="triton")
    monkeypatch.setattr(dispatch, "_warned", set())
    cuda_q = fake_cuda_q(monkeypatch)
    with pytest.warns(RuntimeWarning, match="triton is not installed: latent_shift_attention"):
        assert dispatch._lsa_backend("auto", cuda_q) == "reference"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once
        assert dispatch._lsa_backend("auto", cuda_q) == "reference"


@pytest.mark.interpreter
@needs_triton
def test_triton_rejects_float64_and_huge_head_dims():
    q, k, v = make_qkv(1, 2, 2, 8, torch.float64)
    with pytest.raises(TypeError, match="float64"):
        simda_kernels.latent_shift_attention(q, k, v, 1, 2, 2, backend="triton")
    q, k, v = make_qkv(1, 1, 1, 264, torch.float32)
    with pytest.raises(ValueError, match="head dims up to 256"):
        simda_kernels.latent_shift_attention(q, k, v, 1, 1, 1, backend="triton")


@needs_flex
def test_flex_refusals(monkeypatch):
    q, k, v = make_qkv(2, 2, 2, 8, torch.float32)
    with pytest.raises(NotImplementedError, match="backend='flex' on CPU computes the forward"):
        simda_kernels.latent_shift_attention(
            q.detach().requires_grad_(), k, v, 2, 2, 2, backend="flex"
        )
    with pytest.raises(TypeError, match="backend='flex' supports fp16, bf16 and fp32"):
        simda_kernels.latent_shift_attention(q.double(), k.double(), v.double(), 2, 2, 2,
                                             backend="flex")  # fmt: skip
    monkeypatch.setattr(lsa, "HAS_TRITON", False)
    with pytest.raises(RuntimeError, match="backend='flex' on CUDA compiles .* needs the triton"):
        dispatch._lsa_backend("flex", fake_cuda_q(monkeypatch))
    monkeypatch.setattr(lsa_flex, "HAS_FLEX", False)
    with pytest.raises(RuntimeError, match="backend='flex' needs torch.nn.attention"):
        simda_kernels.latent_shift_attention(q, k, v, 2, 2, 2, backend="flex")


BACKENDS = [
    "reference",
    pytest.param("flex", marks=needs_flex),
    pytest.param("triton", marks=[needs_triton, pytest.mark.interpreter]),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_public_entry_point_traces_whole_under_torch_compile(backend):
    """`latent_shift_attention` as the model calls it, with each backend, in a fullgraph
    compile: the argument checks, the backend choice and the backend itself trace without a
    graph break, forward and (where the backend has one on CPU) backward."""
    grads = backend != "flex"  # no FlexAttention backward on CPU
    q, k, v = (t.detach().requires_grad_(grads) for t in make_qkv(2, 2, 3, 8, torch.float32))
    torch._dynamo.reset()

    def attention(q, k, v, backend=backend):
        return simda_kernels.latent_shift_attention(
            q, k, v, 2, 2, 3, "released", None, backend, "class_major"
        )

    compiled = torch.compile(attention, backend="aot_eager", fullgraph=True)
    out = compiled(q, k, v)
    torch.testing.assert_close(out, attention(q, k, v))
    exact = attention(*(t.double() for t in (q, k, v)), backend="reference")
    torch.testing.assert_close(out, exact.float())
    if grads:
        got = torch.autograd.grad(out.sum(), (q, k, v))
        want = torch.autograd.grad(attention(q, k, v).sum(), (q, k, v))
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b)


def small_model_inputs():
    # 4x4 latents keep the interpreted kernel quick: N = 16, 4, 1 tokens per level.
    return torch.randn(1, 4, 2, 4, 4), torch.tensor([300]), torch.randn(1, 5, 32)


@pytest.mark.parametrize("layout", ["released"])
def test_the_unet_gives_the_same_output_with_every_backend(layout):
    """The tiny SimDA UNet (every transformer block's self-attention through the public op):
    the same output with reference, flex and (in the interpreter) triton."""
    model = simda.build_unet("tiny", lsa_layout=layout).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    sample, t, text = small_model_inputs()
    backends = ["reference"]
    backends += ["flex"] if lsa_flex.HAS_FLEX else []
    backends += ["triton"] if lsa.HAS_TRITON and lsa.INTERPRET else []
    outs = {}
    with torch.no_grad():
        for backend in backends:
            simda.optimize(model, attention_backend=backend)
            outs[backend] = model(sample, t, text).sample
    simda.restore(model)
    for backend, out in outs.items():
        torch.testing.assert_close(out, outs["reference"], rtol=1e-4, atol=1e-5, msg=backend)


@requires_compiled_triton
@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_the_unet_on_a_gpu_with_every_backend(dtype):
    model = simda.build_unet("tiny", device="cuda", dtype=dtype).eval()
    sample, t, text = (x.cuda() for x in small_model_inputs())
    sample, text = sample.to(dtype), text.to(dtype)
    outs = {}
    with torch.no_grad():
        for backend in ("reference", "flex", "triton"):
            simda.optimize(model, attention_backend=backend)
            outs[backend] = model(sample, t, text).sample.float()
    for backend, out in outs.items():
        torch.testing.assert_close(out, outs["reference"], rtol=2e-2, atol=2e-2, msg=backend)
