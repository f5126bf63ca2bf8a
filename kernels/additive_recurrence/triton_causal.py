"""Triton kernels of LightNet's causal additive recurrence, forward and backward.

The equation of lra.kernels.additive_recurrence (Qin et al. 2024, arXiv:2405.21022), per head, with
z_t = logcumsumexp(k)_t per key channel and an optional gain g (1 without one):

    o_t = sum_j q_tj sum_{s<=t} exp(k_sj - z_tj) g_sj v_s

Chunked like gated linear attention, with z = logcumsumexp(k) from torch. The state
S_e = sum_{s<=e} exp(k_s - z_e) g_s v_s^T (d_k x d_v) is normalised at the step e it was taken, so
every factor that carries it forward, exp(z_e - z_e') and exp(k_s - z_e'), is at most 1:
  1. _causal_states walks the chunks of C steps once per (key block, value block), writing S before
     each chunk: S <- exp(z_prev - z_last) S + sum_s exp(k_s - z_last) g_s v_s^T;
  2. _causal_out computes every chunk at once: q_t exp(z_prev - z_t) S_prev, plus the (C, C) scores
     inside the chunk, (q_t exp(ref - z_t)) . (exp(k_s - ref) g_s) for s <= t, summed over key
     blocks in one tl.dot each, with ref = (z_first + z_last) / 2 so each factor is at most
     exp(R / 2), R the rise of z in the chunk. A key block whose rise passes RISE (where exp(R / 2)
     leaves float32's accurate range) takes the scores one key step at a time instead: exact for
     keys of any size.
Every program but the walks' has one chunk, so a sequence gives L / C times the parallel work of
one walk; the states (B H L/C d_k d_v floats) are kept for the backward.
Backward, the same way: dq per chunk from S_prev and the scores; a reverse walk writes, after each
chunk, D_e = sum_{t>e} q_t exp(z_e - z_t) do_t^T and C_e = sum_{t>e} exp(z_e - z_t) q_t dq_t; then
per chunk dv, dg and, per key channel,

    dk_u = g_u dg_u - exp(k_u - z_u) c_u,      c_u = sum_{t>=u} exp(z_u - z_t) q_t dq_t.

    from lra.kernels.additive_recurrence.triton_causal import additive_causal_triton
    o = additive_causal_triton(q, k, v, gain=g)   # q, k, g (B, H, L, d_k), v (B, H, L, d_v), CUDA
"""
import math

import torch
import triton
import triton.language as tl

from lra.kernels.additive_recurrence.triton_common import (
    NEG,
    check_inputs,
    dot_precision,
    gain_args,
    load_gain,
    load_tile,
    reduce_gain,
)
from lra.kernels.dispatch import interpreting

# the largest rise R of z in a chunk for the one-dot form: exp(R / 2) * tiny stays below eps
# (R < ~143)
_F32 = torch.finfo(torch.float32)
RISE = tl.constexpr(2 * (math.log(_F32.eps) - math.log(_F32.tiny)))


@triton.jit
def _row(tile, here):
    """Row i of a (rows, cols) tile, here = (rows[:, None] == i)."""
    return tl.sum(tl.where(here, tile, 0.0), 0)


@triton.jit
def _load_z(z, offsets, inside, rows, L):
    """z over a chunk: NEG in padded channels, z_last past the end (z rises: z_last is its max)."""
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
    """S before each chunk, normalised at the step before it:
    S <- exp(z_prev - z_last) S + sum exp(k - z_last) g v^T."""
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
        vc = load_tile(v, rows, cv, L, DV)
        gc = load_gain(g, rows, ck, mk, sgt, sgc, HAS_GAIN)
        _, z_last = _load_z(z, pk, mk, rows, L)
        S = S * tl.exp(z_prev - z_last)[:, None] + tl.dot(
            tl.trans(tl.exp(kc - z_last[None, :]) * gc), vc, input_precision=PRECISION)
        z_prev = z_last


@triton.jit
def _chunk_program(BT: tl.constexpr):
    """(block, chunk, batch x head, steps, rows) of a per-chunk program (axis 1: the chunks)."""
    c = tl.program_id(1)
    steps = tl.arange(0, BT)
    return tl.program_id(0), c, tl.program_id(2).to(tl.int64), steps, c * BT + steps


@triton.jit
def _chunk_keys(k, g, z, rows, ck, c, L, DK, sgt, sgc, BT: tl.constexpr, HAS_GAIN: tl.constexpr):
    """A chunk's keys (NEG outside), gains, z (z_last past the end), z_last, z before the chunk,
    and the reference ref = (z_first + z_last) / 2 of the one-dot form with whether every
    channel's rise allows it."""
    mk = (rows[:, None] < L) & (ck[None, :] < DK)
    pk = rows[:, None] * DK + ck[None, :]
    kc = tl.where(mk, tl.load(k + pk, mask=mk, other=0.0).to(tl.float32), NEG)
    gc = load_gain(g, rows, ck, mk, sgt, sgc, HAS_GAIN)
    zc, z_last = _load_z(z, pk, mk, rows, L)
    z_first = tl.min(zc, 0)
    one_dot = tl.max(z_last - z_first, 0) < RISE
    z_prev = _chunk_start(z, ck, c, BT, DK)
    return kc, gc, zc, z_last, z_prev, z_first + (z_last - z_first) * 0.5, one_dot


@triton.jit
def _chunk_scores(qc, kc, gc, zc, ref, PRECISION: tl.constexpr):
    """(t, s) scores sum_j q_tj exp(k_sj - z_tj) g_sj of a key block, as
    (q exp(ref - z)) . (exp(k - ref) g)."""
    return tl.dot(qc * tl.exp(ref[None, :] - zc), tl.trans(tl.exp(kc - ref[None, :]) * gc),
                  input_precision=PRECISION)


@triton.jit
def _causal_out(q, k, v, g, z, states, o, L, DK, DV, H, NT, sgb, sgh, sgt, sgc,
                BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, HAS_GAIN: tl.constexpr,
                PRECISION: tl.constexpr):
    """One chunk's outputs, all chunks at once: the state before it, plus the scores inside it."""
    iv, c, bh, steps, rows = _chunk_program(BT)
    cv = iv * BV + tl.arange(0, BV)
    q, k, z = q + bh * L * DK, k + bh * L * DK, z + bh * L * DK
    v, o = v + bh * L * DV, o + bh * L * DV
    g += (bh // H) * sgb + (bh % H) * sgh
    states += (bh * NT + c) * DK * DV
    vc = load_tile(v, rows, cv, L, DV)
    causal = steps[:, None] >= steps[None, :]  # (t, s)
    oc = tl.zeros((BT, BV), tl.float32)
    scores = tl.zeros((BT, BT), tl.float32)
    for kb in range(0, DK, BK):
        ck = kb + tl.arange(0, BK)
        kc, gc, zc, z_last, z_prev, ref, one_dot = _chunk_keys(k, g, z, rows, ck, c, L, DK, sgt,
                                                               sgc, BT, HAS_GAIN)
        qc = load_tile(q, rows, ck, L, DK)
        S = load_tile(states, ck, cv, DK, DV)
        oc += tl.dot(qc * tl.exp(z_prev[None, :] - zc), S, input_precision=PRECISION)
        if one_dot:
            scores += _chunk_scores(qc, kc, gc, zc, ref, PRECISION)
        else:  # step by step: exp(k_s - z_t) <= 1 for s <= t, exact for keys of any size
            for s in range(BT):
                here = steps[:, None] == s
                key = tl.exp(tl.minimum(_row(kc, here)[None, :] - zc, 0.0))
                key *= _row(gc, here)[None, :]
                weight = tl.where(steps >= s, tl.sum(qc * key, 1), 0.0)  # (t,)
                oc += weight[:, None] * _row(vc, here)[None, :]
    oc += tl.dot(tl.where(causal, scores, 0.0), vc, input_precision=PRECISION)
    tl.store(o + rows[:, None] * DV + cv[None, :], oc,
             mask=(rows[:, None] < L) & (cv[None, :] < DV))


@triton.jit
def _causal_dq(k, v, g, z, states, do, dq, L, DK, DV, H, NT, sgb, sgh, sgt, sgc,
               BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, HAS_GAIN: tl.constexpr,
               PRECISION: tl.constexpr):
    """dq_t = sum_{s<=t} exp(k_s - z_t) g_s (do_t . v_s): the state before the chunk, plus the
    chunk."""
    ik, c, bh, steps, rows = _chunk_program(BT)
    ck = ik * BK + tl.arange(0, BK)
    k, z, dq = k + bh * L * DK, z + bh * L * DK, dq + bh * L * DK
    v, do = v + bh * L * DV, do + bh * L * DV
    g += (bh // H) * sgb + (bh % H) * sgh
    states += (bh * NT + c) * DK * DV
    kc, gc, zc, z_last, z_prev, ref, one_dot = _chunk_keys(k, g, z, rows, ck, c, L, DK, sgt, sgc,
                                                           BT, HAS_GAIN)
    dp = tl.zeros((BT, BT), tl.float32)  # do_t . v_s
    dqc = tl.zeros((BT, BK), tl.float32)
    for vb in range(0, DV, BV):
        cv = vb + tl.arange(0, BV)
        vc, doc = load_tile(v, rows, cv, L, DV), load_tile(do, rows, cv, L, DV)
        S = load_tile(states, ck, cv, DK, DV)
        dp += tl.dot(doc, tl.trans(vc), input_precision=PRECISION)
        dqc += tl.dot(doc, tl.trans(S), input_precision=PRECISION)
    dqc *= tl.exp(z_prev[None, :] - zc)
    dp = tl.where(steps[:, None] >= steps[None, :], dp, 0.0)
    if one_dot:
        dqc += tl.exp(ref[None, :] - zc) * tl.dot(dp, tl.exp(kc - ref[None, :]) * gc,
                                                  input_precision=PRECISION)
    else:
        for s in range(BT):
            here = steps[:, None] == s
            key = tl.exp(tl.minimum(_row(kc, here)[None, :] - zc, 0.0)) * _row(gc, here)[None, :]
            dqc += tl.sum(tl.where(steps[None, :] == s, dp, 0.0), 1)[:, None] * key  # dp[:, s]
    tl.store(dq + rows[:, None] * DK + ck[None, :], dqc,
             mask=(rows[:, None] < L) & (ck[None, :] < DK))


@triton.jit
def _causal_states_back(q, z, do, dq, dstates, cstates, L, DK, DV, NT, BT: tl.constexpr,
                        BK: tl.constexpr, BV: tl.constexpr, PRECISION: tl.constexpr):
    """After each chunk, normalised at its last step z_e: D = sum_{t>e} q_t exp(z_e - z_t) do_t^T
    and C = sum_{t>e} exp(z_e - z_t) q_t dq_t (value block 0 writes C), walking the chunks
    backwards."""
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
        qc, doc = load_tile(q, rows, ck, L, DK), load_tile(do, rows, cv, L, DV)
        r = qc * load_tile(dq, rows, ck, L, DK)
        zc, z_last = _load_z(z, pk, mk, rows, L)
        z_prev = _chunk_start(z, ck, c, BT, DK)
        qp, decay = tl.exp(z_prev[None, :] - zc), tl.exp(z_prev - z_last)
        D = D * decay[:, None] + tl.dot(tl.trans(qc * qp), doc, input_precision=PRECISION)
        C = C * decay + tl.sum(r * qp, 0)


@triton.jit
def _causal_dv(q, k, g, z, dstates, do, dv, L, DK, DV, H, NT, sgb, sgh, sgt, sgc,
               BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, HAS_GAIN: tl.constexpr,
               PRECISION: tl.constexpr):
    """dv_s = sum_{t>=s} sum_j q_tj exp(k_sj - z_tj) g_sj do_t: the chunk's scores, plus D after
    it."""
    iv, c, bh, steps, rows = _chunk_program(BT)
    cv = iv * BV + tl.arange(0, BV)
    q, k, z = q + bh * L * DK, k + bh * L * DK, z + bh * L * DK
    do, dv = do + bh * L * DV, dv + bh * L * DV
    g += (bh // H) * sgb + (bh % H) * sgh
    dstates += (bh * NT + c) * DK * DV
    doc = load_tile(do, rows, cv, L, DV)
    dvc = tl.zeros((BT, BV), tl.float32)
    scores = tl.zeros((BT, BT), tl.float32)  # (t, s)
    for kb in range(0, DK, BK):
        ck = kb + tl.arange(0, BK)
        kc, gc, zc, z_last, _, ref, one_dot = _chunk_keys(k, g, z, rows, ck, c, L, DK, sgt, sgc, BT,
                                                          HAS_GAIN)
        qc = load_tile(q, rows, ck, L, DK)
        D = load_tile(dstates, ck, cv, DK, DV)
        dvc += tl.dot(tl.exp(kc - z_last[None, :]) * gc, D, input_precision=PRECISION)
        if one_dot:
            scores += _chunk_scores(qc, kc, gc, zc, ref, PRECISION)
        else:
            for t in range(BT):
                here = steps[:, None] == t
                key = tl.exp(tl.minimum(kc - _row(zc, here)[None, :], 0.0)) * gc  # (s, j)
                weight = tl.where(steps <= t, tl.sum(key * _row(qc, here)[None, :], 1), 0.0)  # (s,)
                dvc += weight[:, None] * _row(doc, here)[None, :]
    dvc += tl.dot(tl.trans(tl.where(steps[:, None] >= steps[None, :], scores, 0.0)), doc,
                  input_precision=PRECISION)
    tl.store(dv + rows[:, None] * DV + cv[None, :], dvc,
             mask=(rows[:, None] < L) & (cv[None, :] < DV))


@triton.jit
def _causal_dk(q, k, v, g, z, dstates, cstates, do, dq, dk, dg, L, DK, DV, H, NT, sgb, sgh, sgt,
               sgc, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, HAS_GAIN: tl.constexpr,
               STORE_DG: tl.constexpr, PRECISION: tl.constexpr):
    """dg_sj = sum_{t>=s} exp(k_sj - z_tj) q_tj (do_t . v_s) and dk = g dg - exp(k - z) c, with
    c_u = sum_{t>=u} exp(z_u - z_t) q_t dq_t: the chunk's part, plus D and C after it."""
    ik, c, bh, steps, rows = _chunk_program(BT)
    ck = ik * BK + tl.arange(0, BK)
    q, k, z, dq = q + bh * L * DK, k + bh * L * DK, z + bh * L * DK, dq + bh * L * DK
    dk, dg, v, do = dk + bh * L * DK, dg + bh * L * DK, v + bh * L * DV, do + bh * L * DV
    g += (bh // H) * sgb + (bh % H) * sgh
    dstates += (bh * NT + c) * DK * DV
    kc, gc, zc, z_last, _, ref, one_dot = _chunk_keys(k, g, z, rows, ck, c, L, DK, sgt, sgc, BT,
                                                      HAS_GAIN)
    qc = load_tile(q, rows, ck, L, DK)
    r = qc * load_tile(dq, rows, ck, L, DK)
    dp = tl.zeros((BT, BT), tl.float32)  # (t, s): do_t . v_s
    vD = tl.zeros((BT, BK), tl.float32)  # (s, j): v_s . D_j
    for vb in range(0, DV, BV):
        cv = vb + tl.arange(0, BV)
        vc, doc = load_tile(v, rows, cv, L, DV), load_tile(do, rows, cv, L, DV)
        D = load_tile(dstates, ck, cv, DK, DV)
        dp += tl.dot(doc, tl.trans(vc), input_precision=PRECISION)
        vD += tl.dot(vc, tl.trans(D), input_precision=PRECISION)
    dp = tl.where(steps[:, None] >= steps[None, :], dp, 0.0)
    dgc = tl.exp(kc - z_last[None, :]) * vD
    c_after = tl.load(cstates + (bh * NT + c) * DK + ck, mask=ck < DK, other=0.0)
    cc = tl.exp(zc - z_last[None, :]) * c_after[None, :]
    if one_dot:
        qs = qc * tl.exp(ref[None, :] - zc)
        dgc += tl.exp(kc - ref[None, :]) * tl.dot(tl.trans(dp), qs, input_precision=PRECISION)
        cc += tl.exp(zc - ref[None, :]) * tl.cumsum(tl.exp(ref[None, :] - zc) * r, 0, reverse=True)
    else:
        for t in range(BT):
            here = steps[:, None] == t
            z_t = _row(zc, here)[None, :]
            dgc += (tl.exp(tl.minimum(kc - z_t, 0.0)) * _row(qc, here)[None, :]
                    * _row(dp, here)[:, None])
            cc += tl.where(steps[:, None] <= t,
                           tl.exp(tl.minimum(zc - z_t, 0.0)) * _row(r, here)[None, :], 0.0)
    mk = (rows[:, None] < L) & (ck[None, :] < DK)
    tl.store(dk + rows[:, None] * DK + ck[None, :], gc * dgc - tl.exp(kc - zc) * cc, mask=mk)
    if STORE_DG:
        tl.store(dg + rows[:, None] * DK + ck[None, :], dgc, mask=mk)


def _causal_blocks(dk, dv, chunk=None):
    """(chunk, key block, value block, warps); the kernels loop over the key and value blocks they
    need whole.

    On a GPU, chunks of 64 and blocks of 32 on 8 warps: none of the six kernels spills registers
    on sm_90 (the compile check, `make kernels-check`). Under the interpreter, blocks of 16, so the
    tests cover several.
    """
    if chunk is not None and (chunk < 16 or chunk & (chunk - 1)):
        raise ValueError(f"chunk={chunk} must be a power of two of at least 16 "
                         "(tl.dot's smallest block)")
    widest = 16 if interpreting() else 32
    bk, bv = (max(16, min(widest, triton.next_power_of_2(d))) for d in (dk, dv))
    return chunk or 64, bk, bv, 8


class _Causal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, gain, chunk):
        q, k, v = (t.contiguous() for t in (q, k, v))
        B, H, L, d_k = q.shape
        d_v = v.shape[-1]
        bt, bk, bv, warps = _causal_blocks(d_k, d_v, chunk)
        n_chunks = triton.cdiv(L, bt)
        g, gs = gain_args(gain, k)
        z = torch.logcumsumexp(k.float(), dim=2)  # (B, H, L, d_k) float32
        # the state before each chunk
        states = torch.empty(B * H, n_chunks, d_k, d_v, device=q.device, dtype=torch.float32)
        common = dict(BT=bt, BK=bk, BV=bv, HAS_GAIN=gain is not None,
                      PRECISION=dot_precision(q.dtype), num_warps=warps)
        _causal_states[(triton.cdiv(d_k, bk), triton.cdiv(d_v, bv), B * H)](
            k, v, g, z, states, L, d_k, d_v, H, n_chunks, *gs, **common)
        o = torch.empty_like(v)
        _causal_out[(triton.cdiv(d_v, bv), n_chunks, B * H)](
            q, k, v, g, z, states, o, L, d_k, d_v, H, n_chunks, *gs, **common)
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
        g, gs = gain_args(gain, k)
        dq = torch.empty(B, H, L, d_k, device=q.device, dtype=torch.float32)
        _causal_dq[(key_blocks, n_chunks, B * H)](k, v, g, z, states, do, dq, L, d_k, d_v, H,
                                                  n_chunks, *gs, **common)
        after = torch.empty_like(states)
        after_c = torch.empty(B * H, n_chunks, d_k, device=q.device, dtype=torch.float32)
        _causal_states_back[(key_blocks, value_blocks, B * H)](
            q, z, do, dq, after, after_c, L, d_k, d_v, n_chunks, BT=common["BT"], BK=common["BK"],
            BV=common["BV"], PRECISION=common["PRECISION"], num_warps=common["num_warps"])
        dv = torch.empty_like(v)
        _causal_dv[(value_blocks, n_chunks, B * H)](q, k, g, z, after, do, dv, L, d_k, d_v, H,
                                                    n_chunks, *gs, **common)
        store_dg = gain is not None and ctx.needs_input_grad[3]
        dk = torch.empty(B, H, L, d_k, device=q.device, dtype=torch.float32)
        dg = torch.empty_like(dk) if store_dg else dk
        _causal_dk[(key_blocks, n_chunks, B * H)](q, k, v, g, z, after, after_c, do, dq, dk, dg, L,
                                                  d_k, d_v, H, n_chunks, *gs, STORE_DG=store_dg,
                                                  **common)
        dgain = reduce_gain(dg, gain) if store_dg else None
        return dq.to(q.dtype), dk.to(k.dtype), dv, dgain, None


def additive_causal_triton(q, k, v, gain=None, chunk=None):
    """additive_causal_chunked's result by the Triton kernels.

    chunk: steps per chunk (a power of two >= 16), None picks.
    """
    check_inputs(q, k, v, gain)
    return _Causal.apply(q, k, v, gain, chunk)
