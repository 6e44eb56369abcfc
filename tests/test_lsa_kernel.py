"""The Triton latent-shift attention against the reference, forward and backward.

Runs in the Triton interpreter on CPU (fp32, fp16) and on the GPU where one is present
(all dtypes, larger shapes). Outputs are poisoned with NaN so an unwritten element fails, and
inputs sit between NaN guards so an unmasked read past their ends fails too (even one whose
value is then multiplied by a zero weight, which would pass silently and may fault on a GPU).
"""

import json
import math
import os
import subprocess
import sys
import warnings

import pytest
import torch

import simda_kernels
from simda_kernels import lsa, reference
from tests.conftest import load_script, requires_compiled_triton, requires_cuda

pytestmark = pytest.mark.skipif(not lsa.HAS_TRITON, reason="triton is not installed")

# (layout, dtype, token_order, frames, height, width, head_dim): every layout with both dtypes,
# and among them F in {1, 2, 3, 8}, N in {1, 7, 64, 77, 100}, D in {8, 40, 80}, non-square grids.
CASES = [
    ("paper", torch.float32, "raster", 3, 7, 11, 40),
    ("paper", torch.float32, "class_major", 2, 10, 10, 80),
    ("paper", torch.float16, "raster", 8, 4, 16, 8),
    ("paper", torch.float16, "raster", 1, 1, 1, 40),
    ("released", torch.float32, "raster", 2, 1, 7, 8),
    ("released", torch.float32, "raster", 8, 5, 20, 40),
    ("released", torch.float16, "class_major", 3, 8, 8, 80),
    ("tav", torch.float32, "raster", 1, 8, 8, 80),
    ("tav", torch.float32, "class_major", 3, 10, 10, 8),
    ("tav", torch.float16, "raster", 2, 7, 11, 40),
]


@pytest.fixture
def poisoned(monkeypatch):
    """Kernel outputs start as NaN, between NaN guards that must still be NaN afterwards (a
    write past an output's end fails the test instead of corrupting memory)."""
    outputs = []

    def nan_like(t, shape=None, dtype=None):
        if shape is None:
            out = guarded(torch.full_like(t, math.nan))
        else:
            out = guarded(torch.full(shape, math.nan, device=t.device, dtype=dtype))
        outputs.append(out)
        return out

    monkeypatch.setattr(lsa, "_new_like", nan_like)
    yield
    for out in outputs:
        buffer = out._base
        span = buffer.numel() // 3
        assert buffer[:span].isnan().all() and buffer[2 * span :].isnan().all(), (
            f"a kernel wrote outside its output of shape {tuple(out.shape)}"
        )


def guarded(t):
    """t (same values and strides) in the middle of a NaN-filled buffer three times its size:
    a read past either end of t that is not masked off brings NaN into the result."""
    span = 1 + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride(), strict=True))
    buffer = torch.full((3 * span,), math.nan, dtype=t.dtype, device=t.device)
    out = buffer.as_strided(t.shape, t.stride(), span)
    out.copy_(t)
    return out


def make_qkv(frames, height, width, head_dim, dtype, device="cpu", batch=1, heads=1):
    """q, k, v in the model's layout: (B*F, N, heads, D) memory viewed as (B*F, heads, N, D),
    each guarded by NaN on both sides."""
    shape = (batch * frames, height * width, heads, head_dim)
    return [guarded(torch.randn(shape, device=device).to(dtype).transpose(1, 2)) for _ in range(3)]


def tolerance(dtype):
    return {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}[dtype]


def check_against_reference(
    layout, dtype, order, frames, height, width, head_dim, device="cpu", batch=1, heads=1
):
    q, k, v = make_qkv(frames, height, width, head_dim, dtype, device, batch, heads)
    compare_with_reference(q, k, v, frames, height, width, layout, order)


def compare_with_reference(q, k, v, frames, height, width, layout, order="raster", scale=None):
    """The kernel's output and gradients against the float64 reference."""
    dtype = q.dtype
    kwargs = dict(scale=scale, token_order=order)
    grad = guarded(torch.randn_like(q))
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    out = simda_kernels.latent_shift_attention(
        *leaves, frames, height, width, layout, backend="triton", **kwargs
    )
    grads = torch.autograd.grad(out, leaves, grad)
    # Ground truth in float64; PyTorch's own error at this dtype sets the bar (2x, FlagAttention's
    # rule) with a floor at the dtype's usual tolerance.
    exact = [t.detach().double().requires_grad_() for t in (q, k, v)]
    want = simda_kernels.latent_shift_attention(
        *exact, frames, height, width, layout, backend="reference", **kwargs
    )
    want_grads = torch.autograd.grad(want, exact, grad.double())
    low = [t.detach().float().to(dtype).requires_grad_() for t in (q, k, v)]
    torch_out = simda_kernels.latent_shift_attention(
        *low, frames, height, width, layout, backend="reference", **kwargs
    )
    torch_grads = torch.autograd.grad(torch_out, low, grad)
    for name, got, ref, base in zip(
        ("out", "dq", "dk", "dv"),
        (out, *grads),
        (want, *want_grads),
        (torch_out, *torch_grads),
        strict=True,
    ):
        assert got.dtype == dtype and got.shape == ref.shape, name
        assert torch.isfinite(got).all(), f"{name}: NaN (unwritten, or read out of bounds)"
        err = (got.double() - ref).abs().max().item()
        bar = max(2 * (base.double() - ref).abs().max().item(), tolerance(dtype))
        assert err <= bar, f"{name}: max error {err:.2e} > {bar:.2e}"


@pytest.mark.interpreter
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)).replace("torch.", ""))
def test_interpreter_matches_reference(case, poisoned):
    check_against_reference(*case)


@pytest.mark.interpreter
def test_several_videos_and_blocks_per_class(poisoned):
    """B = 2, several query blocks, classes longer than one key block (17 x 13: 20 keys)."""
    with lsa.launch_config(fwd={"block_m": 32}, bwd_dq={"block_m": 32}, bwd_dkdv={"block_m": 32}):
        check_against_reference("paper", torch.float32, "raster", 2, 17, 13, 16, batch=2)


@pytest.mark.interpreter
def test_gpu_block_sizes_in_the_interpreter(poisoned):
    """The block sizes the launch-config function picks on sm_90 for 16-bit D = 40 (several
    query blocks, one key block per class), run by the interpreter."""
    with lsa.launch_config(
        fwd={"block_m": 128, "block_n": 64},
        bwd_dq={"block_m": 64, "block_n": 64},
        bwd_dkdv={"block_m": 32, "block_n": 64},
    ):
        check_against_reference("released", torch.float16, "raster", 3, 13, 11, 40)


@pytest.mark.interpreter
@pytest.mark.parametrize("head_dim", [200, 256])
def test_head_dims_above_sd_in_the_interpreter(head_dim, poisoned):
    """Any head dim up to 256: 200 runs as 128 + 128 (72 padded), 256 as 256 + 0."""
    check_against_reference("paper", torch.float32, "raster", 2, 3, 4, head_dim)


@pytest.mark.interpreter
def test_class_major_is_a_permutation_of_raster():
    q, k, v = make_qkv(3, 6, 5, 16, torch.float32)
    order = reference.class_major_order(6, 5)
    cm = [t[:, :, order] for t in (q, k, v)]
    raster = simda_kernels.latent_shift_attention(q, k, v, 3, 6, 5, backend="triton")
    class_major = simda_kernels.latent_shift_attention(
        *cm, 3, 6, 5, backend="triton", token_order="class_major"
    )
    torch.testing.assert_close(class_major, raster[:, :, order], rtol=1e-5, atol=1e-6)


@pytest.mark.interpreter
def test_deterministic():
    q, k, v = (t.requires_grad_() for t in make_qkv(2, 4, 4, 16, torch.float32))
    grad = torch.randn_like(q)
    runs = []
    for _ in range(2):
        out = simda_kernels.latent_shift_attention(q, k, v, 2, 4, 4, backend="triton")
        runs.append(torch.autograd.grad(out, (q, k, v), grad))
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


@pytest.mark.interpreter
def test_custom_scale():
    q, k, v = make_qkv(2, 3, 3, 8, torch.float32)
    got = simda_kernels.latent_shift_attention(q, k, v, 2, 3, 3, scale=0.3, backend="triton")
    want = reference.latent_shift_attention(q, k, v, 2, 3, 3, scale=0.3)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.interpreter
def test_heads_videos_distinct_kv_strides_and_custom_scale(poisoned):
    """Several heads and videos, v in another layout than k (head-major, padded tokens) and a
    custom scale, gradients included: a head, video or frame offset taken with the wrong
    tensor's stride, or a backward that ignores the scale, fails here (heads=1 hides them)."""
    videos, heads, frames, h, w, d = 2, 3, 2, 5, 6, 40
    n = h * w
    q = guarded(torch.randn(videos * frames, n, heads, d).transpose(1, 2))
    k = guarded(torch.randn(videos * frames, n, heads, d).transpose(1, 2))
    v = guarded(torch.randn(videos * frames, heads, n + 3, d)[:, :, :n])
    assert k.stride() != v.stride()
    compare_with_reference(q, k, v, frames, h, w, "released", scale=0.3)


@pytest.mark.interpreter
def test_online_softmax_with_large_logits(poisoned):
    """Logits of about 240 on the first class visited and -240 on the others: the running max
    must be kept (a per-block max alone overflows exp2 when rescaling)."""
    frames, h, w, d = 2, 4, 4, 16
    n = h * w
    direction = torch.ones(d) / math.sqrt(d)
    cls = ((torch.arange(h)[:, None] % 4) * 4 + torch.arange(w)[None, :] % 4).reshape(-1)
    sign = torch.where(cls == 0, 1.0, -1.0)
    q = guarded((60.0 * direction).expand(frames, 1, n, d).contiguous())
    k = (sign[:, None] * direction * 4.0 + 0.01 * torch.randn(n, d)).expand(frames, 1, n, d)
    k = guarded(k.contiguous())
    v = guarded(torch.randn(frames, 1, n, d))
    compare_with_reference(q, k, v, frames, h, w, "paper")


def test_fp32_dots_are_exact():
    """fp32 inputs use IEEE dot products (the interpreter ignores the flag, a GPU would not)."""
    q = torch.randn(2, 1, 16, 40)
    assert lsa._consts(q, "raster")["PRECISION"] == "ieee"
    assert lsa._consts(q.half(), "raster")["PRECISION"] == "tf32"


@pytest.mark.skipif(not lsa.INTERPRET, reason="the interpreter compatibility wrapper")
def test_interpreter_takes_rank_one_scalars_as_indices():
    """triton 3.6's interpreter holds scalars as rank-1 arrays, which numpy >= 2.4 will not
    turn into ints: a kernel loop over a runtime bound failed there. The wrapper makes them
    indices, and triton still undoes its patches after a launch."""
    import numpy as np
    from triton.runtime import interpreter

    from simda_kernels import _interpreter_compat

    assert _interpreter_compat.patch() and interpreter._patch_lang_tensor.simda_compat

    class Scalar:
        def __init__(self, data):
            self.handle = type("Handle", (), {"data": data})()

    scope = interpreter._LangPatchScope()
    interpreter._patch_lang_tensor(Scalar, scope)
    assert range(0, Scalar(np.array([7], dtype=np.int32)), 3) == range(0, 7, 3)
    assert range(Scalar(np.array(5, dtype=np.int64))) == range(5)
    scope.restore()
    assert not hasattr(Scalar, "__index__")


def test_opcheck_in_the_interpreter():
    q, k, v = (t.contiguous().requires_grad_() for t in make_qkv(2, 2, 2, 16, torch.float32))
    torch.library.opcheck(
        torch.ops.simda.latent_shift_attention.default,
        (q, k, v, 2, 2, 2, "paper", 0.25, "raster"),
        test_utils=("test_schema", "test_autograd_registration", "test_faketensor"),
    )


COMPILE_CHECK = """
import torch, simda_kernels
q, k, v = (torch.randn(4, 2, 6, 16, device=DEVICE, requires_grad=True) for _ in range(3))
torch.library.opcheck(torch.ops.simda.latent_shift_attention.default,
                      (q, k, v, 2, 2, 3, "released", 0.25, "class_major"))
# the model's layout: (B*F, N, heads, D) viewed as (B*F, heads, N, D); the kernels' outputs
# must have the strides the fake kernels promise (those of q, k, v)
qm, km, vm = (torch.randn(4, 6, 2, 16, device=DEVICE).transpose(1, 2).requires_grad_()
              for _ in range(3))
args = (2, 2, 3, "paper", 0.25, "grouped")
torch.library.opcheck(torch.ops.simda.latent_shift_attention.default, (qm, km, vm, *args))
qm, km, vm = (t.detach() for t in (qm, km, vm))
out, lse2 = torch.ops.simda.latent_shift_attention(qm, km, vm, *args)
torch.library.opcheck(torch.ops.simda.latent_shift_attention_backward.default,
                      (torch.randn_like(out), qm, km, vm, out, lse2, *args))

def attention(q, k, v):  # the op itself: Triton on CUDA, the reference on CPU
    return torch.ops.simda.latent_shift_attention(q, k, v, 2, 2, 3, "paper", 0.25, "raster")[0] * 2

compiled = torch.compile(attention, backend=BACKEND, fullgraph=True)
out = compiled(q, k, v)
torch.testing.assert_close(out, attention(q, k, v))
got = torch.autograd.grad(out.sum(), (q, k, v))
want = torch.autograd.grad(attention(q, k, v).sum(), (q, k, v))
for a, b in zip(got, want):
    torch.testing.assert_close(a, b)
print("ok")
"""


def run_compiled_check(device, backend):
    """Tracing needs real Triton kernels (or the CPU reference kernel): no interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = COMPILE_CHECK.replace("DEVICE", repr(device)).replace("BACKEND", repr(backend))
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_opcheck_and_torch_compile_on_cpu():
    """Full opcheck (incl. AOT dispatch) and a fullgraph compile, forward and backward, of the
    registered op with its CPU kernel (the reference)."""
    run_compiled_check("cpu", "aot_eager")


@requires_cuda
@pytest.mark.gpu
def test_opcheck_and_torch_compile_on_gpu():
    run_compiled_check("cuda", "inductor")


def test_head_dim_chunks():
    assert lsa.head_dim_chunks(40) == (32, 16)
    assert lsa.head_dim_chunks(80) == (64, 16)
    assert lsa.head_dim_chunks(160) == (128, 32)
    assert lsa.head_dim_chunks(64) == (64, 0)
    assert lsa.head_dim_chunks(8) == (16, 0)
    assert lsa.head_dim_chunks(200) == (128, 128)


def test_config_function_and_override(monkeypatch):
    monkeypatch.setattr(lsa, "INTERPRET", False)

    def picked(*args, **kwargs):
        c = lsa.lsa_config(*args, **kwargs)
        return c.block_m, c.block_n, c.num_warps, c.num_stages

    cfg = lsa.lsa_config("fwd", 40, 4096, (9, 0))
    assert picked("fwd", 40, 4096, (9, 0)) == (128, 64, 8, 3)
    # keyed on N (keys per class ~ N/16; fewer queries per block below 1024 tokens)
    assert picked("fwd", 40, 256, (9, 0)) == (64, 16, 8, 3)
    # on the capability (no 3-stage pipeline before sm_80) and the head dim's bytes
    assert picked("fwd", 40, 4096, (7, 5)) == (128, 64, 8, 2)
    assert picked("fwd", 160, 4096, (9, 0)) == (64, 32, 8, 3)
    assert picked("fwd", 160, 4096, (9, 0), element_size=4) == (32, 16, 8, 3)
    assert picked("bwd_dkdv", 80, 4096, (9, 0)) == (32, 64, 4, 2)
    assert picked("bwd_dkdv", 160, 4096, (9, 0)) == (16, 32, 8, 2)
    with lsa.launch_config(fwd={"block_m": 32}):
        assert lsa.lsa_config("fwd", 40, 4096, (9, 0)).block_m == 32
    assert lsa.lsa_config("fwd", 40, 4096, (9, 0)).block_m == cfg.block_m


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


@pytest.mark.interpreter
def test_triton_rejects_float64_and_huge_head_dims():
    q, k, v = make_qkv(1, 2, 2, 8, torch.float64)
    with pytest.raises(TypeError, match="float64"):
        simda_kernels.latent_shift_attention(q, k, v, 1, 2, 2, backend="triton")
    q, k, v = make_qkv(1, 1, 1, 264, torch.float32)
    with pytest.raises(ValueError, match="head dims up to 256"):
        simda_kernels.latent_shift_attention(q, k, v, 1, 1, 1, backend="triton")


def test_row_contiguity_check_and_wide_stride_alignment():
    q, k, v = make_qkv(2, 4, 4, 16, torch.float32)
    strided = torch.randn(2, 1, 16, 32)[..., ::2]  # head dim with stride 2
    with pytest.raises(ValueError, match="k must be contiguous along the head dim"):
        lsa.lsa_forward(q, strided, v, 2, 4, 4, "paper", 0.25, "raster")
    assert lsa._alignment(q, k, v) == 16
    wide = torch.empty_strided((2, 1, 1, 16), (2**31, 16, 16, 1), device="meta")
    assert lsa._alignment(q, wide) == 1  # 64-bit strides are passed unscaled


def test_grid_and_32_bit_offset_limits_are_clear_errors():
    """B*F is the launch grid's z axis (at most 65535); offsets within a frame are 32-bit."""
    lsa._check_launchable(q=torch.empty(65535, 8, 4096, 160, device="meta"))
    with pytest.raises(ValueError, match="at most 65535 frames \\(B\\*F\\) per call, q has 65536"):
        lsa._check_launchable(q=torch.empty(65536, 1, 1, 8, device="meta"))
    spread = torch.empty_strided((2, 8, 4096, 64), (2**40, 2**29, 64, 1), device="meta")
    with pytest.raises(ValueError, match="v spans .* elements within one frame.*contiguous"):
        lsa._check_launchable(v=spread)
    lsa._check_launchable(
        v=torch.empty_strided((2, 8, 4096, 64), (2**40, 2**18, 64, 1), device="meta")
    )


def test_sizes_may_be_numpy_ints():
    import numpy as np

    q, k, v = make_qkv(2, 3, 3, 8, torch.float32)
    sizes = (np.int64(2), np.int32(3), np.int64(3))
    got = simda_kernels.latent_shift_attention(q, k, v, *sizes, backend="reference")
    assert torch.equal(got, reference.latent_shift_attention(q, k, v, 2, 3, 3))


def test_auto_uses_the_reference_on_cpu():
    from simda_kernels import dispatch

    q, k, v = make_qkv(2, 3, 3, 8, torch.float32)
    assert dispatch._lsa_backend("auto", q) == dispatch._lsa_backend("auto", q, True) == "reference"
    got = simda_kernels.latent_shift_attention(q, k, v, 2, 3, 3)
    assert torch.equal(got, reference.latent_shift_attention(q, k, v, 2, 3, 3))


def fake_cuda_q(monkeypatch, n=1024, d=40, dtype=torch.float16, capability=(9, 0)):
    """A stand-in for a CUDA q of shape (32, 8, n, d) on a GPU of ``capability``."""
    import types

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    return types.SimpleNamespace(
        is_cuda=True, dtype=dtype, shape=(32, 8, n, d), device=torch.device("cuda", 0)
    )


def test_auto_on_cuda_picks_the_kernel_only_where_measured_faster(monkeypatch):
    """`auto` on a (faked) sm_90 GPU with a measurement where the kernel wins the forward at
    N = 1024 and loses forward+backward: Triton for inference there, the reference for
    training, and the reference at unmeasured shapes, dtypes, cards and head dims."""
    from simda_kernels import dispatch

    row = dict(
        dtype="float16", D=40, N=1024, fused_ms=1.0, naive_ms=2.0, fused_fwdbwd_ms=3.0,
        naive_fwdbwd_ms=2.0, fused_max_err=1e-3, fused_grad_max_err=1e-3,
    )  # fmt: skip
    monkeypatch.setattr(dispatch, "MEASUREMENTS", {(9, 0): (row,)})
    monkeypatch.setattr(lsa, "HAS_TRITON", True)
    pick = dispatch._lsa_backend
    assert pick("auto", fake_cuda_q(monkeypatch)) == "triton"
    assert pick("auto", fake_cuda_q(monkeypatch), needs_grad=True) == "reference"
    assert pick("reference", fake_cuda_q(monkeypatch)) == "reference"
    assert pick("triton", fake_cuda_q(monkeypatch), needs_grad=True) == "triton"
    for other in (
        dict(n=4096),
        dict(d=80),
        dict(dtype=torch.bfloat16),
        dict(dtype=torch.float64),
        dict(capability=(8, 0)),
    ):
        assert pick("auto", fake_cuda_q(monkeypatch, **other)) == "reference", other


def test_fast_path_refusals_and_the_no_triton_fallback(monkeypatch):
    from simda_kernels import dispatch

    q, k, v = make_qkv(1, 2, 2, 8, torch.float32)
    monkeypatch.setattr(lsa, "INTERPRET", False)
    with pytest.raises(ValueError, match="backend='triton' needs CUDA tensors .* q is on cpu"):
        simda_kernels.latent_shift_attention(q, k, v, 1, 2, 2, backend="triton")
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


def test_public_entry_point_traces_whole_under_torch_compile():
    """`latent_shift_attention(..., backend="auto")`, as the model calls it, in a fullgraph
    compile: the argument checks and the backend choice trace without a graph break."""
    q, k, v = (t.detach().requires_grad_() for t in make_qkv(2, 2, 3, 8, torch.float32))
    torch._dynamo.reset()

    def attention(q, k, v):
        return simda_kernels.latent_shift_attention(q, k, v, 2, 2, 3, "released", None) * 2

    compiled = torch.compile(attention, backend="aot_eager", fullgraph=True)
    out = compiled(q, k, v)
    torch.testing.assert_close(out, attention(q, k, v))
    got = torch.autograd.grad(out.sum(), (q, k, v))
    want = torch.autograd.grad(attention(q, k, v).sum(), (q, k, v))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


# ----------------------------------------------------------------------------- GPU


@requires_compiled_triton
@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize(
    "shape",
    [
        (1, 1, 1, 40),
        (2, 1, 7, 40),
        (3, 7, 11, 80),
        (8, 10, 10, 160),
        (16, 32, 32, 40),
        (16, 32, 32, 80),
        (16, 16, 16, 160),
        (5, 9, 14, 80),
        (24, 16, 16, 80),
        (4, 64, 64, 40),
    ],
)
def test_gpu_shapes(dtype, shape, poisoned):
    big = shape[1] * shape[2] > 1024  # keep the float64 ground truth's N x 2N logits small
    check_against_reference(
        "paper",
        dtype,
        "raster",
        *shape,
        device="cuda",
        batch=1 if big else 2,
        heads=2 if big else 8,
    )


@requires_compiled_triton
@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", reference.LSA_LAYOUTS)
@pytest.mark.parametrize("order", lsa.TOKEN_ORDERS)
@pytest.mark.parametrize("head_dim", [40, 160])
def test_gpu_layouts(dtype, layout, order, head_dim, poisoned):
    check_against_reference(
        layout, dtype, order, 5, 12, 20, head_dim, device="cuda", batch=2, heads=8
    )


@requires_compiled_triton
@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_deterministic(dtype):
    """Bitwise the same output and gradients twice, at SD's D = 80 with several key blocks
    per class (dK/dV sums over the query frames that read a key in a fixed order)."""
    q, k, v = (t.requires_grad_() for t in make_qkv(8, 32, 32, 80, dtype, "cuda", 2, 2))
    grad = torch.randn_like(q)
    runs = []
    for _ in range(2):
        out = simda_kernels.latent_shift_attention(q, k, v, 8, 32, 32, backend="triton")
        runs.append((out, *torch.autograd.grad(out, (q, k, v), grad)))
    for name, a, b in zip(("out", "dq", "dk", "dv"), *runs, strict=True):
        assert torch.equal(a, b), name


def test_kernels_compile_for_sm90_without_spills():
    """The GPU code path compiles (no GPU needed): PTX and cubin for sm_90; at SD head dims the
    key loops are pipelined and 16-bit kernels do not spill registers."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    script = os.path.join(root, "scripts", "triton_aot_report.py")
    result = subprocess.run(
        [sys.executable, script, "--quick"], env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [
        line.split("|")[1:-1]
        for line in result.stdout.splitlines()
        if line.startswith("| ") and not line.startswith("| kernel")
    ]
    assert len(rows) == 12
    for kernel, dtype, head_dim, *_, spills, _smem, pipelined in rows:
        if int(head_dim) < 16:  # column-masked loads: not an SD shape
            continue
        assert pipelined.strip() == "yes", (kernel, dtype, head_dim)
        if dtype.strip() != "fp32":
            assert int(spills) == 0, (kernel, dtype, head_dim)
    # docs/kernels.md's table is this script's full output: where it has a row of the same
    # variant, made by the same triton, the two agree (the docs are regenerated with the code)
    with open(os.path.join(root, "docs", "kernels.md")) as f:
        doc = f.read()
    header = result.stdout.splitlines()[0]  # "sm_90, triton X.Y.Z"
    if header in doc:
        documented = {
            tuple(c.strip() for c in line.split("|")[1:8]): line
            for line in doc.split(header, 1)[1].split("\n\n", 1)[0].splitlines()
            if line.startswith("| ") and not line.startswith("| kernel")
        }
        shared = [
            line
            for line in result.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| kernel")
            and tuple(c.strip() for c in line.split("|")[1:8]) in documented
        ]  # fmt: skip
        assert len(shared) == 3  # the fp16 D = 40 paper raster passes
        stale = [x for x in shared if documented[tuple(c.strip() for c in x.split("|")[1:8])] != x]
        assert not stale, f"docs/kernels.md is stale (rerun scripts/triton_aot_report.py): {stale}"


def test_auto_follows_the_measured_rule(tmp_path, monkeypatch):
    """`auto` picks the kernel only where the nearest recorded benchmark row says it was faster
    (forward, or forward+backward when gradients are needed) and agreed with the baseline."""
    from simda_kernels import dispatch

    def row(n, fused, naive, fused_fb=1.0, naive_fb=2.0, err=1e-3, grad_err=1e-3, **extra):
        return dict(
            dtype="float16", D=40, N=n, fused_ms=fused, naive_ms=naive,
            fused_fwdbwd_ms=fused_fb, naive_fwdbwd_ms=naive_fb, fused_max_err=err,
            fused_grad_max_err=grad_err, **extra,
        )  # fmt: skip

    rows = [
        row(1024, 1.0, 2.0),
        row(256, 1.0, 2.0, fused_fb=3.0),  # forward wins, forward+backward loses
        row(4096, 3.0, 2.0),  # slower
        row(64, 1.0, 2.0, err=0.5),  # wrong output: never trusted
        row(16, 1.0, 2.0, errors=["fused_ms: RuntimeError"]),  # a path failed here
        row(20, 1.0, 2.0),  # wins, but 16 (failed) is nearer to 17
        row(8, 1.0, 2.0, err=float("nan")),  # NaN output
        row(128, 1.0, 2.0, grad_err=0.5),  # wrong gradients: inference only
    ]
    (tmp_path / "lsa-sm90.json").write_text(json.dumps({"capability": [9, 0], "rows": rows}))
    (tmp_path / "lsa-broken.json").write_text("{not json")
    with pytest.warns(RuntimeWarning, match="ignoring lsa-broken.json"):
        measured = dispatch.load_measurements(str(tmp_path))
    assert list(measured) == [(9, 0)]
    monkeypatch.setattr(dispatch, "MEASUREMENTS", measured)

    def wins(n, d=40, dtype=torch.float16, capability=(9, 0), backward=False):
        return dispatch.triton_wins(n, d, dtype, capability, backward)

    assert wins(1024) and wins(1024, backward=True)
    assert wins(1500)  # nearest measured N within 2x
    assert not wins(1024, d=80) and not wins(1024, dtype=torch.bfloat16)  # not measured
    assert not wins(1024, capability=(8, 0))  # no measurement for sm_80
    assert wins(256) and not wins(256, backward=True)
    assert not wins(4096) and not wins(64) and not wins(17) and not wins(8)
    assert wins(128) and not wins(128, backward=True)
    assert not wins(20000)  # beyond 2x of every measurement


def test_the_measured_rule_traces_under_torch_compile(monkeypatch):
    from simda_kernels import dispatch

    row = dict(dtype="float16", D=40, N=1024, fused_ms=1.0, naive_ms=2.0, fused_max_err=1e-3)
    monkeypatch.setattr(dispatch, "MEASUREMENTS", {(9, 0): (row,)})
    torch._dynamo.reset()

    @torch.compile(fullgraph=True, backend="eager")
    def pick(x):
        return x * 2 if dispatch.triton_wins(1024, 40, torch.float16, (9, 0)) else x

    assert torch.equal(pick(torch.ones(3)), torch.full((3,), 2.0))


def test_shipped_measurements_are_benchmark_outputs():
    """Files in simda_kernels/measured are `bench_lsa --json` outputs of a named card (a guard
    for when the first GPU run records one; none is shipped yet)."""
    from simda_kernels import dispatch

    for name in os.listdir(dispatch.MEASURED_DIR):
        if name.endswith(".json"):
            data = json.loads(open(os.path.join(dispatch.MEASURED_DIR, name)).read())
            assert data["card"] and data["rows"], name
            major, minor = data["capability"]
            assert name == f"lsa-sm{major}{minor}.json", name


@pytest.mark.interpreter
def test_launch_config_sweep_checks_every_candidate(monkeypatch, tmp_path, capsys):
    """scripts/tune_lsa.py (interpreter smoke grid, timing stubbed): every candidate is checked
    against the reference first, and a wrong one is never picked."""
    tune = load_script("tune_lsa")
    monkeypatch.setattr(tune, "bench_ms", lambda fn, device: 1.0)
    out = tmp_path / "tune.json"
    assert tune.main(["--grid", "smoke", "--dtype", "fp32", "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert [r["pass"] for r in results] == list(lsa.PASSES)
    assert all(r["best"] is not None for r in results)
    assert all(t["ms"] == 1.0 for r in results for t in r["tried"])
    capsys.readouterr()
    monkeypatch.setitem(tune.TRUSTED_ERROR, "float32", -1.0)  # every answer counts as wrong
    assert tune.main(["--grid", "smoke", "--dtype", "fp32", "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert all(r["best"] is None for r in results)
    assert all(t["note"].startswith("wrong") for r in results for t in r["tried"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the suite itself runs compiled")
def test_triton_tests_run_with_compiled_kernels():
    """What a GPU machine runs by default (TRITON_INTERPRET=0): every test that needs the
    interpreter is marked ``interpreter`` and skipped there, so nothing fails for want of it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    files = ["tests/test_lsa_kernel.py", "tests/test_optimize.py"]
    this = "tests/test_lsa_kernel.py::test_triton_tests_run_with_compiled_kernels"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            *files,
            "--deselect",
            this,
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert " skipped" in result.stdout.splitlines()[-1]
