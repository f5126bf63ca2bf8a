"""The long convolution by FFT in PyTorch.

    y_t = sum_{s<=t} k0[t-s] u_s  (+ sum_{s>t} k1[s-t-1] u_s when bidirectional)  + D u_t

The backward kernel starts at the next position, as in the S4 references (state-spaces/s4's
FFTConv lays k1 reversed in the upper half of a 2L kernel), so u_t is counted once, by k0[0].
Both sums are one circular convolution of length 2L: the kernel [k0, reversed k1] at lags
0..L-1 and -L..-1, and u zero-padded to 2L, so nothing wraps around. Padding must be zero
in `u`, so it adds nothing to real positions.
"""
import torch


def fftconv_reference(u, k, D):
    """u (B, H, L), k (c, H, L), D (H,) -> y (B, H, L); c = 2 adds the backward kernel k[1]."""
    L = u.shape[-1]
    kernel = torch.cat([k[0], k[1].flip(-1)], -1) if k.shape[0] == 2 else k[0]  # (H, L or 2L)
    k_f = torch.fft.rfft(kernel, n=2 * L)  # (H, L+1)
    y = torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * k_f, n=2 * L)[..., :L]  # (B, H, L)
    return y + D.unsqueeze(-1) * u
