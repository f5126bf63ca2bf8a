"""Softmax attention with key padding: the public `attention` and its dispatch.

For one query q_i and keys k_j, j < n (n = the row's length; with causal=True also j <= i):

    o_i = sum_j p_ij v_j / sum_j p_ij,      p_ij = exp(s_ij - m_i),   s_ij = q_i . k_j / sqrt(d)

Queries past a row's length are padding: they get zeros, and so does a row with no key (n = 0),
in every path, forward and backward. Skipping them is most of the saving on padded tasks (IMDb
reviews fill about a third of Text's 4096 positions, so about a ninth of the score matrix is real).

    reference.py  attention_reference: the (L, L) scores written out (the math; the test oracle)
    chunked.py    attention_chunked: FlashAttention's online softmax over key blocks, in PyTorch
    sdpa.py       attention_sdpa: torch's scaled_dot_product_attention with a boolean mask
    triton.py     attention_triton: the FlashAttention-2 kernels, forward and backward

    import torch
    from lra.kernels.attention import attention
    q, k, v = torch.randn(3, 2, 2, 100, 16).unbind(0)        # (B, heads, L, d) each
    o = attention(q, k, v, lengths=torch.tensor([100, 60]))  # (2, 2, 100, 16)
"""
import torch

from lra.kernels.attention.chunked import attention_chunked
from lra.kernels.attention.reference import attention_reference
from lra.kernels.attention.sdpa import attention_sdpa
from lra.kernels.dispatch import forced, use_triton

__all__ = ["attention", "attention_chunked", "attention_reference", "attention_sdpa"]

TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def attention(q, k, v, lengths=None, causal=False, block_size=64, dropout_p=0.0):
    """Softmax attention over each row's first `lengths` keys, (B, heads, L, d) -> same.

    CUDA tensors go to the Triton FlashAttention kernels (`attention_triton`, which picks its own
    tiles; block_size is the chunked path's), other devices to SDPA with a boolean mask.
    `LRA_KERNELS=reference` runs `attention_chunked`, the algorithm those kernels implement;
    `LRA_KERNELS=triton` forces the kernels (on a CPU under TRITON_INTERPRET=1, else an error).
    The kernels have no dropout and take fp16, bf16 and fp32: with dropout_p > 0, or float64,
    SDPA runs, even under `LRA_KERNELS=triton`.
    """
    if forced() == "reference":
        return attention_chunked(q, k, v, lengths, causal, block_size, dropout_p)
    if dropout_p == 0 and q.dtype in TRITON_DTYPES and use_triton("attention", q):
        from lra.kernels.attention.triton import attention_triton  # imports triton: only here

        return attention_triton(q, k, v, lengths, causal)
    return attention_sdpa(q, k, v, lengths, causal, dropout_p)
