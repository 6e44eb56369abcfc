"""The Triton latent-shift attention against the reference, forward and backward.

Runs in the Triton interpreter on CPU (fp32, fp16) and on the GPU where one is present
(all dtypes, larger shapes). Outputs are poisoned with NaN so an unwritten element fails, and
inputs sit between NaN guards (``tests/lsa_checks.py``).
"""

import math
import os
import re
import subprocess
import sys

import pytest
import torch

import simda_kernels
from simda_kernels import lsa, reference
from tests.conftest import load_script, requires_compiled_triton, requires_cuda
from tests.lsa_checks import (
    CASES,
    case_id,
    check_against_reference,
    compare_with_reference,
    guarded,
    make_qkv,
)

pytestmark = pytest.mark.skipif(not lsa.HAS_TRITON, reason="triton is not installed")
ALL_PASSES = ("fwd", "bwd_dq", "bwd_dkdv")


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


def blocks(block_m, block_n, passes=ALL_PASSES):
    return lsa.launch_config(**{p: {"block_m": block_m, "block_n": block_n} for p in passes})


@pytest.mark.interpreter
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_interpreter_matches_reference(case, poisoned):
    check_against_reference(*case)


@pytest.mark.interpreter
def test_full_and_ragged_tiles_and_blocks(poisoned):
    """13 x 11 tokens (shift groups of 18 to 36) in 16-key tiles: runs of full tiles and a
    ragged last one; 64-query blocks leave a ragged last block (143 = 2 x 64 + 15); key-side
    tiles of 16 split each group into several programs."""
    with lsa.launch_config(**{p: {"block_m": 64, "block_n": 16} for p in ALL_PASSES}):
        check_against_reference("paper", torch.float32, "raster", 3, 13, 11, 16)


@pytest.mark.interpreter
def test_gpu_block_sizes_in_the_interpreter(poisoned, monkeypatch):
    """The block sizes the launch-config function picks on sm_90 for 16-bit D = 40 at
    N >= 4096 (128 queries x 64 keys forward, 128 keys per dK/dV tile), run by the
    interpreter at N = 256."""
    with monkeypatch.context() as m:
        m.setattr(lsa, "INTERPRET", False)
        cfgs = {p: lsa.lsa_config(p, 40, 4096, (9, 0)) for p in ALL_PASSES}
    assert cfgs["bwd_dkdv"].block_n == 128 and cfgs["fwd"].block_m == 128
    sizes = {p: dict(block_m=c.block_m, block_n=c.block_n) for p, c in cfgs.items()}
    with lsa.launch_config(**sizes):
        check_against_reference("released", torch.float16, "grouped", 3, 16, 16, 40)


@pytest.mark.interpreter
def test_atomic_dq(poisoned, monkeypatch):
    """SIMDA_LSA_DQ=atomic: dQ added by the key-side kernel with atomics, no dQ kernel."""
    monkeypatch.setenv("SIMDA_LSA_DQ", "atomic")
    launched = []
    kernel = lsa._lsa_rows_kernel
    monkeypatch.setattr(lsa, "_lsa_rows_kernel", _Spy(kernel, launched))
    with blocks(32, 16):
        check_against_reference("paper", torch.float32, "class_major", 5, 9, 7, 40, heads=2)
    assert launched == [False]  # the forward only
    monkeypatch.setenv("SIMDA_LSA_DQ", "sometimes")
    with pytest.raises(ValueError, match="SIMDA_LSA_DQ must be one of"):
        lsa.dq_mode()


class _Spy:
    """A kernel whose launches record their BWD flag."""

    def __init__(self, kernel, launched):
        self.kernel, self.launched = kernel, launched

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launched.append(kwargs["BWD"])
            return self.kernel[grid](*args, **kwargs)

        return launch


def test_deterministic_mode_keeps_the_separate_dq(monkeypatch):
    monkeypatch.setenv("SIMDA_LSA_DQ", "atomic")
    torch.use_deterministic_algorithms(True)
    try:
        assert lsa.dq_mode() == "separate"
    finally:
        torch.use_deterministic_algorithms(False)
    assert lsa.dq_mode() == "atomic"


@pytest.mark.interpreter
def test_a_wrong_weight_fails(monkeypatch):
    """The comparison can fail: a plan that drops the log 2 on keys both sources hold (every
    weight 1) gives a wrong answer, and the check says so."""
    real = reference.key_weights
    monkeypatch.setattr(lsa.reference, "key_weights", lambda *a, **k: real(*a, **k).clamp(max=1))
    lsa.plan.cache_clear()
    try:
        with pytest.raises(AssertionError, match="out: max error"):
            check_against_reference("paper", torch.float32, "raster", 3, 4, 4, 8)
    finally:
        lsa.plan.cache_clear()


@pytest.mark.interpreter
@pytest.mark.parametrize("head_dim", [200, 256])
def test_head_dims_above_sd_in_the_interpreter(head_dim, poisoned):
    """Any head dim up to 256: 200 runs as 128 + 128 (72 padded), 256 as 256 + 0."""
    check_against_reference("paper", torch.float32, "raster", 2, 3, 4, head_dim)


@pytest.mark.interpreter
def test_token_orders_are_permutations_of_raster():
    q, k, v = make_qkv(3, 6, 5, 16, torch.float32)
    raster = simda_kernels.latent_shift_attention(q, k, v, 3, 6, 5, backend="triton")
    for order in ("class_major", "grouped"):
        index = reference.token_order_index(order, 6, 5)
        moved = [t[:, :, index] for t in (q, k, v)]
        got = simda_kernels.latent_shift_attention(
            *moved, 3, 6, 5, backend="triton", token_order=order
        )
        torch.testing.assert_close(got, raster[:, :, index], rtol=1e-5, atol=1e-6)


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
def test_heads_videos_distinct_kv_strides_and_negative_scale(poisoned):
    """Several heads and videos, v in another layout than k (head-major, padded tokens) and a
    negative scale (the row max is then c min(s)), gradients included: a head, video or frame
    offset taken with the wrong tensor's stride, or a backward that ignores the scale, fails
    here (heads=1 hides them)."""
    videos, heads, frames, h, w, d = 2, 3, 2, 5, 6, 40
    n = h * w
    q = guarded(torch.randn(videos * frames, n, heads, d).transpose(1, 2))
    k = guarded(torch.randn(videos * frames, n, heads, d).transpose(1, 2))
    v = guarded(torch.randn(videos * frames, heads, n + 3, d)[:, :, :n])
    assert k.stride() != v.stride()
    with blocks(16, 16):
        compare_with_reference(q, k, v, frames, h, w, "released", scale=-0.3)


@pytest.mark.interpreter
def test_online_softmax_with_large_logits(poisoned):
    """Logits of about 240 on the first key tile visited and -240 on the others: the running
    max must be kept (a per-tile max alone overflows exp2 when rescaling)."""
    frames, h, w, d = 2, 4, 4, 16
    n = h * w
    direction = torch.ones(d) / math.sqrt(d)
    cls = reference.token_classes(h, w)
    sign = torch.where(cls == 7, 1.0, -1.0)  # class (1, 3): the first of shift group 0
    q = guarded((60.0 * direction).expand(frames, 1, n, d).contiguous())
    k = (sign[:, None] * direction * 4.0 + 0.01 * torch.randn(n, d)).expand(frames, 1, n, d)
    k = guarded(k.contiguous())
    v = guarded(torch.randn(frames, 1, n, d))
    with blocks(16, 16):
        compare_with_reference(q, k, v, frames, h, w, "paper")


def test_fp32_dots_are_exact():
    """fp32 inputs use IEEE dot products (the interpreter ignores the flag, a GPU would not)."""
    q = torch.randn(2, 1, 16, 40)
    assert lsa._consts(q, "raster")["PRECISION"] == "ieee"
    assert lsa._consts(q.half(), "raster")["PRECISION"] == "tf32"


def test_plan_reads_each_frames_runs_in_tiles_of_one_frame_and_weight():
    """The key tables: per query frame at most 6 runs (so at most 6 ragged tiles), every tile
    inside one frame's run of one weight, together the keys the frame reads (29N/16 from
    frame 4 on in the paper layout); key-side tiles inside one shift group."""
    sizes = reference.shift_group_sizes(16, 12)
    starts = [sum(sizes[:s]) for s in range(6)]
    for layout in reference.LSA_LAYOUTS:
        frames = 9
        tables = lsa.plan(frames, 16, 12, layout, "raster", 16, 32, torch.device("cpu"))
        weights = reference.key_weights(frames, layout)
        for t in range(frames):
            full, ragged = tables.tiles[t, 0, :2].tolist()
            tiles = tables.tiles[t, 1 : 1 + full + ragged].tolist()
            assert ragged <= 6 and all(count == 16 for *_, count, _ in tiles[:full])
            read = [0] * 5 * frames
            for g, pos, count, bias in tiles:
                first = max(s for s in range(5) if starts[s] <= pos)
                last = max(s for s in range(5) if starts[s] < pos + count)
                assert {weights[t, g, s].item() for s in range(first, last + 1)} == {bias + 1}
                for s in range(first, last + 1):
                    read[g * 5 + s] += min(pos + count, starts[s + 1]) - max(pos, starts[s])
            want = [sizes[s] if weights[t, g, s] else 0 for g in range(frames) for s in range(5)]
            assert read == want
            if layout == "paper" and t >= 4:
                assert sum(read) == 29 * 16 * 12 // 16
        for s, pos, count, _ in tables.key_tiles.tolist():
            assert starts[s] <= pos and pos + count <= starts[s + 1] and 0 < count <= 32


def test_config_function_and_override(monkeypatch):
    monkeypatch.setattr(lsa, "INTERPRET", False)

    def picked(*args, **kwargs):
        c = lsa.lsa_config(*args, **kwargs)
        return c.block_m, c.block_n, c.num_warps, c.num_stages

    # 128 query rows on 8 warps (one warp group per 64 rows) from N = 1024 at D <= 80
    assert picked("fwd", 40, 4096, (9, 0)) == (128, 64, 8, 3)
    assert picked("fwd", 80, 1024, (9, 0)) == (128, 64, 8, 3)
    assert picked("fwd", 40, 256, (9, 0)) == (64, 64, 4, 3)
    assert picked("fwd", 160, 256, (9, 0)) == (64, 64, 4, 3)
    assert picked("fwd", 80, 1024, (9, 0), element_size=4) == (64, 64, 4, 3)
    assert picked("bwd_dq", 80, 1024, (9, 0)) == (64, 64, 4, 3)
    # the key-side pass: 128 keys at N >= 4096 for D <= 64, 32 queries at D > 80
    assert picked("bwd_dkdv", 40, 4096, (9, 0)) == (64, 128, 8, 2)
    assert picked("bwd_dkdv", 40, 1024, (9, 0)) == (64, 64, 4, 2)
    assert picked("bwd_dkdv", 80, 4096, (9, 0)) == (64, 64, 4, 2)
    assert picked("bwd_dkdv", 160, 256, (9, 0)) == (32, 64, 4, 2)
    with lsa.launch_config(fwd={"block_m": 32}):
        assert lsa.lsa_config("fwd", 40, 4096, (9, 0)).block_m == 32
    assert lsa.lsa_config("fwd", 40, 4096, (9, 0)).block_m == 128
    with pytest.raises(ValueError, match="launch_config takes"):
        with lsa.launch_config(bwd={"block_m": 32}):
            pass


def test_head_dim_chunks():
    assert lsa.head_dim_chunks(40) == (32, 16)
    assert lsa.head_dim_chunks(80) == (64, 16)
    assert lsa.head_dim_chunks(160) == (128, 32)
    assert lsa.head_dim_chunks(64) == (64, 0)
    assert lsa.head_dim_chunks(8) == (16, 0)
    assert lsa.head_dim_chunks(200) == (128, 128)


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


@pytest.mark.interpreter
def test_launch_config_sweep_checks_every_candidate(monkeypatch, tmp_path, capsys):
    """scripts/tune_lsa.py (interpreter smoke grid, timing stubbed): every candidate is checked
    against the reference first, and a wrong one is never picked."""
    import json

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
    files = ["tests/test_lsa_kernel.py", "tests/test_lsa_backends.py", "tests/test_optimize.py"]
    this = "tests/test_lsa_kernel.py::test_triton_tests_run_with_compiled_kernels"
    slow = ("test_opcheck_and_torch_compile_on_cpu", "test_kernels_compile_for_sm90")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files,
         "--deselect", this, "-k", " and ".join(f"not {name}" for name in slow)],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:]
    assert " skipped" in result.stdout.splitlines()[-1]


# ----------------------------------------------------------------------------- sm_90 report


def aot_rows(text):
    """The table rows of a triton_aot_report output, as lists of cells."""
    return [
        [c.strip() for c in line.split("|")[1:-1]]
        for line in text.splitlines()
        if line.startswith("| ") and not line.startswith("| kernel")
    ]


def meets_targets(row):
    """docs/kernels.md's targets for one report row: no spills (the forward at D <= 160, the
    backward at D <= 80, the default dQ), Q.K^T on wgmma with N >= 64 and no two warp groups on
    the same rows where the score product has 64 queries, at most 6 key loops, all pipelined."""
    kernel, _, d, _, _, blocks, *_, spills, _, score, _, twice, loops, pipelined = row
    problems = []
    if int(spills) and (kernel == "fwd" or (int(d) <= 80 and kernel != "bwd_dkdv_atomic")):
        problems.append(f"{spills} B spilled")
    n = re.search(r"wgmma m64n(\d+)", score)
    if not n or (int(n.group(1)) < 64 and int(blocks.split("x")[0]) >= 64):
        problems.append(f"Q.K^T on {score}")
    if twice != "no":
        problems.append("rows computed twice")
    if not 1 <= int(loops) <= 6 or pipelined != "yes":
        problems.append(f"{loops} key loops, pipelined: {pipelined}")
    return problems


def test_documented_sm90_report_meets_the_targets():
    """docs/kernels.md's table (scripts/triton_aot_report.py --write-docs) covers every kernel
    at the SD head dims in fp16 and bf16, and meets the targets."""
    aot = load_script("triton_aot_report")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "docs", "kernels.md")) as f:
        table = f.read().split(aot.BEGIN, 1)[1].split(aot.END, 1)[0]
    rows = aot_rows(table)
    assert len(rows) == len(aot.FULL) * len(aot.KERNELS)
    assert {(r[0], r[1], r[2]) for r in rows} == {
        (kind, dt, str(d)) for kind in aot.KERNELS for dt, d, *_ in aot.FULL
    }
    failures = {" ".join(r[:5]): meets_targets(r) for r in rows}
    assert not {k: v for k, v in failures.items() if v}


def test_kernels_compile_for_sm90_as_documented():
    """The GPU code compiles without a GPU (PTX and cubin for sm_90), meets the targets, and
    docs/kernels.md is this code's report (same registers, spills, instructions, loops)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    script = os.path.join(root, "scripts", "triton_aot_report.py")
    result = subprocess.run(
        [sys.executable, script, "--quick"], env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = aot_rows(result.stdout)
    assert len(rows) == 4 and not [meets_targets(r) for r in rows if meets_targets(r)]
    with open(os.path.join(root, "docs", "kernels.md")) as f:
        doc = f.read()
    header = result.stdout.splitlines()[0]  # "sm_90, triton X.Y.Z"
    if header in doc:  # the same triton made the documented table
        documented = aot_rows(doc.split(header, 1)[1])
        stale = [r for r in rows if r not in documented]
        assert not stale, f"docs/kernels.md is stale (rerun the report with --write-docs): {stale}"


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
        "paper", dtype, "raster", *shape, device="cuda", batch=1 if big else 2,
        heads=2 if big else 8,
    )  # fmt: skip


@requires_compiled_triton
@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", reference.LSA_LAYOUTS)
@pytest.mark.parametrize("order", reference.TOKEN_ORDERS)
@pytest.mark.parametrize("head_dim", [40, 160])
def test_gpu_layouts(dtype, layout, order, head_dim, poisoned):
    check_against_reference(
        layout, dtype, order, 5, 12, 20, head_dim, device="cuda", batch=2, heads=8
    )


@requires_compiled_triton
@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_atomic_dq(dtype, poisoned, monkeypatch):
    monkeypatch.setenv("SIMDA_LSA_DQ", "atomic")
    check_against_reference("paper", dtype, "raster", 8, 32, 32, 80, device="cuda", heads=2)


@requires_compiled_triton
@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_deterministic(dtype):
    """Bitwise the same output and gradients twice, at SD's D = 80 with several key tiles
    per shift group (dK/dV sums over the query frames that read a key in a fixed order)."""
    q, k, v = (t.requires_grad_() for t in make_qkv(8, 32, 32, 80, dtype, "cuda", 2, 2))
    grad = torch.randn_like(q)
    runs = []
    for _ in range(2):
        out = simda_kernels.latent_shift_attention(q, k, v, 8, 32, 32, backend="triton")
        runs.append((out, *torch.autograd.grad(out, (q, k, v), grad)))
    for name, a, b in zip(("out", "dq", "dk", "dv"), *runs, strict=True):
        assert torch.equal(a, b), name
