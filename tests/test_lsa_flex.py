"""Latent-shift attention through FlexAttention (``backend="flex"``) against the reference.

On CPU FlexAttention runs eagerly and forward only, so the forward is checked through the
public entry point and the backward through the operator FlexAttention is built on (its own
backward, with the CPU refusal bypassed). On a GPU the compiled path is checked, forward and
backward, at the SD shapes. Inputs sit between NaN guards (``tests/lsa_checks.py``).
"""

import pytest
import torch

import simda_kernels
from simda_kernels import dispatch, lsa_flex, reference
from tests.conftest import requires_cuda
from tests.lsa_checks import CASES, case_id, check_against_reference

pytestmark = pytest.mark.skipif(not lsa_flex.HAS_FLEX, reason="no FlexAttention in this torch")


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_matches_reference(case):
    check_against_reference(*case, backend="flex", grads=False)


def test_head_dims_up_to_256_and_a_negative_scale():
    check_against_reference("released", torch.float32, "raster", 3, 5, 3, 256, backend="flex",
                            grads=False, scale=-0.2)  # fmt: skip


def kv_blocks(mask, which=""):
    """Per query block, the sorted key blocks of a BlockMask (partial, or ``full_``)."""
    num, idx = getattr(mask, f"{which}kv_num_blocks"), getattr(mask, f"{which}kv_indices")
    return [sorted(idx[0, 0, i, : num[0, 0, i]].tolist()) for i in range(num.shape[-1])]


@pytest.mark.parametrize("layout", reference.LSA_LAYOUTS)
@pytest.mark.parametrize("shape", [(3, 7, 11, 16), (9, 3, 3, 8), (2, 9, 5, 32), (4, 8, 8, 128)])
def test_block_mask_is_the_one_flex_would_build(layout, shape):
    """The block mask built from the runs (no dense mask) equals create_block_mask's dense
    evaluation of the same mask_mod: the same partial and full blocks, both ways round."""
    from torch.nn.attention.flex_attention import create_block_mask

    frames, h, w, block = shape
    length = frames * h * w
    got = lsa_flex.flex_mask(frames, h, w, layout, torch.device("cpu"), block).block_mask
    want = create_block_mask(got.mask_mod, 1, 1, length, length, "cpu", BLOCK_SIZE=block)
    for which in ("", "full_"):
        assert kv_blocks(got, which) == kv_blocks(want, which), which
    assert torch.equal(got.to_dense(), want.to_dense())
    assert torch.equal(got.q_num_blocks, want.q_num_blocks)
    assert torch.equal(got.full_q_num_blocks, want.full_q_num_blocks)


def test_a_wrong_weight_fails(monkeypatch):
    """The comparison can fail: a mask that drops the log 2 on keys both sources hold."""
    real = reference.key_weights
    monkeypatch.setattr(
        lsa_flex.reference, "key_weights", lambda *a, **k: real(*a, **k).clamp(max=1)
    )
    lsa_flex.cached_flex_mask.cache_clear()
    try:
        with pytest.raises(AssertionError, match="out: max error"):
            check_against_reference("paper", torch.float32, "raster", 3, 4, 4, 8, backend="flex",
                                    grads=False)  # fmt: skip
    finally:
        lsa_flex.cached_flex_mask.cache_clear()


def flex_with_its_backward(q, k, v, score_mod, block_mask, scale):
    """FlexAttention as ``flex_attention`` runs it eagerly (its operator, traced by an eager
    torch.compile), without the check that refuses gradients on CPU: the operator's own
    backward. Private PyTorch API: skips where it has moved."""
    try:
        from torch._higher_order_ops.flex_attention import flex_attention as operator
        from torch.nn.attention import flex_attention as fa

        options = fa._apply_kernel_options(q, k, v, False, None, None)
        environment = fa.setup_compilation_env
    except (ImportError, AttributeError, TypeError) as exc:
        pytest.skip(f"FlexAttention's operator moved in torch {torch.__version__}: {exc!r}")

    def wrapper(*args):
        return operator(*args)

    with environment() as backend:
        run = torch.compile(wrapper, backend=backend, fullgraph=True)
        return run(q, k, v, score_mod, block_mask.as_tuple(), scale, options)[0]


@pytest.mark.parametrize("case", CASES[::3], ids=case_id)
def test_backward_matches_reference(case, monkeypatch):
    monkeypatch.setattr(lsa_flex, "_flex", flex_with_its_backward)
    monkeypatch.setattr(dispatch, "_check_flex", lambda q, needs_grad: None)
    check_against_reference(*case, backend="flex")


def test_new_token_counts_reuse_the_compiled_code(monkeypatch):
    """The CUDA path's compiled flex_attention, traced here on CPU (eager backend, counting
    graphs): the cached masks and score_mods of four grids compile twice (the first N, then
    code symbolic in N), not once per grid."""
    from torch.nn.attention.flex_attention import flex_attention

    graphs = []

    def backend(gm, inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(flex_attention, backend=backend)
    monkeypatch.setattr(
        lsa_flex,
        "_flex",
        lambda q, k, v, score_mod, block_mask, scale: compiled(
            q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale
        ),
    )
    for side in (8, 12, 16, 20):
        q, k, v = (torch.randn(8, 2, side * side, 16) for _ in range(3))
        lsa_flex.latent_shift_attention(q, k, v, 4, side, side, "paper", 0.25, "grouped")
    assert len(graphs) == 2


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(16, 32, 32, 40), (16, 16, 16, 80), (8, 16, 16, 160)])
def test_gpu_compiled_matches_reference(dtype, shape):
    check_against_reference("paper", dtype, "raster", *shape, device="cuda", heads=2,
                            backend="flex")  # fmt: skip


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("layout", reference.LSA_LAYOUTS)
@pytest.mark.parametrize("order", reference.TOKEN_ORDERS)
def test_gpu_layouts_and_orders(layout, order):
    check_against_reference(layout, torch.float16, order, 5, 12, 20, 40, device="cuda", batch=2,
                            heads=8, backend="flex")  # fmt: skip


@requires_cuda
@pytest.mark.gpu
def test_gpu_new_token_counts_reuse_the_compiled_code():
    """Automatic dynamic shapes: after a second N the code is symbolic in N, so a third N
    (same head dim, dtype and grad mode) compiles nothing new."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    lsa_flex._compiled.cache_clear()
    graphs = []
    for side in (16, 24, 32):
        q, k, v = (torch.randn(16, 8, side * side, 40, device="cuda", dtype=torch.float16)
                   for _ in range(3))  # fmt: skip
        simda_kernels.latent_shift_attention(q, k, v, 8, side, side, backend="flex")
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[2] == graphs[1]
