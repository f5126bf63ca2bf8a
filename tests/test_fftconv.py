"""The FFT long convolution equals the convolution written out as sums, forward and backward."""
import pytest
import torch
from helpers import rel_err

from lra.kernels.fftconv import fftconv


def direct(u, k, D):
    """y_t = sum_{s<=t} k0[t-s] u_s + sum_{s>t} k1[s-t-1] u_s + D u_t, as an explicit matrix:
    the backward kernel starts at the next position (state-spaces/s4's FFTConv)."""
    L = u.shape[-1]
    t, s = torch.arange(L)[:, None], torch.arange(L)[None, :]
    T = torch.where(t >= s, k[0][:, (t - s).clamp(min=0)], 0)  # (H, L, L), lower triangle
    if k.shape[0] == 2:
        T = T + torch.where(s > t, k[1][:, (s - t - 1).clamp(min=0)], 0)  # strict upper
    return torch.einsum("hts,bhs->bht", T, u) + D[:, None] * u


@pytest.mark.parametrize("batch, L", [(1, 37), (3, 100)])
@pytest.mark.parametrize("c", [1, 2])
def test_fftconv_equals_the_written_out_sums(batch, L, c):
    torch.manual_seed(0)
    u = torch.randn(batch, 5, L, dtype=torch.float64, requires_grad=True)
    k = torch.randn(c, 5, L, dtype=torch.float64, requires_grad=True)
    D = torch.randn(5, dtype=torch.float64, requires_grad=True)
    g = torch.randn(batch, 5, L, dtype=torch.float64)
    ours, want = fftconv(u, k, D), direct(u, k, D)
    err = rel_err(ours, want)
    assert err < 1e-12, f"forward rel err {err:.2e}"
    grads = torch.autograd.grad((ours * g).sum(), (u, k, D))
    for name, a, b in zip("ukD", grads, torch.autograd.grad((want * g).sum(), (u, k, D))):
        err = rel_err(a, b)
        assert err < 1e-12, f"d{name} rel err {err:.2e}"


def test_the_backward_kernel_never_sees_the_current_position():
    """u_t reaches y_t through k0[0] and D only: a backward kernel alone, with D = 0, maps a
    sequence that is zero after position t to zero at t, and k1[0] weighs u_{t+1}."""
    L = 9
    u = torch.zeros(1, 1, L, dtype=torch.float64)
    u[..., 4] = 1.0
    k = torch.zeros(2, 1, L, dtype=torch.float64)
    k[1, 0, 0] = 2.0
    y = fftconv(u, k, torch.zeros(1, dtype=torch.float64))
    assert y[0, 0, 4].abs() < 1e-12 and abs(y[0, 0, 3].item() - 2.0) < 1e-12
