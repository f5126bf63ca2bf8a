"""The S4D convolution kernel: a Vandermonde product, summed over the diagonal modes.

A diagonal SSM discretised with step dt has, for each channel h, the kernel

    K[h, l] = 2 Re sum_n  C~[h, n] * exp(dtA[h, n] * l),      l = 0 .. L-1

where C~ = C * (exp(dt A) - 1) / A * B folds the ZOH input matrix into C, and the
factor 2 Re counts each complex mode together with its conjugate (S4D keeps N/2 of
the N state dimensions). In matrix form K = 2 Re (C~ @ V) with the Vandermonde matrix
V[n, l] = exp(dtA[n])**l.

`vandermonde_reference` is the PyTorch version (and the test oracle); the Triton kernels, forward
and backward, live in lra.kernels.vandermonde_triton; `vandermonde` picks one (lra.kernels.dispatch).

    from lra.kernels.vandermonde import vandermonde
    K = vandermonde(C_tilde, dtA, L=1024)   # (..., H, N/2) complex, (H, N/2) complex -> (..., H, L)
"""
import math

import torch

from lra.kernels.dispatch import use_triton


def vandermonde_reference(C_tilde, dtA, L):
    """Plain PyTorch, with the Vandermonde matrix split into two of width about sqrt(L).

    With z = exp(dtA) and l = i b + j (b = ceil(sqrt L), 0 <= j < b):  z^l = z^(i b) * z^j, so
    K[h, i b + j] = 2 Re sum_n (C~[h, n] z_n^(i b)) z_n^j, one batched matmul over n. Only
    (H, N/2, 2 sqrt L) exponentials are taken and nothing of size (H, N/2, L) is materialised.

    C_tilde: (..., H, N/2) complex, dtA: (H, N/2) complex; returns (..., H, L) real.
    """
    b = math.isqrt(L - 1) + 1  # ceil(sqrt(L)), 1 for L = 1
    m = -(-L // b)  # ceil(L / b) blocks of b steps
    dtA = dtA.unsqueeze(-1)  # (H, N/2, 1)
    inner = torch.exp(dtA * torch.arange(b, device=dtA.device, dtype=dtA.real.dtype))  # (H, N/2, b)
    steps = torch.arange(0, m * b, b, device=dtA.device, dtype=dtA.real.dtype)
    outer = C_tilde.unsqueeze(-1) * torch.exp(dtA * steps)  # (..., H, N/2, m)
    # 2 Re(X^T Y) as one real matmul over [Re; Im] stacked along n
    X = torch.cat([outer.real, -outer.imag], dim=-2)  # (..., H, N, m)
    Y = torch.cat([inner.real, inner.imag], dim=-2)  # (H, N, b)
    K = X.transpose(-1, -2) @ Y  # (..., H, m, b)
    return 2 * K.flatten(-2)[..., :L]  # (..., H, L)


def vandermonde(C_tilde, dtA, L):
    """Dispatch for the S4D kernel: `K[..., h, l] = 2 Re sum_n C~[..., h, n] exp(dtA[h, n] l)`.

    The Triton kernels for CUDA tensors (or wherever `LRA_KERNELS=triton` forces them and they can
    run), the PyTorch reference otherwise; see lra.kernels.dispatch.
    """
    if use_triton("the S4D Vandermonde product", dtA):
        from lra.kernels.vandermonde_triton import vandermonde_triton
        return vandermonde_triton(C_tilde, dtA, L)
    return vandermonde_reference(C_tilde, dtA, L)
