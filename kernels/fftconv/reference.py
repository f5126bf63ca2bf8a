"""The long convolution by FFT in PyTorch.

    y_t = sum_{s<=t} k0[t-s] u_s  (+ sum_{s>=t} k1[s-t] u_s when bidirectional)  + D u_t

Both sums are taken at once in the frequency domain with zero padding to 2L, so nothing
wraps around: the forward kernel multiplies rfft(u), the backward one (a correlation, the
causal convolution of the reversed sequence) multiplies by its conjugate. Padding must be
zero in `u`, so it adds nothing to real positions.
"""
import torch


def fftconv_reference(u, k, D):
    """u (B, H, L), k (c, H, L), D (H,) -> y (B, H, L); c = 2 adds the backward kernel k[1]."""
    L = u.shape[-1]
    k_f = torch.fft.rfft(k, n=2 * L)  # (c, H, L+1)
    k_f = k_f[0] + k_f[1].conj() if k.shape[0] == 2 else k_f[0]  # (H, L+1)
    y = torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * k_f, n=2 * L)[..., :L]  # (B, H, L)
    return y + D.unsqueeze(-1) * u
