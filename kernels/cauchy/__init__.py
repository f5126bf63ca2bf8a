"""The S4 Cauchy kernel: sums of v_n / (z_k - w_n) over the diagonal modes n.

S4 evaluates its generating function at the roots of unity through the resolvent of a
diagonal matrix (Gu, Goel, Re, ICLR 2022, Algorithm 1 and Lemma C.3), which reduces to
Cauchy products, for every channel h and point k,

    r[..., h, k] = sum_n  v[..., h, n] / (z[k] - w[h, n]).

A real system keeps N/2 modes, each standing for itself and its conjugate (conj=True).

    reference.py  cauchy_reference: the plain sum, chunked over z (the math; the test oracle)
    chunked.py    cauchy_chunked: the conjugate-pair sum by real matmuls (what S4 runs on a CPU)
    triton.py     cauchy_triton: the Triton kernels, forward and backward, both sums

    from lra.kernels.cauchy import cauchy
    r = cauchy(v, z, w, conj=True)   # (..., H, N/2) complex, (K,), (H, N/2) complex -> (..., H, K)
"""
import math

import torch

from lra.kernels.cauchy.chunked import cauchy_chunked
from lra.kernels.cauchy.reference import cauchy_reference
from lra.kernels.dispatch import choose, probe_pair

__all__ = ["cauchy", "cauchy_chunked", "cauchy_reference"]

FAMILY = "cauchy"


def cauchy(v, z, w, conj=False):
    """The Cauchy product `sum_n v[..., h, n] / (z[k] - w[h, n])`, by Triton or PyTorch.

    conj=True adds each mode's conjugate (v -> conj(v), w -> conj(w)). The Triton kernels for
    CUDA tensors (or wherever `LRA_KERNELS=triton` forces them and they can run; z then gets no
    gradient), else `cauchy_chunked` or `cauchy_reference`, which also run wherever the kernels
    fail; see lra.kernels.dispatch.
    """
    if choose(FAMILY, w, probe=lambda: probe(w, conj), variant=conj) == "triton":
        from lra.kernels.cauchy.triton import cauchy_triton  # imports triton

        return cauchy_triton(v, z, w, conj)
    return cauchy_chunked(v, z, w) if conj else cauchy_reference(v, z, w)


def probe(like, conj, H=2, N=4, K=16):
    """The kernels against the reference on small modes of `like`'s dtype and device."""
    from lra.kernels.cauchy.triton import cauchy_triton

    g = torch.Generator().manual_seed(0)
    v = torch.complex(*torch.randn(2, H, N, generator=g))
    w = torch.complex(-0.5 - torch.rand(H, N, generator=g), 3 * torch.randn(H, N, generator=g))
    z = torch.exp(2j * math.pi * torch.arange(K) / K).to(like.device, like.dtype)
    reference = cauchy_chunked if conj else cauchy_reference
    probe_pair(lambda v, w: cauchy_triton(v, z, w, conj), lambda v, w: reference(v, z, w),
               [t.to(like.device, like.dtype) for t in (v, w)], 1e-3, "cauchy (r, dv, dw)")
