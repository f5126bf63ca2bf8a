"""Triton kernels for LightNet's additive linear recurrence: causal and non-causal, forward and backward.

The equations of lra.kernels.additive_recurrence (Qin et al. 2024, arXiv:2405.21022), per head, with
z_t = logcumsumexp(k)_t per key channel and an optional gain g (1 without one):

    causal:      o_t = sum_j q_tj sum_{s<=t} exp(k_sj - z_tj) g_sj v_s
    non-causal:  o_t = q_t^T S,    S = sum_s softmax_s(k)_s g_s v_s^T      (softmax over the real positions)

Causal, chunked like gated linear attention: one program per (batch x head, block of value
channels) walks the sequence in chunks of C steps, carrying the state S_e = sum_{s<=e}
exp(k_s - z_e) g_s v_s^T (d_k x d_v, in registers) normalised at the last step e seen. In a chunk:
  - z: an associative scan of logaddexp over the chunk's keys, from the previous chunk's z_e
    (a running max of k with its sum, so no exp overflows);
  - intra-chunk: the (C, C) scores (q_t exp(m - z_t)) . (exp(k_s - m) g_s) for s <= t, one tl.dot,
    with the mid reference m = (z_first + z_last) / 2: each factor is at most exp(R / 2), R the
    rise of z in the chunk;
  - inter-chunk: q_t exp(z_e - z_t) S_e, then S <- exp(z_e - z_e') S_e + sum_s exp(k_s - z_e') g_s v_s^T.
Every factor but the two intra-chunk ones is <= 1. A chunk whose rise R passes RISE (where exp(R / 2)
leaves float32's accurate range) runs the recurrence one step at a time instead: exact for keys of any size.

Backward: a forward walk recomputes S and gives dq; a reverse walk carries
dS_e = sum_{t>e} q_t exp(z_e - z_t) do_t^T and gives dv, dg and, per key channel,

    dk_u = g_u dg_u - exp(k_u - z_u) c_u,      c_u = sum_{t>=u} exp(z_u - z_t) q_t dq_t.

Non-causal, one program per (batch x head, block of key channels, block of value channels): each key
channel's softmax is its own, so one walk keeps the masked online-softmax statistics (running max,
sum) and S's tile, a second walk writes this key block's share of o = q S. Its backward: dS = sum_t
q_t do_t^T, then per position dv = (w g) dS, dg = w (v dS^T), dk = w (g (v dS^T) - c) with
c_j = sum_v dS_jv S_jv and w the softmax weights.

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

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
NEG = tl.constexpr(-3.4028234663852886e38)  # float32's lowest: a key of weight 0, never -inf (no inf - inf)
# the largest rise R of z in a chunk for the one-dot form: exp(R / 2) * tiny stays below eps (R < ~143)
RISE = tl.constexpr(2 * (math.log(torch.finfo(torch.float32).eps) - math.log(torch.finfo(torch.float32).tiny)))


@triton.jit
def _logaddexp(a, b):
    hi = tl.maximum(a, b)
    return hi + tl.log(1.0 + tl.exp(tl.minimum(a, b) - hi))


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
    """Saved z for a chunk: NEG in padded channels, z_last past the end (as the forward scan leaves it)."""
    zc = tl.where(inside, tl.load(z + offsets, mask=inside, other=0.0), NEG)
    z_last = tl.max(zc, 0)
    return tl.where(rows[:, None] < L, zc, z_last[None, :]), z_last


@triton.jit
def _causal_fwd(q, k, v, g, o, z, L, DK, DV, H, sgb, sgh, sgt, sgc,
                BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                HAS_GAIN: tl.constexpr, STORE_Z: tl.constexpr, PRECISION: tl.constexpr):
    iv, bh = tl.program_id(0), tl.program_id(1).to(tl.int64)
    steps, ck, cv = tl.arange(0, BT), tl.arange(0, BK), iv * BV + tl.arange(0, BV)
    q, k, z = q + bh * L * DK, k + bh * L * DK, z + bh * L * DK
    v, o = v + bh * L * DV, o + bh * L * DV
    g += (bh // H) * sgb + (bh % H) * sgh
    causal = steps[:, None] >= steps[None, :]  # (t, s)
    S = tl.zeros((BK, BV), tl.float32)  # normalised at z_prev
    z_prev = tl.full((BK,), NEG, tl.float32)
    z_rows = tl.where(iv == 0, L, 0)  # the first value block writes z
    for start in range(0, L, BT):
        rows = start + steps
        mk = (rows[:, None] < L) & (ck[None, :] < DK)  # (BT, BK)
        mv = (rows[:, None] < L) & (cv[None, :] < DV)  # (BT, BV)
        pk, pv = rows[:, None] * DK + ck[None, :], rows[:, None] * DV + cv[None, :]
        qc = tl.load(q + pk, mask=mk, other=0.0).to(tl.float32)
        kc = tl.where(mk, tl.load(k + pk, mask=mk, other=0.0).to(tl.float32), NEG)
        vc = tl.load(v + pv, mask=mv, other=0.0).to(tl.float32)
        gc = _load_gain(g, rows, ck, mk, sgt, sgc, HAS_GAIN)
        zc = _logaddexp(z_prev[None, :], tl.associative_scan(kc, 0, _logaddexp))  # (BT, BK), rising
        z_first, z_last = tl.min(zc, 0), tl.max(zc, 0)
        if tl.max(z_last - z_first, 0) < RISE:
            ref = z_first + (z_last - z_first) * 0.5
            scores = tl.dot(qc * tl.exp(ref[None, :] - zc), tl.trans(tl.exp(kc - ref[None, :]) * gc),
                            input_precision=PRECISION)  # (BT, BT)
            oc = tl.dot(tl.where(causal, scores, 0.0), vc, input_precision=PRECISION)
            oc += tl.dot(qc * tl.exp(z_prev[None, :] - zc), S, input_precision=PRECISION)
            S = S * tl.exp(z_prev - z_last)[:, None] + tl.dot(tl.trans(tl.exp(kc - z_last[None, :]) * gc), vc,
                                                              input_precision=PRECISION)
        else:  # one step at a time: S_t = exp(z_{t-1} - z_t) S_{t-1} + exp(k_t - z_t) g_t v_t^T, o_t = S_t^T q_t
            oc = tl.zeros((BT, BV), tl.float32)
            z_t = z_prev
            for i in range(BT):
                here = steps[:, None] == i
                z_s, z_t = z_t, _row(zc, here)
                key = tl.exp(_row(kc, here) - z_t) * _row(gc, here)  # (BK,)
                S = S * tl.exp(z_s - z_t)[:, None] + key[:, None] * _row(vc, here)[None, :]
                oc = tl.where(here, tl.sum(_row(qc, here)[:, None] * S, 0)[None, :], oc)
        tl.store(o + pv, oc, mask=mv)
        if STORE_Z:
            tl.store(z + pk, zc, mask=(rows[:, None] < z_rows) & (ck[None, :] < DK))
        z_prev = z_last


@triton.jit
def _causal_bwd_dq(k, v, g, z, do, dq, L, DK, DV, H, sgb, sgh, sgt, sgc,
                   BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                   HAS_GAIN: tl.constexpr, PRECISION: tl.constexpr):
    """dq_t = sum_{s<=t} exp(k_s - z_t) g_s (do_t . v_s), this block of value channels' share."""
    iv, bh = tl.program_id(0), tl.program_id(1).to(tl.int64)
    steps, ck, cv = tl.arange(0, BT), tl.arange(0, BK), iv * BV + tl.arange(0, BV)
    k, z = k + bh * L * DK, z + bh * L * DK
    dq += (iv * tl.num_programs(1) + bh) * L * DK
    v, do = v + bh * L * DV, do + bh * L * DV
    g += (bh // H) * sgb + (bh % H) * sgh
    causal = steps[:, None] >= steps[None, :]
    S = tl.zeros((BK, BV), tl.float32)
    z_prev = tl.full((BK,), NEG, tl.float32)
    for start in range(0, L, BT):
        rows = start + steps
        mk = (rows[:, None] < L) & (ck[None, :] < DK)
        mv = (rows[:, None] < L) & (cv[None, :] < DV)
        pk, pv = rows[:, None] * DK + ck[None, :], rows[:, None] * DV + cv[None, :]
        kc = tl.where(mk, tl.load(k + pk, mask=mk, other=0.0).to(tl.float32), NEG)
        vc = tl.load(v + pv, mask=mv, other=0.0).to(tl.float32)
        doc = tl.load(do + pv, mask=mv, other=0.0).to(tl.float32)
        gc = _load_gain(g, rows, ck, mk, sgt, sgc, HAS_GAIN)
        zc, z_last = _load_z(z, pk, mk, rows, L)
        z_first = tl.min(zc, 0)
        if tl.max(z_last - z_first, 0) < RISE:
            ref = z_first + (z_last - z_first) * 0.5
            dp = tl.where(causal, tl.dot(doc, tl.trans(vc), input_precision=PRECISION), 0.0)  # (t, s)
            dqc = tl.exp(ref[None, :] - zc) * tl.dot(dp, tl.exp(kc - ref[None, :]) * gc, input_precision=PRECISION)
            dqc += tl.exp(z_prev[None, :] - zc) * tl.dot(doc, tl.trans(S), input_precision=PRECISION)
            S = S * tl.exp(z_prev - z_last)[:, None] + tl.dot(tl.trans(tl.exp(kc - z_last[None, :]) * gc), vc,
                                                              input_precision=PRECISION)
        else:
            dqc = tl.zeros((BT, BK), tl.float32)
            z_t = z_prev
            for i in range(BT):
                here = steps[:, None] == i
                z_s, z_t = z_t, _row(zc, here)
                key = tl.exp(_row(kc, here) - z_t) * _row(gc, here)
                S = S * tl.exp(z_s - z_t)[:, None] + key[:, None] * _row(vc, here)[None, :]
                dqc = tl.where(here, tl.sum(S * _row(doc, here)[None, :], 1)[None, :], dqc)
        tl.store(dq + pk, dqc, mask=mk)
        z_prev = z_last


@triton.jit
def _causal_bwd_dkv(q, k, v, g, z, do, dq, dk, dv, dg, L, DK, DV, H, sgb, sgh, sgt, sgc,
                    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                    HAS_GAIN: tl.constexpr, STORE_DG: tl.constexpr, PRECISION: tl.constexpr):
    """The reverse walk: dv (whole), and this value block's share of dg and dk (block 0 adds the c term)."""
    iv, bh = tl.program_id(0), tl.program_id(1).to(tl.int64)
    steps, ck, cv = tl.arange(0, BT), tl.arange(0, BK), iv * BV + tl.arange(0, BV)
    q, k, z, dq = q + bh * L * DK, k + bh * L * DK, z + bh * L * DK, dq + bh * L * DK
    share = (iv * tl.num_programs(1) + bh) * L * DK
    dk, dg = dk + share, dg + share
    v, do, dv = v + bh * L * DV, do + bh * L * DV, dv + bh * L * DV
    g += (bh // H) * sgb + (bh % H) * sgh
    causal = steps[:, None] >= steps[None, :]
    dS = tl.zeros((BK, BV), tl.float32)  # sum over later chunks of q_t exp(z_e - z_t) do_t^T
    C = tl.zeros((BK,), tl.float32)  # sum over later chunks of exp(z_e - z_t) q_t dq_t
    n = tl.cdiv(L, BT)
    for back in range(n):
        start = (n - 1 - back) * BT
        rows = start + steps
        mk = (rows[:, None] < L) & (ck[None, :] < DK)
        mv = (rows[:, None] < L) & (cv[None, :] < DV)
        pk, pv = rows[:, None] * DK + ck[None, :], rows[:, None] * DV + cv[None, :]
        qc = tl.load(q + pk, mask=mk, other=0.0).to(tl.float32)
        kc = tl.where(mk, tl.load(k + pk, mask=mk, other=0.0).to(tl.float32), NEG)
        vc = tl.load(v + pv, mask=mv, other=0.0).to(tl.float32)
        doc = tl.load(do + pv, mask=mv, other=0.0).to(tl.float32)
        gc = _load_gain(g, rows, ck, mk, sgt, sgc, HAS_GAIN)
        r = qc * tl.load(dq + pk, mask=mk, other=0.0)  # (BT, BK)
        zc, z_last = _load_z(z, pk, mk, rows, L)
        z_first = tl.min(zc, 0)
        before = ck < tl.where(start > 0, DK, 0)  # z one step before the chunk, if any
        z_prev = tl.where(before, tl.load(z + (start - 1) * DK + ck, mask=before, other=0.0), NEG)
        if tl.max(z_last - z_first, 0) < RISE:
            ref = z_first + (z_last - z_first) * 0.5
            qs, kr = qc * tl.exp(ref[None, :] - zc), tl.exp(kc - ref[None, :])
            scores = tl.where(causal, tl.dot(qs, tl.trans(kr * gc), input_precision=PRECISION), 0.0)  # (t, s)
            dp = tl.where(causal, tl.dot(doc, tl.trans(vc), input_precision=PRECISION), 0.0)  # (t, s)
            kl = tl.exp(kc - z_last[None, :])
            dvc = tl.dot(tl.trans(scores), doc, input_precision=PRECISION)
            dvc += tl.dot(kl * gc, dS, input_precision=PRECISION)
            dgc = kr * tl.dot(tl.trans(dp), qs, input_precision=PRECISION)
            dgc += kl * tl.dot(vc, tl.trans(dS), input_precision=PRECISION)
            cc = tl.exp(zc - ref[None, :]) * tl.cumsum(tl.exp(ref[None, :] - zc) * r, 0, reverse=True)
            cc += tl.exp(zc - z_last[None, :]) * C[None, :]
            decay, qp = tl.exp(z_prev - z_last), tl.exp(z_prev[None, :] - zc)
            dS = dS * decay[:, None] + tl.dot(tl.trans(qc * qp), doc, input_precision=PRECISION)
            C = C * decay + tl.sum(r * qp, 0)
        else:  # one step at a time, backwards; dS and C normalised at z_t while at step t
            dvc = tl.zeros((BT, BV), tl.float32)
            dgc = tl.zeros((BT, BK), tl.float32)
            cc = tl.zeros((BT, BK), tl.float32)
            for i in range(BT):
                t = BT - 1 - i
                here = steps[:, None] == t
                z_t = _row(zc, here)
                z_s = tl.where(t == 0, z_prev, _row(zc, steps[:, None] == t - 1))
                dS += _row(qc, here)[:, None] * _row(doc, here)[None, :]
                C += _row(r, here)
                key = tl.exp(_row(kc, here) - z_t)
                dvc = tl.where(here, tl.sum((key * _row(gc, here))[:, None] * dS, 0)[None, :], dvc)
                dgc = tl.where(here, (key * tl.sum(dS * _row(vc, here)[None, :], 1))[None, :], dgc)
                cc = tl.where(here, C[None, :], cc)
                back_one = tl.exp(z_s - z_t)
                dS, C = dS * back_one[:, None], C * back_one
        dkc = gc * dgc - tl.where(iv == 0, tl.exp(kc - zc) * cc, 0.0)
        tl.store(dv + pv, dvc, mask=mv)
        tl.store(dk + pk, dkc, mask=mk)
        if STORE_DG:
            tl.store(dg + pk, dgc, mask=mk)


@triton.jit
def _real_rows(mask, b, rows, L, HAS_MASK: tl.constexpr):
    if HAS_MASK:
        return tl.load(mask + b * L + rows, mask=rows < L, other=0) != 0
    else:
        return rows < L


@triton.jit
def _noncausal_fwd(q, k, v, g, mask, o, state, lse, L, DK, DV, H, sgb, sgh, sgt, sgc,
                   BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                   HAS_GAIN: tl.constexpr, HAS_MASK: tl.constexpr, PRECISION: tl.constexpr):
    """One (value block, key block): S's tile, lse (value block 0), and this key block's share of o."""
    iv, ik, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    steps, ck, cv = tl.arange(0, BT), ik * BK + tl.arange(0, BK), iv * BV + tl.arange(0, BV)
    q, k = q + bh * L * DK, k + bh * L * DK
    v, o = v + bh * L * DV, o + (ik * tl.num_programs(2) + bh) * L * DV
    g += (bh // H) * sgb + (bh % H) * sgh
    m = tl.full((BK,), NEG, tl.float32)  # running max of the real keys
    total = tl.zeros((BK,), tl.float32)  # sum of exp(k - m) over them
    S = tl.zeros((BK, BV), tl.float32)  # sum of exp(k - m) g v^T over them
    for start in range(0, L, BT):
        rows = start + steps
        real = _real_rows(mask, bh // H, rows, L, HAS_MASK)[:, None] & (ck[None, :] < DK)
        mv = (rows[:, None] < L) & (cv[None, :] < DV)
        pk = rows[:, None] * DK + ck[None, :]
        kc = tl.where(real, tl.load(k + pk, mask=real, other=0.0).to(tl.float32), NEG)
        vc = tl.load(v + rows[:, None] * DV + cv[None, :], mask=mv, other=0.0).to(tl.float32)
        gc = _load_gain(g, rows, ck, real, sgt, sgc, HAS_GAIN)
        m_new = tl.maximum(m, tl.max(kc, 0))
        p = tl.where(real, tl.exp(kc - m_new[None, :]), 0.0)  # (BT, BK)
        scale = tl.exp(m - m_new)
        total = total * scale + tl.sum(p, 0)
        S = S * scale[:, None] + tl.dot(tl.trans(p * gc), vc, input_precision=PRECISION)
        m = m_new
    S = S / tl.where(total > 0, total, 1.0)[:, None]  # a sequence with no real token keeps S = 0
    ms = (ck[:, None] < DK) & (cv[None, :] < DV)
    tl.store(state + bh * DK * DV + ck[:, None] * DV + cv[None, :], S, mask=ms)
    lse_cols = tl.where(iv == 0, DK, 0)  # the first value block writes lse
    tl.store(lse + bh * DK + ck, m + tl.log(tl.where(total > 0, total, 1.0)), mask=ck < lse_cols)
    for start in range(0, L, BT):
        rows = start + steps
        mk = (rows[:, None] < L) & (ck[None, :] < DK)
        mv = (rows[:, None] < L) & (cv[None, :] < DV)
        qc = tl.load(q + rows[:, None] * DK + ck[None, :], mask=mk, other=0.0).to(tl.float32)
        tl.store(o + rows[:, None] * DV + cv[None, :], tl.dot(qc, S, input_precision=PRECISION), mask=mv)


@triton.jit
def _noncausal_bwd(q, k, v, g, mask, do, state, lse, dq, dk, dv, dg, L, DK, DV, H, sgb, sgh, sgt, sgc,
                   BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                   HAS_GAIN: tl.constexpr, HAS_MASK: tl.constexpr, STORE_DG: tl.constexpr, PRECISION: tl.constexpr):
    """One (value block, key block): its shares of dq, dk, dg (over value blocks) and of dv (over key blocks)."""
    iv, ik, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    steps, ck, cv = tl.arange(0, BT), ik * BK + tl.arange(0, BK), iv * BV + tl.arange(0, BV)
    q, k = q + bh * L * DK, k + bh * L * DK
    share = (iv * tl.num_programs(2) + bh) * L * DK
    dq, dk, dg = dq + share, dk + share, dg + share
    v, do, dv = v + bh * L * DV, do + bh * L * DV, dv + (ik * tl.num_programs(2) + bh) * L * DV
    g += (bh // H) * sgb + (bh % H) * sgh
    ms = (ck[:, None] < DK) & (cv[None, :] < DV)
    S = tl.load(state + bh * DK * DV + ck[:, None] * DV + cv[None, :], mask=ms, other=0.0)  # (BK, BV)
    lse_k = tl.load(lse + bh * DK + ck, mask=ck < DK, other=0.0)
    dS = tl.zeros((BK, BV), tl.float32)
    for start in range(0, L, BT):
        rows = start + steps
        mk = (rows[:, None] < L) & (ck[None, :] < DK)
        mv = (rows[:, None] < L) & (cv[None, :] < DV)
        qc = tl.load(q + rows[:, None] * DK + ck[None, :], mask=mk, other=0.0).to(tl.float32)
        doc = tl.load(do + rows[:, None] * DV + cv[None, :], mask=mv, other=0.0).to(tl.float32)
        dS += tl.dot(tl.trans(qc), doc, input_precision=PRECISION)
    c = tl.sum(dS * S, 1)  # (BK,)
    for start in range(0, L, BT):
        rows = start + steps
        mk = (rows[:, None] < L) & (ck[None, :] < DK)
        mv = (rows[:, None] < L) & (cv[None, :] < DV)
        real = _real_rows(mask, bh // H, rows, L, HAS_MASK)[:, None] & (ck[None, :] < DK)
        pk, pv = rows[:, None] * DK + ck[None, :], rows[:, None] * DV + cv[None, :]
        kc = tl.load(k + pk, mask=real, other=0.0).to(tl.float32)
        vc = tl.load(v + pv, mask=mv, other=0.0).to(tl.float32)
        doc = tl.load(do + pv, mask=mv, other=0.0).to(tl.float32)
        gc = _load_gain(g, rows, ck, real, sgt, sgc, HAS_GAIN)
        w = tl.where(real, tl.exp(tl.where(real, kc, lse_k[None, :]) - lse_k[None, :]), 0.0)  # softmax weights
        dw = tl.dot(vc, tl.trans(dS), input_precision=PRECISION)  # (BT, BK)
        tl.store(dq + pk, tl.dot(doc, tl.trans(S), input_precision=PRECISION), mask=mk)
        tl.store(dv + pv, tl.dot(w * gc, dS, input_precision=PRECISION), mask=mv)
        tl.store(dk + pk, w * (gc * dw - c[None, :]), mask=mk)
        if STORE_DG:
            tl.store(dg + pk, w * dw, mask=mk)


def _causal_blocks(dk, dv, chunk=None):
    """(chunk, key block, value block, warps): all keys in one block (at most 256), values in blocks.

    Chunks of 16 steps and value blocks of 32 (16 past 128 keys) on 8 warps: the largest that compile
    for sm_90 without spilling registers up to 128 keys (python -m lra.kernels.compile_check).
    """
    if chunk is not None and (chunk < 16 or chunk & (chunk - 1)):
        raise ValueError(f"chunk={chunk} must be a power of two of at least 16 (tl.dot's smallest block)")
    bk = max(16, triton.next_power_of_2(dk))
    if bk > 256:
        raise ValueError(f"the causal Triton kernel holds all d_k={dk} key channels of a head in one block and "
                         "takes at most 256; use fewer channels per head or set LRA_KERNELS=reference")
    bv = max(16, min(32 if bk <= 128 else 16, triton.next_power_of_2(dv)))
    return chunk or 16, bk, bv, 8


def _noncausal_blocks(dk, dv):
    """(steps per block, key block, value block, warps): each key channel's softmax is its own, so keys split too.

    The largest blocks that compile for sm_90 without spilling registers (python -m lra.kernels.compile_check).
    """
    return 16, max(16, min(64, triton.next_power_of_2(dk))), max(16, min(32, triton.next_power_of_2(dv))), 4


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
    return dg.sum(0).sum_to_size(gain.shape).to(gain.dtype)


class _Causal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, gain, chunk):
        q, k, v = (t.contiguous() for t in (q, k, v))
        B, H, L, d_k = q.shape
        d_v = v.shape[-1]
        bt, bk, bv, warps = _causal_blocks(d_k, d_v, chunk)
        g, gs = _gain_args(gain, k)
        o = torch.empty_like(v)
        store_z = any(ctx.needs_input_grad[:4])
        z = torch.empty(B, H, L, d_k, device=q.device, dtype=torch.float32) if store_z else o
        _causal_fwd[(triton.cdiv(d_v, bv), B * H)](
            q, k, v, g, o, z, L, d_k, d_v, H, *gs, BT=bt, BK=bk, BV=bv, HAS_GAIN=gain is not None,
            STORE_Z=store_z, PRECISION=_precision(q.dtype), num_warps=warps)
        ctx.save_for_backward(q, k, v, gain, z)
        ctx.blocks = bt, bk, bv, warps
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, gain, z = ctx.saved_tensors
        do = do.contiguous()
        B, H, L, d_k = q.shape
        d_v = v.shape[-1]
        bt, bk, bv, warps = ctx.blocks
        g, gs = _gain_args(gain, k)
        grid = (triton.cdiv(d_v, bv), B * H)
        common = dict(BT=bt, BK=bk, BV=bv, HAS_GAIN=gain is not None, PRECISION=_precision(q.dtype), num_warps=warps)
        dq = _shares(grid[0], q)
        _causal_bwd_dq[grid](k, v, g, z, do, dq, L, d_k, d_v, H, *gs, **common)
        dq = dq.sum(0)  # (B, H, L, d_k) float32
        store_dg = gain is not None and ctx.needs_input_grad[3]
        dk, dv = _shares(grid[0], q), torch.empty_like(v)
        dg = _shares(grid[0], q) if store_dg else dk
        _causal_bwd_dkv[grid](q, k, v, g, z, do, dq, dk, dv, dg, L, d_k, d_v, H, *gs, STORE_DG=store_dg, **common)
        return dq.to(q.dtype), dk.sum(0).to(k.dtype), dv, _reduce_gain(dg, gain) if store_dg else None, None


class _NonCausal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, mask, gain):
        q, k, v = (t.contiguous() for t in (q, k, v))
        B, H, L, d_k = q.shape
        d_v = v.shape[-1]
        bt, bk, bv, warps = _noncausal_blocks(d_k, d_v)
        grid = (triton.cdiv(d_v, bv), triton.cdiv(d_k, bk), B * H)
        g, gs = _gain_args(gain, k)
        m = q if mask is None else mask.to(torch.uint8).contiguous()
        o = torch.empty_like(v) if grid[1] == 1 else _shares(grid[1], v)  # key blocks' shares, summed
        state = torch.empty(B, H, d_k, d_v, device=q.device, dtype=torch.float32)  # normalised S
        lse = torch.empty(B, H, d_k, device=q.device, dtype=torch.float32)  # log sum_s exp(k_s) over real s
        _noncausal_fwd[grid](
            q, k, v, g, m, o, state, lse, L, d_k, d_v, H, *gs, BT=bt, BK=bk, BV=bv, HAS_GAIN=gain is not None,
            HAS_MASK=mask is not None, PRECISION=_precision(q.dtype), num_warps=warps)
        ctx.save_for_backward(q, k, v, m, gain, state, lse)
        ctx.has_mask, ctx.blocks = mask is not None, (bt, bk, bv, warps)
        return o if grid[1] == 1 else o.sum(0).to(v.dtype)

    @staticmethod
    def backward(ctx, do):
        q, k, v, m, gain, state, lse = ctx.saved_tensors
        B, H, L, d_k = q.shape
        d_v = v.shape[-1]
        bt, bk, bv, warps = ctx.blocks
        grid = (triton.cdiv(d_v, bv), triton.cdiv(d_k, bk), B * H)
        g, gs = _gain_args(gain, k)
        store_dg = gain is not None and ctx.needs_input_grad[4]
        dq, dk, dv = _shares(grid[0], q), _shares(grid[0], q), _shares(grid[1], v)
        dg = _shares(grid[0], q) if store_dg else dk
        _noncausal_bwd[grid](
            q, k, v, g, m, do.contiguous(), state, lse, dq, dk, dv, dg, L, d_k, d_v, H, *gs, BT=bt, BK=bk, BV=bv,
            HAS_GAIN=gain is not None, HAS_MASK=ctx.has_mask, STORE_DG=store_dg, PRECISION=_precision(q.dtype),
            num_warps=warps)
        dgain = _reduce_gain(dg, gain) if store_dg else None
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
