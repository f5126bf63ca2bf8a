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
import torch

from lra.kernels.dispatch import choose, probe_pair
from lra.kernels.selective_scan.chunked import selective_scan_chunked
from lra.kernels.selective_scan.reference import selective_scan_reference, selective_scan_step

__all__ = ["selective_scan", "selective_scan_chunked", "selective_scan_reference",
           "selective_scan_step"]

FAMILY = "selective_scan"


def selective_scan(x, dt, A, B, C, D):
    """h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t, y_t = C_t h_t + D x_t, by Triton or PyTorch.

    The Triton kernel (`selective_scan_triton`) on CUDA tensors or where `LRA_KERNELS=triton`
    forces it; `selective_scan_chunked` elsewhere, and wherever the kernel fails (see
    `lra.kernels.dispatch`). That path is a per-step loop (a few launches per time step), right for
    a CPU: a CUDA tensor sent there (no Triton, an old GPU, a failed probe) warns once.
    """
    fallback = "selective_scan_chunked, a per-step loop (slow on a GPU)"
    if choose(FAMILY, x, probe=lambda: probe(x), reference=fallback) == "triton":
        from lra.kernels.selective_scan.triton import selective_scan_triton  # imports triton

        return selective_scan_triton(x, dt, A, B, C, D)
    return selective_scan_chunked(x, dt, A, B, C, D)


def probe(like, b=1, channels=4, N=8, L=40):
    """The kernel against the chunked path on a small scan of `like`'s dtype and device."""
    from lra.kernels.selective_scan.triton import selective_scan_triton

    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, channels, L, generator=g)
    dt = 0.01 + 0.1 * torch.rand(b, channels, L, generator=g)
    A = -torch.rand(channels, N, generator=g) - 0.5
    B, C = torch.randn(2, b, N, L, generator=g)
    D = torch.randn(channels, generator=g)
    inputs = [t.to(like.device, like.dtype) for t in (x, dt, A, B, C, D)]
    tol = 1e-3 if like.dtype in (torch.float32, torch.float64) else 3e-2
    probe_pair(selective_scan_triton, selective_scan_chunked, inputs, tol,
               "selective scan (y, dx, ddt, dA, dB, dC, dD)")
