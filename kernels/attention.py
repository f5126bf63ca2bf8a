"""Softmax attention with key padding: a reference, FlashAttention's blockwise algorithm, a dispatch.

For one query q_i and keys k_j, j < n (n = the row's length; with causal=True also j <= i):

    o_i = sum_j p_ij v_j / sum_j p_ij,      p_ij = exp(s_ij - m_i),   s_ij = q_i . k_j / sqrt(d)

where m_i is any number; m_i = max_j s_ij keeps the exponentials <= 1. FlashAttention (Dao et
al., NeurIPS 2022) never forms the (L, L) matrix: it walks the keys in blocks of size b and
keeps, per query, a running max m, a running sum l and an unnormalised output acc. A new
block with scores s (L, b) updates them as

    m' = max(m, rowmax(s)),   alpha = exp(m - m'),   p = exp(s - m')
    l' = alpha l + rowsum(p),      acc' = alpha acc + p @ v_block,      o = acc / l  at the end.

FlashAttention-2 (Dao 2023) puts the query blocks in the outer, parallel loop and the key
blocks in the inner one; with padding at the end, a row's key loop stops after
ceil(n / b) blocks. Here the query blocks run together as one batched tensor, and rows are
grouped by their number of key blocks so no block past a row's length is computed; the Triton
kernels of `lra.kernels.attention_triton` run the same loops, one program per block.
Queries past a row's length are padding: they get zeros, and so does a row with no key (n = 0),
in every path, forward and backward. Skipping them is most of the saving on padded tasks (IMDb
reviews fill about a third of Text's 4096 positions, so about a ninth of the score matrix is real).

    import torch
    from lra.kernels.attention import attention
    q, k, v = torch.randn(3, 2, 2, 100, 16).unbind(0)        # (B, heads, L, d) = (2, 2, 100, 16) each
    o = attention(q, k, v, lengths=torch.tensor([100, 60]))  # (2, 2, 100, 16)
"""
import torch
from torch.nn import functional as F

from lra.kernels.dispatch import forced, use_triton


def _key_lengths(lengths, q):
    """Per-row key lengths (B,) on q's device; None means every key is real."""
    if lengths is None:
        return torch.full((q.shape[0],), q.shape[2], device=q.device)
    return torch.as_tensor(lengths, device=q.device)


def _real_queries(n, L):
    """(B, 1, L, 1): True at the queries before each row's length."""
    return (torch.arange(L, device=n.device) < n[:, None])[:, None, :, None]


def attention_reference(q, k, v, lengths=None, causal=False):
    """Plain softmax(q k^T / sqrt(d)) v with the (B, heads, L, L) scores written out.

    q, k, v: (B, heads, L, d); lengths: (B,) real keys per row (padding at the end) or None.
    """
    L, d = q.shape[2:]
    n = _key_lengths(lengths, q)
    pos = torch.arange(L, device=q.device)
    allowed = (pos < n[:, None])[:, None, None, :]  # (B, 1, 1, L) keys
    if causal:
        allowed = allowed & (pos[None, :] <= pos[:, None])  # (B, 1, L, L)
    has_key = allowed.any(-1, keepdim=True)  # (B, 1, L|1, 1), False only for n = 0
    s = (q @ k.transpose(-2, -1)) / d**0.5  # (B, h, L, L)
    s = s.masked_fill(~allowed, float("-inf"))
    s = torch.where(has_key, s, 0.0)  # an empty row softmaxes zeros, not -inf, then is zeroed
    return (s.softmax(-1) * has_key) @ v * _real_queries(n, L)  # (B, h, L, d)


def _online_softmax(q, k, v, n, causal, block_size, dropout_p):
    """The online-softmax loop over the key blocks of rows that all need them (ceil(n / b) of them).

    q: (G, h, L, d); k, v: (G, h, L_k, d) cut to those blocks; n: (G,) lengths >= 1.
    """
    G, H, L, d = q.shape
    m = q.new_full((G, H, L, 1), float("-inf"))  # running max
    l = q.new_zeros(G, H, L, 1)  # running sum of exp(s - m)
    acc = q.new_zeros(G, H, L, d)  # running sum of exp(s - m) v
    pos_q = torch.arange(L, device=q.device)[:, None]  # (L, 1)
    for j in range(0, k.shape[2], block_size):
        kj, vj = k[:, :, j : j + block_size], v[:, :, j : j + block_size]  # (G, h, b, d)
        pos_k = torch.arange(j, j + kj.shape[2], device=q.device)  # (b,)
        allowed = (pos_k < n[:, None])[:, None, None, :]  # (G, 1, 1, b)
        if causal:
            allowed = allowed & (pos_k <= pos_q)  # (G, 1, L, b)
        s = (q @ kj.transpose(-2, -1)) / d**0.5  # (G, h, L, b)
        s = s.masked_fill(~allowed, float("-inf"))
        # m only keeps exp() in range; o does not depend on it, so no gradient flows through it.
        # Block 0 holds key 0, which every query of a row with n >= 1 sees: m is finite from here on.
        m_new = torch.maximum(m, s.amax(-1, keepdim=True)).detach()
        alpha = torch.exp(m - m_new)  # (G, h, L, 1), 0 at the first block
        p = torch.exp(s - m_new)  # (G, h, L, b), 0 at masked keys
        l = alpha * l + p.sum(-1, keepdim=True)
        acc = alpha * acc + F.dropout(p, dropout_p) @ vj  # dropout on the weights, not on l
        m = m_new
    return acc / l  # (G, h, L, d)


def blockwise_attention(q, k, v, lengths=None, causal=False, block_size=64, dropout_p=0.0):
    """FlashAttention's online softmax over key blocks, skipping every block past a row's length.

    Same inputs and result as `attention_reference`; dropout_p drops attention weights.
    """
    n = _key_lengths(lengths, q)
    n_blocks = (n + block_size - 1) // block_size  # (B,) key blocks each row needs
    out = q.new_zeros(q.shape)  # rows with n = 0 stay zero
    for nb in n_blocks.unique().tolist():
        if nb == 0:
            continue
        rows = (n_blocks == nb).nonzero().squeeze(1)  # (G,)
        end = nb * block_size  # keys and queries past this are padding for every row of the group
        o = _online_softmax(q[rows, :, :end], k[rows, :, :end], v[rows, :, :end], n[rows], causal, block_size,
                            dropout_p)
        out = out.index_copy(0, rows, F.pad(o, (0, 0, 0, q.shape[2] - o.shape[2])))  # (B, h, L, d)
    return out * _real_queries(n, q.shape[2])


def sdpa_attention(q, k, v, lengths=None, causal=False, dropout_p=0.0):
    """torch's scaled_dot_product_attention with a boolean key-padding (and causal) mask."""
    if lengths is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal)
    L = q.shape[2]
    n = _key_lengths(lengths, q)
    pos = torch.arange(L, device=q.device)
    # an empty row (n = 0) sees every key, then is zeroed: older torch versions give NaN otherwise
    allowed = ((pos < n[:, None]) | (n[:, None] == 0))[:, None, None, :]  # (B, 1, 1, L)
    if causal:
        allowed = allowed & (pos[None, :] <= pos[:, None])  # (B, 1, L, L)
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p)
    return o * _real_queries(n, L)  # (B, h, L, d)


TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def attention(q, k, v, lengths=None, causal=False, block_size=64, dropout_p=0.0):
    """Dispatch: softmax attention over each row's first `lengths` keys, (B, heads, L, d) -> same.

    CUDA tensors go to the Triton FlashAttention kernels (`attention_triton.flash_attention`, which
    picks its own tiles; block_size is the reference's), other devices to SDPA with a boolean mask.
    `LRA_KERNELS=reference` runs `blockwise_attention`, the algorithm those kernels implement;
    `LRA_KERNELS=triton` forces the kernels (on a CPU under TRITON_INTERPRET=1, else an error).
    The kernels have no dropout and take fp16, bf16 and fp32: with dropout_p > 0, or float64, SDPA
    runs, even under `LRA_KERNELS=triton`.
    """
    if forced() == "reference":
        return blockwise_attention(q, k, v, lengths, causal, block_size, dropout_p)
    if dropout_p == 0 and q.dtype in TRITON_DTYPES and use_triton("attention", q):
        from lra.kernels.attention_triton import flash_attention  # imports triton: only where it runs
        return flash_attention(q, k, v, lengths, causal)
    return sdpa_attention(q, k, v, lengths, causal, dropout_p)
