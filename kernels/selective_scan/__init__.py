"""The selective scan of Mamba: a diagonal linear recurrence whose step, B and C change per token.

Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces", 2023
(arXiv:2312.00752), Algorithm 2. For each batch b and channel d, with a state h of size N:

    h_t = exp(dt_t A) * h_{t-1} + dt_t B_t x_t        A (N,) diagonal and negative, h_0 = 0
    y_t = C_t . h_t + D x_t

(zero-order hold for A, Euler for B, as in the paper's code). dt, x are per (b, d, t); B, C
per (b, t) and shared by the channels; A, D per channel. Shapes throughout:
x, dt (batch, D, L); A (D, N); B, C (batch, N, L); D (D,); y (batch, D, L).

    reference.py  selective_scan_step (one step, the recurrent view), selective_scan_reference
    chunked.py    selective_scan_chunked: the recurrence in place, with its own backward (CPU path)
    triton.py     selective_scan_triton: a parallel scan over chunks, forward and backward

    from lra.kernels.selective_scan import selective_scan
    y = selective_scan(x, dt, A, B, C, D)   # (b, D, L)
"""
from lra.kernels.dispatch import use_triton
from lra.kernels.selective_scan.chunked import selective_scan_chunked
from lra.kernels.selective_scan.reference import selective_scan_reference, selective_scan_step

__all__ = ["selective_scan", "selective_scan_chunked", "selective_scan_reference",
           "selective_scan_step"]


def selective_scan(x, dt, A, B, C, D):
    """h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t, y_t = C_t h_t + D x_t, by Triton or PyTorch.

    The Triton kernel (`selective_scan_triton`) on CUDA tensors or where `LRA_KERNELS=triton`
    forces it; `selective_scan_chunked` elsewhere (see `lra.kernels.dispatch`).
    """
    if use_triton("the selective scan", x):
        from lra.kernels.selective_scan.triton import selective_scan_triton  # imports triton

        return selective_scan_triton(x, dt, A, B, C, D)
    return selective_scan_chunked(x, dt, A, B, C, D)
