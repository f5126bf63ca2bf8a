"""LightNet's additive recurrence in plain PyTorch: the step, the oracles and the non-causal form.

Causal, per key channel j, with the running log-sum-exp z_t = logaddexp(z_{t-1}, k_t):

    S_t = exp(z_{t-1} - z_t) * S_{t-1} + exp(k_t - z_t) g_t v_t^T,    o_t = S_t^T q_t

or, written out, o_t = sum_j q_tj sum_{s<=t} exp(k_sj - z_tj) g_sj v_s (the quadratic form).
Non-causal: o_t = q_t^T (softmax_s(k)^T V), one softmax over the real positions per key channel.
"""
import torch


def additive_causal_step(q_t, k_t, v_t, z, S, g_t=None):
    """One step of the causal recurrence: q_t, k_t, g_t (B, H, d_k), v_t (B, H, d_v), the running
    z (B, H, d_k) and state S (B, H, d_k, d_v), -inf and 0 before the first step -> o_t, z_t, S_t.
    """
    z_new = torch.logaddexp(z, k_t)  # (B, H, dk)
    key = torch.exp(k_t - z_new)  # (B, H, dk), in (0, 1]
    if g_t is not None:
        key = key * g_t
    S = torch.exp(z - z_new).unsqueeze(-1) * S + key.unsqueeze(-1) * v_t.unsqueeze(-2)
    return (q_t.unsqueeze(-2) @ S).squeeze(-2), z_new, S  # o_t (B, H, dv)


def additive_causal_reference(q, k, v, gain=None):
    """`additive_causal_step` over t = 0 .. L-1 from z = -inf, S = 0: q, k, g (B, H, L, d_k),
    v (B, H, L, d_v) -> o (B, H, L, d_v)."""
    g = None if gain is None else gain.expand_as(k)
    z = torch.full_like(k[..., 0, :], float("-inf"))  # (B, H, dk)
    S = v.new_zeros(*k.shape[:-2], k.shape[-1], v.shape[-1])  # (B, H, dk, dv)
    outs = []
    for t in range(k.shape[-2]):
        g_t = None if g is None else g[..., t, :]
        o_t, z, S = additive_causal_step(q[..., t, :], k[..., t, :], v[..., t, :], z, S, g_t)
        outs.append(o_t)
    return torch.stack(outs, -2)  # (B, H, L, dv)


def additive_causal_quadratic(q, k, v, gain=None):
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


def additive_noncausal_reference(q, k, v, mask=None, gain=None):
    """o_t = q_t^T (softmax_s(k)^T V): one softmax over the real positions per key channel.

    Pads (mask False) get key weight 0 and output 0; a sequence with no real position gives o = 0.
    float16 and bfloat16 inputs are computed in float32, the output in q's dtype.
    """
    if q.dtype in (torch.float16, torch.bfloat16):
        up = [t if t is None else t.float() for t in (q, k, v, gain)]
        return additive_noncausal_reference(*up[:3], mask, up[3]).to(q.dtype)
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
