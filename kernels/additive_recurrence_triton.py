"""Triton kernels for LightNet's additive linear recurrence: causal and non-causal, forward and backward.

The equations of lra.kernels.additive_recurrence (Qin et al. 2024, arXiv:2405.21022), per head, with
z_t = logcumsumexp(k)_t per key channel and an optional gain g (1 without one):

    causal:      o_t = sum_j q_tj sum_{s<=t} exp(k_sj - z_tj) g_sj v_s
    non-causal:  o_t = q_t^T S,    S = sum_s softmax_s(k)_s g_s v_s^T      (softmax over the real positions)

Causal, chunked like gated linear attention, with z = logcumsumexp(k) from torch. The state
S_e = sum_{s<=e} exp(k_s - z_e) g_s v_s^T (d_k x d_v) is normalised at the step e it was taken, so
every factor that carries it forward, exp(z_e - z_e') and exp(k_s - z_e'), is at most 1:
  1. _causal_states walks the chunks of C steps once per (key block, value block), writing S before
     each chunk: S <- exp(z_prev - z_last) S + sum_s exp(k_s - z_last) g_s v_s^T;
  2. _causal_out computes every chunk at once: q_t exp(z_prev - z_t) S_prev, plus the (C, C) scores
     inside the chunk, (q_t exp(ref - z_t)) . (exp(k_s - ref) g_s) for s <= t, summed over key blocks
     in one tl.dot each, with ref = (z_first + z_last) / 2 so each factor is at most exp(R / 2), R the
     rise of z in the chunk. A key block whose rise passes RISE (where exp(R / 2) leaves float32's
     accurate range) takes the scores one key step at a time instead: exact for keys of any size.
Every program but the walks' has one chunk, so a sequence gives L / C times the parallel work of
one walk; the states (B H L/C d_k d_v floats) are kept for the backward.
Backward, the same way: dq per chunk from S_prev and the scores; a reverse walk writes, after each
chunk, D_e = sum_{t>e} q_t exp(z_e - z_t) do_t^T and C_e = sum_{t>e} exp(z_e - z_t) q_t dq_t; then
per chunk dv, dg and, per key channel,

    dk_u = g_u dg_u - exp(k_u - z_u) c_u,      c_u = sum_{t>=u} exp(z_u - z_t) q_t dq_t.

Non-causal, one program per (batch x head x split of the sequence, block of key channels, block of
value channels): each key channel's softmax is its own, so keys split like values. _noncausal_stats
keeps a split's masked online-softmax statistics (max, sum) and S's tile; torch merges the splits
(rescaling each by exp(m_split - m)); _noncausal_out writes each split's o = q S, zero at pads:
no kernel reads a pad's query, key, value or output gradient. Its backward: dS = sum_t q_t do_t^T over real t by splits, then
per position dv = (w g) dS, dg = w (v dS^T), dk = w (g (v dS^T) - c) with c_j = sum_v dS_jv S_jv
and w the softmax weights.

Inputs float32, float16 or bfloat16; the math is float32 (dots in TF32x3 for float32 inputs, TF32
otherwise); outputs and gradients come in the input dtype.

    from lra.kernels.additive_recurrence_triton import causal_triton, noncausal_triton
    o = causal_triton(q, k, v, gain=g)                 # q, k, g (B, H, L, d_k), v (B, H, L, d_v), CUDA
    o = noncausal_triton(q, k, v, mask, gain=g)        # mask (B, L) bool, True at real tokens
"""
import math

import torch
import triton
import triton.language as tl

from lra.kernels.dispatch import interpreting

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
NEG = tl.constexpr(-3.4028234663852886e38)  # float32's lowest: a key of weight 0, never -inf (no inf - inf)
# the largest rise R of z in a chunk for the one-dot form: exp(R / 2) * tiny stays below eps (R < ~143)
RISE = tl.constexpr(2 * (math.log(torch.finfo(torch.float32).eps) - math.log(torch.finfo(torch.float32).tiny)))


@triton.jit
def _row(tile, here):
    """Row i of a (rows, cols) tile, here = (rows[:, None] == i)."""
    return tl.sum(tl.where(here, tile, 0.0), 0)


@triton.jit
def _load_gain(g, rows, ck, inside, sgt, sgc, HAS_GAIN: tl.constexpr):
    if HAS_GAIN:
        return tl.load(g + rows[:, None] * sgt + ck[None, :] * sgc, mask=inside, other=0.0).to(tl.float32)
    else:
        return tl.where(inside, 1.0, 0.0)


@triton.jit
def _load_z(z, offsets, inside, rows, L):
    """z over a chunk: NEG in padded channels, z_last past the end; z rises, so z_last is its max."""
    zc = tl.where(inside, tl.load(z + offsets, mask=inside, other=0.0), NEG)
    z_last = tl.max(zc, 0)
    return tl.where(rows[:, None] < L, zc, z_last[None, :]), z_last


@triton.jit
def _chunk_start(z, ck, c, BT: tl.constexpr, DK):
    """z one step before chunk c, per key channel (NEG before the first chunk)."""
    before = ck < tl.where(c > 0, DK, 0)
    return tl.where(before, tl.load(z + (c * BT - 1) * DK + ck, mask=before, other=0.0), NEG)


@triton.jit
def _causal_states(k, v, g, z, states, L, DK, DV, H, NT, sgb, sgh, sgt, sgc,
                   BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, HAS_GAIN: tl.constexpr,
                   PRECISION: tl.constexpr):
    """S before each chunk, normalised at the step before it: S <- exp(z_prev - z_last) S + sum exp(k - z_last) g v^T."""
    ik, iv, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    steps, ck, cv = tl.arange(0, BT), ik * BK + tl.arange(0, BK), iv * BV + tl.arange(0, BV)
    k, z, v = k + bh * L * DK, z + bh * L * DK, v + bh * L * DV
    g += (bh // H) * sgb + (bh % H) * sgh
    states += bh * NT * DK * DV + ck[:, None] * DV + cv[None, :]
    ms = (ck[:, None] < DK) & (cv[None, :] < DV)
    S = tl.zeros((BK, BV), tl.float32)
    z_prev = tl.full((BK,), NEG, tl.float32)
    for c in range(NT):
        tl.store(states + c * DK * DV, S, mask=ms)
        rows = c * BT + steps
        mk = (rows[:, None] < L) & (ck[None, :] < DK)
        pk = rows[:, None] * DK + ck[None, :]
        kc = tl.where(mk, tl.load(k + pk, mask=mk, other=0.0).to(tl.float32), NEG)
        vc = _load_tile(v, rows, cv, L, DV)
        gc = _load_gain(g, rows, ck, mk, sgt, sgc, HAS_GAIN)
        _, z_last = _load_z(z, pk, mk, rows, L)
        S = S * tl.exp(z_prev - z_last)[:, None] + tl.dot(tl.trans(tl.exp(kc - z_last[None, :]) * gc), vc,
                                                          input_precision=PRECISION)
        z_prev = z_last


@triton.jit
def _chunk_program(BT: tl.constexpr):
    """(block, chunk, batch x head, steps, rows) of a per-chunk program: axis 1 runs over the chunks."""
    c = tl.program_id(1)
    steps = tl.arange(0, BT)
    return tl.program_id(0), c, tl.program_id(2).to(tl.int64), steps, c * BT + steps


@triton.jit
def _chunk_keys(k, g, z, rows, ck, c, L, DK, sgt, sgc, BT: tl.constexpr, HAS_GAIN: tl.constexpr):
    """A chunk's keys (NEG outside), gains, z (z_last past the end), z_last, z before the chunk, and the
    reference ref = (z_first + z_last) / 2 of the one-dot form with whether every channel's rise allows it."""
    mk = (rows[:, None] < L) & (ck[None, :] < DK)
    pk = rows[:, None] * DK + ck[None, :]
    kc = tl.where(mk, tl.load(k + pk, mask=mk, other=0.0).to(tl.float32), NEG)
    gc = _load_gain(g, rows, ck, mk, sgt, sgc, HAS_GAIN)
    zc, z_last = _load_z(z, pk, mk, rows, L)
    z_first = tl.min(zc, 0)
    one_dot = tl.max(z_last - z_first, 0) < RISE
    return kc, gc, zc, z_last, _chunk_start(z, ck, c, BT, DK), z_first + (z_last - z_first) * 0.5, one_dot


@triton.jit
def _chunk_scores(qc, kc, gc, zc, ref, PRECISION: tl.constexpr):
    """(t, s) scores sum_j q_tj exp(k_sj - z_tj) g_sj of a key block, as (q exp(ref - z)) . (exp(k - ref) g)."""
    return tl.dot(qc * tl.exp(ref[None, :] - zc), tl.trans(tl.exp(kc - ref[None, :]) * gc), input_precision=PRECISION)


@triton.jit
def _load_tile(x, rows, cols, L, D):
    """x[rows, cols] of a (L, D) matrix in float32, 0 outside."""
    return tl.load(x + rows[:, None] * D + cols[None, :], mask=(rows[:, None] < L) & (cols[None, :] < D),
                   other=0.0).to(tl.float32)


@triton.jit
def _causal_out(q, k, v, g, z, states, o, L, DK, DV, H, NT, sgb, sgh, sgt, sgc,
                BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, HAS_GAIN: tl.constexpr,
                PRECISION: tl.constexpr):
    """One chunk's outputs, all chunks at once: the state before it, plus the scores inside it."""
    iv, c, bh, steps, rows = _chunk_program(BT)
    cv = iv * BV + tl.arange(0, BV)
    q, k, z, v, o = q + bh * L * DK, k + bh * L * DK, z + bh * L * DK, v + bh * L * DV, o + bh * L * DV
    g += (bh // H) * sgb + (bh % H) * sgh
    states += (bh * NT + c) * DK * DV
    vc = _load_tile(v, rows, cv, L, DV)
    causal = steps[:, None] >= steps[None, :]  # (t, s)
    oc = tl.zeros((BT, BV), tl.float32)
    scores = tl.zeros((BT, BT), tl.float32)
    for kb in range(0, DK, BK):
        ck = kb + tl.arange(0, BK)
        kc, gc, zc, z_last, z_prev, ref, one_dot = _chunk_keys(k, g, z, rows, ck, c, L, DK, sgt, sgc, BT, HAS_GAIN)
        qc = _load_tile(q, rows, ck, L, DK)
        S = _load_tile(states, ck, cv, DK, DV)
        oc += tl.dot(qc * tl.exp(z_prev[None, :] - zc), S, input_precision=PRECISION)
        if one_dot:
            scores += _chunk_scores(qc, kc, gc, zc, ref, PRECISION)
        else:  # step by step: exp(k_s - z_t) <= 1 for s <= t, exact for keys of any size
            for s in range(BT):
                here = steps[:, None] == s
                key = tl.exp(tl.minimum(_row(kc, here)[None, :] - zc, 0.0)) * _row(gc, here)[None, :]
                weight = tl.where(steps >= s, tl.sum(qc * key, 1), 0.0)  # (t,)
                oc += weight[:, None] * _row(vc, here)[None, :]
    oc += tl.dot(tl.where(causal, scores, 0.0), vc, input_precision=PRECISION)
    tl.store(o + rows[:, None] * DV + cv[None, :], oc, mask=(rows[:, None] < L) & (cv[None, :] < DV))


@triton.jit
def _causal_dq(k, v, g, z, states, do, dq, L, DK, DV, H, NT, sgb, sgh, sgt, sgc,
               BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, HAS_GAIN: tl.constexpr,
               PRECISION: tl.constexpr):
    """dq_t = sum_{s<=t} exp(k_s - z_t) g_s (do_t . v_s): the state before the chunk, plus the chunk."""
    ik, c, bh, steps, rows = _chunk_program(BT)
    ck = ik * BK + tl.arange(0, BK)
    k, z, dq, v, do = k + bh * L * DK, z + bh * L * DK, dq + bh * L * DK, v + bh * L * DV, do + bh * L * DV
    g += (bh // H) * sgb + (bh % H) * sgh
    states += (bh * NT + c) * DK * DV
    kc, gc, zc, z_last, z_prev, ref, one_dot = _chunk_keys(k, g, z, rows, ck, c, L, DK, sgt, sgc, BT, HAS_GAIN)
    dp = tl.zeros((BT, BT), tl.float32)  # do_t . v_s
    dqc = tl.zeros((BT, BK), tl.float32)
    for vb in range(0, DV, BV):
        cv = vb + tl.arange(0, BV)
        vc, doc = _load_tile(v, rows, cv, L, DV), _load_tile(do, rows, cv, L, DV)
        S = _load_tile(states, ck, cv, DK, DV)
        dp += tl.dot(doc, tl.trans(vc), input_precision=PRECISION)
        dqc += tl.dot(doc, tl.trans(S), input_precision=PRECISION)
    dqc *= tl.exp(z_prev[None, :] - zc)
    dp = tl.where(steps[:, None] >= steps[None, :], dp, 0.0)
    if one_dot:
        dqc += tl.exp(ref[None, :] - zc) * tl.dot(dp, tl.exp(kc - ref[None, :]) * gc, input_precision=PRECISION)
    else:
        for s in range(BT):
            here = steps[:, None] == s
            key = tl.exp(tl.minimum(_row(kc, here)[None, :] - zc, 0.0)) * _row(gc, here)[None, :]
            dqc += tl.sum(tl.where(steps[None, :] == s, dp, 0.0), 1)[:, None] * key  # dp[:, s]
    tl.store(dq + rows[:, None] * DK + ck[None, :], dqc, mask=(rows[:, None] < L) & (ck[None, :] < DK))


@triton.jit
def _causal_states_back(q, z, do, dq, dstates, cstates, L, DK, DV, NT,
                        BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PRECISION: tl.constexpr):
    """After each chunk, normalised at its last step z_e: D = sum_{t>e} q_t exp(z_e - z_t) do_t^T and
    C = sum_{t>e} exp(z_e - z_t) q_t dq_t (value block 0 writes C), walking the chunks backwards."""
    ik, iv, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    steps, ck, cv = tl.arange(0, BT), ik * BK + tl.arange(0, BK), iv * BV + tl.arange(0, BV)
    q, z, dq, do = q + bh * L * DK, z + bh * L * DK, dq + bh * L * DK, do + bh * L * DV
    dstates += bh * NT * DK * DV + ck[:, None] * DV + cv[None, :]
    cstates += bh * NT * DK + ck
    ms = (ck[:, None] < DK) & (cv[None, :] < DV)
    c_cols = tl.where(iv == 0, DK, 0)
    D = tl.zeros((BK, BV), tl.float32)
    C = tl.zeros((BK,), tl.float32)
    for back in range(NT):
        c = NT - 1 - back
        tl.store(dstates + c * DK * DV, D, mask=ms)
        tl.store(cstates + c * DK, C, mask=ck < c_cols)
        rows = c * BT + steps
        mk = (rows[:, None] < L) & (ck[None, :] < DK)
        pk = rows[:, None] * DK + ck[None, :]
        qc, doc = _load_tile(q, rows, ck, L, DK), _load_tile(do, rows, cv, L, DV)
        r = qc * _load_tile(dq, rows, ck, L, DK)
        zc, z_last = _load_z(z, pk, mk, rows, L)
        z_prev = _chunk_start(z, ck, c, BT, DK)
        qp, decay = tl.exp(z_prev[None, :] - zc), tl.exp(z_prev - z_last)
        D = D * decay[:, None] + tl.dot(tl.trans(qc * qp), doc, input_precision=PRECISION)
        C = C * decay + tl.sum(r * qp, 0)


@triton.jit
def _causal_dv(q, k, g, z, dstates, do, dv, L, DK, DV, H, NT, sgb, sgh, sgt, sgc,
               BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, HAS_GAIN: tl.constexpr,
               PRECISION: tl.constexpr):
    """dv_s = sum_{t>=s} sum_j q_tj exp(k_sj - z_tj) g_sj do_t: the chunk's scores, plus D after it."""
    iv, c, bh, steps, rows = _chunk_program(BT)
    cv = iv * BV + tl.arange(0, BV)
    q, k, z, do, dv = q + bh * L * DK, k + bh * L * DK, z + bh * L * DK, do + bh * L * DV, dv + bh * L * DV
    g += (bh // H) * sgb + (bh % H) * sgh
    dstates += (bh * NT + c) * DK * DV
    doc = _load_tile(do, rows, cv, L, DV)
    dvc = tl.zeros((BT, BV), tl.float32)
    scores = tl.zeros((BT, BT), tl.float32)  # (t, s)
    for kb in range(0, DK, BK):
        ck = kb + tl.arange(0, BK)
        kc, gc, zc, z_last, _, ref, one_dot = _chunk_keys(k, g, z, rows, ck, c, L, DK, sgt, sgc, BT, HAS_GAIN)
        qc = _load_tile(q, rows, ck, L, DK)
        D = _load_tile(dstates, ck, cv, DK, DV)
        dvc += tl.dot(tl.exp(kc - z_last[None, :]) * gc, D, input_precision=PRECISION)
        if one_dot:
            scores += _chunk_scores(qc, kc, gc, zc, ref, PRECISION)
        else:
            for t in range(BT):
                here = steps[:, None] == t
                key = tl.exp(tl.minimum(kc - _row(zc, here)[None, :], 0.0)) * gc  # (s, j)
                weight = tl.where(steps <= t, tl.sum(key * _row(qc, here)[None, :], 1), 0.0)  # (s,)
                dvc += weight[:, None] * _row(doc, here)[None, :]
    dvc += tl.dot(tl.trans(tl.where(steps[:, None] >= steps[None, :], scores, 0.0)), doc, input_precision=PRECISION)
    tl.store(dv + rows[:, None] * DV + cv[None, :], dvc, mask=(rows[:, None] < L) & (cv[None, :] < DV))


@triton.jit
def _causal_dk(q, k, v, g, z, dstates, cstates, do, dq, dk, dg, L, DK, DV, H, NT, sgb, sgh, sgt, sgc,
               BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, HAS_GAIN: tl.constexpr,
               STORE_DG: tl.constexpr, PRECISION: tl.constexpr):
    """dg_sj = sum_{t>=s} exp(k_sj - z_tj) q_tj (do_t . v_s) and dk = g dg - exp(k - z) c, with
    c_u = sum_{t>=u} exp(z_u - z_t) q_t dq_t: the chunk's part, plus D and C after it."""
    ik, c, bh, steps, rows = _chunk_program(BT)
    ck = ik * BK + tl.arange(0, BK)
    q, k, z, dq = q + bh * L * DK, k + bh * L * DK, z + bh * L * DK, dq + bh * L * DK
    dk, dg, v, do = dk + bh * L * DK, dg + bh * L * DK, v + bh * L * DV, do + bh * L * DV
    g += (bh // H) * sgb + (bh % H) * sgh
    dstates += (bh * NT + c) * DK * DV
    kc, gc, zc, z_last, _, ref, one_dot = _chunk_keys(k, g, z, rows, ck, c, L, DK, sgt, sgc, BT, HAS_GAIN)
    qc = _load_tile(q, rows, ck, L, DK)
    r = qc * _load_tile(dq, rows, ck, L, DK)
    dp = tl.zeros((BT, BT), tl.float32)  # (t, s): do_t . v_s
    vD = tl.zeros((BT, BK), tl.float32)  # (s, j): v_s . D_j
    for vb in range(0, DV, BV):
        cv = vb + tl.arange(0, BV)
        vc, doc = _load_tile(v, rows, cv, L, DV), _load_tile(do, rows, cv, L, DV)
        D = _load_tile(dstates, ck, cv, DK, DV)
        dp += tl.dot(doc, tl.trans(vc), input_precision=PRECISION)
        vD += tl.dot(vc, tl.trans(D), input_precision=PRECISION)
    dp = tl.where(steps[:, None] >= steps[None, :], dp, 0.0)
    dgc = tl.exp(kc - z_last[None, :]) * vD
    cc = tl.exp(zc - z_last[None, :]) * tl.load(cstates + (bh * NT + c) * DK + ck, mask=ck < DK, other=0.0)[None, :]
    if one_dot:
        qs = qc * tl.exp(ref[None, :] - zc)
        dgc += tl.exp(kc - ref[None, :]) * tl.dot(tl.trans(dp), qs, input_precision=PRECISION)
        cc += tl.exp(zc - ref[None, :]) * tl.cumsum(tl.exp(ref[None, :] - zc) * r, 0, reverse=True)
    else:
        for t in range(BT):
            here = steps[:, None] == t
            z_t = _row(zc, here)[None, :]
            dgc += tl.exp(tl.minimum(kc - z_t, 0.0)) * _row(qc, here)[None, :] * _row(dp, here)[:, None]
            cc += tl.where(steps[:, None] <= t, tl.exp(tl.minimum(zc - z_t, 0.0)) * _row(r, here)[None, :], 0.0)
    mk = (rows[:, None] < L) & (ck[None, :] < DK)
    tl.store(dk + rows[:, None] * DK + ck[None, :], gc * dgc - tl.exp(kc - zc) * cc, mask=mk)
    if STORE_DG:
        tl.store(dg + rows[:, None] * DK + ck[None, :], dgc, mask=mk)


@triton.jit
def _real_rows(mask, b, rows, L, HAS_MASK: tl.constexpr):
    if HAS_MASK:
        return tl.load(mask + b * L + rows, mask=rows < L, other=0) != 0
    else:
        return rows < L


@triton.jit
def _load_real(x, rows, cols, real_rows, D):
    """x[rows, cols] of a (L, D) matrix in float32, 0 at padded rows (not read) and past D."""
    return tl.load(x + rows[:, None] * D + cols[None, :], mask=real_rows[:, None] & (cols[None, :] < D),
                   other=0.0).to(tl.float32)


@triton.jit
def _split(NS, LS: tl.constexpr):
    """Axis 2 runs over (batch x head) x splits of LS steps: this program's batch x head and first step."""
    pid = tl.program_id(2)
    return (pid // NS).to(tl.int64), (pid % NS) * LS


@triton.jit
def _noncausal_stats(k, v, g, mask, m_part, total_part, s_part, L, NS, DK, DV, H, sgb, sgh, sgt, sgc,
                     LS: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                     HAS_GAIN: tl.constexpr, HAS_MASK: tl.constexpr, PRECISION: tl.constexpr):
    """One split's real keys: their max m, the sum of exp(k - m), and S's tile, sum exp(k - m) g v^T."""
    iv, ik, part = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    bh, first = _split(NS, LS)
    steps, ck, cv = tl.arange(0, BT), ik * BK + tl.arange(0, BK), iv * BV + tl.arange(0, BV)
    k, v = k + bh * L * DK, v + bh * L * DV
    g += (bh // H) * sgb + (bh % H) * sgh
    m = tl.full((BK,), NEG, tl.float32)
    total = tl.zeros((BK,), tl.float32)
    S = tl.zeros((BK, BV), tl.float32)
    for start in range(first, first + LS, BT):
        rows = start + steps
        real_rows = _real_rows(mask, bh // H, rows, L, HAS_MASK)
        real = real_rows[:, None] & (ck[None, :] < DK)
        kc = tl.where(real, tl.load(k + rows[:, None] * DK + ck[None, :], mask=real, other=0.0).to(tl.float32), NEG)
        vc = _load_real(v, rows, cv, real_rows, DV)
        gc = _load_gain(g, rows, ck, real, sgt, sgc, HAS_GAIN)
        m_new = tl.maximum(m, tl.max(kc, 0))
        p = tl.where(real, tl.exp(kc - m_new[None, :]), 0.0)  # (BT, BK)
        scale = tl.exp(m - m_new)
        total = total * scale + tl.sum(p, 0)
        S = S * scale[:, None] + tl.dot(tl.trans(p * gc), vc, input_precision=PRECISION)
        m = m_new
    tl.store(s_part + (part * DK + ck[:, None]) * DV + cv[None, :], S, mask=(ck[:, None] < DK) & (cv[None, :] < DV))
    stats = ck < tl.where(iv == 0, DK, 0)  # the first value block writes m and the sum
    tl.store(m_part + part * DK + ck, m, mask=stats)
    tl.store(total_part + part * DK + ck, total, mask=stats)


@triton.jit
def _noncausal_out(q, mask, state, o, L, NS, DK, DV, H, LS: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
                   BV: tl.constexpr, HAS_MASK: tl.constexpr, PRECISION: tl.constexpr):
    """One split's o = q S, this key block's share; zero at pads, whose queries are not read."""
    iv, ik = tl.program_id(0), tl.program_id(1)
    bh, first = _split(NS, LS)
    steps, ck, cv = tl.arange(0, BT), ik * BK + tl.arange(0, BK), iv * BV + tl.arange(0, BV)
    q, o = q + bh * L * DK, o + (ik * (tl.num_programs(2) // NS) + bh) * L * DV
    S = _load_tile(state + bh * DK * DV, ck, cv, DK, DV)
    for start in range(first, first + LS, BT):
        rows = start + steps
        qc = _load_real(q, rows, ck, _real_rows(mask, bh // H, rows, L, HAS_MASK), DK)
        tl.store(o + rows[:, None] * DV + cv[None, :], tl.dot(qc, S, input_precision=PRECISION),
                 mask=(rows[:, None] < L) & (cv[None, :] < DV))


@triton.jit
def _noncausal_dstate(q, mask, do, ds_part, L, NS, DK, DV, H, LS: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
                      BV: tl.constexpr, HAS_MASK: tl.constexpr, PRECISION: tl.constexpr):
    """One split's share of dS = sum_t q_t do_t^T over the real positions t."""
    iv, ik, part = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    bh, first = _split(NS, LS)
    steps, ck, cv = tl.arange(0, BT), ik * BK + tl.arange(0, BK), iv * BV + tl.arange(0, BV)
    q, do = q + bh * L * DK, do + bh * L * DV
    dS = tl.zeros((BK, BV), tl.float32)
    for start in range(first, first + LS, BT):
        rows = start + steps
        real = _real_rows(mask, bh // H, rows, L, HAS_MASK)
        dS += tl.dot(tl.trans(_load_real(q, rows, ck, real, DK)), _load_real(do, rows, cv, real, DV),
                     input_precision=PRECISION)
    tl.store(ds_part + (part * DK + ck[:, None]) * DV + cv[None, :], dS, mask=(ck[:, None] < DK) & (cv[None, :] < DV))


@triton.jit
def _noncausal_bwd(q, k, v, g, mask, do, state, lse, dstate, dq, dk, dv, dg, L, NS, DK, DV, H, sgb, sgh, sgt, sgc,
                   LS: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, HAS_GAIN: tl.constexpr,
                   HAS_MASK: tl.constexpr, STORE_DG: tl.constexpr, PRECISION: tl.constexpr):
    """One split, one (value block, key block): its shares of dq, dk, dg (over value blocks) and dv (over key blocks)."""
    iv, ik = tl.program_id(0), tl.program_id(1)
    bh, first = _split(NS, LS)
    BH = tl.num_programs(2) // NS
    steps, ck, cv = tl.arange(0, BT), ik * BK + tl.arange(0, BK), iv * BV + tl.arange(0, BV)
    q, k = q + bh * L * DK, k + bh * L * DK
    share = (iv * BH + bh) * L * DK
    dq, dk, dg = dq + share, dk + share, dg + share
    v, do, dv = v + bh * L * DV, do + bh * L * DV, dv + (ik * BH + bh) * L * DV
    g += (bh // H) * sgb + (bh % H) * sgh
    S = _load_tile(state + bh * DK * DV, ck, cv, DK, DV)
    dS = _load_tile(dstate + bh * DK * DV, ck, cv, DK, DV)
    lse_k = tl.load(lse + bh * DK + ck, mask=ck < DK, other=0.0)
    c = tl.sum(dS * S, 1)  # (BK,): this value block's share of sum_v dS S
    for start in range(first, first + LS, BT):
        rows = start + steps
        mk = (rows[:, None] < L) & (ck[None, :] < DK)
        mv = (rows[:, None] < L) & (cv[None, :] < DV)
        real_rows = _real_rows(mask, bh // H, rows, L, HAS_MASK)
        real = real_rows[:, None] & (ck[None, :] < DK)
        pk, pv = rows[:, None] * DK + ck[None, :], rows[:, None] * DV + cv[None, :]
        kc = tl.load(k + pk, mask=real, other=0.0).to(tl.float32)
        vc, doc = _load_real(v, rows, cv, real_rows, DV), _load_real(do, rows, cv, real_rows, DV)  # pads: w = 0, o = 0
        gc = _load_gain(g, rows, ck, real, sgt, sgc, HAS_GAIN)
        w = tl.where(real, tl.exp(tl.where(real, kc, lse_k[None, :]) - lse_k[None, :]), 0.0)  # softmax weights
        dw = tl.dot(vc, tl.trans(dS), input_precision=PRECISION)  # (BT, BK)
        tl.store(dq + pk, tl.dot(doc, tl.trans(S), input_precision=PRECISION), mask=mk)
        tl.store(dv + pv, tl.dot(w * gc, dS, input_precision=PRECISION), mask=mv)
        tl.store(dk + pk, w * (gc * dw - c[None, :]), mask=mk)
        if STORE_DG:
            tl.store(dg + pk, w * dw, mask=mk)


def _causal_blocks(dk, dv, chunk=None):
    """(chunk, key block, value block, warps); the kernels loop over the key and value blocks they need whole.

    On a GPU, chunks of 64 and blocks of 32 on 8 warps: none of the six kernels spills registers on sm_90
    (python -m lra.kernels.compile_check). Under the interpreter, blocks of 16, so the tests cover several.
    """
    if chunk is not None and (chunk < 16 or chunk & (chunk - 1)):
        raise ValueError(f"chunk={chunk} must be a power of two of at least 16 (tl.dot's smallest block)")
    widest = 16 if interpreting() else 32
    bk, bv = (max(16, min(widest, triton.next_power_of_2(d))) for d in (dk, dv))
    return chunk or 64, bk, bv, 8


def _noncausal_blocks(dk, dv):
    """(steps per block, steps per split, key block, value block, warps): each key channel's softmax is its
    own, so keys split too, and the sequence splits into parts of 256 steps merged afterwards (of 32 under
    the interpreter, so the tests cover several). The largest blocks that compile for sm_90 without
    spilling registers (python -m lra.kernels.compile_check)."""
    return (16, 32 if interpreting() else 256, max(16, min(64, triton.next_power_of_2(dk))),
            max(16, min(32, triton.next_power_of_2(dv))), 4)


def _merge_splits(m, total, s):
    """Each sequence's normalised S and log-sum-exp of keys from its splits' max m, sum of exp(k - m) and
    sum of exp(k - m) g v^T: (B, H, splits, d_k[, d_v]) -> (B, H, d_k, d_v), (B, H, d_k)."""
    top = m.amax(2, keepdim=True)
    scale = torch.exp(m - top)  # 0 for a split without real keys (m = NEG)
    total = (scale * total).sum(2)
    total = torch.where(total > 0, total, torch.ones_like(total))  # a sequence with no real token keeps S = 0
    return (scale[..., None] * s).sum(2) / total[..., None], top.squeeze(2) + total.log()


def _precision(dtype):
    return "tf32x3" if dtype == torch.float32 else "tf32"


def _check(q, k, v, gain, mask=None):
    if q.dtype not in DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"the Triton additive recurrence takes q, k, v of one dtype among float32, float16 and "
                         f"bfloat16, got {q.dtype}, {k.dtype}, {v.dtype}; set LRA_KERNELS=reference for float64")
    if q.dim() != 4 or k.shape != q.shape or v.shape[:-1] != q.shape[:-1]:
        raise ValueError(f"expected q, k (B, H, L, d_k) and v (B, H, L, d_v), got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if gain is not None and (gain.dim() > 4 or any(n not in (1, m) for n, m in zip(gain.shape[::-1], k.shape[::-1]))):
        raise ValueError(f"gain {tuple(gain.shape)} does not broadcast to the keys' shape {tuple(k.shape)}")
    if mask is not None and mask.shape != (q.shape[0], q.shape[2]):
        raise ValueError(f"mask {tuple(mask.shape)} must be (B, L) = {(q.shape[0], q.shape[2])}")


def _gain_args(gain, k):
    """The gain as (tensor, strides over (B, H, L, d_k)), broadcast without a copy; k stands in when absent."""
    if gain is None:
        return k, (0, 0, 0, 0)
    full = gain.expand_as(k)
    return full, full.stride()


def _reduce_gain(dg, gain):
    """The gain's gradient from dg (B, H, L, d_k), summed over the dimensions the gain broadcasts along."""
    return dg.sum_to_size(gain.shape).to(gain.dtype)


class _Causal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, gain, chunk):
        q, k, v = (t.contiguous() for t in (q, k, v))
        B, H, L, d_k = q.shape
        d_v = v.shape[-1]
        bt, bk, bv, warps = _causal_blocks(d_k, d_v, chunk)
        n_chunks = triton.cdiv(L, bt)
        g, gs = _gain_args(gain, k)
        z = torch.logcumsumexp(k.float(), dim=2)  # (B, H, L, d_k) float32
        states = torch.empty(B * H, n_chunks, d_k, d_v, device=q.device, dtype=torch.float32)  # before each chunk
        common = dict(BT=bt, BK=bk, BV=bv, HAS_GAIN=gain is not None, PRECISION=_precision(q.dtype), num_warps=warps)
        _causal_states[(triton.cdiv(d_k, bk), triton.cdiv(d_v, bv), B * H)](
            k, v, g, z, states, L, d_k, d_v, H, n_chunks, *gs, **common)
        o = torch.empty_like(v)
        _causal_out[(triton.cdiv(d_v, bv), n_chunks, B * H)](q, k, v, g, z, states, o, L, d_k, d_v, H, n_chunks, *gs,
                                                              **common)
        ctx.save_for_backward(q, k, v, gain, z, states)
        ctx.common = common
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, gain, z, states = ctx.saved_tensors
        do, common = do.contiguous(), ctx.common
        B, H, L, d_k = q.shape
        d_v, n_chunks = v.shape[-1], states.shape[1]
        key_blocks, value_blocks = triton.cdiv(d_k, common["BK"]), triton.cdiv(d_v, common["BV"])
        g, gs = _gain_args(gain, k)
        dq = torch.empty(B, H, L, d_k, device=q.device, dtype=torch.float32)
        _causal_dq[(key_blocks, n_chunks, B * H)](k, v, g, z, states, do, dq, L, d_k, d_v, H, n_chunks, *gs, **common)
        after, after_c = torch.empty_like(states), torch.empty(B * H, n_chunks, d_k, device=q.device,
                                                               dtype=torch.float32)
        _causal_states_back[(key_blocks, value_blocks, B * H)](
            q, z, do, dq, after, after_c, L, d_k, d_v, n_chunks, BT=common["BT"], BK=common["BK"], BV=common["BV"],
            PRECISION=common["PRECISION"], num_warps=common["num_warps"])
        dv = torch.empty_like(v)
        _causal_dv[(value_blocks, n_chunks, B * H)](q, k, g, z, after, do, dv, L, d_k, d_v, H, n_chunks, *gs,
                                                    **common)
        store_dg = gain is not None and ctx.needs_input_grad[3]
        dk = torch.empty(B, H, L, d_k, device=q.device, dtype=torch.float32)
        dg = torch.empty_like(dk) if store_dg else dk
        _causal_dk[(key_blocks, n_chunks, B * H)](q, k, v, g, z, after, after_c, do, dq, dk, dg, L, d_k, d_v, H,
                                                  n_chunks, *gs, STORE_DG=store_dg, **common)
        return dq.to(q.dtype), dk.to(k.dtype), dv, _reduce_gain(dg, gain) if store_dg else None, None


class _NonCausal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, mask, gain):
        q, k, v = (t.contiguous() for t in (q, k, v))
        B, H, L, d_k = q.shape
        d_v = v.shape[-1]
        bt, ls, bk, bv, warps = _noncausal_blocks(d_k, d_v)
        n_splits = triton.cdiv(L, ls)
        grid = (triton.cdiv(d_v, bv), triton.cdiv(d_k, bk), B * H * n_splits)
        g, gs = _gain_args(gain, k)
        m = q if mask is None else mask.to(torch.uint8).contiguous()
        blocks = dict(LS=ls, BT=bt, BK=bk, BV=bv, PRECISION=_precision(q.dtype), num_warps=warps)
        top, total = (torch.empty(B, H, n_splits, d_k, device=q.device, dtype=torch.float32) for _ in range(2))
        parts = torch.empty(B, H, n_splits, d_k, d_v, device=q.device, dtype=torch.float32)
        _noncausal_stats[grid](k, v, g, m, top, total, parts, L, n_splits, d_k, d_v, H, *gs,
                               HAS_GAIN=gain is not None, HAS_MASK=mask is not None, **blocks)
        state, lse = _merge_splits(top, total, parts)
        o = torch.empty_like(v) if grid[1] == 1 else _shares(grid[1], v)  # key blocks' shares, summed
        _noncausal_out[grid](q, m, state, o, L, n_splits, d_k, d_v, H, HAS_MASK=mask is not None, **blocks)
        ctx.save_for_backward(q, k, v, m, gain, state, lse)
        ctx.has_mask, ctx.blocks = mask is not None, blocks
        return o if grid[1] == 1 else o.sum(0).to(v.dtype)

    @staticmethod
    def backward(ctx, do):
        q, k, v, m, gain, state, lse = ctx.saved_tensors
        do, blocks = do.contiguous(), ctx.blocks
        B, H, L, d_k = q.shape
        d_v = v.shape[-1]
        n_splits = triton.cdiv(L, blocks["LS"])
        grid = (triton.cdiv(d_v, blocks["BV"]), triton.cdiv(d_k, blocks["BK"]), B * H * n_splits)
        parts = torch.empty(B, H, n_splits, d_k, d_v, device=q.device, dtype=torch.float32)
        _noncausal_dstate[grid](q, m, do, parts, L, n_splits, d_k, d_v, H, HAS_MASK=ctx.has_mask, **blocks)
        g, gs = _gain_args(gain, k)
        store_dg = gain is not None and ctx.needs_input_grad[4]
        dq, dk, dv = _shares(grid[0], q), _shares(grid[0], q), _shares(grid[1], v)
        dg = _shares(grid[0], q) if store_dg else dk
        _noncausal_bwd[grid](q, k, v, g, m, do, state, lse, parts.sum(2), dq, dk, dv, dg, L, n_splits, d_k, d_v, H,
                             *gs, HAS_GAIN=gain is not None, HAS_MASK=ctx.has_mask, STORE_DG=store_dg, **blocks)
        dgain = _reduce_gain(dg.sum(0), gain) if store_dg else None
        return dq.sum(0).to(q.dtype), dk.sum(0).to(k.dtype), dv.sum(0).to(v.dtype), None, dgain


def _shares(n, like):
    """A float32 buffer for n blocks' shares of a tensor shaped like `like`, summed afterwards."""
    return torch.empty(n, *like.shape, device=like.device, dtype=torch.float32)


def causal_triton(q, k, v, gain=None, chunk=None):
    """causal_chunked's result by the Triton kernels; chunk: steps per chunk (a power of two >= 16), None picks."""
    _check(q, k, v, gain)
    return _Causal.apply(q, k, v, gain, chunk)


def noncausal_triton(q, k, v, mask=None, gain=None):
    """noncausal's result by the Triton kernels: pads (mask False) get key weight 0."""
    _check(q, k, v, gain, mask)
    return _NonCausal.apply(q, k, v, mask, gain)
