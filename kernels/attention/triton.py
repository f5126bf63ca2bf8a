"""FlashAttention-2 in Triton, forward and backward, with key padding and an optional causal mask.

Dao, "FlashAttention-2: Faster Attention with Better Parallelism and Work Partitioning", 2023.
Same inputs and result as `lra.kernels.attention.reference.attention_reference`: q, k, v
(B, heads, L, d), the first n_b keys of row b are real (and with causal=True query i sees keys
j <= i).

Forward, one program per (query block, batch x head). Scores go to base 2,
s = q . k log2(e) / sqrt(d), and the key blocks j of the row update a running max m, sum l and
output acc per query:

    m' = max(m, rowmax(s_j)),   l' = 2^(m - m') l + rowsum(2^(s_j - m')),
    acc' = 2^(m - m') acc + 2^(s_j - m') v_j

then o = acc / l, and lse = m + log2(l) is saved per query. The key loop stops after
ceil(n_b / BLOCK_N) blocks (with causal=True also at the query block's diagonal); only that last
block and the diagonal blocks pay for masks. A row with n_b = 0 visits no block and gets zeros.

Backward, with P_ij = 2^(s_ij - lse_i) recomputed block by block and nothing of size L x L stored:

    D_i = rowsum(dO_i * O_i)                                 (_delta)
    dS_ij = P_ij (dO_i . v_j - D_i)
    dv_j = sum_i P_ij dO_i,   dk_j = sum_i dS_ij q_i / sqrt(d)
                                 (_dkdv: a program per key block, over query blocks)
    dq_i = sum_j dS_ij k_j / sqrt(d)
                                 (_dq: a program per query block, over key blocks)

Queries past n_b are padding: their outputs are zeros and lse = +inf, so the backward gives them
P = 0; query blocks wholly past n_b visit no key, and key blocks go over query blocks up to n_b
only. Key blocks past n_b visit no query and write zero dk, dv; the padded keys of a row's last
block write zeros too.
Dropout multiplies the weights that meet v by Z_ij = keep_ij / (1 - p), keep_ij drawn by Philox
from (seed, batch x head, i, j); l and lse stay undropped, so o_i = sum_j P_ij Z_ij v_j, and the
backward regenerates Z: dv_j = sum_i P_ij Z_ij dO_i, dS_ij = P_ij (Z_ij dO_i . v_j - D_i), where
D_i = dO_i . o_i still holds.
Softmax statistics and accumulators are fp32; tl.dot takes the input dtype (float16, bfloat16,
float32; float32 dots in TF32 or IEEE as torch's matmul setting says, chosen once per call).

    import torch
    from lra.kernels.attention.triton import attention_triton
    q, k, v = torch.randn(3, 2, 8, 1024, 64, device="cuda", dtype=torch.bfloat16).unbind(0)
    o = attention_triton(q, k, v, lengths=torch.tensor([1024, 700], device="cuda"), causal=False)
"""
import math

import torch
import triton
import triton.language as tl

from lra.kernels.dispatch import fp32_dot_precision, interpreting, is_hip

DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 128


@triton.jit
def _load_tile(ptr, rows, cols, stride, n_rows, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
               CHECK_ROWS: tl.constexpr):
    """The (rows, cols) tile of a (n_rows, HEAD_DIM) matrix with row stride `stride`, 0 outside."""
    ptrs = ptr + rows[:, None] * stride + cols[None, :]
    if CHECK_ROWS:
        if HEAD_DIM == BLOCK_D:
            tile = tl.load(ptrs, mask=rows[:, None] < n_rows, other=0.0)
        else:
            tile = tl.load(ptrs, mask=(rows[:, None] < n_rows) & (cols[None, :] < HEAD_DIM),
                           other=0.0)
    else:
        if HEAD_DIM == BLOCK_D:
            tile = tl.load(ptrs)
        else:
            tile = tl.load(ptrs, mask=cols[None, :] < HEAD_DIM, other=0.0)
    return tile


@triton.jit
def _store_tile(ptr, tile, rows, cols, n_rows, HEAD_DIM: tl.constexpr):
    """Store a tile into the contiguous (n_rows, HEAD_DIM) matrix at ptr, in ptr's dtype."""
    mask = (rows[:, None] < n_rows) & (cols[None, :] < HEAD_DIM)
    tl.store(ptr + rows[:, None] * HEAD_DIM + cols[None, :], tile.to(ptr.dtype.element_ty),
             mask=mask)


@triton.jit
def _dropout_scale(seed, bh, rows, keys, L, dropout_p):
    """keep / (1 - p) for the weights (rows, keys) of batch-head bh: Philox of (seed, counter),
    counter = (bh L + row) L + key in int64, so the backward regenerates the forward's mask."""
    counter = (bh * L + rows.to(tl.int64)) * L + keys.to(tl.int64)
    keep = tl.rand(seed, counter) >= dropout_p
    return tl.where(keep, 1.0 / (1.0 - dropout_p), 0.0)


@triton.jit(do_not_specialize=["seed"])  # a new seed each step: one compile
def _keep_mask(KEEP, seed, dropout_p, L, BLOCK: tl.constexpr):
    """KEEP (B*H, L, L) int8: 1 where the kernels keep weight (row, key), 0 where they drop it."""
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    keys = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    bh = tl.program_id(2).to(tl.int64)
    scale = _dropout_scale(seed, bh, rows[:, None], keys[None, :], L, dropout_p)
    inside = (rows[:, None] < L) & (keys[None, :] < L)
    tl.store(KEEP + (bh * L + rows[:, None]) * L + keys[None, :], (scale > 0).to(tl.int8),
             mask=inside)


@triton.jit
def _fwd_blocks(q, m, l, acc, K, V, skl, svl, rows, cols, lo, hi, n, qk_scale, bh, L, seed,
                dropout_p, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
                MASKED: tl.constexpr, CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
                DROPOUT: tl.constexpr):
    """The online-softmax update over key blocks [lo, hi).

    MASKED hides keys >= n (and, causal, keys > query); DROPOUT scales the weights that multiply v
    by keep / (1 - p), leaving l whole.
    """
    for start_n in range(lo, hi, BLOCK_N):
        keys = start_n + tl.arange(0, BLOCK_N)
        k = _load_tile(K, keys, cols, skl, n, HEAD_DIM, BLOCK_D, MASKED)  # (BLOCK_N, BLOCK_D)
        # (BLOCK_M, BLOCK_N), base 2
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        if MASKED:
            allowed = keys[None, :] < n
            if CAUSAL:
                allowed = allowed & (keys[None, :] <= rows[:, None])
            s = tl.where(allowed, s, float("-inf"))
        # the first block holds key 0, which every query of a row with n >= 1 sees: m is finite
        # from there on
        m_new = tl.maximum(m, tl.max(s, 1))
        alpha = tl.exp2(m - m_new)  # (BLOCK_M,)
        p = tl.exp2(s - m_new[:, None])
        l = l * alpha + tl.sum(p, 1)
        v = _load_tile(V, keys, cols, svl, n, HEAD_DIM, BLOCK_D, MASKED)
        if DROPOUT:
            p = p * _dropout_scale(seed, bh, rows[:, None], keys[None, :], L, dropout_p)
        # (BLOCK_M, BLOCK_D)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m = m_new
    return m, l, acc


@triton.jit
def _key_range(start_m, n, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr):
    """A query block's key loop: [0, full) are key blocks every query in it sees whole, [full, end)
    the rest up to the row's length n (causal: and the block's diagonal); nothing for a block of
    padding queries."""
    full = tl.where(start_m < n, n // BLOCK_N * BLOCK_N, 0)
    end = tl.where(start_m < n, n, 0)
    if CAUSAL:
        full = tl.minimum(full, (start_m + 1) // BLOCK_N * BLOCK_N)
        end = tl.minimum(end, start_m + BLOCK_M)
    return full, end


@triton.jit(do_not_specialize=["seed"])  # a new seed each step: one compile
def _fwd(Q, K, V, O, LSE, LENGTHS, sqb, sqh, sql, skb, skh, skl, svb, svh, svl, H, L, qk_scale,
         seed, dropout_p, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
         BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
         DROPOUT: tl.constexpr):
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // H, bh % H
    n = tl.load(LENGTHS + b)
    rows = start_m + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_D)
    K += b * skb + h * skh
    V += b * svb + h * svh
    # (BLOCK_M, BLOCK_D)
    q = _load_tile(Q + b * sqb + h * sqh, rows, cols, sql, L, HEAD_DIM, BLOCK_D, True)
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    full, end = _key_range(start_m, n, BLOCK_M, BLOCK_N, CAUSAL)
    m, l, acc = _fwd_blocks(q, m, l, acc, K, V, skl, svl, rows, cols, 0, full, n, qk_scale, bh,
                            L, seed, dropout_p, HEAD_DIM, BLOCK_D, BLOCK_N, False, CAUSAL,
                            PRECISION, DROPOUT)
    m, l, acc = _fwd_blocks(q, m, l, acc, K, V, skl, svl, rows, cols, full, end, n, qk_scale, bh,
                            L, seed, dropout_p, HEAD_DIM, BLOCK_D, BLOCK_N, True, CAUSAL,
                            PRECISION, DROPOUT)
    has_key = (l > 0) & (rows < n)  # False for padding queries and when n = 0
    l = tl.where(has_key, l, 1.0)
    o = tl.where(has_key[:, None], acc / l[:, None], 0.0)
    lse = tl.where(has_key, m + tl.log2(l), float("inf"))  # +inf makes P = 0 in the backward
    _store_tile(O + bh * L * HEAD_DIM, o, rows, cols, L, HEAD_DIM)
    tl.store(LSE + bh * L + rows, lse, mask=rows < L)


@triton.jit
def _delta(O, DO, DELTA, sdob, sdoh, sdol, H, L,
           HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // H, bh % H
    cols = tl.arange(0, BLOCK_D)
    o = _load_tile(O + bh * L * HEAD_DIM, rows, cols, HEAD_DIM, L, HEAD_DIM, BLOCK_D, True)
    do = _load_tile(DO + b * sdob + h * sdoh, rows, cols, sdol, L, HEAD_DIM, BLOCK_D, True)
    o, do = o.to(tl.float32), do.to(tl.float32)
    tl.store(DELTA + bh * L + rows, tl.sum(o * do, 1), mask=rows < L)


@triton.jit
def _dkdv_blocks(dk, dv, k, v, Q, DO, LSE, DELTA, sql, sdol, keys, cols, lo, hi, L, qk_scale,
                 bh, seed, dropout_p, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                 BLOCK_M: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr,
                 PRECISION: tl.constexpr, DROPOUT: tl.constexpr):
    """Add query blocks [lo, hi) to one key block's dk, dv.

    MASKED checks query rows < L (and, causal, j <= i). With dropout Z = keep / (1 - p):
    dv_j = sum_i P_ij Z_ij dO_i and dS_ij = P_ij (Z_ij dO_i . v_j - D_i).
    """
    for start_m in range(lo, hi, BLOCK_M):
        rows = start_m + tl.arange(0, BLOCK_M)
        q = _load_tile(Q, rows, cols, sql, L, HEAD_DIM, BLOCK_D, MASKED)  # (BLOCK_M, BLOCK_D)
        do = _load_tile(DO, rows, cols, sdol, L, HEAD_DIM, BLOCK_D, MASKED)
        if MASKED:  # lse = +inf gives P = 0 on rows past L
            lse = tl.load(LSE + rows, mask=rows < L, other=float("inf"))
            delta = tl.load(DELTA + rows, mask=rows < L, other=0.0)
        else:
            lse = tl.load(LSE + rows)
            delta = tl.load(DELTA + rows)
        # (BLOCK_N, BLOCK_M)
        p_t = tl.exp2(tl.dot(k, tl.trans(q), input_precision=PRECISION) * qk_scale - lse[None, :])
        if MASKED:
            if CAUSAL:
                p_t = tl.where(keys[:, None] <= rows[None, :], p_t, 0.0)
        dp_t = tl.dot(v, tl.trans(do), input_precision=PRECISION)  # (BLOCK_N, BLOCK_M)
        if DROPOUT:
            z_t = _dropout_scale(seed, bh, rows[None, :], keys[:, None], L, dropout_p)
            dv += tl.dot((p_t * z_t).to(do.dtype), do, input_precision=PRECISION)
            dp_t = dp_t * z_t
        else:
            dv += tl.dot(p_t.to(do.dtype), do, input_precision=PRECISION)  # (BLOCK_N, BLOCK_D)
        ds_t = p_t * (dp_t - delta[None, :])
        dk += tl.dot(ds_t.to(q.dtype), q, input_precision=PRECISION)
    return dk, dv


@triton.jit(do_not_specialize=["seed"])  # a new seed each step: one compile
def _dkdv(Q, K, V, DO, DK, DV, LSE, DELTA, LENGTHS, sqb, sqh, sql, skb, skh, skl, svb, svh, svl,
          sdob, sdoh, sdol, H, L, qk_scale, sm_scale, seed, dropout_p, HEAD_DIM: tl.constexpr,
          BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
          CAUSAL: tl.constexpr, PRECISION: tl.constexpr, DROPOUT: tl.constexpr):
    start_n = tl.program_id(0) * BLOCK_N
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // H, bh % H
    n = tl.load(LENGTHS + b)
    keys = start_n + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_D)
    # (BLOCK_N, BLOCK_D)
    k = _load_tile(K + b * skb + h * skh, keys, cols, skl, n, HEAD_DIM, BLOCK_D, True)
    v = _load_tile(V + b * svb + h * svh, keys, cols, svl, n, HEAD_DIM, BLOCK_D, True)
    Q += b * sqb + h * sqh
    DO += b * sdob + h * sdoh
    LSE += bh * L
    DELTA += bh * L
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    # query blocks: [lo, mid) cross the diagonal (causal), [mid, l_full) are whole, [.., last)
    # holds row n - 1
    # a block of padding keys visits no query, padding queries give P = 0
    last = tl.where(start_n < n, n, 0)
    lo = 0
    mid = 0
    if CAUSAL:
        lo = (start_n // BLOCK_M) * BLOCK_M
        mid = tl.cdiv(start_n + BLOCK_N - 1, BLOCK_M) * BLOCK_M
    l_full = (last // BLOCK_M) * BLOCK_M
    dk, dv = _dkdv_blocks(dk, dv, k, v, Q, DO, LSE, DELTA, sql, sdol, keys, cols, lo,
                          tl.minimum(mid, last), L, qk_scale, bh, seed, dropout_p, HEAD_DIM,
                          BLOCK_D, BLOCK_M, True, CAUSAL, PRECISION, DROPOUT)
    dk, dv = _dkdv_blocks(dk, dv, k, v, Q, DO, LSE, DELTA, sql, sdol, keys, cols, mid, l_full, L,
                          qk_scale, bh, seed, dropout_p, HEAD_DIM, BLOCK_D, BLOCK_M, False,
                          CAUSAL, PRECISION, DROPOUT)
    dk, dv = _dkdv_blocks(dk, dv, k, v, Q, DO, LSE, DELTA, sql, sdol, keys, cols,
                          tl.maximum(mid, l_full), last, L, qk_scale, bh, seed, dropout_p,
                          HEAD_DIM, BLOCK_D, BLOCK_M, True, CAUSAL, PRECISION, DROPOUT)
    real = keys[:, None] < n  # the padded keys of the last block computed garbage rows: write zeros
    _store_tile(DK + bh * L * HEAD_DIM, tl.where(real, dk * sm_scale, 0.0), keys, cols, L, HEAD_DIM)
    _store_tile(DV + bh * L * HEAD_DIM, tl.where(real, dv, 0.0), keys, cols, L, HEAD_DIM)


@triton.jit
def _dq_blocks(dq, q, do, lse, delta, K, V, skl, svl, rows, cols, lo, hi, n, qk_scale, bh, L,
               seed, dropout_p, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
               BLOCK_N: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr,
               PRECISION: tl.constexpr, DROPOUT: tl.constexpr):
    """Add key blocks [lo, hi) to one query block's dq.

    MASKED hides keys >= n (and, causal, keys > query).
    """
    for start_n in range(lo, hi, BLOCK_N):
        keys = start_n + tl.arange(0, BLOCK_N)
        k = _load_tile(K, keys, cols, skl, n, HEAD_DIM, BLOCK_D, MASKED)  # (BLOCK_N, BLOCK_D)
        v = _load_tile(V, keys, cols, svl, n, HEAD_DIM, BLOCK_D, MASKED)
        # (BLOCK_M, BLOCK_N)
        p = tl.exp2(tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale - lse[:, None])
        if MASKED:
            allowed = keys[None, :] < n
            if CAUSAL:
                allowed = allowed & (keys[None, :] <= rows[:, None])
            p = tl.where(allowed, p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        if DROPOUT:
            dp = dp * _dropout_scale(seed, bh, rows[:, None], keys[None, :], L, dropout_p)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)  # (BLOCK_M, BLOCK_D)
    return dq


@triton.jit(do_not_specialize=["seed"])  # a new seed each step: one compile
def _dq(Q, K, V, DO, DQ, LSE, DELTA, LENGTHS, sqb, sqh, sql, skb, skh, skl, svb, svh, svl,
        sdob, sdoh, sdol, H, L, qk_scale, sm_scale, seed, dropout_p,
        HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        CAUSAL: tl.constexpr, PRECISION: tl.constexpr, DROPOUT: tl.constexpr):
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // H, bh % H
    n = tl.load(LENGTHS + b)
    rows = start_m + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_D)
    K += b * skb + h * skh
    V += b * svb + h * svh
    # (BLOCK_M, BLOCK_D)
    q = _load_tile(Q + b * sqb + h * sqh, rows, cols, sql, L, HEAD_DIM, BLOCK_D, True)
    do = _load_tile(DO + b * sdob + h * sdoh, rows, cols, sdol, L, HEAD_DIM, BLOCK_D, True)
    lse = tl.load(LSE + bh * L + rows, mask=rows < L, other=float("inf"))
    delta = tl.load(DELTA + bh * L + rows, mask=rows < L, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    # the same key blocks as the forward
    full, end = _key_range(start_m, n, BLOCK_M, BLOCK_N, CAUSAL)
    dq = _dq_blocks(dq, q, do, lse, delta, K, V, skl, svl, rows, cols, 0, full, n, qk_scale, bh,
                    L, seed, dropout_p, HEAD_DIM, BLOCK_D, BLOCK_N, False, CAUSAL, PRECISION,
                    DROPOUT)
    dq = _dq_blocks(dq, q, do, lse, delta, K, V, skl, svl, rows, cols, full, end, n, qk_scale, bh,
                    L, seed, dropout_p, HEAD_DIM, BLOCK_D, BLOCK_N, True, CAUSAL, PRECISION,
                    DROPOUT)
    _store_tile(DQ + bh * L * HEAD_DIM, dq * sm_scale, rows, cols, L, HEAD_DIM)


def _configs(d, dtype, dropout=False):
    """Tile sizes and launch options of the forward, dk/dv and dq kernels for head dim d, dtype.

    Under the interpreter: small tiles, with BLOCK_M != BLOCK_N so the tests cover uneven ones. On a
    GPU: the largest tiles that compile for sm_90 without spilling registers (the compile check,
    `make kernels-check`).
    """
    if interpreting():
        return {"fwd": dict(BLOCK_M=32, BLOCK_N=16), "dkdv": dict(BLOCK_M=16, BLOCK_N=32),
                "dq": dict(BLOCK_M=32, BLOCK_N=16)}
    # IEEE dots run on the FMA units and hold more per thread: smaller tiles
    if dtype == torch.float32:
        if d > 64:
            tile = dict(BLOCK_M=16, BLOCK_N=16, num_warps=4, num_stages=1)
            return {"fwd": tile, "dkdv": tile, "dq": tile}
        return {"fwd": dict(BLOCK_M=32, BLOCK_N=32, num_warps=4, num_stages=2),
                "dkdv": dict(BLOCK_M=16, BLOCK_N=32, num_warps=4, num_stages=2),
                "dq": dict(BLOCK_M=32, BLOCK_N=16, num_warps=4, num_stages=2)}
    # Philox for dropout holds more per thread: 8 warps share the forward and dq tiles then
    warps = 8 if d > 64 or dropout else 4
    return {"fwd": dict(BLOCK_M=128, BLOCK_N=64 if d <= 64 or not dropout else 32,
                        num_warps=warps, num_stages=3),
            "dkdv": dict(BLOCK_M=32, BLOCK_N=128 if d <= 64 else 64, num_warps=8, num_stages=3),
            "dq": dict(BLOCK_M=128 if d <= 64 else 64, BLOCK_N=32, num_warps=warps, num_stages=3)}


def _launch_options(q):
    """Constexprs every kernel shares: the padded head dim and the dot precision (chosen here, once
    per call, and saved for the backward)."""
    d = q.shape[-1]
    precision = fp32_dot_precision() if q.dtype == torch.float32 else (
        "ieee" if is_hip() else "tf32")
    return dict(HEAD_DIM=d, BLOCK_D=max(16, triton.next_power_of_2(d)), PRECISION=precision)


def _rows(t):
    """Batch, head and position strides of a (B, h, L, d) tensor."""
    return t.stride(0), t.stride(1), t.stride(2)


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, n, causal, dropout_p, seed):
        B, H, L, d = q.shape
        cfg, opts = _configs(d, q.dtype, dropout_p > 0), _launch_options(q)
        sm_scale = 1 / math.sqrt(d)
        o = torch.empty(B, H, L, d, device=q.device, dtype=q.dtype)
        # base-2 log-sum-exp per query
        lse = torch.empty(B * H, L, device=q.device, dtype=torch.float32)
        grid = (triton.cdiv(L, cfg["fwd"]["BLOCK_M"]), B * H)
        _fwd[grid](q, k, v, o, lse, n, *_rows(q), *_rows(k), *_rows(v), H, L,
                   sm_scale * math.log2(math.e), seed, dropout_p, CAUSAL=causal,
                   DROPOUT=dropout_p > 0, **opts, **cfg["fwd"])
        ctx.save_for_backward(q, k, v, o, lse, n)
        ctx.causal, ctx.dropout_p, ctx.seed, ctx.opts = causal, dropout_p, seed, opts
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, n = ctx.saved_tensors
        B, H, L, d = q.shape
        cfg, opts = _configs(d, q.dtype, ctx.dropout_p > 0), ctx.opts
        sm_scale = 1 / math.sqrt(d)
        if do.stride(-1) != 1:
            do = do.contiguous()
        delta = torch.empty_like(lse)  # rowsum(dO * O) per query
        _delta[(triton.cdiv(L, 64), B * H)](o, do, delta, *_rows(do), H, L, HEAD_DIM=d,
                                            BLOCK_D=opts["BLOCK_D"], BLOCK_M=64)
        dq, dk, dv = (torch.empty(B, H, L, d, device=q.device, dtype=q.dtype) for _ in range(3))
        args = (*_rows(q), *_rows(k), *_rows(v), *_rows(do), H, L, sm_scale * math.log2(math.e),
                sm_scale, ctx.seed, ctx.dropout_p)
        flags = dict(CAUSAL=ctx.causal, DROPOUT=ctx.dropout_p > 0, **opts)
        grid = (triton.cdiv(L, cfg["dkdv"]["BLOCK_N"]), B * H)
        _dkdv[grid](q, k, v, do, dk, dv, lse, delta, n, *args, **flags, **cfg["dkdv"])
        grid = (triton.cdiv(L, cfg["dq"]["BLOCK_M"]), B * H)
        _dq[grid](q, k, v, do, dq, lse, delta, n, *args, **flags, **cfg["dq"])
        return dq, dk, dv, None, None, None, None


def draw_seed():
    """A dropout seed from torch's default generator, so torch.manual_seed reproduces it."""
    return int(torch.randint(2**31 - 1, ()).item())


def dropout_keep_mask(seed, B, H, L, dropout_p, device):
    """(B, H, L, L) bool: True where the kernels keep attention weight (query, key) for `seed`.

    The same Philox stream the forward and backward kernels draw; for tests and for the probe.
    """
    keep = torch.empty(B * H, L, L, device=device, dtype=torch.int8)
    block = 32
    grid = (triton.cdiv(L, block), triton.cdiv(L, block), B * H)
    _keep_mask[grid](keep, seed, float(dropout_p), L, BLOCK=block)
    return keep.view(B, H, L, L).bool()


def attention_triton(q, k, v, lengths=None, causal=False, dropout_p=0.0, seed=None):
    """Softmax attention over each row's first `lengths` keys by the Triton kernels.

    q, k, v: (B, heads, L, d) -> o of the same shape. lengths: (B,) real keys per row (padding at
    the end) or None for all L. dropout_p drops each weight with probability p and scales the rest
    by 1 / (1 - p), from a Philox stream keyed on (seed, batch x head, query, key) that the
    backward regenerates (no mask is stored); seed None draws one from torch's generator.
    """
    if not (q.dim() == 4 and q.shape == k.shape == v.shape):
        raise ValueError(f"q, k, v must share one (B, heads, L, d) shape, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if not q.dtype == k.dtype == v.dtype or q.dtype not in DTYPES:
        raise ValueError(f"the Triton attention kernel takes float16, bfloat16 or float32 q, k, v "
                         f"of one dtype, got {q.dtype}, {k.dtype}, {v.dtype}; set "
                         "LRA_KERNELS=reference for other dtypes")
    if q.shape[-1] > MAX_HEAD_DIM:
        raise ValueError(f"the Triton attention kernel takes head dims up to {MAX_HEAD_DIM}, "
                         f"got {q.shape[-1]}; use more heads or set LRA_KERNELS=reference")
    if not 0 <= dropout_p < 1:
        raise ValueError(f"dropout_p={dropout_p} must lie in [0, 1)")
    B, _, L, _ = q.shape
    n = torch.full((B,), L, device=q.device) if lengths is None else torch.as_tensor(lengths)
    n = n.to(device=q.device, dtype=torch.int32).clamp(0, L)  # (B,) real keys per row
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    seed = (draw_seed() if seed is None else int(seed)) if dropout_p > 0 else 0
    return _FlashAttention.apply(q, k, v, n, causal, float(dropout_p), seed)
