"""LightNet's additive linear recurrence, causal and non-causal.

Qin et al., "You Only Scan Once: Efficient Multi-dimension Sequential Modeling with
LightNet", 2024 (arXiv:2405.21022). Per head, with queries q_t, key logits k_t (both d_k
wide) and values v_t (d_v wide), each key channel j keeps a softmax over time:

    causal:      o_t = sum_j q_tj * sum_{s<=t} exp(k_sj - z_tj) g_sj v_s,    z_t = logcumsumexp(k)_t
    non-causal:  o_t = sum_j q_tj * sum_s softmax_s(k_.j)_s g_sj v_s        (one d_k x d_v matrix)

g is an optional gain on each normalised key (LightNet's LRPE passes cos / sin of the
position angle); without it g = 1. The causal form is gated linear attention with key
k'_t = exp(k_t - z_t) * g_t and per-channel log decay z_{t-1} - z_t <= 0:

    S_t = exp(z_{t-1} - z_t) * S_{t-1} + k'_t v_t^T,    o_t = S_t^T q_t

Every weight exp(k_s - z_t) (s <= t) and every decay lies in (0, 1], so nothing here
overflows, whatever the size of the keys. Shapes: q, k, g (B, H, L, d_k), v (B, H, L, d_v).

Here: PyTorch forms (step by step, quadratic, chunked, non-causal) and the dispatch, which runs
the Triton kernels of lra.kernels.additive_recurrence_triton (same chunked form, forward and
backward) on CUDA tensors of float32 / float16 / bfloat16, and these forms elsewhere
(`LRA_KERNELS=reference|triton` forces one; see lra.kernels.dispatch).

    from lra.kernels.additive_recurrence import additive_recurrence
    o = additive_recurrence(q, k, v, mask, causal=True)   # (B, H, L, d_v)
"""
import math

import torch

from lra.kernels.dispatch import forced, use_triton


def causal_reference(q, k, v, gain=None):
    """The recurrence, one step at a time, with the running log-sum-exp z_t = logaddexp(z_{t-1}, k_t)."""
    g = torch.ones_like(k) if gain is None else gain.expand_as(k)
    z = k[..., 0, :]  # (B, H, dk)
    S = (g[..., 0, :].unsqueeze(-1) * v[..., 0, :].unsqueeze(-2))  # (B, H, dk, dv), weight exp(k_0 - z_0) = 1
    outs = [(q[..., 0, :].unsqueeze(-2) @ S).squeeze(-2)]
    for t in range(1, k.shape[-2]):
        z_new = torch.logaddexp(z, k[..., t, :])  # (B, H, dk)
        key = torch.exp(k[..., t, :] - z_new) * g[..., t, :]  # (B, H, dk), in (0, |g|]
        S = torch.exp(z - z_new).unsqueeze(-1) * S + key.unsqueeze(-1) * v[..., t, :].unsqueeze(-2)
        z = z_new
        outs.append((q[..., t, :].unsqueeze(-2) @ S).squeeze(-2))  # (B, H, dv)
    return torch.stack(outs, -2)  # (B, H, L, dv)


def causal_quadratic(q, k, v, gain=None):
    """The masked quadratic form: A_ts = sum_j q_tj exp(k_sj - z_tj) g_sj for s <= t, o = A v.

    Materialises (B, H, L, L, d_k): a check for the other two, not for long sequences.
    """
    L = k.shape[-2]
    z = torch.logcumsumexp(k, dim=-2)  # (B, H, L, dk)
    logw = k.unsqueeze(-3) - z.unsqueeze(-2)  # (B, H, L_t, L_s, dk)
    future = ~torch.ones(L, L, dtype=torch.bool, device=k.device).tril()  # (L_t, L_s)
    w = torch.exp(logw.masked_fill(future.unsqueeze(-1), float("-inf")))  # 0 where s > t
    if gain is not None:
        w = w * gain.unsqueeze(-3)
    A = torch.einsum("bhtj,bhtsj->bhts", q, w)  # (B, H, L, L)
    return A @ v  # (B, H, L, dv)


SPAN = 40.0  # the widest spread of keys a chunk of `logcumsumexp` sums at once: exp(-SPAN) and 1 / exp(-SPAN)
# stay far inside float32's range (the backward divides by the running sums)


def logcumsumexp(k, chunk=64):
    """torch.logcumsumexp(k, dim=-2) in chunks, from exp and cumsum: several times faster on a CPU, forward
    and backward (torch's backward alone takes two more log-cumsum-exps).

    A chunk sums exp(k - r) with r its largest key (detached: the result does not depend on it), so nothing
    overflows, then joins the total of the chunks before it by logaddexp. A chunk whose keys spread more
    than SPAN is split in halves, so no sum underflows; keys at the dtype's lowest (weight 0, as the
    dispatch masks pads) do not count towards the spread.
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
    local = r + torch.log(torch.cumsum(torch.exp(kc - r), dim=-2))  # (..., n, C, dk): within each chunk
    totals = [local[..., 0, -1, :]]
    for c in range(1, n):  # each chunk's total joined to those before it
        totals.append(torch.logaddexp(totals[-1], local[..., c, -1, :]))
    if n > 1:
        before = torch.stack(totals[:-1], -2).unsqueeze(-2)  # (..., n-1, 1, dk)
        local = torch.cat([local[..., :1, :, :], torch.logaddexp(before, local[..., 1:, :, :])], dim=-3)
    return local.reshape(kp.shape)[..., :L, :]


def causal_chunked(q, k, v, chunk=64, gain=None):
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
    is padded with keys of weight 0 and cut off again.
    """
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
    zf, ze = zc[..., :1, :], zc[..., -1:, :]  # (B, H, n, 1, dk): z at each chunk's first and last step
    rise = ze - zf
    info = torch.finfo(k.dtype)  # accurate while exp(R / 2) * tiny < eps: R < ~143 in float32
    if C > 1 and rise.max().item() > 2 * (math.log(info.eps) - math.log(info.tiny)):
        return causal_chunked(q, k, v, C // 2, gain)

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
        q_past = qc[:, :, 1:] * torch.exp(ze[:, :, :-1].unsqueeze(-2) - zc[:, :, 1:])  # (B, H, n-1, C, dk)
        o = torch.cat([o[:, :, :1], o[:, :, 1:] + q_past @ S], dim=2)
    return o.reshape(B, H, n * C, dv)[:, :, :L]


def noncausal(q, k, v, mask=None, gain=None):
    """o_t = q_t^T (softmax_s(k)^T V): one softmax over the real positions per key channel.

    Pads (mask False) get key weight 0 and output 0; a sequence with no real position gives o = 0.
    """
    if mask is not None:
        m = mask[:, None, :, None]  # (B, 1, L, 1)
        k = k.masked_fill(~m, torch.finfo(k.dtype).min)
    w = torch.softmax(k, dim=-2)  # (B, H, L, dk), over time
    if mask is not None:
        w = w * m
    if gain is not None:
        w = w * gain
    o = q @ (w.transpose(-1, -2) @ v)  # (B, H, dk, dv) -> (B, H, L, dv)
    return o if mask is None else o * m


def additive_recurrence(q, k, v, mask=None, causal=False, gain=None):
    """Dispatch: the chunked causal form or the non-causal softmax form, by Triton or PyTorch.

    mask (B, L) bool, True at real tokens, padding at the end: pads get key weight 0 (and, in
    the non-causal form, output 0, so the kernels skip them). In the causal form pads only
    follow real tokens, so they never reach them; their keys are still set to weight 0.
    float64 stays in PyTorch unless Triton is forced (then the kernel refuses it: it computes
    in float32).
    """
    triton = use_triton("the additive recurrence", q) and (q.dtype != torch.float64 or forced() == "triton")
    if triton:
        from lra.kernels.additive_recurrence_triton import causal_triton, noncausal_triton
    if not causal:
        return (noncausal_triton if triton else noncausal)(q, k, v, mask, gain)
    if mask is not None:
        k = k.masked_fill(~mask[:, None, :, None], torch.finfo(k.dtype).min)
    return causal_triton(q, k, v, gain) if triton else causal_chunked(q, k, v, gain=gain)
