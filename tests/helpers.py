"""Helpers shared by the test modules (test modules import this, never each other)."""
import torch


def rel_err(a, b):
    """Relative error |a - b| / |b| in float64, as flash-linear-attention compares kernels."""
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).norm() / b.norm().clamp(min=1e-30)).item()


def padded_batch(lengths, L, D, seed=1, dtype=torch.float64):
    """x (B, L, D) with large garbage at the pads, and its mask (B, L) of real positions."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), L, D, generator=g, dtype=dtype)
    mask = torch.arange(L) < torch.tensor(lengths).unsqueeze(1)  # (B, L)
    x[~mask] = 100 * torch.randn(int((~mask).sum()), D, generator=g, dtype=dtype)
    return x, mask
