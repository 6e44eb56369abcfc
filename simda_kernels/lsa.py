"""Fused latent-shift attention in Triton: forward and backward, no materialised K/V.

Query frame ``f`` attends over ``2N`` keys drawn from two sources; key ``(j, n)`` is token ``n``
of frame ``src_j(f, n)`` (see ``reference.key_source_frames``). The source frame depends on the
token only through its class ``c = 4 * (row % 4) + (col % 4)``, so the kernels walk the keys
class by class: within a class every key of a source comes from one frame, and its rows are
found by index arithmetic (raster order) or are contiguous (``class_major`` token order).

Keys that appear in both sources (``src_0 == src_1``: offset-0 classes, frames before the shift
reaches them, all of frame 0) are visited once with weight 2, i.e. ``+1`` on the base-2 logit:

    P_ij = w_j 2^(s_ij log2(e) - lse2_i),  w_j in {1, 2}

Backward (recompute from the log-sum-exp, as in FlashAttention-2), with delta_i = O_i . dO_i:

    dV_j = sum_i P_ij dO_i        dP_ij = dO_i . V_j        dS_ij = P_ij (dP_ij - delta_i)
    dQ_i = scale sum_j dS_ij K_j  dK_j = scale sum_i dS_ij Q_i

The forward and dQ are one query-side kernel (``_lsa_rows_kernel``, ``BWD`` selects the pass):
a program owns a block of queries and walks its keys. dK/dV are accumulated per key block by
``_lsa_bwd_dkdv_kernel``, one program per block that visits every reader of its keys in a fixed
order. Deterministic, no atomics.

Head dims are split into two power-of-two chunks (40 = 32 + 16, 80 = 64 + 16, 160 = 128 + 32)
and masked, so nothing is padded in memory.
"""

from __future__ import annotations

import contextlib
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
LAYOUT_CODES = {"paper": 0, "released": 1, "tav": 2}
TOKEN_ORDERS = ("raster", "class_major")
# SHIFT_TABLE flattened by class c = 4 * (row % 4) + (col % 4), four bits per class, in two
# int32 words (classes 0-7, classes 8-15).
_SHIFTS = [s for row in reference.SHIFT_TABLE for s in row]
SHIFT_PACKED = tuple(sum(s << (4 * i) for i, s in enumerate(_SHIFTS[h : h + 8])) for h in (0, 8))
MAX_HEAD_DIM = 256


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

    Keys are visited class by class (about N/16 keys each), so ``block_n`` follows N/16.
    Sizes keep the 16-bit kernels free of register spills on sm_90 at the shapes of SD 1.x at
    512 px (fp32 variants, and the 16-bit dK/dV kernel at D = 160 with N >= 512, spill a few
    dozen bytes; ``scripts/triton_aot_report.py``, ``docs/kernels.md``).
    Override with ``launch_config(fwd={...}, bwd_dq={...}, bwd_dkdv={...})``.
    """
    if INTERPRET or capability is None:  # the interpreter pays per op, not per element
        return replace(LaunchConfig(64, 16, 1, 1), **_OVERRIDES[pass_])
    # Register footprint grows with the padded head dim in bytes: three size classes.
    width = sum(head_dim_chunks(head_dim)) * element_size
    size = 0 if width <= 160 else 1 if width <= 320 else 2
    block_m, block_n, warps = {
        "fwd": ((128, 64, 8), (64, 32, 8), (32, 16, 8)),
        "bwd_dq": ((64, 64, 4), (64, 32, 8), (32, 16, 8)),
        "bwd_dkdv": ((32, 64, 4), (16, 32, 8), (16, 16, 8)),
    }[pass_][size]
    if pass_ == "fwd" and n_tokens < 1024:
        block_m = min(block_m, 64)
    block_n = min(block_n, max(16, _next_pow2(-(-n_tokens // 16))))
    stages = 3 if pass_ == "fwd" and capability >= (8, 0) else 2
    config = LaunchConfig(block_m, block_n, warps, stages)
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


# --------------------------------------------------------------------------- kernels

if HAS_TRITON:

    @triton.jit
    def _shifted(t, s):
        return tl.where(t >= s, t - s, t)

    @triton.jit
    def _source_frame(f, s, J: tl.constexpr, LAYOUT: tl.constexpr):
        """Frame of source J's keys of class shift ``s`` for query frame ``f``."""
        prev = tl.maximum(f - 1, 0)
        if LAYOUT == 0:  # paper: [x_f, S(x)_f]
            g = f if J == 0 else _shifted(f, s)
        elif LAYOUT == 1:  # released: [S(x)_{f-1}, S(x)_f]
            g = _shifted(prev, s) if J == 0 else _shifted(f, s)
        else:  # tav: [x_0, x_{f-1}]
            g = f * 0 if J == 0 else prev
        return g

    @triton.jit
    def _class_info(c, H, W, PACKED_LO: tl.constexpr, PACKED_HI: tl.constexpr):
        """Row/col phase, frame shift, columns and size of token class ``c``."""
        rc = c // 4
        cc = c % 4
        word = tl.where(c < 8, PACKED_LO, PACKED_HI)
        s = (word >> (4 * (c % 8))) & 15
        cols = (W - cc + 3) // 4
        return rc, cc, s, cols, ((H - rc + 3) // 4) * cols

    @triton.jit
    def _class_tokens(t, rc, cc, cols, W, off, CLASS_MAJOR: tl.constexpr):
        """Memory index of the ``t``-th token of a class."""
        if CLASS_MAJOR:
            tok = off + t
        else:
            tok = (rc + 4 * (t // cols)) * W + cc + 4 * (t % cols)
        return tok

    @triton.jit
    def _load_rows(
        base, rows, stride, valid, D, DA: tl.constexpr, DB: tl.constexpr, HAS_B: tl.constexpr
    ):
        """Rows ``rows`` of a (tokens, D) matrix, as two chunks of DA and DB columns."""
        offs_a = tl.arange(0, DA)
        ptr = base + rows[:, None] * stride
        if DA <= D:  # no column mask, so rows load as vectors
            a = tl.load(ptr + offs_a[None, :], mask=valid[:, None], other=0.0)
        else:  # head dims below 16
            a = tl.load(
                ptr + offs_a[None, :], mask=valid[:, None] & (offs_a[None, :] < D), other=0.0
            )
        if HAS_B:
            offs_b = DA + tl.arange(0, DB)
            b = tl.load(
                ptr + offs_b[None, :], mask=valid[:, None] & (offs_b[None, :] < D), other=0.0
            )
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
        if DA <= D:
            tl.store(ptr + offs_a[None, :], a, mask=valid[:, None])
        else:
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
    def _row_segment(
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
        rc,
        cc,
        cols,
        n_keys,
        W,
        off,
        bias,
        qk_scale,
        D,
        BLOCK_N: tl.constexpr,
        DA: tl.constexpr,
        DB: tl.constexpr,
        HAS_B: tl.constexpr,
        CLASS_MAJOR: tl.constexpr,
        PRECISION: tl.constexpr,
        BWD: tl.constexpr,
    ):
        """A block of queries against the keys of one class of one source frame: online
        softmax into ``acc`` (forward), or ``acc += dS K`` (``BWD``, dQ)."""
        for start in range(0, n_keys, BLOCK_N):
            t = start + tl.arange(0, BLOCK_N)
            valid = t < n_keys
            tok = _class_tokens(t, rc, cc, cols, W, off, CLASS_MAJOR)
            k_a, k_b = _load_rows(k_ptr, tok, stride_kn, valid, D, DA, DB, HAS_B)
            if BWD:
                v_a, v_b = _load_rows(v_ptr, tok, stride_vn, valid, D, DA, DB, HAS_B)
            s = _dot2(q_a, tl.trans(k_a), q_b, tl.trans(k_b), HAS_B, PRECISION)
            s = s * qk_scale + bias
            if BWD:
                p = tl.where(valid[None, :], tl.exp2(s - lse2[:, None]), 0.0)
                dp = _dot2(do_a, tl.trans(v_a), do_b, tl.trans(v_b), HAS_B, PRECISION)
                ds = (p * (dp - delta[:, None])).to(k_a.dtype)
                acc_a += tl.dot(ds, k_a, input_precision=PRECISION)
                if HAS_B:
                    acc_b += tl.dot(ds, k_b, input_precision=PRECISION)
            else:
                s = tl.where(valid[None, :], s, float("-inf"))
                m_new = tl.maximum(m_i, tl.max(s, 1))
                alpha = tl.exp2(m_i - m_new)
                p = tl.exp2(s - m_new[:, None])
                l_i = l_i * alpha + tl.sum(p, 1)
                v_a, v_b = _load_rows(v_ptr, tok, stride_vn, valid, D, DA, DB, HAS_B)
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
        H,
        W,
        qk_scale,
        sm_scale,
        D: tl.constexpr,
        LAYOUT: tl.constexpr,
        CLASS_MAJOR: tl.constexpr,
        PACKED_LO: tl.constexpr,
        PACKED_HI: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        DA: tl.constexpr,
        DB: tl.constexpr,
        HAS_B: tl.constexpr,
        PRECISION: tl.constexpr,
        ALIGN: tl.constexpr,
        BWD: tl.constexpr,
    ):
        """One block of queries of one frame and head against its 2N keys, class by class.

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
        q_a, q_b = _load_rows(q_ptr, offs_m, stride_qn, m_valid, D, DA, DB, HAS_B)
        row = (bf64 * heads + h) * N + offs_m
        if BWD:
            do_ptr = DO + bf64 * stride_dob + h * stride_doh
            do_a, do_b = _load_rows(do_ptr, offs_m, stride_don, m_valid, D, DA, DB, HAS_B)
            lse2 = tl.load(LSE + row, mask=m_valid, other=0.0)
            delta = tl.load(DELTA + row, mask=m_valid, other=0.0)
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
        off = 0
        for c in range(16):
            rc, cc, s, cols, n_c = _class_info(c, H, W, PACKED_LO, PACKED_HI)
            g0 = _source_frame(f, s, 0, LAYOUT)
            g1 = _source_frame(f, s, 1, LAYOUT)
            for j in tl.static_range(2):
                if j == 0:  # a key in both sources is visited here, with weight 2
                    g = g0
                    n_keys = n_c
                    bias = tl.where(g0 == g1, 1.0, 0.0)
                else:
                    g = g1
                    n_keys = tl.where(g0 == g1, 0, n_c)
                    bias = 0.0
                acc_a, acc_b, m_i, l_i = _row_segment(
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
                    k_video + g.to(tl.int64) * stride_kb,
                    v_video + g.to(tl.int64) * stride_vb,
                    stride_kn,
                    stride_vn,
                    rc,
                    cc,
                    cols,
                    n_keys,
                    W,
                    off,
                    bias,
                    qk_scale,
                    D,
                    BLOCK_N,
                    DA,
                    DB,
                    HAS_B,
                    CLASS_MAJOR,
                    PRECISION,
                    BWD,
                )
            off += n_c

        o_ptr = OUT + bf64 * stride_ob + h * stride_oh
        if BWD:
            out_a = (acc_a * sm_scale).to(OUT.dtype.element_ty)
            out_b = (acc_b * sm_scale).to(OUT.dtype.element_ty)
        else:
            out_a = (acc_a / l_i[:, None]).to(OUT.dtype.element_ty)
            out_b = (acc_b / l_i[:, None]).to(OUT.dtype.element_ty)
            tl.store(LSE + row, m_i + tl.log2(l_i), mask=m_valid)
        _store_rows(o_ptr, offs_m, stride_on, m_valid, D, out_a, out_b, DA, DB, HAS_B)

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
        H,
        W,
        qk_scale,
        sm_scale,
        blocks_per_class,
        D: tl.constexpr,
        LAYOUT: tl.constexpr,
        CLASS_MAJOR: tl.constexpr,
        PACKED_LO: tl.constexpr,
        PACKED_HI: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        DA: tl.constexpr,
        DB: tl.constexpr,
        HAS_B: tl.constexpr,
        PRECISION: tl.constexpr,
        ALIGN: tl.constexpr,
    ):
        """dK, dV of one block of keys of one class of frame ``g``: visits every query frame
        that reads them (through either source) and accumulates in a fixed order."""
        stride_qb, stride_qh, stride_qn = _aligned(stride_qb, stride_qh, stride_qn, ALIGN)
        stride_kb, stride_kh, stride_kn = _aligned(stride_kb, stride_kh, stride_kn, ALIGN)
        stride_vb, stride_vh, stride_vn = _aligned(stride_vb, stride_vh, stride_vn, ALIGN)
        stride_dob, stride_doh, stride_don = _aligned(stride_dob, stride_doh, stride_don, ALIGN)
        stride_dkb, stride_dkh, stride_dkn = _aligned(stride_dkb, stride_dkh, stride_dkn, ALIGN)
        stride_dvb, stride_dvh, stride_dvn = _aligned(stride_dvb, stride_dvh, stride_dvn, ALIGN)
        c = tl.program_id(0) // blocks_per_class
        blk = tl.program_id(0) % blocks_per_class
        h = tl.program_id(1)
        bg = tl.program_id(2)
        g = bg % frames
        video = (bg - g).to(tl.int64)
        rc, cc, s, cols, n_c = _class_info(c, H, W, PACKED_LO, PACKED_HI)
        if blk * BLOCK_N < n_c:
            off = 0
            if CLASS_MAJOR:
                for cp in range(c):
                    _, _, _, _, n_cp = _class_info(cp, H, W, PACKED_LO, PACKED_HI)
                    off += n_cp
            t = blk * BLOCK_N + tl.arange(0, BLOCK_N)
            valid = t < n_c
            tok = _class_tokens(t, rc, cc, cols, W, off, CLASS_MAJOR)
            bg64 = bg.to(tl.int64)
            k_a, k_b = _load_rows(
                K + bg64 * stride_kb + h * stride_kh, tok, stride_kn, valid, D, DA, DB, HAS_B
            )
            v_a, v_b = _load_rows(
                V + bg64 * stride_vb + h * stride_vh, tok, stride_vn, valid, D, DA, DB, HAS_B
            )
            dk_a = tl.zeros([BLOCK_N, DA], tl.float32)
            dk_b = tl.zeros([BLOCK_N, DB], tl.float32)
            dv_a = tl.zeros([BLOCK_N, DA], tl.float32)
            dv_b = tl.zeros([BLOCK_N, DB], tl.float32)
            for fq in range(frames):
                g0 = _source_frame(fq, s, 0, LAYOUT)
                g1 = _source_frame(fq, s, 1, LAYOUT)
                dup = g0 == g1
                for j in tl.static_range(2):
                    if j == 0:
                        reads = g0 == g
                        bias = tl.where(dup, 1.0, 0.0)
                    else:
                        reads = (g1 == g) & (g0 != g1)
                        bias = 0.0
                    if reads:
                        qf = video + fq
                        q_ptr = Q + qf * stride_qb + h * stride_qh
                        do_ptr = DO + qf * stride_dob + h * stride_doh
                        row0 = (qf * heads + h) * N
                        for start in range(0, N, BLOCK_M):
                            offs_m = start + tl.arange(0, BLOCK_M)
                            m_valid = offs_m < N
                            q_a, q_b = _load_rows(
                                q_ptr, offs_m, stride_qn, m_valid, D, DA, DB, HAS_B
                            )
                            do_a, do_b = _load_rows(
                                do_ptr, offs_m, stride_don, m_valid, D, DA, DB, HAS_B
                            )
                            lse2 = tl.load(LSE + row0 + offs_m, mask=m_valid, other=0.0)
                            delta = tl.load(DELTA + row0 + offs_m, mask=m_valid, other=0.0)
                            s_t = _dot2(
                                k_a, tl.trans(q_a), k_b, tl.trans(q_b), HAS_B, PRECISION
                            )  # (keys, queries)
                            p_t = tl.exp2(s_t * qk_scale + bias - lse2[None, :])
                            p_t = tl.where(m_valid[None, :], p_t, 0.0)
                            p_lo = p_t.to(do_a.dtype)
                            dv_a += tl.dot(p_lo, do_a, input_precision=PRECISION)
                            if HAS_B:
                                dv_b += tl.dot(p_lo, do_b, input_precision=PRECISION)
                            dp_t = _dot2(v_a, tl.trans(do_a), v_b, tl.trans(do_b), HAS_B, PRECISION)
                            ds_t = (p_t * (dp_t - delta[None, :])).to(q_a.dtype)
                            dk_a += tl.dot(ds_t, q_a, input_precision=PRECISION)
                            if HAS_B:
                                dk_b += tl.dot(ds_t, q_b, input_precision=PRECISION)
            dk_ptr = DK + bg64 * stride_dkb + h * stride_dkh
            dv_ptr = DV + bg64 * stride_dvb + h * stride_dvh
            _store_rows(
                dk_ptr,
                tok,
                stride_dkn,
                valid,
                D,
                (dk_a * sm_scale).to(DK.dtype.element_ty),
                (dk_b * sm_scale).to(DK.dtype.element_ty),
                DA,
                DB,
                HAS_B,
            )
            _store_rows(
                dv_ptr,
                tok,
                stride_dvn,
                valid,
                D,
                dv_a.to(DV.dtype.element_ty),
                dv_b.to(DV.dtype.element_ty),
                DA,
                DB,
                HAS_B,
            )


# --------------------------------------------------------------------------- launchers


def _common(q, frames, height, width, layout, class_major):
    n, d = q.shape[2], q.shape[3]
    da, db = head_dim_chunks(d)
    consts = dict(
        LAYOUT=LAYOUT_CODES[layout],
        CLASS_MAJOR=bool(class_major),
        PACKED_LO=SHIFT_PACKED[0],
        PACKED_HI=SHIFT_PACKED[1],
        DA=da,
        DB=max(db, 16),
        HAS_B=db > 0,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
    )
    return n, d, consts


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


def _launch_rows(q, k, v, do, out, lse2, delta, frames, height, width, scale, consts, bwd):
    """The query-side kernel: the forward (``bwd=False``) or dQ (``out`` is dQ)."""
    bf, heads, n, d = q.shape
    cfg = lsa_config("bwd_dq" if bwd else "fwd", d, n, _capability(q), q.element_size())
    a = _alignment(q, k, v, do, out)
    _lsa_rows_kernel[(triton.cdiv(n, cfg.block_m), heads, bf)](
        q,
        k,
        v,
        do,
        out,
        lse2,
        delta,
        *_strides(q, a),
        *_strides(k, a),
        *_strides(v, a),
        *_strides(do, a),
        *_strides(out, a),
        heads,
        frames,
        n,
        height,
        width,
        scale * math.log2(math.e),
        scale,
        D=d,
        ALIGN=a,
        BLOCK_M=cfg.block_m,
        BLOCK_N=cfg.block_n,
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
        BWD=bwd,
        **consts,
    )


def lsa_forward(q, k, v, frames, height, width, layout, scale, class_major):
    """Launch the forward kernel. Returns ``out`` (like q) and ``lse2`` (B*F, heads, N) fp32
    (base-2 log-sum-exp of the scaled logits, duplicated keys counted twice)."""
    _check_launchable(q=q, k=k, v=v)
    bf, heads = q.shape[:2]
    n, d, consts = _common(q, frames, height, width, layout, class_major)
    out = _new_like(q)
    lse2 = _new_like(q, (bf, heads, n), torch.float32)
    # DO and DELTA are not read by the forward: q and lse2 stand in for them.
    _launch_rows(q, k, v, q, out, lse2, lse2, frames, height, width, scale, consts, bwd=False)
    return out, lse2


def lsa_backward(grad_out, q, k, v, out, lse2, frames, height, width, layout, scale, class_major):
    """Launch the two backward kernels. Returns dq, dk, dv (each shaped and strided like q)."""
    _check_launchable(grad_out=grad_out, q=q, k=k, v=v)
    bf, heads = q.shape[:2]
    n, d, consts = _common(q, frames, height, width, layout, class_major)
    cfg = lsa_config("bwd_dkdv", d, n, _capability(q), q.element_size())
    delta = (out.float() * grad_out.float()).sum(-1).contiguous()  # (B*F, heads, N)
    dq, dk, dv = _new_like(q), _new_like(k), _new_like(v)
    _launch_rows(q, k, v, grad_out, dq, lse2, delta, frames, height, width, scale, consts, True)
    qk_scale = scale * math.log2(math.e)
    a = _alignment(q, k, v, grad_out, dq, dk, dv)
    largest_class = -(-height // 4) * -(-width // 4)
    blocks_per_class = triton.cdiv(largest_class, cfg.block_n)
    _lsa_bwd_dkdv_kernel[(16 * blocks_per_class, heads, bf)](
        q,
        k,
        v,
        grad_out,
        dk,
        dv,
        lse2,
        delta,
        *_strides(q, a),
        *_strides(k, a),
        *_strides(v, a),
        *_strides(grad_out, a),
        *_strides(dk, a),
        *_strides(dv, a),
        heads,
        frames,
        n,
        height,
        width,
        qk_scale,
        scale,
        blocks_per_class,
        D=d,
        ALIGN=a,
        BLOCK_M=cfg.block_m,
        BLOCK_N=cfg.block_n,
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
        **consts,
    )
    return dq, dk, dv


# --------------------------------------------------------------------------- torch.library


def _to_raster(t, height, width):
    """(..., N, D) tokens in class-major order -> raster order."""
    return t.index_select(-2, reference.class_major_inverse(height, width, t.device))


def _to_class_major(t, height, width):
    return t.index_select(-2, reference.class_major_order(height, width, t.device))


def _gather_index(frames, height, width, layout, n, device):
    src = reference.key_source_frames(frames, height, width, layout, device=device)  # (F, 2, N)
    return (src * n + torch.arange(n, device=device)).reshape(-1)  # into (F*N) tokens


def _per_video(t, frames):
    """(B*F, heads, N, D) -> (B, heads, F*N, D)"""
    bf, heads, n, d = t.shape
    return (
        t.reshape(bf // frames, frames, heads, n, d)
        .transpose(1, 2)
        .reshape(-1, heads, frames * n, d)
    )


def _per_frame(t, frames, n):
    """(B, heads, F*X, D) -> (B*F, heads, X, D)"""
    b, heads, _, d = t.shape
    return t.reshape(b, heads, frames, -1, d).transpose(1, 2).reshape(b * frames, heads, -1, d)


def _reference_pieces(q, k, v, frames, height, width, layout, scale):
    """fp32 attention over the materialised 2N keys: (probabilities, keys, values, index)."""
    n = q.shape[2]
    index = _gather_index(frames, height, width, layout, n, q.device)
    kk = _per_frame(_per_video(k.float(), frames).index_select(2, index), frames, n)
    vv = _per_frame(_per_video(v.float(), frames).index_select(2, index), frames, n)
    logits = torch.matmul(q.float(), kk.transpose(-1, -2)) * scale
    return logits, kk, vv, index


def reference_forward(q, k, v, frames, height, width, layout, scale, class_major):
    """The op's semantics in PyTorch: (out, lse2), lse2 the base-2 log-sum-exp per query."""
    if class_major:
        q, k, v = (_to_raster(t, height, width) for t in (q, k, v))
    logits, _, vv, _ = _reference_pieces(q, k, v, frames, height, width, layout, scale)
    lse = torch.logsumexp(logits, -1)
    out = torch.matmul(torch.exp(logits - lse[..., None]), vv).to(q.dtype)
    if class_major:
        out = _to_class_major(out, height, width)
    return out, lse * math.log2(math.e)


def reference_backward(grad_out, q, k, v, frames, height, width, layout, scale, class_major):
    """dq, dk, dv of ``reference_forward`` written out (no autograd: it runs as a kernel).

    dV_cat = P^T dO, dS = P (dO V_cat^T - delta), dQ = scale dS K_cat, dK_cat = scale dS^T Q;
    the gradients of the gathered keys are scattered back onto the frames they came from.
    """
    if class_major:
        grad_out, q, k, v = (_to_raster(t, height, width) for t in (grad_out, q, k, v))
    n = q.shape[2]
    logits, kk, vv, index = _reference_pieces(q, k, v, frames, height, width, layout, scale)
    p = torch.softmax(logits, -1)
    do = grad_out.float()
    dp = torch.matmul(do, vv.transpose(-1, -2))
    ds = p * (dp - (dp * p).sum(-1, keepdim=True))
    dq = torch.matmul(ds, kk) * scale

    def scatter(g_cat, like):
        flat = torch.zeros_like(_per_video(like.float(), frames))
        flat.index_add_(2, index, _per_video(g_cat, frames))
        return _per_frame(flat, frames, n).to(like.dtype)

    dk = scatter(torch.matmul(ds.transpose(-1, -2), q.float()) * scale, k)
    dv = scatter(torch.matmul(p.transpose(-1, -2), do), v)
    grads = (dq.to(q.dtype), dk, dv)
    if class_major:
        grads = tuple(_to_class_major(t, height, width) for t in grads)
    return grads


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
        class_major: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with _device_of(q):
            return lsa_forward(q, k, v, frames, height, width, layout, scale, class_major)

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
        class_major: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with _device_of(q):
            return lsa_backward(
                grad_out, q, k, v, out, lse2, frames, height, width, layout, scale, class_major
            )

    if not INTERPRET:  # under the interpreter, CPU tensors run the Triton kernels themselves
        # Results in tensors laid out like the inputs, as the Triton launchers and the fake
        # kernels give them (the model's q, k, v are transposed views).
        def _like(template, value):
            return torch.empty_like(template).copy_(value)

        @lsa_op.register_kernel("cpu")
        def _lsa_cpu(q, k, v, frames, height, width, layout, scale, class_major):
            out, lse2 = reference_forward(
                q, k, v, frames, height, width, layout, scale, class_major
            )
            return _like(q, out), lse2.contiguous()

        @lsa_backward_op.register_kernel("cpu")
        def _lsa_backward_cpu(
            grad_out, q, k, v, out, lse2, frames, height, width, layout, scale, class_major
        ):
            grads = reference_backward(
                grad_out, q, k, v, frames, height, width, layout, scale, class_major
            )
            return tuple(_like(t, g) for t, g in zip((q, k, v), grads, strict=True))

    @lsa_op.register_fake
    def _lsa_fake(q, k, v, frames, height, width, layout, scale, class_major):
        return torch.empty_like(q), q.new_empty(q.shape[:3], dtype=torch.float32)

    @lsa_backward_op.register_fake
    def _lsa_backward_fake(
        grad_out, q, k, v, out, lse2, frames, height, width, layout, scale, class_major
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
