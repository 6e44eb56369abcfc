"""The fused temporal adapter op: CPU kernel, backward formulas, registration, dispatch; the
CUDA kernels against the reference on a GPU."""

import math
import os
import re

import pytest
import torch
from torch.utils import deterministic

import simda_kernels
from simda_kernels import _toolchain, reference, selfcheck, temporal_adapter
from tests.conftest import load_script, requires_cuda


def params(c, r, dtype=torch.float64, device="cpu"):
    return [
        torch.randn(shape, dtype=dtype, device=device) for shape in ((r, c), (r,), (r, 3), (r,))
    ]


@pytest.mark.parametrize("act", reference.TEMPORAL_ACTS)
@pytest.mark.parametrize("frames", [1, 2, 5])
def test_backward_formulas_match_autograd(act, frames):
    x = torch.randn(2, 6, frames, 3, 5, dtype=torch.float64, requires_grad=True)
    p = [t.requires_grad_() for t in params(6, 3)]
    grad = torch.randn(2, 3, frames, 3, 5, dtype=torch.float64)
    y = reference.fused_temporal_adapter(x, *p, act=act)
    want = torch.autograd.grad(y, [x, *p], grad)
    got = temporal_adapter.reference_backward(grad, x.detach(), *[t.detach() for t in p[:3]], act)
    for name, a, b in zip(
        ("dx", "dw_down", "db_down", "dconv_w", "dconv_b"), got, want, strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)


@pytest.mark.parametrize("layout", ["ncdhw", "folded", "channels_last"])
def test_opcheck_cpu(layout):
    """The CPU kernels return y and dx laid out as the fake kernels promise, in every layout."""
    x = layouts(2, 4, 3, 2, 3, torch.float32, "cpu")[layout].requires_grad_()
    p = [t.float().requires_grad_() for t in params(4, 2)]
    torch.library.opcheck(torch.ops.simda.fused_temporal_adapter.default, (x, *p, "gelu"))


def test_output_is_laid_out_like_x_and_read_back_without_a_copy():
    """y follows x's order of frames and channels: for the model's frame-major x it is a view
    of a (B, F, R, H, W) tensor, which (B*F, R, H, W) reads back as a view."""
    x = torch.randn(2, 3, 4, 5, 6).transpose(1, 2)  # (B, C, F, H, W) view of (B*F, C, H, W)
    p = params(4, 2, torch.float32)
    y = torch.ops.simda.fused_temporal_adapter(x, *p, "gelu")
    assert y.transpose(1, 2).is_contiguous()
    assert y.transpose(1, 2).reshape(6, 2, 5, 6).data_ptr() == y.data_ptr()
    assert reference.fused_temporal_adapter(x.contiguous(), *p).is_contiguous()


def test_opcheck_backward_op_cpu():
    x = torch.randn(2, 4, 3, 2, 3)
    w_down, b_down, conv_w, _ = (t.float() for t in params(4, 2))
    grad = torch.randn(2, 2, 3, 2, 3)
    torch.library.opcheck(
        torch.ops.simda.fused_temporal_adapter_backward.default,
        (grad, x, w_down, b_down, conv_w, "gelu"),
    )


def compiled_matches_eager(fn, leaves, backend="aot_eager", grad=None):
    """``fn(*leaves)`` under a fullgraph torch.compile equals eager, output and gradients."""
    torch._dynamo.reset()
    out = torch.compile(fn, backend=backend, fullgraph=True)(*leaves)
    eager = fn(*leaves)
    torch.testing.assert_close(out, eager)
    grad = torch.ones_like(out) if grad is None else grad
    got = torch.autograd.grad(out, leaves, grad)
    want = torch.autograd.grad(eager, leaves, grad)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_public_entry_point_traces_whole_under_torch_compile():
    """fused_temporal_adapter(..., backend="auto"), as the model calls it: the checks and the
    backend choice trace without a graph break, forward and backward."""
    x = torch.randn(1, 4, 3, 2, 2, requires_grad=True)
    p = [t.float().requires_grad_() for t in params(4, 2)]
    compiled_matches_eager(lambda *a: simda_kernels.fused_temporal_adapter(*a) * 2, [x, *p])


def test_torch_compile_fullgraph_cpu():
    x = torch.randn(1, 4, 3, 2, 2, requires_grad=True)
    p = [t.float().requires_grad_() for t in params(4, 2)]
    adapter = lambda *a: torch.ops.simda.fused_temporal_adapter(*a, "gelu") * 2  # noqa: E731
    compiled_matches_eager(adapter, [x, *p])


def test_auto_on_cpu_is_the_reference():
    x = torch.randn(1, 4, 3, 2, 2, dtype=torch.float64)
    p = params(4, 2)
    torch.testing.assert_close(
        simda_kernels.fused_temporal_adapter(x, *p), reference.fused_temporal_adapter(x, *p)
    )


def test_cuda_backend_needs_cuda_tensors():
    x = torch.randn(1, 4, 3, 2, 2)
    with pytest.raises(ValueError, match="backend='cuda' needs CUDA tensors"):
        simda_kernels.fused_temporal_adapter(x, *params(4, 2, torch.float32), backend="cuda")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"backend": "triton"}, ValueError, "backend must be one of"),
        ({"act": "relu"}, ValueError, "act must be one of"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    x = torch.randn(1, 4, 3, 2, 2)
    with pytest.raises(error, match=match):
        simda_kernels.fused_temporal_adapter(x, *params(4, 2, torch.float32), **kwargs)


def test_model_adapter_routes_through_the_entry_point(monkeypatch):
    import simda

    calls = []
    real = simda_kernels.fused_temporal_adapter

    def spy(*args, **kwargs):
        calls.append(args[-1])
        return real(*args, **kwargs)

    monkeypatch.setattr(simda_kernels, "fused_temporal_adapter", spy)
    adapter = simda.TemporalAdapter(8)
    adapter(torch.randn(6, 8, 3, 3), frames=3)
    assert calls == ["reference"]


def test_extension_missing_is_explained(monkeypatch):
    monkeypatch.setattr(temporal_adapter, "_EXT", None)
    monkeypatch.setattr(temporal_adapter, "extension", lambda jit=None: None)
    with pytest.raises(RuntimeError, match="pip install --no-build-isolation"):
        temporal_adapter._require_extension()


@pytest.mark.skipif(
    torch.version.cuda is None or _toolchain.cuda_home() is None,
    reason="the JIT build needs a CUDA build of torch and nvcc",
)
def test_jit_build_compiles_and_links(tmp_path, monkeypatch):
    """The opt-in just-in-time build (SIMDA_JIT_BUILD=1) of a source checkout, without a GPU:
    the sources compile for sm_90 and the module loads with both entry points."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    ext = temporal_adapter._jit_build()
    assert callable(ext.temporal_adapter_forward) and callable(ext.temporal_adapter_backward)


@pytest.mark.skipif(
    torch.version.cuda is None or _toolchain.cuda_home() is None,
    reason="compiling the kernels needs a CUDA build of torch and nvcc",
)
def test_kernels_compile_without_spills_on_sm80_and_sm90():
    """ptxas's report of the twelve kernels (scripts/cuda_ptxas_report.py: forward and backward,
    three dtypes, wide and narrow tiles): they compile for Turing (64 KiB of shared memory, no
    cp.async, no bf16 tensor cores) and do not spill on Ampere and Hopper."""
    script = load_script("cuda_ptxas_report")
    rows = script.report([75, 80, 90])
    assert {(r["arch"], r["kernel"], r["dtype"], r["tile"]) for r in rows} == {
        (a, k, d, t)
        for a in (75, 80, 90)
        for k in ("forward", "backward")
        for d in ("fp16", "bf16", "fp32")
        for t in ("wide", "narrow")
    }
    for r in rows:
        assert r["registers"] <= 255, r
        if r["arch"] in (80, 90):
            assert r["spill_stores"] == 0 and r["spill_loads"] == 0, r
    assert "| sm_90 | forward | fp16 | wide |" in script.markdown(rows)


def test_cmake_uses_the_same_nvcc_flags():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "CMakeLists.txt")) as f:
        cmake = f.read()
    flags = re.search(r"\$<\$<COMPILE_LANGUAGE:CUDA>:([^>]*)>", cmake).group(1).split()
    assert sorted(flags) == sorted(_toolchain.NVCC_FLAGS)


# ------------------------------------------------------- the CUDA kernels against the reference
# On a GPU through the extension; on the CPU through the emulator (tests/cuda_emulator), which
# runs the kernels' own source with one CPU thread per CUDA thread.


def poison_cuda_allocator():
    """Fill freed blocks of the caching allocator with NaN so unwritten outputs show."""
    blocks = [torch.full((n,), math.nan, device="cuda") for n in (1 << 16, 1 << 20, 1 << 24)]
    del blocks


def layouts(b, c, frames, h, w, dtype, device="cuda"):
    """The layouts the op must read: NCDHW, diffusers' (B*F, C, H, W) viewed as video,
    channels-last, a channel slice of a larger tensor, and a crop whose H and W do not flatten."""

    def randn(*shape):
        return torch.randn(*shape, device=device, dtype=dtype)

    return {
        "ncdhw": randn(b, c, frames, h, w),
        "folded": randn(b, frames, c, h, w).transpose(1, 2),
        "channels_last": randn(b, frames, h, w, c).permute(0, 4, 1, 2, 3),
        "sliced": randn(b, c + 3, frames, h, w)[:, 2 : 2 + c],
        "cropped": randn(b, c, frames, h, w + 2)[..., 1 : w + 1],
    }


def run_op(leaves, grad, act):
    """The op on CUDA tensors: forward and autograd backward through the extension."""
    poison_cuda_allocator()
    leaves = [t.detach().requires_grad_() for t in leaves]
    y = simda_kernels.fused_temporal_adapter(*leaves, act=act, backend="cuda")
    return y, torch.autograd.grad(y, leaves, grad)


def check(x, act, run=run_op):
    """The kernels' output and five gradients against the float64 reference: relative error
    at most twice PyTorch's own in x's dtype (or selfcheck.TOLERANCE), the rule the on-device
    self-check applies. The gradient comes laid out like y, as autograd hands it to the op.
    Returns the kernels' results."""
    dtype = x.dtype
    c = x.shape[1]
    p = params(c, c // 2, torch.float32, x.device)
    p[0] /= math.sqrt(c)  # pre-activations of order 1, where GELU is far from linear
    p = [t.to(dtype) for t in p]
    grad = temporal_adapter._like_frames(x, c // 2).normal_()
    leaves = [x, *p]
    y, grads = run(leaves, grad, act)
    exact = [t.detach().double().requires_grad_() for t in leaves]
    want = reference.fused_temporal_adapter(*exact, act=act)
    want_grads = torch.autograd.grad(want, exact, grad.double())
    low = [t.detach().requires_grad_() for t in leaves]
    base = reference.fused_temporal_adapter(*low, act=act)
    base_grads = torch.autograd.grad(base, low, grad)
    for name, got, ref, own in zip(
        ("y", "dx", "dw_down", "db_down", "dconv_w", "dconv_b"),
        (y, *grads),
        (want, *want_grads),
        (base, *base_grads),
        strict=True,
    ):
        assert got.dtype == dtype, name
        error = selfcheck.within_twice(name, got, ref, own)
        assert error is None, error
    return y, grads


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("frames", [1, 2, 3, 16, 24])
@pytest.mark.parametrize("channels", [8, 320, 640, 1280])
def test_gpu_matches_reference(dtype, frames, channels):
    if temporal_adapter.extension() is None:
        pytest.skip(temporal_adapter.extension_error())
    h, w = (9, 7) if channels > 320 else (16, 13)
    check(layouts(2, channels, frames, h, w, dtype)["ncdhw"], "gelu")


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["ncdhw", "folded", "channels_last", "sliced", "cropped"])
@pytest.mark.parametrize("act", reference.TEMPORAL_ACTS)
@pytest.mark.parametrize("h, w", [(11, 13), (8, 8)])  # tiles element by element; in vectors
def test_gpu_layouts(layout, act, h, w):
    if temporal_adapter.extension() is None:
        pytest.skip(temporal_adapter.extension_error())
    check(layouts(2, 64, 5, h, w, torch.float16)[layout], act)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("per_block", [1, 3])
def test_gpu_split_frames(monkeypatch, dtype, per_block):
    """Blocks writing 1 or 3 of 7 frames (SIMDA_ADAPTER_FRAMES_PER_BLOCK, read at each call)."""
    if temporal_adapter.extension() is None:
        pytest.skip(temporal_adapter.extension_error())
    monkeypatch.setenv("SIMDA_ADAPTER_FRAMES_PER_BLOCK", str(per_block))
    check(layouts(2, 64, 7, 8, 8, dtype)["ncdhw"], "gelu")


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gpu_selfcheck_passes(dtype):
    """The on-device self-check backend='auto' runs first (simda_kernels.selfcheck)."""
    if temporal_adapter.extension() is None:
        pytest.skip(temporal_adapter.extension_error())
    assert selfcheck.check_temporal_adapter(torch.device("cuda"), dtype) is None


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["ncdhw", "folded", "channels_last"])
def test_gpu_opcheck_and_torch_compile(layout):
    """Both registered ops through the extension (dx in x's order of frames and channels, as
    the fake kernel promises), and the public entry point under a fullgraph compile."""
    if temporal_adapter.extension() is None:
        pytest.skip(temporal_adapter.extension_error())
    x = layouts(2, 16, 3, 4, 5, torch.float32)[layout]
    p = params(16, 8, torch.float32, "cuda")
    grad = torch.randn(2, 8, 3, 4, 5, device="cuda")
    torch.library.opcheck(torch.ops.simda.fused_temporal_adapter_backward.default,
                          (grad, x, *p[:3], "gelu"))  # fmt: skip
    leaves = [t.detach().requires_grad_() for t in (x, *p)]
    torch.library.opcheck(torch.ops.simda.fused_temporal_adapter.default, (*leaves, "gelu"))
    compiled_matches_eager(
        lambda *a: simda_kernels.fused_temporal_adapter(*a) * 2,
        leaves,
        backend="inductor" if layout == "ncdhw" else "aot_eager",
        grad=grad,
    )


@pytest.fixture(scope="module")
def emulator():
    from tests import cuda_emulator

    if cuda_emulator.cuda_include_dir() is None:
        pytest.skip("the CUDA emulator needs the CUDA headers (a toolkit or torch's nvidia wheels)")
    return cuda_emulator.load()


@pytest.fixture
def nan_empty():
    """CPU tensors from at::empty (the kernels' outputs) come filled with NaN."""
    saved = torch.are_deterministic_algorithms_enabled(), deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    deterministic.fill_uninitialized_memory = True
    assert torch.empty(8).isnan().all()
    yield
    torch.use_deterministic_algorithms(saved[0])
    deterministic.fill_uninitialized_memory = saved[1]


def emulated(kernels, seed=0, frames_per_block=0, smem_limit=0):
    """check()'s `run`: the emulated kernels' forward and backward (the op's custom autograd
    calls exactly these two with the same arguments). smem_limit: the shared memory a block may
    opt in to (0: the emulated architecture's), which picks wide or narrow tiles."""

    def run(leaves, grad, act):
        x, w_down, b_down, conv_w, conv_b = leaves
        gelu = act == "gelu"
        y = kernels.forward(
            x, w_down, b_down, conv_w, conv_b, gelu, seed, frames_per_block, smem_limit
        )
        grads = kernels.backward(
            grad, x, w_down, b_down, conv_w, gelu, seed + 1, frames_per_block, smem_limit
        )
        return y, tuple(grads)

    return run


EMULATED = [
    ("sm90", torch.float32),
    ("sm90", torch.float16),  # tensor cores
    ("sm90", torch.bfloat16),  # tensor cores
    ("sm75", torch.float16),  # tensor cores, 64 KiB of shared memory: narrow tiles, no cp.async
    ("sm75", torch.bfloat16),  # FMAs: Turing has no bf16 tensor cores
]


@pytest.mark.parametrize("arch, dtype", EMULATED)
@pytest.mark.parametrize(
    "frames, channels, h, w",
    # one partial token tile, loaded element by element; two token tiles (the second partial)
    # and C not a multiple of the channel step, element by element; R = 160 in a 128-row tile
    # and a 32-row tail (64-row tiles on sm_75), tiles as 16-byte cp.async copies, the ring of
    # three frames wrapping
    [(1, 8, 3, 1), (3, 72, 9, 7), (5, 320, 4, 16)],
)
def test_emulated_kernels_match_reference(emulator, nan_empty, arch, dtype, frames, channels, h, w):
    x = layouts(1, channels, frames, h, w, dtype, "cpu")["ncdhw"]
    check(x, "gelu", emulated(getattr(emulator, arch)))


# Shared memory a block may opt in to -> the tiles it gets: sm_86/sm_89's 99 KiB (narrow 16-bit
# forward, wide backward and fp32 forward), sm_75's 64 KiB (narrow everywhere).
@pytest.mark.parametrize("smem_kib", [99, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_emulated_narrow_tiles(emulator, nan_empty, smem_kib, dtype):
    x = layouts(2, 80, 4, 4, 16, dtype, "cpu")["folded"]
    check(x, "gelu", emulated(emulator.sm90, smem_limit=smem_kib * 1024))


@pytest.mark.parametrize("frames", [2, 5])
def test_emulated_kernels_short_clips(emulator, nan_empty, frames):
    """Two frames: each frame's conv sees only one neighbour; five: the ring of three wraps."""
    x = layouts(2, 40, frames, 5, 7, torch.float16, "cpu")["ncdhw"]
    check(x, "gelu", emulated(emulator.sm90))


# Which tiles move as 16-byte vectors (else element by element), by layout: at 5x7 (35 tokens,
# not a multiple of a vector) only channels-last x, whose vectors run along C = 40; at 4x8 all.
VECTOR_PATH = {
    (5, 7): {"channels_last"},
    (4, 8): {"ncdhw", "folded", "channels_last", "sliced", "cropped"},
}


@pytest.mark.parametrize("layout", ["ncdhw", "folded", "channels_last", "sliced", "cropped"])
@pytest.mark.parametrize("act", reference.TEMPORAL_ACTS)
@pytest.mark.parametrize("h, w", list(VECTOR_PATH))
def test_emulated_kernels_layouts(emulator, nan_empty, layout, act, h, w):
    x = layouts(2, 40, 3, h, w, torch.float16, "cpu")[layout]
    w_down = torch.randn(20, 40, dtype=torch.float16)
    assert emulator.sm90.uses_vector_loads(x, w_down) == (layout in VECTOR_PATH[(h, w)])
    y, grads = check(x, act, emulated(emulator.sm90))
    # y and dx in x's order of frames and channels, as the fake kernels promise (torch.compile
    # relies on it)
    assert y.stride() == temporal_adapter._like_frames(x, 20).stride()
    assert grads[0].stride() == temporal_adapter._like_frames(x, 40).stride()


def test_emulated_backward_reads_the_gradient_in_any_layout(emulator, nan_empty):
    """The gradient as the model hands it (frame-major), NCDHW, a channel slice (no 16-byte
    vectors) and a crop (tokens not contiguous: copied first): the same bits."""
    x = layouts(2, 40, 3, 4, 8, torch.float16, "cpu")["folded"]
    p = [t.half() for t in params(40, 20, torch.float32)]
    frame_major = torch.randn(2, 3, 20, 4, 8, dtype=torch.float16).transpose(1, 2)
    grads = {
        "frame_major": frame_major,
        "ncdhw": frame_major.contiguous(),
        "sliced": torch.zeros(2, 3, 23, 4, 8, dtype=torch.float16)[:, :, 1:21].transpose(1, 2),
        "cropped": torch.zeros(2, 20, 3, 4, 10, dtype=torch.float16)[..., 1:9],
    }
    grads["sliced"].copy_(frame_major)
    grads["cropped"].copy_(frame_major)
    want = emulator.sm90.backward(frame_major, x, *p[:3], True, 0)
    for name, grad in grads.items():
        got = emulator.sm90.backward(grad, x, *p[:3], True, 0)
        for a, b in zip(got, want, strict=True):
            assert torch.equal(a, b), name


def test_vector_loads_need_alignment_and_whole_vectors(emulator):
    """16-byte vectors need aligned pointers and strides and whole vectors along the contiguous
    dimension: anything else takes the element-by-element path."""
    sm90 = emulator.sm90
    x = torch.randn(2, 40, 3, 4, 8, dtype=torch.float16)
    w = torch.randn(20, 40, dtype=torch.float16)
    assert sm90.uses_vector_loads(x, w) and sm90.uses_vector_loads(x.float(), w.float())
    assert not sm90.uses_vector_loads(
        torch.randn(2, 40 * 3 * 32 + 1).half()[:, 1:].view(x.shape), w
    )
    n = x.numel()  # every stride a multiple of 8 halves, the data pointer 2 bytes off
    assert not sm90.uses_vector_loads(torch.randn(n + 8).half()[1 : 1 + n].view(x.shape), w)
    assert sm90.uses_vector_loads(torch.randn(n + 8).half()[8 : 8 + n].view(x.shape), w)
    assert not sm90.uses_vector_loads(x, torch.randn(20 * 40 + 1).half()[1:].view(20, 40))
    assert not sm90.uses_vector_loads(x[:, :36], w[:, :36])  # C not a multiple of 8 halves
    assert sm90.uses_vector_loads(x[:, :36].float(), w[:, :36].float())  # but of 4 floats
    assert not sm90.uses_vector_loads(torch.randn(2, 40, 3, 5, 6, dtype=torch.float16), w)  # T = 30


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("frames, per_block", [(5, 1), (5, 2), (7, 3), (3, 2), (4, 4)])
def test_emulated_kernels_split_frames(emulator, nan_empty, dtype, frames, per_block):
    """Blocks that write a chunk of the frames (recomputing one neighbour frame on each side):
    one frame per block, chunks with a shorter last one, a chunk of all frames."""
    x = layouts(2, 40, frames, 4, 8, dtype, "cpu")["ncdhw"]
    check(x, "gelu", emulated(emulator.sm90, frames_per_block=per_block))


def test_frames_are_split_only_when_the_grid_would_leave_sms_idle(emulator):
    split = emulator.sm90.frames_per_block
    # B=2, C=320 at 32x32 on 132 SMs: 3 x 16 x 2 = 96 blocks -> chunks of 4 frames (384 blocks)
    assert split(16, 96, 2, 132) == 4
    assert split(24, 96, 2, 132) == 6  # never below 4 frames
    assert split(16, 384, 2, 132) == 16  # 64x64: already 384 blocks
    assert split(3, 6, 1, 132) == 3 and split(7, 6, 1, 132) == 7  # too few frames to split
    assert split(16, 96, 2, 132, setting=2) == 2 and split(5, 1, 1, 132, setting=9) == 5
    assert split(16, 1, 65535, 132, setting=1) == 16  # the grid's z axis holds B * chunks


def test_emulated_kernels_are_deterministic(emulator, nan_empty):
    """Blocks run in another order: the same bits (the backward's sums are reduced in a fixed
    order, no atomics)."""
    x = torch.randn(2, 40, 3, 9, 9, dtype=torch.float16)
    p = [t.half() for t in params(40, 20, torch.float32)]
    grad = torch.randn(2, 20, 3, 9, 9, dtype=torch.float16)
    runs = [emulated(emulator.sm90, seed)([x, *p], grad, "gelu") for seed in (0, 7)]
    for a, b in zip([runs[0][0], *runs[0][1]], [runs[1][0], *runs[1][1]], strict=True):
        assert torch.equal(a, b)


def test_emulated_kernels_refuse_grids_too_large(emulator):
    """Token tiles are the grid's y axis (at most 65535 blocks of 64 tokens): a clear error."""
    x = torch.randn(1, 1, 1, 2049, 2048)
    p = params(1, 1, torch.float32)
    with pytest.raises(RuntimeError, match="H\\*W = 4196352 tokens per frame exceed"):
        emulator.sm90.forward(x, *p, True, 0)


@pytest.mark.parametrize(
    "fault, match",
    [
        ("misaligned", "ldmatrix.x4: pointer is not 16-byte aligned"),
        ("misaligned_vector", "16-byte shared-memory store: pointer is not 16-byte aligned"),
        ("partial_warp", "mma.sync.m16n8k16: not every lane of the warp made the call"),
        ("divergent_calls", "lanes of a warp passed different arguments"),
        ("unwaited_copy", "cp.async: copies issued but never waited for"),
        ("smem", "bytes of shared memory, the limit is 65536"),
    ],
)
def test_emulator_reports_faults(emulator, fault, match):
    with pytest.raises(RuntimeError, match=match):
        emulator.self_test(fault)


# Between them the two builds run every code path: ThreadSanitizer on sm_90 (cp.async and
# mma.sync for fp16 and bf16, wide and narrow tiles), AddressSanitizer on sm_75 (synchronous
# copies, narrow tiles, mma.sync for fp16, FMAs for bf16); fp32 is on FMAs in both.
SANITIZED = [("thread", 900), ("address", 750)]


@pytest.fixture(scope="module")
def sanitized_programs(emulator, tmp_path_factory):
    """The emulated kernels built as plain programs under ThreadSanitizer and AddressSanitizer
    (compiled side by side: about 30 s on 2 cores)."""
    import shutil
    import subprocess

    from tests import cuda_emulator

    if shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("the sanitizer builds need g++ (or $CXX)")
    folder = tmp_path_factory.mktemp("sanitized")
    programs, pending = {}, []
    for sanitizer, arch in SANITIZED:
        binary = str(folder / f"adapter-{sanitizer}-sm{arch // 10}")
        cmd = cuda_emulator.sanitizer_command(sanitizer, arch, binary)
        pending.append((sanitizer, arch, binary, subprocess.Popen(cmd, stderr=subprocess.PIPE)))
        if len(pending) == 2 or (sanitizer, arch) == SANITIZED[-1]:
            for key_s, key_a, path, proc in pending:
                _, err = proc.communicate()
                assert proc.returncode == 0, (
                    f"{key_s} sm{key_a} build failed:\n{err.decode()[-3000:]}"
                )
                programs[(key_s, key_a)] = path
            pending = []
    return programs


@pytest.mark.parametrize("sanitizer, arch", SANITIZED)
def test_emulated_kernels_pass_sanitizers(sanitized_programs, sanitizer, arch):
    """No data race between the threads of a block (a missing __syncthreads is reported here),
    no access outside the tensors or the exact shared-memory allocation, for every dtype and
    the three input layouts (tests/cuda_emulator/sanitize.cpp)."""
    import subprocess

    env = dict(os.environ, TSAN_OPTIONS="halt_on_error=1", ASAN_OPTIONS="detect_leaks=0")
    run = subprocess.run(
        [sanitized_programs[(sanitizer, arch)]], capture_output=True, text=True, env=env
    )
    assert run.returncode == 0, run.stderr[-6000:]
    assert "no sanitizer report" in run.stdout


def test_a_missing_extension_is_looked_for_once(monkeypatch):
    """Without the extension, ``auto`` on CUDA falls back on every adapter call: the failed
    import is remembered instead of searching the package again 16 times per UNet step."""
    import builtins

    monkeypatch.setattr(temporal_adapter, "_EXT", None)
    monkeypatch.setattr(temporal_adapter, "_EXT_ERROR", None)
    monkeypatch.delenv("SIMDA_JIT_BUILD", raising=False)
    tries = []
    real_import = builtins.__import__

    def counting_import(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "simda_kernels" and fromlist and "_C" in fromlist:
            tries.append(name)
            raise ImportError("no _C here")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", counting_import)
    assert temporal_adapter.extension() is None
    assert temporal_adapter.extension() is None
    assert len(tries) == 1
    assert "not built" in temporal_adapter.extension_error()


def test_a_build_without_kernels_for_the_gpu_falls_back_or_says_how_to_rebuild(monkeypatch):
    """An extension built for sm_90 only, on an sm_80 card: `auto` warns and uses the
    reference, `cuda` names the architectures and the rebuild; on sm_90 both run it."""
    import types

    from simda_kernels import dispatch

    fake = types.SimpleNamespace(archs=lambda: [900])
    monkeypatch.setattr(temporal_adapter, "_EXT", fake)
    monkeypatch.setattr(temporal_adapter, "_EXT_ARCHS", [])
    monkeypatch.setattr(dispatch, "_warned", set())
    capability = [(8, 0)]
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability[0])
    x = types.SimpleNamespace(is_cuda=True, dtype=torch.float16, device=torch.device("cuda", 0))
    with pytest.raises(RuntimeError, match="was built for sm_90, no kernels for sm_80: rebuild"):
        dispatch._adapter_backend("cuda", x)
    with pytest.warns(RuntimeWarning, match='TORCH_CUDA_ARCH_LIST="8.0"') as caught:
        assert dispatch._adapter_backend("auto", x) == "reference"
    assert "falls back to the reference" in str(caught[0].message)
    capability[0] = (9, 0)
    assert dispatch._adapter_backend("auto", x) == dispatch._adapter_backend("cuda", x) == "cuda"


def test_auto_warns_once_when_the_extension_is_missing_on_cuda(monkeypatch):
    import types
    import warnings

    from simda_kernels import dispatch

    monkeypatch.setattr(temporal_adapter, "extension", lambda jit=None: None)
    monkeypatch.setattr(temporal_adapter, "_EXT_ERROR", "No module named 'simda_kernels._C'")
    monkeypatch.setattr(dispatch, "_warned", set())
    x = types.SimpleNamespace(is_cuda=True, dtype=torch.float16, device=torch.device("cuda", 0))
    with pytest.warns(RuntimeWarning, match="_C'.*falls back to the PyTorch reference on CUDA"):
        assert dispatch._adapter_backend("auto", x) == "reference"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once
        assert dispatch._adapter_backend("auto", x) == "reference"
    with pytest.raises(RuntimeError, match="backend='cuda': .*_C'.*SIMDA_JIT_BUILD=1"):
        dispatch._adapter_backend("cuda", x)


def test_which_builds_run_on_which_gpus():
    runs_on = temporal_adapter.runs_on
    assert runs_on((8, 6), [800]) and runs_on((9, 0), [750, 800, 900])
    assert runs_on((8, 0), [900]) is False and runs_on((8, 0), [860]) is False
    assert runs_on((12, 0), [800, 900]) is None  # only from embedded PTX
    assert runs_on((9, 0), None) is None and runs_on((9, 0), ()) is None
