"""Fused latent-shift attention in Triton: forward and backward, no materialised K/V.

The keys are walked in grouped form (``reference.key_weights``): query frame ``t`` reads the
shift-``s`` tokens of frame ``g`` with weight ``W[t, g, s]`` in {0, 1, 2}, and in grouped token
order (``reference.grouped_order``) each such (frame, shift group) is a contiguous run. Runs of
one frame with equal weight merge; a frame reads at most 6 runs and 29N/16 distinct keys (paper
layout). The host cuts each frame's runs into key tiles of ``BLOCK_N`` (a table: frame, first
key, count, weight - 1); every tile is one frame's keys and one weight, so the weight's
``log2 W`` folds into the exponent's per-row offset and only the last tile of a run is ragged:

    P_ij = 2^(s_ij c + b_j - m_i),  c = scale log2(e),  b_j = log2 W in {0, 1}

(one FMA and one exp2 per pair). Keys in another token order are read through a table of their
rows (grouped position -> memory row); in grouped order they are read directly.

Backward as in FlashAttention-2, with delta_i = O_i . dO_i (a small kernel) and base-2 lse:

    dV_j = sum_i P_ij dO_i        dP_ij = dO_i . V_j        dS_ij = P_ij (dP_ij - delta_i)
    dK_j = scale sum_i dS_ij Q_i  dQ_i = scale sum_j dS_ij K_j

One key-side program per key tile visits every query frame that reads it (at most 2 in the paper
layout, all of them for frame 0 in Tune-A-Video's) and accumulates dK, dV: 4 products per pair.
dQ comes from a query-side kernel that recomputes S and dP (3 more products and a second exp2):
deterministic. ``SIMDA_LSA_DQ=atomic`` instead adds dQ from the key-side kernel with fp32
atomics (5 products and 1 exp2 per pair in all; the summation order then varies between runs).

Head dims are split into two power-of-two chunks (40 = 32 + 16, 80 = 64 + 16, 160 = 128 + 32)
and masked, so nothing is padded in memory. Needs sm_80 or newer.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from dataclasses import dataclass, replace

import torch

from simda_kernels import reference

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # CPU-only torch without triton
    HAS_TRITON = False

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
if HAS_TRITON and INTERPRET:
    from simda_kernels import _interpreter_compat

    _interpreter_compat.patch()  # triton 3.6's interpreter with numpy >= 2.4
MAX_HEAD_DIM = 256
#: the kernels use cp.async, bf16 MMAs and shared-memory sizes of Ampere and newer
MIN_CAPABILITY = (8, 0)
DQ_MODES = ("separate", "atomic")


def dq_mode() -> str:
    """How the backward computes dQ: ``SIMDA_LSA_DQ`` (``separate``, the default, or
    ``atomic``); ``separate`` whenever ``torch.use_deterministic_algorithms`` is on."""
    mode = os.environ.get("SIMDA_LSA_DQ", "separate")
    if mode not in DQ_MODES:
        raise ValueError(f"SIMDA_LSA_DQ must be one of {DQ_MODES}, got {mode!r}")
    return "separate" if torch.are_deterministic_algorithms_enabled() else mode


# --------------------------------------------------------------------------- launch configs


@dataclass(frozen=True)
class LaunchConfig:
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


PASSES = ("fwd", "bwd_dq", "bwd_dkdv")
_OVERRIDES: dict[str, dict] = {p: {} for p in PASSES}


def _next_pow2(x: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(x, 1))))


def head_dim_chunks(head_dim: int) -> tuple[int, int]:
    """Split D into a power-of-two chunk and a (padded) power-of-two remainder, each >= 16."""
    first = max(16, 1 << (head_dim.bit_length() - 1))
    rest = head_dim - first
    return first, 0 if rest <= 0 else max(16, _next_pow2(rest))


def lsa_config(
    pass_: str, head_dim: int, n_tokens: int, capability=None, element_size: int = 2
) -> LaunchConfig:
    """Block sizes of ``pass_`` ("fwd", "bwd_dq", "bwd_dkdv") from head dim, tokens, GPU
    capability and element size. ``block_m`` tiles queries, ``block_n`` keys.

    Query-side passes: 64 query rows per 4 warps (one Hopper warp group per 64 rows, so no two
    warp groups compute the same rows; 128 rows on 8 warps for the forward from N = 1024 at
    D <= 80 in 16 bits) and 64-key tiles, the N of Q.K^T's MMA. The key-side pass holds a key
    tile's dK and dV in registers: 64 keys against 64 queries per step, 128 keys on 8 warps
    at N >= 4096 for D <= 64 (each query tile then serves twice the keys), 32 queries at
    D > 80. Chosen so that the 16-bit kernels do not spill on sm_90 at SD's head dims 40, 80
    (every pass) and 160 (forward; ``scripts/triton_aot_report.py``, ``docs/kernels.md``).
    Override with ``launch_config(fwd={...}, ...)``; ``scripts/tune_lsa.py`` times others.
    """
    if INTERPRET or capability is None:  # the interpreter pays per op, not per element
        return replace(LaunchConfig(64, 32, 1, 1), **_OVERRIDES[pass_])
    width = sum(head_dim_chunks(head_dim)) * element_size  # bytes of one padded row
    wide = width > 160  # D > 80 in 16 bits, D > 40 in fp32
    if pass_ == "fwd":
        rows = 64 if wide or n_tokens < 1024 else 128
        config = LaunchConfig(rows, 64, rows // 16, 3)
    elif pass_ == "bwd_dq":
        config = LaunchConfig(64, 64, 4, 2 if wide else 3)
    elif wide:
        config = LaunchConfig(32, 64, 4, 2)
    elif width <= 128 and n_tokens >= 4096:
        config = LaunchConfig(64, 128, 8, 2)
    else:
        config = LaunchConfig(64, 64, 4, 2)
    return replace(config, **_OVERRIDES[pass_])


@contextlib.contextmanager
def launch_config(**overrides: dict):
    """Temporarily override fields of the launch configs, e.g. ``fwd={"block_m": 64}``."""
    unknown = set(overrides) - set(PASSES)
    if unknown:
        raise ValueError(f"launch_config takes {PASSES}, got {sorted(unknown)}")
    saved = {k: dict(v) for k, v in _OVERRIDES.items()}
    for pass_, fields in overrides.items():
        _OVERRIDES[pass_].update(fields)
    try:
        yield
    finally:
        _OVERRIDES.update(saved)


def _capability(t: torch.Tensor):
    return torch.cuda.get_device_capability(t.device) if t.is_cuda else None


# --------------------------------------------------------------------------- the key plan


@dataclass(frozen=True)
class Plan:
    """Int32 tables of one (frames, grid, layout, token order, tile sizes) on one device.

    tiles: (F, 1 + T, 4): row 0 of frame t is (full tiles, ragged tiles, 0, 0); then its key
        tiles, full ones first, each (frame g, first grouped position, keys, log2 weight).
    key_tiles: (K, 4): the key-side tiles of any frame, (shift s, first position, keys, 0);
        none straddles two shift groups, so each has one weight per reading frame.
    readers: (F, 5, 1 + R, 2): for frame g's shift-s group, (count, 0) then each reading
        query frame with its log2 weight.
    rows: (N,): memory row of every grouped position (unused in grouped order).
    """

    tiles: torch.Tensor
    key_tiles: torch.Tensor
    readers: torch.Tensor
    rows: torch.Tensor


def _runs(weights_t, starts):
    """(frame, first, end, log2 weight) of every run one query frame reads: consecutive shift
    groups of one frame with one weight merge."""
    runs = []
    for g, row in enumerate(weights_t):
        s = 0
        while s < 5:
            e = s
            while e < 4 and row[e + 1] == row[s]:
                e += 1
            if row[s] and starts[e + 1] > starts[s]:
                runs.append((g, starts[s], starts[e + 1], row[s] - 1))
            s = e + 1
    return runs


@functools.lru_cache(maxsize=64)
def plan(frames, height, width, layout, token_order, block_q, block_k, device) -> Plan:
    """The key tables for these sizes, with ``block_q`` keys per query-side tile and
    ``block_k`` per key-side tile; cached (built on the host, copied once to ``device``)."""
    sizes = reference.shift_group_sizes(height, width)
    starts = [sum(sizes[:s]) for s in range(6)]
    weights = reference.key_weights(frames, layout).tolist()
    per_frame = []
    for t in range(frames):
        full, ragged = [], []
        for g, lo, hi, bias in _runs(weights[t], starts):
            whole = (hi - lo) // block_q
            full += [(g, lo + i * block_q, block_q, bias) for i in range(whole)]
            if (hi - lo) % block_q:
                ragged.append((g, lo + whole * block_q, (hi - lo) % block_q, bias))
        per_frame.append([(len(full), len(ragged), 0, 0), *full, *ragged])
    width_t = max(map(len, per_frame))
    tiles = [rows + [(0, 0, 0, 0)] * (width_t - len(rows)) for rows in per_frame]
    key_tiles = [
        (s, starts[s] + i, min(block_k, sizes[s] - i), 0)
        for s in range(5)
        for i in range(0, sizes[s], block_k)
    ]
    readers = [
        [[(t, weights[t][g][s] - 1) for t in range(frames) if weights[t][g][s]] for s in range(5)]
        for g in range(frames)
    ]
    most = max(len(r) for by_s in readers for r in by_s)
    readers = [[[(len(r), 0), *r] + [(0, 0)] * (most - len(r)) for r in by_s] for by_s in readers]
    memory_row = torch.argsort(reference.token_order_index(token_order, height, width))
    rows = memory_row[reference.grouped_order(height, width)]

    def table(x):
        return torch.tensor(x, dtype=torch.int32).to(device)

    return Plan(table(tiles), table(key_tiles), table(readers), table(rows.tolist()))


# --------------------------------------------------------------------------- kernels

if HAS_TRITON:

    @triton.jit
    def _load_rows(
        base,
        rows,
        stride,
        valid,
        D,
        DA: tl.constexpr,
        DB: tl.constexpr,
        HAS_B: tl.constexpr,
        ROW_MASK: tl.constexpr,
    ):
        """Rows ``rows`` of a (tokens, D) matrix as two chunks of DA and DB columns; rows
        where ``valid`` is false read as zeros when ``ROW_MASK``."""
        offs_a = tl.arange(0, DA)
        offs_b = DA + tl.arange(0, DB)
        ptr = base + rows[:, None] * stride
        if DA <= D:  # no column mask, so rows load as vectors
            if ROW_MASK:
                a = tl.load(ptr + offs_a[None, :], mask=valid[:, None], other=0.0)
            else:
                a = tl.load(ptr + offs_a[None, :])
        else:  # head dims below 16
            mask_a = offs_a[None, :] < D
            if ROW_MASK:
                mask_a = mask_a & valid[:, None]
            a = tl.load(ptr + offs_a[None, :], mask=mask_a, other=0.0)
        if HAS_B:
            mask_b = offs_b[None, :] < D
            if ROW_MASK:
                mask_b = mask_b & valid[:, None]
            b = tl.load(ptr + offs_b[None, :], mask=mask_b, other=0.0)
        else:
            b = tl.zeros([rows.shape[0], DB], a.dtype)
        return a, b

    @triton.jit
    def _store_rows(
        base, rows, stride, valid, D, a, b, DA: tl.constexpr, DB: tl.constexpr, HAS_B: tl.constexpr
    ):
        offs_a = tl.arange(0, DA)
        offs_b = DA + tl.arange(0, DB)
        ptr = base + rows[:, None] * stride
        tl.store(ptr + offs_a[None, :], a, mask=valid[:, None] & (offs_a[None, :] < D))
        if HAS_B:
            tl.store(ptr + offs_b[None, :], b, mask=valid[:, None] & (offs_b[None, :] < D))

    @triton.jit
    def _aligned(a, b, c, ALIGN: tl.constexpr):
        """Strides arrive divided by ALIGN: multiplying back tells the compiler they are
        multiples of it, so rows load as vectors even for head dims like 40."""
        return a * ALIGN, b * ALIGN, c * ALIGN

    @triton.jit
    def _dot2(a1, b1, a2, b2, HAS_B: tl.constexpr, PRECISION: tl.constexpr):
        """a1 @ b1 (+ a2 @ b2 when the head dim has a second chunk), fp32."""
        acc = tl.dot(a1, b1, input_precision=PRECISION)
        if HAS_B:
            acc += tl.dot(a2, b2, input_precision=PRECISION)
        return acc

    @triton.jit
    def _key_rows(ROWS, pos, count, BLOCK_N: tl.constexpr, INDEXED: tl.constexpr):
        """Memory rows of the keys at grouped positions pos .. pos + BLOCK_N and which of them
        exist (the first ``count``)."""
        offs = tl.arange(0, BLOCK_N)
        valid = offs < count
        if INDEXED:
            rows = tl.load(ROWS + pos + offs, mask=valid, other=0)
        else:
            rows = pos + offs
        return rows, valid

    @triton.jit
    def _rows_tile(
        acc_a,
        acc_b,
        m_i,
        l_i,
        q_a,
        q_b,
        do_a,
        do_b,
        lse2,
        delta,
        k_ptr,
        v_ptr,
        stride_kn,
        stride_vn,
        rows,
        valid,
        bias,
        qk_scale,
        D,
        DA: tl.constexpr,
        DB: tl.constexpr,
        HAS_B: tl.constexpr,
        MASKED: tl.constexpr,
        NEG_SCALE: tl.constexpr,
        PRECISION: tl.constexpr,
        BWD: tl.constexpr,
    ):
        """A block of queries against one key tile (one frame, one weight 2^bias): online
        softmax into ``acc`` (forward) or ``acc += dS K`` (``BWD``, dQ). Only a ragged tile
        (``MASKED``) masks: its missing keys read as zero rows, which leave dQ unchanged but
        would enter the forward's softmax."""
        k_a, k_b = _load_rows(k_ptr, rows, stride_kn, valid, D, DA, DB, HAS_B, MASKED)
        v_a, v_b = _load_rows(v_ptr, rows, stride_vn, valid, D, DA, DB, HAS_B, MASKED)
        s = _dot2(q_a, tl.trans(k_a), q_b, tl.trans(k_b), HAS_B, PRECISION)
        if BWD:
            p = tl.exp2(s * qk_scale + (bias - lse2)[:, None])
            dp = _dot2(do_a, tl.trans(v_a), do_b, tl.trans(v_b), HAS_B, PRECISION)
            ds = (p * (dp - delta[:, None])).to(k_a.dtype)
            acc_a += tl.dot(ds, k_a, input_precision=PRECISION)
            if HAS_B:
                acc_b += tl.dot(ds, k_b, input_precision=PRECISION)
        else:
            if MASKED:
                x = tl.where(valid[None, :], s * qk_scale, float("-inf"))
                m_new = tl.maximum(m_i, tl.max(x, 1) + bias)
                p = tl.exp2(x + (bias - m_new)[:, None])
            else:  # the row max of s c is c max(s), or c min(s) when c < 0
                top = tl.min(s, 1) if NEG_SCALE else tl.max(s, 1)
                m_new = tl.maximum(m_i, top * qk_scale + bias)
                p = tl.exp2(s * qk_scale + (bias - m_new)[:, None])
            alpha = tl.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            p = p.to(v_a.dtype)
            acc_a = acc_a * alpha[:, None] + tl.dot(p, v_a, input_precision=PRECISION)
            if HAS_B:
                acc_b = acc_b * alpha[:, None] + tl.dot(p, v_b, input_precision=PRECISION)
            m_i = m_new
        return acc_a, acc_b, m_i, l_i

    @triton.jit
    def _lsa_rows_kernel(
        Q,
        K,
        V,
        DO,
        OUT,
        LSE,
        DELTA,
        TILES,
        ROWS,
        stride_qb,
        stride_qh,
        stride_qn,
        stride_kb,
        stride_kh,
        stride_kn,
        stride_vb,
        stride_vh,
        stride_vn,
        stride_dob,
        stride_doh,
        stride_don,
        stride_ob,
        stride_oh,
        stride_on,
        heads,
        frames,
        N,
        tiles_per_frame,
        qk_scale,
        sm_scale,
        D: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        DA: tl.constexpr,
        DB: tl.constexpr,
        HAS_B: tl.constexpr,
        INDEXED: tl.constexpr,
        ROW_MASK: tl.constexpr,
        NEG_SCALE: tl.constexpr,
        PRECISION: tl.constexpr,
        ALIGN: tl.constexpr,
        BWD: tl.constexpr,
    ):
        """One block of queries of one frame and head against its key tiles: full tiles in one
        loop, then the ragged last tiles of its runs (at most 6) in another.

        Forward: OUT = softmax(S) V and LSE = base-2 log-sum-exp (DO, DELTA unused).
        ``BWD``: OUT = dQ, from DO and the saved LSE and DELTA = rowsum(O * dO).
        """
        stride_qb, stride_qh, stride_qn = _aligned(stride_qb, stride_qh, stride_qn, ALIGN)
        stride_kb, stride_kh, stride_kn = _aligned(stride_kb, stride_kh, stride_kn, ALIGN)
        stride_vb, stride_vh, stride_vn = _aligned(stride_vb, stride_vh, stride_vn, ALIGN)
        stride_dob, stride_doh, stride_don = _aligned(stride_dob, stride_doh, stride_don, ALIGN)
        stride_ob, stride_oh, stride_on = _aligned(stride_ob, stride_oh, stride_on, ALIGN)
        pid_m = tl.program_id(0)
        h = tl.program_id(1)
        bf = tl.program_id(2)
        f = bf % frames
        video = (bf - f).to(tl.int64)  # index of this video's frame 0
        bf64 = bf.to(tl.int64)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        m_valid = offs_m < N
        q_ptr = Q + bf64 * stride_qb + h * stride_qh
        q_a, q_b = _load_rows(q_ptr, offs_m, stride_qn, m_valid, D, DA, DB, HAS_B, ROW_MASK)
        lse_row = (bf64 * heads + h) * N + offs_m
        if BWD:
            do_ptr = DO + bf64 * stride_dob + h * stride_doh
            do_a, do_b = _load_rows(do_ptr, offs_m, stride_don, m_valid, D, DA, DB, HAS_B, ROW_MASK)
            lse2 = tl.load(LSE + lse_row, mask=m_valid, other=0.0)
            delta = tl.load(DELTA + lse_row, mask=m_valid, other=0.0)
        else:
            do_a, do_b = q_a, q_b
            lse2 = tl.zeros([BLOCK_M], tl.float32)
            delta = lse2
        k_video = K + video * stride_kb + h * stride_kh
        v_video = V + video * stride_vb + h * stride_vh

        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc_a = tl.zeros([BLOCK_M, DA], tl.float32)
        acc_b = tl.zeros([BLOCK_M, DB], tl.float32)
        table = TILES + f * (4 * tiles_per_frame)
        n_full = tl.load(table)
        n_ragged = tl.load(table + 1)
        for i in range(1, 1 + n_full):
            g = tl.load(table + 4 * i).to(tl.int64)
            rows, valid = _key_rows(ROWS, tl.load(table + 4 * i + 1), BLOCK_N, BLOCK_N, INDEXED)
            acc_a, acc_b, m_i, l_i = _rows_tile(
                acc_a,
                acc_b,
                m_i,
                l_i,
                q_a,
                q_b,
                do_a,
                do_b,
                lse2,
                delta,
                k_video + g * stride_kb,
                v_video + g * stride_vb,
                stride_kn,
                stride_vn,
                rows,
                valid,
                tl.load(table + 4 * i + 3).to(tl.float32),
                qk_scale,
                D,
                DA,
                DB,
                HAS_B,
                False,
                NEG_SCALE,
                PRECISION,
                BWD,
            )
        for i in range(1 + n_full, 1 + n_full + n_ragged):
            g = tl.load(table + 4 * i).to(tl.int64)
            rows, valid = _key_rows(
                ROWS, tl.load(table + 4 * i + 1), tl.load(table + 4 * i + 2), BLOCK_N, INDEXED
            )
            acc_a, acc_b, m_i, l_i = _rows_tile(
                acc_a,
                acc_b,
                m_i,
                l_i,
                q_a,
                q_b,
                do_a,
                do_b,
                lse2,
                delta,
                k_video + g * stride_kb,
                v_video + g * stride_vb,
                stride_kn,
                stride_vn,
                rows,
                valid,
                tl.load(table + 4 * i + 3).to(tl.float32),
                qk_scale,
                D,
                DA,
                DB,
                HAS_B,
                True,
                NEG_SCALE,
                PRECISION,
                BWD,
            )

        o_ptr = OUT + bf64 * stride_ob + h * stride_oh
        if BWD:
            out_a = (acc_a * sm_scale).to(OUT.dtype.element_ty)
            out_b = (acc_b * sm_scale).to(OUT.dtype.element_ty)
        else:
            out_a = (acc_a / l_i[:, None]).to(OUT.dtype.element_ty)
            out_b = (acc_b / l_i[:, None]).to(OUT.dtype.element_ty)
            tl.store(LSE + lse_row, m_i + tl.log2(l_i), mask=m_valid)
        _store_rows(o_ptr, offs_m, stride_on, m_valid, D, out_a, out_b, DA, DB, HAS_B)

    @triton.jit
    def _lsa_bwd_delta_kernel(
        OUT,
        DO,
        DELTA,
        stride_ob,
        stride_oh,
        stride_on,
        stride_dob,
        stride_doh,
        stride_don,
        heads,
        N,
        D: tl.constexpr,
        BLOCK_M: tl.constexpr,
        DA: tl.constexpr,
        DB: tl.constexpr,
        HAS_B: tl.constexpr,
    ):
        """delta_i = O_i . dO_i in fp32, read once from the 16-bit tensors."""
        pid_m = tl.program_id(0)
        h = tl.program_id(1)
        bf = tl.program_id(2).to(tl.int64)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        valid = offs_m < N
        o_ptr = OUT + bf * stride_ob + h * stride_oh
        do_ptr = DO + bf * stride_dob + h * stride_doh
        o_a, o_b = _load_rows(o_ptr, offs_m, stride_on, valid, D, DA, DB, HAS_B, True)
        do_a, do_b = _load_rows(do_ptr, offs_m, stride_don, valid, D, DA, DB, HAS_B, True)
        delta = tl.sum(o_a.to(tl.float32) * do_a.to(tl.float32), 1)
        if HAS_B:
            delta += tl.sum(o_b.to(tl.float32) * do_b.to(tl.float32), 1)
        tl.store(DELTA + (bf * heads + h) * N + offs_m, delta, mask=valid)

    @triton.jit
    def _lsa_bwd_dkdv_kernel(
        Q,
        K,
        V,
        DO,
        DK,
        DV,
        LSE,
        DELTA,
        DQ,
        KEY_TILES,
        READERS,
        ROWS,
        stride_qb,
        stride_qh,
        stride_qn,
        stride_kb,
        stride_kh,
        stride_kn,
        stride_vb,
        stride_vh,
        stride_vn,
        stride_dob,
        stride_doh,
        stride_don,
        stride_dkb,
        stride_dkh,
        stride_dkn,
        stride_dvb,
        stride_dvh,
        stride_dvn,
        heads,
        frames,
        N,
        readers_per_group,
        qk_scale,
        sm_scale,
        D: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        DA: tl.constexpr,
        DB: tl.constexpr,
        HAS_B: tl.constexpr,
        INDEXED: tl.constexpr,
        ROW_MASK: tl.constexpr,
        PRECISION: tl.constexpr,
        ALIGN: tl.constexpr,
        ATOMIC_DQ: tl.constexpr,
    ):
        """dK, dV of one key tile of frame ``g`` (one shift group): every query frame that
        reads it, each with one weight, in a fixed order. In transposed form, keys as rows:

            P^T = 2^(K Q^T c + b - lse)    dV += P^T dO    dS^T = P^T (V dO^T - delta)
            dK += dS^T Q                   (ATOMIC_DQ) dQ += scale dS K, fp32 atomics
        """
        stride_qb, stride_qh, stride_qn = _aligned(stride_qb, stride_qh, stride_qn, ALIGN)
        stride_kb, stride_kh, stride_kn = _aligned(stride_kb, stride_kh, stride_kn, ALIGN)
        stride_vb, stride_vh, stride_vn = _aligned(stride_vb, stride_vh, stride_vn, ALIGN)
        stride_dob, stride_doh, stride_don = _aligned(stride_dob, stride_doh, stride_don, ALIGN)
        stride_dkb, stride_dkh, stride_dkn = _aligned(stride_dkb, stride_dkh, stride_dkn, ALIGN)
        stride_dvb, stride_dvh, stride_dvn = _aligned(stride_dvb, stride_dvh, stride_dvn, ALIGN)
        tile = KEY_TILES + 4 * tl.program_id(0)
        h = tl.program_id(1)
        bg = tl.program_id(2)
        g = bg % frames
        video = (bg - g).to(tl.int64)
        bg64 = bg.to(tl.int64)
        shift = tl.load(tile)
        rows, valid = _key_rows(ROWS, tl.load(tile + 1), tl.load(tile + 2), BLOCK_N, INDEXED)
        k_ptr = K + bg64 * stride_kb + h * stride_kh
        v_ptr = V + bg64 * stride_vb + h * stride_vh
        k_a, k_b = _load_rows(k_ptr, rows, stride_kn, valid, D, DA, DB, HAS_B, True)
        v_a, v_b = _load_rows(v_ptr, rows, stride_vn, valid, D, DA, DB, HAS_B, True)
        dk_a = tl.zeros([BLOCK_N, DA], tl.float32)
        dk_b = tl.zeros([BLOCK_N, DB], tl.float32)
        dv_a = tl.zeros([BLOCK_N, DA], tl.float32)
        dv_b = tl.zeros([BLOCK_N, DB], tl.float32)
        readers = READERS + (g * 5 + shift) * (2 * readers_per_group)
        for r in range(1, 1 + tl.load(readers)):
            qf = video + tl.load(readers + 2 * r)
            bias = tl.load(readers + 2 * r + 1).to(tl.float32)
            q_ptr = Q + qf * stride_qb + h * stride_qh
            do_ptr = DO + qf * stride_dob + h * stride_doh
            row0 = (qf * heads + h) * N
            for start in range(0, N, BLOCK_M):
                offs_m = start + tl.arange(0, BLOCK_M)
                m_valid = offs_m < N
                q_a, q_b = _load_rows(q_ptr, offs_m, stride_qn, m_valid, D, DA, DB, HAS_B, ROW_MASK)
                do_a, do_b = _load_rows(
                    do_ptr, offs_m, stride_don, m_valid, D, DA, DB, HAS_B, ROW_MASK
                )
                # a missing query row gets lse = +inf, so P = 0 there
                lse2 = tl.load(LSE + row0 + offs_m, mask=m_valid, other=float("inf"))
                delta = tl.load(DELTA + row0 + offs_m, mask=m_valid, other=0.0)
                s_t = _dot2(k_a, tl.trans(q_a), k_b, tl.trans(q_b), HAS_B, PRECISION)
                p_t = tl.exp2(s_t * qk_scale + (bias - lse2)[None, :])
                p_lo = p_t.to(do_a.dtype)
                dv_a += tl.dot(p_lo, do_a, input_precision=PRECISION)
                if HAS_B:
                    dv_b += tl.dot(p_lo, do_b, input_precision=PRECISION)
                dp_t = _dot2(v_a, tl.trans(do_a), v_b, tl.trans(do_b), HAS_B, PRECISION)
                ds_t = (p_t * (dp_t - delta[None, :])).to(q_a.dtype)
                dk_a += tl.dot(ds_t, q_a, input_precision=PRECISION)
                if HAS_B:
                    dk_b += tl.dot(ds_t, q_b, input_precision=PRECISION)
                if ATOMIC_DQ:  # DQ: fp32, contiguous (B*F, heads, N, D)
                    ds = tl.trans(ds_t)
                    dq_ptr = DQ + (row0 + offs_m)[:, None] * D
                    offs_a = tl.arange(0, DA)
                    dq_a = tl.dot(ds, k_a, input_precision=PRECISION) * sm_scale
                    tl.atomic_add(
                        dq_ptr + offs_a[None, :],
                        dq_a,
                        mask=m_valid[:, None] & (offs_a[None, :] < D),
                        sem="relaxed",
                    )
                    if HAS_B:
                        offs_b = DA + tl.arange(0, DB)
                        dq_b = tl.dot(ds, k_b, input_precision=PRECISION) * sm_scale
                        tl.atomic_add(
                            dq_ptr + offs_b[None, :],
                            dq_b,
                            mask=m_valid[:, None] & (offs_b[None, :] < D),
                            sem="relaxed",
                        )
        dk_ptr = DK + bg64 * stride_dkb + h * stride_dkh
        dv_ptr = DV + bg64 * stride_dvb + h * stride_dvh
        dk_a = (dk_a * sm_scale).to(DK.dtype.element_ty)
        dk_b = (dk_b * sm_scale).to(DK.dtype.element_ty)
        _store_rows(dk_ptr, rows, stride_dkn, valid, D, dk_a, dk_b, DA, DB, HAS_B)
        dv_a = dv_a.to(DV.dtype.element_ty)
        dv_b = dv_b.to(DV.dtype.element_ty)
        _store_rows(dv_ptr, rows, stride_dvn, valid, D, dv_a, dv_b, DA, DB, HAS_B)


# --------------------------------------------------------------------------- launchers


def _consts(q, token_order):
    """Compile-time constants shared by the kernels."""
    da, db = head_dim_chunks(q.shape[3])
    return dict(
        D=q.shape[3],
        DA=da,
        DB=max(db, 16),
        HAS_B=db > 0,
        INDEXED=token_order != "grouped",
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
    )


def _new_like(t, shape=None, dtype=None):
    """Output allocation (tests replace it to poison outputs)."""
    if shape is None:
        return torch.empty_like(t)
    return torch.empty(shape, device=t.device, dtype=dtype)


def _strides(t, align):
    """(frame, head, token) strides in units of ``align`` elements."""
    return t.stride(0) // align, t.stride(1) // align, t.stride(2) // align


def _alignment(*tensors) -> int:
    """Largest power of two (<= 16) dividing every stride and data pointer offset, in elements.

    1 when a stride needs 64 bits: Triton types ``stride // align`` as int32 when it fits, and
    the kernel's ``* ALIGN`` would then overflow."""
    if any(s >= 2**31 for t in tensors for s in t.stride()):
        return 1
    align = 16
    for t in tensors:
        for x in (*t.stride()[:3], t.data_ptr() // t.element_size() if t.data_ptr() else 0):
            while x % align:
                align //= 2
    return align


#: the launch grids put B*F on their z axis, which CUDA limits to 65535 blocks
MAX_FRAMES_PER_CALL = 65535


def _check_launchable(**tensors) -> None:
    """What the kernels assume of their (B*F, heads, N, D) inputs: each token's head_dim values
    are one contiguous row, B*F fits the grid, and offsets within a frame fit in 32 bits (the
    kernels add 64-bit frame offsets to 32-bit head and token offsets)."""
    for name, t in tensors.items():
        if t.shape[-1] > 1 and t.stride(-1) != 1:
            raise ValueError(
                f"{name} must be contiguous along the head dim (stride(-1) == 1) for the Triton "
                f"kernel, got strides {tuple(t.stride())}; pass {name}.contiguous()"
            )
        if t.shape[0] > MAX_FRAMES_PER_CALL:
            raise ValueError(
                f"the Triton kernel takes at most {MAX_FRAMES_PER_CALL} frames (B*F) per call, "
                f"{name} has {t.shape[0]}: split the batch"
            )
        reach = sum(
            (size - 1) * abs(stride)
            for size, stride in zip(t.shape[1:], t.stride()[1:], strict=True)
        )
        if reach >= 2**31:
            raise ValueError(
                f"{name} spans {reach + 1} elements within one frame (strides "
                f"{tuple(t.stride())}), beyond the Triton kernel's 32-bit offsets; pass "
                f"{name}.contiguous()" + (" or fewer tokens" if t.is_contiguous() else "")
            )


def _device_of(t):
    """Triton launches on the current CUDA device: make it ``t``'s."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _configs(q, n):
    cap, size = _capability(q), q.element_size()
    return {p: lsa_config(p, q.shape[3], n, cap, size) for p in PASSES}


def _plan_for(q, frames, height, width, layout, token_order, cfgs, query_pass):
    """The plan with the tile sizes of ``query_pass`` ("fwd" or "bwd_dq") and of dK/dV."""
    block_q, block_k = cfgs[query_pass].block_n, cfgs["bwd_dkdv"].block_n
    return plan(frames, height, width, layout, token_order, block_q, block_k, q.device)


def _launch_rows(q, k, v, do, out, lse2, delta, scale, consts, cfg, tables, frames, bwd):
    """The query-side kernel: the forward (``bwd=False``) or dQ (``out`` is dQ)."""
    bf, heads, n, _ = q.shape
    a = _alignment(q, k, v, do, out)
    _lsa_rows_kernel[(triton.cdiv(n, cfg.block_m), heads, bf)](
        q,
        k,
        v,
        do,
        out,
        lse2,
        delta,
        tables.tiles,
        tables.rows,
        *_strides(q, a),
        *_strides(k, a),
        *_strides(v, a),
        *_strides(do, a),
        *_strides(out, a),
        heads,
        frames,
        n,
        tables.tiles.shape[1],
        scale * math.log2(math.e),
        scale,
        ALIGN=a,
        BLOCK_M=cfg.block_m,
        BLOCK_N=cfg.block_n,
        ROW_MASK=n % cfg.block_m != 0,
        NEG_SCALE=scale < 0,
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
        BWD=bwd,
        **consts,
    )


def lsa_forward(q, k, v, frames, height, width, layout, scale, token_order):
    """Launch the forward kernel. Returns ``out`` (like q) and ``lse2`` (B*F, heads, N) fp32
    (base-2 log-sum-exp of the scaled logits, keys of weight 2 counted twice)."""
    _check_launchable(q=q, k=k, v=v)
    bf, heads, n, _ = q.shape
    cfgs = _configs(q, n)
    tables = _plan_for(q, frames, height, width, layout, token_order, cfgs, "fwd")
    out = _new_like(q)
    lse2 = _new_like(q, (bf, heads, n), torch.float32)
    consts = _consts(q, token_order)
    # DO and DELTA are not read by the forward: q and lse2 stand in for them.
    _launch_rows(q, k, v, q, out, lse2, lse2, scale, consts, cfgs["fwd"], tables, frames, False)
    return out, lse2


def lsa_backward(grad_out, q, k, v, out, lse2, frames, height, width, layout, scale, token_order):
    """Launch the backward kernels (delta, dK/dV, and dQ unless atomic). Returns dq, dk, dv,
    each shaped and strided like q, k, v."""
    _check_launchable(grad_out=grad_out, q=q, k=k, v=v, out=out)
    bf, heads, n, d = q.shape
    cfgs = _configs(q, n)
    consts = _consts(q, token_order)
    atomic = dq_mode() == "atomic"
    delta = _new_like(q, (bf, heads, n), torch.float32)
    block = min(64, _next_pow2(n))
    _lsa_bwd_delta_kernel[(triton.cdiv(n, block), heads, bf)](
        out,
        grad_out,
        delta,
        *out.stride()[:3],
        *grad_out.stride()[:3],
        heads,
        n,
        D=d,
        BLOCK_M=block,
        DA=consts["DA"],
        DB=consts["DB"],
        HAS_B=consts["HAS_B"],
    )
    dq, dk, dv = _new_like(q), _new_like(k), _new_like(v)
    # atomic: an fp32 accumulator; else the dQ kernel writes dq (q stands in)
    dq_acc = torch.zeros(q.shape, device=q.device, dtype=torch.float32) if atomic else q
    cfg = cfgs["bwd_dkdv"]
    tables = _plan_for(q, frames, height, width, layout, token_order, cfgs, "bwd_dq")
    a = _alignment(q, k, v, grad_out, dk, dv)
    _lsa_bwd_dkdv_kernel[(tables.key_tiles.shape[0], heads, bf)](
        q,
        k,
        v,
        grad_out,
        dk,
        dv,
        lse2,
        delta,
        dq_acc,
        tables.key_tiles,
        tables.readers,
        tables.rows,
        *_strides(q, a),
        *_strides(k, a),
        *_strides(v, a),
        *_strides(grad_out, a),
        *_strides(dk, a),
        *_strides(dv, a),
        heads,
        frames,
        n,
        tables.readers.shape[2],
        scale * math.log2(math.e),
        scale,
        ALIGN=a,
        BLOCK_M=cfg.block_m,
        BLOCK_N=cfg.block_n,
        ROW_MASK=n % cfg.block_m != 0,
        ATOMIC_DQ=atomic,
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
        **consts,
    )
    if atomic:
        dq.copy_(dq_acc)
    else:
        cfg = cfgs["bwd_dq"]
        _launch_rows(q, k, v, grad_out, dq, lse2, delta, scale, consts, cfg, tables, frames, True)
    return dq, dk, dv


# --------------------------------------------------------------------------- torch.library


if HAS_TRITON:

    @torch.library.custom_op("simda::latent_shift_attention", mutates_args=())
    def lsa_op(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        frames: int,
        height: int,
        width: int,
        layout: str,
        scale: float,
        token_order: str,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with _device_of(q):
            return lsa_forward(q, k, v, frames, height, width, layout, scale, token_order)

    @torch.library.custom_op("simda::latent_shift_attention_backward", mutates_args=())
    def lsa_backward_op(
        grad_out: torch.Tensor,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        out: torch.Tensor,
        lse2: torch.Tensor,
        frames: int,
        height: int,
        width: int,
        layout: str,
        scale: float,
        token_order: str,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with _device_of(q):
            return lsa_backward(
                grad_out, q, k, v, out, lse2, frames, height, width, layout, scale, token_order
            )

    if not INTERPRET:  # under the interpreter, CPU tensors run the Triton kernels themselves
        # Results in tensors laid out like the inputs, as the Triton launchers and the fake
        # kernels give them (the model's q, k, v are transposed views).
        def _like(template, value):
            return torch.empty_like(template).copy_(value)

        @lsa_op.register_kernel("cpu")
        def _lsa_cpu(q, k, v, frames, height, width, layout, scale, token_order):
            out, lse2 = reference.lsa_forward(
                q, k, v, frames, height, width, layout, scale, token_order
            )
            return _like(q, out), lse2.contiguous()

        @lsa_backward_op.register_kernel("cpu")
        def _lsa_backward_cpu(
            grad_out, q, k, v, out, lse2, frames, height, width, layout, scale, token_order
        ):
            grads = reference.lsa_backward(
                grad_out, q, k, v, frames, height, width, layout, scale, token_order
            )
            return tuple(_like(t, g) for t, g in zip((q, k, v), grads, strict=True))

    @lsa_op.register_fake
    def _lsa_fake(q, k, v, frames, height, width, layout, scale, token_order):
        return torch.empty_like(q), q.new_empty(q.shape[:3], dtype=torch.float32)

    @lsa_backward_op.register_fake
    def _lsa_backward_fake(
        grad_out, q, k, v, out, lse2, frames, height, width, layout, scale, token_order
    ):
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)

    def _setup_context(ctx, inputs, output):
        q, k, v, *ctx.args = inputs
        out, lse2 = output
        ctx.save_for_backward(q, k, v, out, lse2)

    def _backward(ctx, grad_out, _grad_lse2):
        q, k, v, out, lse2 = ctx.saved_tensors
        if grad_out.stride(-1) != 1:
            grad_out = grad_out.contiguous()
        return (*lsa_backward_op(grad_out, q, k, v, out, lse2, *ctx.args),) + (None,) * 6

    lsa_op.register_autograd(_backward, setup_context=_setup_context)
