"""Attention by torch's scaled_dot_product_attention: the dispatch's path off CUDA and wherever the
Triton kernels cannot serve (float64, head dims above 128, a GPU they fail on).

A boolean mask allows each row's first n keys (and, causal, keys j <= i); queries past n get zeros,
as in `attention_reference`.
"""
import torch
from torch.nn import functional as F

from lra.kernels.attention.reference import key_lengths, real_queries


def attention_sdpa(q, k, v, lengths=None, causal=False, dropout_p=0.0):
    """torch's scaled_dot_product_attention with a boolean key-padding (and causal) mask."""
    if lengths is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal)
    L = q.shape[2]
    n = key_lengths(lengths, q)
    pos = torch.arange(L, device=q.device)
    # an empty row (n = 0) sees every key, then is zeroed: older torch versions give NaN otherwise
    allowed = ((pos < n[:, None]) | (n[:, None] == 0))[:, None, None, :]  # (B, 1, 1, L)
    if causal:
        allowed = allowed & (pos[None, :] <= pos[:, None])  # (B, 1, L, L)
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p)
    return o * real_queries(n, L)  # (B, h, L, d)
