"""The attention oracle: softmax(q k^T / sqrt(d)) v with the (B, heads, L, L) scores written out.

    o_i = sum_j softmax_j(s_ij) v_j,   s_ij = q_i . k_j / sqrt(d),   keys j < n (causal: j <= i)

Queries past a row's length n get zeros, and so does a row with n = 0. The helpers below read the
lengths for every attention path of this family.
"""
import torch


def key_lengths(lengths, q):
    """Per-row key lengths (B,) on q's device; None means every key is real."""
    if lengths is None:
        return torch.full((q.shape[0],), q.shape[2], device=q.device)
    return torch.as_tensor(lengths, device=q.device)


def real_queries(n, L):
    """(B, 1, L, 1): True at the queries before each row's length."""
    return (torch.arange(L, device=n.device) < n[:, None])[:, None, :, None]


def attention_reference(q, k, v, lengths=None, causal=False, keep=None, dropout_p=0.0):
    """Plain softmax(q k^T / sqrt(d)) v with the (B, heads, L, L) scores written out.

    q, k, v: (B, heads, L, d); lengths: (B,) real keys per row (padding at the end) or None.
    keep: a (B, heads, L, L) dropout mask, True where a weight is kept; the kept weights are scaled
    by 1 / (1 - dropout_p) (the Triton kernel's dropout, given its mask).
    """
    L, d = q.shape[2:]
    n = key_lengths(lengths, q)
    pos = torch.arange(L, device=q.device)
    allowed = (pos < n[:, None])[:, None, None, :]  # (B, 1, 1, L) keys
    if causal:
        allowed = allowed & (pos[None, :] <= pos[:, None])  # (B, 1, L, L)
    has_key = allowed.any(-1, keepdim=True)  # (B, 1, L|1, 1), False only for n = 0
    s = (q @ k.transpose(-2, -1)) / d**0.5  # (B, h, L, L)
    s = s.masked_fill(~allowed, float("-inf"))
    s = torch.where(has_key, s, 0.0)  # an empty row softmaxes zeros, not -inf, then is zeroed
    weights = s.softmax(-1) * has_key  # (B, h, L, L)
    if keep is not None:
        weights = weights * keep / (1 - dropout_p)
    return weights @ v * real_queries(n, L)  # (B, h, L, d)
