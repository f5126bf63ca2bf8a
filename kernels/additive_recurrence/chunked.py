"""LightNet's causal recurrence on a CPU, chunked like gated linear attention.

With key k'_t = exp(k_t - z_t) * g_t and per-channel log decay z_{t-1} - z_t <= 0, the causal form

    S_t = exp(z_{t-1} - z_t) * S_{t-1} + k'_t v_t^T,    o_t = S_t^T q_t,    z_t = logcumsumexp(k)_t

is gated linear attention: quadratic inside a chunk, a state carried across chunks. Every weight
exp(k_s - z_t) (s <= t) and every decay lies in (0, 1], so nothing overflows, whatever the size
of the keys. `logcumsumexp` here is torch's, in chunks from exp and cumsum.
"""
import math

import torch

# the widest spread of keys a chunk of `logcumsumexp` sums at once: exp(-SPAN) and 1 / exp(-SPAN)
# stay far inside float32's range (the backward divides by the running sums)
SPAN = 40.0


def logcumsumexp(k, chunk=64):
    """torch.logcumsumexp(k, dim=-2) in chunks, from exp and cumsum: several times faster on a CPU,
    forward and backward (torch's backward alone takes two more log-cumsum-exps).

    A chunk sums exp(k - r) with r its largest key (detached: the result does not depend on it), so
    nothing overflows, then joins the total of the chunks before it by logaddexp. A chunk whose keys
    spread more than SPAN is split in halves, so no sum underflows; keys at the dtype's lowest
    (weight 0, as the dispatch masks pads) do not count towards the spread.
    """
    L, lowest = k.shape[-2], torch.finfo(k.dtype).min
    C = min(chunk, L)
    n = -(-L // C)
    kp = torch.nn.functional.pad(k, (0, 0, 0, n * C - L), mode="replicate") if n * C > L else k
    kc = kp.reshape(*k.shape[:-2], n, C, k.shape[-1])
    r = kc.amax(-2, keepdim=True).detach()  # (..., n, 1, dk)
    spread = (r - torch.where(kc > lowest / 2, kc, r).amin(-2, keepdim=True)).max().item()
    if C > 1 and spread > SPAN:
        return logcumsumexp(k, C // 2)
    # (..., n, C, dk): within each chunk
    local = r + torch.log(torch.cumsum(torch.exp(kc - r), dim=-2))
    totals = [local[..., 0, -1, :]]
    for c in range(1, n):  # each chunk's total joined to those before it
        totals.append(torch.logaddexp(totals[-1], local[..., c, -1, :]))
    if n > 1:
        before = torch.stack(totals[:-1], -2).unsqueeze(-2)  # (..., n-1, 1, dk)
        local = torch.cat([local[..., :1, :, :], torch.logaddexp(before, local[..., 1:, :, :])],
                          dim=-3)
    return local.reshape(kp.shape)[..., :L, :]


def additive_causal_chunked(q, k, v, chunk=64, gain=None):
    """Chunked like gated linear attention: quadratic inside a chunk, a carried state across.

    Inside a chunk (first step f, last step e) the weights factor through a per-channel
    reference m = (z_f + z_e) / 2:  exp(k_s - z_t) = exp(k_s - m) * exp(m - z_t), each factor
    at most exp(R / 2) with R = z_e - z_f the rise of z inside the chunk, so the (C, C)
    scores are one matmul. Across chunks a state normalised at each chunk end e,
    S_e = sum_{s<=e} exp(k_s - z_e) g_s v_s^T, carries the past: the next chunk reads
    q_t exp(z_e - z_t) S_e, and S advances by the chunk decay exp(z_e - z_e'); those
    factors are all <= 1. If some chunk rises so much that exp(R / 2) would leave the
    dtype's accurate range, the chunk is halved (a chunk of one step has R = 0), so the
    result stays exact for keys of any size. L need not be a multiple of `chunk`: the tail
    is padded with keys of weight 0 and cut off again. float16 and bfloat16 inputs are computed in
    float32, the output in q's dtype.
    """
    if q.dtype in (torch.float16, torch.bfloat16):
        up = [t if t is None else t.float() for t in (q, k, v, gain)]
        return additive_causal_chunked(*up[:3], chunk, up[3]).to(q.dtype)
    B, H, L, dk = k.shape
    dv = v.shape[-1]
    C = min(chunk, L)
    n = -(-L // C)
    pad = n * C - L
    g = torch.ones_like(k) if gain is None else gain.expand_as(k)
    qp, vp, gp = (torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (q, v, g))
    kp = torch.nn.functional.pad(k, (0, 0, 0, pad), value=torch.finfo(k.dtype).min)
    z = logcumsumexp(kp)  # (B, H, nC, dk)
    qc, kc, zc, gc = (t.reshape(B, H, n, C, dk) for t in (qp, kp, z, gp))
    vc = vp.reshape(B, H, n, C, dv)
    # (B, H, n, 1, dk): z at each chunk's first and last step
    zf, ze = zc[..., :1, :], zc[..., -1:, :]
    rise = ze - zf
    info = torch.finfo(k.dtype)  # accurate while exp(R / 2) * tiny < eps: R < ~143 in float32
    if C > 1 and rise.max().item() > 2 * (math.log(info.eps) - math.log(info.tiny)):
        return additive_causal_chunked(q, k, v, C // 2, gain)

    # intra-chunk: scores through the mid reference, (B, H, n, C_t, C_s)
    m = zf + rise / 2  # (z_f + z_e) / 2 without overflow at the pads' finfo.min
    future = ~torch.ones(C, C, dtype=torch.bool, device=k.device).tril()
    scores = (qc * torch.exp(m - zc)) @ (torch.exp(kc - m) * gc).transpose(-1, -2)
    o = scores.masked_fill(future, 0.0) @ vc  # (B, H, n, C, dv)

    # inter-chunk: states normalised at each chunk end
    ze = ze.squeeze(-2)  # (B, H, n, dk)
    U = (torch.exp(kc - ze.unsqueeze(-2)) * gc).transpose(-1, -2) @ vc  # (B, H, n, dk, dv)
    decay = torch.exp(ze[:, :, :-1] - ze[:, :, 1:]).unsqueeze(-1)  # (B, H, n-1, dk, 1)
    states = [U[:, :, 0]]
    for c in range(1, n - 1):
        states.append(decay[:, :, c - 1] * states[-1] + U[:, :, c])
    if n > 1:
        S = torch.stack(states, 2)  # (B, H, n-1, dk, dv): the state before chunks 1 .. n-1
        # (B, H, n-1, C, dk)
        q_past = qc[:, :, 1:] * torch.exp(ze[:, :, :-1].unsqueeze(-2) - zc[:, :, 1:])
        o = torch.cat([o[:, :, :1], o[:, :, 1:] + q_past @ S], dim=2)
    return o.reshape(B, H, n * C, dv)[:, :, :L]
