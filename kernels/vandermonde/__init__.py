"""The S4D convolution kernel: a Vandermonde product, summed over the diagonal modes.

A diagonal SSM discretised with step dt has, for each channel h, the kernel

    K[h, l] = 2 Re sum_n  C~[h, n] * exp(dtA[h, n] * l),      l = 0 .. L-1

where C~ = C * (exp(dt A) - 1) / A * B folds the ZOH input matrix into C, and the
factor 2 Re counts each complex mode together with its conjugate (S4D keeps N/2 of
the N state dimensions). In matrix form K = 2 Re (C~ @ V) with the Vandermonde matrix
V[n, l] = exp(dtA[n])**l.

    reference.py  vandermonde_reference: the PyTorch product (the test oracle and the CPU path)
    triton.py     vandermonde_triton: the Triton kernels, forward and backward

    from lra.kernels.vandermonde import vandermonde
    K = vandermonde(C_tilde, dtA, L=1024)   # (..., H, N/2) complex, (H, N/2) complex -> (..., H, L)
"""
import torch

from lra.kernels.dispatch import choose, probe_pair
from lra.kernels.vandermonde.reference import vandermonde_reference

__all__ = ["vandermonde", "vandermonde_reference"]

FAMILY = "vandermonde"


def vandermonde(C_tilde, dtA, L):
    """The S4D kernel K[..., h, l] = 2 Re sum_n C~[..., h, n] exp(dtA[h, n] l), by Triton or torch.

    The Triton kernels for CUDA tensors (or wherever `LRA_KERNELS=triton` forces them and they
    can run), the PyTorch reference otherwise, and wherever they fail; see lra.kernels.dispatch.
    """
    if choose(FAMILY, dtA, probe=lambda: probe(dtA)) == "triton":
        from lra.kernels.vandermonde.triton import vandermonde_triton  # imports triton

        return vandermonde_triton(C_tilde, dtA, L)
    return vandermonde_reference(C_tilde, dtA, L)


def probe(like, H=2, N=4, L=50):
    """The kernels against the reference on a small system of `like`'s dtype and device."""
    from lra.kernels.vandermonde.triton import vandermonde_triton

    g = torch.Generator().manual_seed(0)
    dtA = torch.complex(-0.05 * torch.rand(H, N, generator=g) - 0.01,
                        0.3 * torch.randn(H, N, generator=g))
    C = torch.complex(*torch.randn(2, H, N, generator=g))
    inputs = [t.to(like.device, like.dtype) for t in (C, dtA)]
    probe_pair(lambda *a: vandermonde_triton(*a, L), lambda *a: vandermonde_reference(*a, L),
               inputs, 1e-3, "vandermonde (K, dC, ddtA)")
