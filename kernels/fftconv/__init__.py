"""Long convolution by FFT, the shared last step of the S4 and S4D layers.

    y_t = sum_{s<=t} k0[t-s] u_s  (+ sum_{s>t} k1[s-t-1] u_s when bidirectional)  + D u_t

    reference.py  fftconv_reference: torch's FFTs with zero padding to 2L

    from lra.kernels.fftconv import fftconv
    y = fftconv(u, k, D)   # u (B, H, L), k (c, H, L), c = 1 causal or 2 bidirectional, D (H,)
"""
from lra.kernels.fftconv.reference import fftconv_reference

__all__ = ["fftconv", "fftconv_reference"]


def fftconv(u, k, D):
    """torch's FFTs (cuFFT on a GPU) on every device and under every `LRA_KERNELS`.

    A fused Triton convolution is worth having only where it beats cuFFT; until one does, the
    S4 and S4D layers run their Triton kernel generation followed by this.
    """
    return fftconv_reference(u, k, D)
