"""The S4D Vandermonde product in PyTorch: the test oracle and the path off CUDA.

    K[..., h, l] = 2 Re sum_n C~[..., h, n] z[h, n]^l,    z = exp(dtA),   l = 0 .. L-1
"""
import math

import torch


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
