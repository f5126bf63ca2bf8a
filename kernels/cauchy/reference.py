"""The S4 Cauchy product in plain PyTorch: the math and the test oracle.

    r[..., h, k] = sum_n  v[..., h, n] / (z[k] - w[h, n])

with conj=True summing over every mode and its conjugate (v -> conj(v), w -> conj(w)) as well.
"""
import torch


def cauchy_reference(v, z, w, conj=False, chunk=256):
    """Plain PyTorch: r[..., h, k] = sum_n v[..., h, n] / (z[k] - w[h, n]) (+ the conjugates).

    Works through z in chunks of `chunk` points, so without autograd it holds one
    (H, N, chunk) block of 1 / (z - w) at a time. v: (..., H, N), z: (K,), w: (H, N),
    all complex; returns (..., H, K) complex. conj=True writes the conjugate modes out.
    """
    if conj:
        v, w = torch.cat([v, v.conj()], -1), torch.cat([w, w.conj()], -1)
    lead = v.shape[:-2]
    v = v.reshape(-1, *w.shape).transpose(0, 1)  # (H, M, N)
    out = [v @ (1 / (zc - w.unsqueeze(-1))) for zc in z.split(chunk)]  # (H, M, chunk) each
    return torch.cat(out, -1).transpose(0, 1).reshape(*lead, w.shape[0], len(z))  # (..., H, K)
