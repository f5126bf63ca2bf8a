"""Softmax attention with key padding: the public `attention` and its dispatch.

For one query q_i and keys k_j, j < n (n = the row's length; with causal=True also j <= i):

    o_i = sum_j p_ij v_j / sum_j p_ij,      p_ij = exp(s_ij - m_i),   s_ij = q_i . k_j / sqrt(d)

Queries past a row's length are padding: they get zeros, and so does a row with no key (n = 0),
in every path, forward and backward. Skipping them is most of the saving on padded tasks (IMDb
reviews fill about a third of Text's 4096 positions, so about a ninth of the score matrix is real).

    reference.py  attention_reference: the (L, L) scores written out (the math; the test oracle)
    chunked.py    attention_chunked: FlashAttention's online softmax over key blocks, in PyTorch
    sdpa.py       attention_sdpa: torch's scaled_dot_product_attention with a boolean mask
    triton.py     attention_triton: the FlashAttention-2 kernels, forward and backward, dropout too

    import torch
    from lra.kernels.attention import attention
    q, k, v = torch.randn(3, 2, 2, 100, 16).unbind(0)        # (B, heads, L, d) each
    o = attention(q, k, v, lengths=torch.tensor([100, 60]))  # (2, 2, 100, 16)
"""
import torch

from lra.kernels.attention.chunked import attention_chunked
from lra.kernels.attention.reference import attention_reference
from lra.kernels.attention.sdpa import attention_sdpa
from lra.kernels.dispatch import check_probe, choose, forced

__all__ = ["attention", "attention_chunked", "attention_reference", "attention_sdpa"]

FAMILY = "attention"
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 128  # the kernels' (lra.kernels.attention.triton.MAX_HEAD_DIM)
PROBE_TOLERANCE = {torch.float32: 6e-3,  # TF32 may be on, in ours and in torch's reference
                    torch.float16: 1e-2, torch.bfloat16: 4e-2}


def attention(q, k, v, lengths=None, causal=False, block_size=64, dropout_p=0.0):
    """Softmax attention over each row's first `lengths` keys, (B, heads, L, d) -> same.

    CUDA tensors go to the Triton FlashAttention kernels (`attention_triton`, dropout included,
    which pick their own tiles; block_size is the chunked path's), other devices to SDPA with a
    boolean mask. `LRA_KERNELS=reference` runs `attention_chunked`, the algorithm those kernels
    implement; `LRA_KERNELS=triton` forces the kernels (on a CPU under TRITON_INTERPRET=1, else an
    error). What the kernels do not take goes to SDPA, even under `LRA_KERNELS=triton`: float64,
    head dims above 128. A GPU the kernels fail on falls back to SDPA (lra.kernels.dispatch).
    """
    if forced() == "reference":
        choose(FAMILY, q)
        return attention_chunked(q, k, v, lengths, causal, block_size, dropout_p)
    d = q.shape[-1]
    unsupported = None
    if q.dtype not in TRITON_DTYPES:
        unsupported = f"{q.dtype} (the kernels take float16, bfloat16, float32)"
    elif d > MAX_HEAD_DIM:
        unsupported = f"head dim {d} is above the kernels' {MAX_HEAD_DIM}"
    if unsupported and forced() == "triton":
        return attention_sdpa(q, k, v, lengths, causal, dropout_p)
    path = choose(FAMILY, q, probe=lambda: probe(q, causal, dropout_p),
                  variant=(d, causal, dropout_p > 0), unsupported=unsupported)
    if path == "triton":
        from lra.kernels.attention.triton import attention_triton  # imports triton: only here

        return attention_triton(q, k, v, lengths, causal, dropout_p)
    return attention_sdpa(q, k, v, lengths, causal, dropout_p)


def probe(like, causal, dropout_p, L=80):
    """Run the kernels on small inputs of `like`'s head dim, dtype and device, forward and backward,
    against the fp32 reference (given the kernels' dropout mask); raise where they differ."""
    from lra.kernels.attention.triton import attention_triton, dropout_keep_mask

    g = torch.Generator().manual_seed(0)
    B, H, d = 2, 2, like.shape[-1]
    q, k, v, do = (torch.randn(B, H, L, d, generator=g).to(like.device, like.dtype)
                   for _ in range(4))
    lengths = torch.tensor([L, L - 29], device=like.device)
    keep = dropout_keep_mask(7, B, H, L, dropout_p, like.device) if dropout_p > 0 else None
    results = []
    for run, dtype in ((lambda *a: attention_triton(*a, lengths, causal, dropout_p, seed=7),
                        like.dtype),
                       (lambda *a: attention_reference(*a, lengths, causal, keep, dropout_p),
                        torch.float32)):
        inputs = [t.to(dtype).requires_grad_() for t in (q, k, v)]
        o = run(*inputs)
        results.append([o, *torch.autograd.grad(o, inputs, do.to(dtype))])
    check_probe(*results, PROBE_TOLERANCE[like.dtype], "attention (o, dq, dk, dv)")
