"""FlashAttention's blockwise algorithm in PyTorch: the online softmax over key blocks.

FlashAttention (Dao et al., NeurIPS 2022) never forms the (L, L) matrix: it walks the keys in
blocks of size b and keeps, per query, a running max m, a running sum l and an unnormalised
output acc. A new block with scores s (L, b) updates them as

    m' = max(m, rowmax(s)),   alpha = exp(m - m'),   p = exp(s - m')
    l' = alpha l + rowsum(p),      acc' = alpha acc + p @ v_block,      o = acc / l  at the end.

m may be any number (o does not depend on it); m = max_j s_ij keeps the exponentials <= 1.
FlashAttention-2 (Dao 2023) puts the query blocks in the outer, parallel loop and the key
blocks in the inner one; with padding at the end, a row's key loop stops after
ceil(n / b) blocks. Here the query blocks run together as one batched tensor, and rows are
grouped by their number of key blocks so no block past a row's length is computed; the Triton
kernels of `lra.kernels.attention.triton` run the same loops, one program per block.
"""
import torch
from torch.nn import functional as F

from lra.kernels.attention.reference import key_lengths, real_queries


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
        # Block 0 holds key 0, which every query of a row with n >= 1 sees: m is finite from here.
        m_new = torch.maximum(m, s.amax(-1, keepdim=True)).detach()
        alpha = torch.exp(m - m_new)  # (G, h, L, 1), 0 at the first block
        p = torch.exp(s - m_new)  # (G, h, L, b), 0 at masked keys
        l = alpha * l + p.sum(-1, keepdim=True)
        acc = alpha * acc + F.dropout(p, dropout_p) @ vj  # dropout on the weights, not on l
        m = m_new
    return acc / l  # (G, h, L, d)


def attention_chunked(q, k, v, lengths=None, causal=False, block_size=64, dropout_p=0.0):
    """FlashAttention's online softmax over key blocks, skipping every block past a row's length.

    Same inputs and result as `attention_reference`; dropout_p drops attention weights.
    """
    n = key_lengths(lengths, q)
    n_blocks = (n + block_size - 1) // block_size  # (B,) key blocks each row needs
    out = q.new_zeros(q.shape)  # rows with n = 0 stay zero
    for nb in n_blocks.unique().tolist():
        if nb == 0:
            continue
        rows = (n_blocks == nb).nonzero().squeeze(1)  # (G,)
        end = nb * block_size  # keys and queries past this are padding for every row of the group
        o = _online_softmax(q[rows, :, :end], k[rows, :, :end], v[rows, :, :end], n[rows], causal,
                            block_size, dropout_p)
        out = out.index_copy(0, rows, F.pad(o, (0, 0, 0, q.shape[2] - o.shape[2])))  # (B, h, L, d)
    return out * real_queries(n, q.shape[2])
