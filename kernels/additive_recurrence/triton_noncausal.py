"""Triton kernels of LightNet's non-causal additive recurrence, forward and backward.

The equation of lra.kernels.additive_recurrence (Qin et al. 2024, arXiv:2405.21022), per head,
with an optional gain g (1 without one):

    o_t = q_t^T S,    S = sum_s softmax_s(k)_s g_s v_s^T      (softmax over the real positions)

One program per (batch x head x split of the sequence, block of key channels, block of value
channels): each key channel's softmax is its own, so keys split like values. _noncausal_stats
keeps a split's masked online-softmax statistics (max, sum) and S's tile; torch merges the splits
(rescaling each by exp(m_split - m)); _noncausal_out writes each split's o = q S, zero at pads:
no kernel reads a pad's query, key, value or output gradient. Its backward: dS = sum_t q_t do_t^T
over real t by splits, then per position dv = (w g) dS, dg = w (v dS^T), dk = w (g (v dS^T) - c)
with c_j = sum_v dS_jv S_jv and w the softmax weights: one kernel per key block walks the value
blocks for dq, dk, dg, another per value block walks the key blocks for dv, so each gradient is
written once, in the inputs' dtype (no per-block float32 copies of size B H L d).

    from lra.kernels.additive_recurrence.triton_noncausal import additive_noncausal_triton
    o = additive_noncausal_triton(q, k, v, mask, gain=g)   # mask (B, L) bool, True at real tokens
"""
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


@triton.jit
def _real_rows(mask, b, rows, L, HAS_MASK: tl.constexpr):
    if HAS_MASK:
        return tl.load(mask + b * L + rows, mask=rows < L, other=0) != 0
    else:
        return rows < L


@triton.jit
def _load_real(x, rows, cols, real_rows, D):
    """x[rows, cols] of a (L, D) matrix in float32, 0 at padded rows (not read) and past D."""
    return tl.load(x + rows[:, None] * D + cols[None, :],
                   mask=real_rows[:, None] & (cols[None, :] < D), other=0.0).to(tl.float32)


@triton.jit
def _split(NS, LS: tl.constexpr):
    """Axis 2 runs over (batch x head) x splits of LS steps: this program's batch x head and first
    step."""
    pid = tl.program_id(2)
    return (pid // NS).to(tl.int64), (pid % NS) * LS


@triton.jit
def _noncausal_stats(k, v, g, mask, m_part, total_part, s_part, L, NS, DK, DV, H, sgb, sgh, sgt,
                     sgc, LS: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                     HAS_GAIN: tl.constexpr, HAS_MASK: tl.constexpr, PRECISION: tl.constexpr):
    """One split's real keys: their max m, the sum of exp(k - m), and S's tile,
    sum exp(k - m) g v^T."""
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
        kc = tl.load(k + rows[:, None] * DK + ck[None, :], mask=real, other=0.0).to(tl.float32)
        kc = tl.where(real, kc, NEG)
        vc = _load_real(v, rows, cv, real_rows, DV)
        gc = load_gain(g, rows, ck, real, sgt, sgc, HAS_GAIN)
        m_new = tl.maximum(m, tl.max(kc, 0))
        p = tl.where(real, tl.exp(kc - m_new[None, :]), 0.0)  # (BT, BK)
        scale = tl.exp(m - m_new)
        total = total * scale + tl.sum(p, 0)
        S = S * scale[:, None] + tl.dot(tl.trans(p * gc), vc, input_precision=PRECISION)
        m = m_new
    tl.store(s_part + (part * DK + ck[:, None]) * DV + cv[None, :], S,
             mask=(ck[:, None] < DK) & (cv[None, :] < DV))
    stats = ck < tl.where(iv == 0, DK, 0)  # the first value block writes m and the sum
    tl.store(m_part + part * DK + ck, m, mask=stats)
    tl.store(total_part + part * DK + ck, total, mask=stats)


@triton.jit
def _noncausal_out(q, mask, state, o, L, NS, DK, DV, H, LS: tl.constexpr, BT: tl.constexpr,
                   BK: tl.constexpr, BV: tl.constexpr, HAS_MASK: tl.constexpr,
                   PRECISION: tl.constexpr):
    """One split's o = q S, this key block's share; zero at pads, whose queries are not read."""
    iv, ik = tl.program_id(0), tl.program_id(1)
    bh, first = _split(NS, LS)
    steps, ck, cv = tl.arange(0, BT), ik * BK + tl.arange(0, BK), iv * BV + tl.arange(0, BV)
    q, o = q + bh * L * DK, o + (ik * (tl.num_programs(2) // NS) + bh) * L * DV
    S = load_tile(state + bh * DK * DV, ck, cv, DK, DV)
    for start in range(first, first + LS, BT):
        rows = start + steps
        qc = _load_real(q, rows, ck, _real_rows(mask, bh // H, rows, L, HAS_MASK), DK)
        tl.store(o + rows[:, None] * DV + cv[None, :], tl.dot(qc, S, input_precision=PRECISION),
                 mask=(rows[:, None] < L) & (cv[None, :] < DV))


@triton.jit
def _noncausal_dstate(q, mask, do, ds_part, L, NS, DK, DV, H, LS: tl.constexpr, BT: tl.constexpr,
                      BK: tl.constexpr, BV: tl.constexpr, HAS_MASK: tl.constexpr,
                      PRECISION: tl.constexpr):
    """One split's share of dS = sum_t q_t do_t^T over the real positions t."""
    iv, ik, part = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    bh, first = _split(NS, LS)
    steps, ck, cv = tl.arange(0, BT), ik * BK + tl.arange(0, BK), iv * BV + tl.arange(0, BV)
    q, do = q + bh * L * DK, do + bh * L * DV
    dS = tl.zeros((BK, BV), tl.float32)
    for start in range(first, first + LS, BT):
        rows = start + steps
        real = _real_rows(mask, bh // H, rows, L, HAS_MASK)
        dS += tl.dot(tl.trans(_load_real(q, rows, ck, real, DK)),
                     _load_real(do, rows, cv, real, DV), input_precision=PRECISION)
    tl.store(ds_part + (part * DK + ck[:, None]) * DV + cv[None, :], dS,
             mask=(ck[:, None] < DK) & (cv[None, :] < DV))


@triton.jit
def _noncausal_bwd_keys(q, k, v, g, mask, do, state, lse, dstate, c, dq, dk, dg, L, NS, DK, DV, H,
                        sgb, sgh, sgt, sgc, LS: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
                        BV: tl.constexpr, HAS_GAIN: tl.constexpr, HAS_MASK: tl.constexpr,
                        STORE_DG: tl.constexpr, PRECISION: tl.constexpr):
    """One split, one key block, every value block in turn: dq = do S^T, dw = v dS^T summed over
    the value blocks, then dk = w (g dw - c) and dg = w dw, stored once in the inputs' dtype."""
    ik = tl.program_id(1)
    bh, first = _split(NS, LS)
    steps, ck, cv0 = tl.arange(0, BT), ik * BK + tl.arange(0, BK), tl.arange(0, BV)
    rows_k = bh * L * DK  # this sequence's (L, d_k) matrices
    q, k, dq, dk, dg = q + rows_k, k + rows_k, dq + rows_k, dk + rows_k, dg + rows_k
    v, do = v + bh * L * DV, do + bh * L * DV
    state, dstate = state + bh * DK * DV, dstate + bh * DK * DV
    g += (bh // H) * sgb + (bh % H) * sgh
    lse_k = tl.load(lse + bh * DK + ck, mask=ck < DK, other=0.0)
    c_k = tl.load(c + bh * DK + ck, mask=ck < DK, other=0.0)  # sum_v dS S
    for start in range(first, first + LS, BT):
        rows = start + steps
        mk = (rows[:, None] < L) & (ck[None, :] < DK)
        real_rows = _real_rows(mask, bh // H, rows, L, HAS_MASK)
        real = real_rows[:, None] & (ck[None, :] < DK)
        pk = rows[:, None] * DK + ck[None, :]
        kc = tl.load(k + pk, mask=real, other=0.0).to(tl.float32)
        gc = load_gain(g, rows, ck, real, sgt, sgc, HAS_GAIN)
        # softmax weights; pads: w = 0, o = 0
        w = tl.where(real, tl.exp(tl.where(real, kc, lse_k[None, :]) - lse_k[None, :]), 0.0)
        dw = tl.zeros((BT, BK), tl.float32)
        dqc = tl.zeros((BT, BK), tl.float32)
        for iv in range(0, tl.cdiv(DV, BV)):
            cv = iv * BV + cv0
            S, dS = load_tile(state, ck, cv, DK, DV), load_tile(dstate, ck, cv, DK, DV)
            vc = _load_real(v, rows, cv, real_rows, DV)
            doc = _load_real(do, rows, cv, real_rows, DV)
            dw += tl.dot(vc, tl.trans(dS), input_precision=PRECISION)  # (BT, BK)
            dqc += tl.dot(doc, tl.trans(S), input_precision=PRECISION)
        tl.store(dq + pk, dqc, mask=mk)
        tl.store(dk + pk, w * (gc * dw - c_k[None, :]), mask=mk)
        if STORE_DG:
            tl.store(dg + pk, w * dw, mask=mk)


@triton.jit
def _noncausal_bwd_values(k, g, mask, dstate, lse, dv, L, NS, DK, DV, H, sgb, sgh, sgt, sgc,
                          LS: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                          HAS_GAIN: tl.constexpr, HAS_MASK: tl.constexpr,
                          PRECISION: tl.constexpr):
    """One split, one value block, every key block in turn: dv = (w g) dS, stored once."""
    iv = tl.program_id(0)
    bh, first = _split(NS, LS)
    steps, ck0, cv = tl.arange(0, BT), tl.arange(0, BK), iv * BV + tl.arange(0, BV)
    k, dv, dstate = k + bh * L * DK, dv + bh * L * DV, dstate + bh * DK * DV
    g += (bh // H) * sgb + (bh % H) * sgh
    for start in range(first, first + LS, BT):
        rows = start + steps
        real_rows = _real_rows(mask, bh // H, rows, L, HAS_MASK)
        dvc = tl.zeros((BT, BV), tl.float32)
        for ik in range(0, tl.cdiv(DK, BK)):
            ck = ik * BK + ck0
            real = real_rows[:, None] & (ck[None, :] < DK)
            kc = tl.load(k + rows[:, None] * DK + ck[None, :], mask=real, other=0.0).to(tl.float32)
            gc = load_gain(g, rows, ck, real, sgt, sgc, HAS_GAIN)
            lse_k = tl.load(lse + bh * DK + ck, mask=ck < DK, other=0.0)
            w = tl.where(real, tl.exp(tl.where(real, kc, lse_k[None, :]) - lse_k[None, :]), 0.0)
            dvc += tl.dot(w * gc, load_tile(dstate, ck, cv, DK, DV), input_precision=PRECISION)
        tl.store(dv + rows[:, None] * DV + cv[None, :], dvc,
                 mask=(rows[:, None] < L) & (cv[None, :] < DV))


def _noncausal_blocks(dk, dv):
    """(steps per block, steps per split, key block, value block, warps): each key channel's
    softmax is its own, so keys split too, and the sequence splits into parts of 256 steps merged
    afterwards (of 32 under the interpreter, so the tests cover several). The largest blocks that
    compile for sm_90 without spilling registers (the compile check, `make kernels-check`)."""
    return (16, 32 if interpreting() else 256, max(16, min(64, triton.next_power_of_2(dk))),
            max(16, min(32, triton.next_power_of_2(dv))), 4)


def _merge_splits(m, total, s):
    """Each sequence's normalised S and log-sum-exp of keys from its splits' max m, sum of
    exp(k - m) and sum of exp(k - m) g v^T: (B, H, splits, d_k[, d_v]) -> (B, H, d_k, d_v),
    (B, H, d_k)."""
    top = m.amax(2, keepdim=True)
    scale = torch.exp(m - top)  # 0 for a split without real keys (m = NEG)
    total = (scale * total).sum(2)
    # a sequence with no real token keeps S = 0
    total = torch.where(total > 0, total, torch.ones_like(total))
    return (scale[..., None] * s).sum(2) / total[..., None], top.squeeze(2) + total.log()


class _NonCausal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, mask, gain):
        q, k, v = (t.contiguous() for t in (q, k, v))
        B, H, L, d_k = q.shape
        d_v = v.shape[-1]
        bt, ls, bk, bv, warps = _noncausal_blocks(d_k, d_v)
        n_splits = triton.cdiv(L, ls)
        grid = (triton.cdiv(d_v, bv), triton.cdiv(d_k, bk), B * H * n_splits)
        g, gs = gain_args(gain, k)
        m = q if mask is None else mask.to(torch.uint8).contiguous()
        blocks = dict(LS=ls, BT=bt, BK=bk, BV=bv, PRECISION=dot_precision(q.dtype), num_warps=warps)
        top, total = (torch.empty(B, H, n_splits, d_k, device=q.device, dtype=torch.float32)
                      for _ in range(2))
        parts = torch.empty(B, H, n_splits, d_k, d_v, device=q.device, dtype=torch.float32)
        _noncausal_stats[grid](k, v, g, m, top, total, parts, L, n_splits, d_k, d_v, H, *gs,
                               HAS_GAIN=gain is not None, HAS_MASK=mask is not None, **blocks)
        state, lse = _merge_splits(top, total, parts)
        # key blocks' shares, summed
        o = torch.empty_like(v) if grid[1] == 1 else _shares(grid[1], v)
        _noncausal_out[grid](q, m, state, o, L, n_splits, d_k, d_v, H, HAS_MASK=mask is not None,
                             **blocks)
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
        _noncausal_dstate[grid](q, m, do, parts, L, n_splits, d_k, d_v, H, HAS_MASK=ctx.has_mask,
                                **blocks)
        g, gs = gain_args(gain, k)
        dstate = parts.sum(2)
        c = (dstate * state).sum(-1)  # (B, H, d_k): sum_v dS S
        store_dg = gain is not None and ctx.needs_input_grad[4]
        # written once each, in the inputs' dtype: no per-block copies
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        # float32 for the sum over what the gain broadcasts along
        dg = torch.empty_like(k, dtype=torch.float32) if store_dg else dk
        flags = dict(HAS_GAIN=gain is not None, HAS_MASK=ctx.has_mask, **blocks)
        # two (steps, keys) accumulators: value blocks of 16 and no pipelined loads keep the
        # registers from spilling (the compile check), as one stage does for float32 values
        keys = dict(flags, BV=16, num_stages=1)
        values = dict(flags, num_stages=1) if q.dtype == torch.float32 else flags
        _noncausal_bwd_keys[(1, grid[1], grid[2])](
            q, k, v, g, m, do, state, lse, dstate, c, dq, dk, dg, L, n_splits, d_k, d_v, H, *gs,
            STORE_DG=store_dg, **keys)
        _noncausal_bwd_values[(grid[0], 1, grid[2])](k, g, m, dstate, lse, dv, L, n_splits, d_k,
                                                     d_v, H, *gs, **values)
        dgain = reduce_gain(dg, gain) if store_dg else None
        return dq, dk, dv, None, dgain


def _shares(n, like):
    """A float32 buffer for n blocks' shares of a tensor shaped like `like`, summed afterwards."""
    return torch.empty(n, *like.shape, device=like.device, dtype=torch.float32)


def additive_noncausal_triton(q, k, v, mask=None, gain=None):
    """additive_noncausal_reference's result by the Triton kernels: pads (mask False) get key
    weight 0."""
    check_inputs(q, k, v, gain, mask)
    return _NonCausal.apply(q, k, v, mask, gain)
