"""What each kernel family runs on this machine: `lra doctor --kernels`.

Every family's dispatch runs once on small inputs on the default device (CUDA if there is one) at
the dtypes training uses, so the capability rules and the first-launch probes of
lra.kernels.dispatch decide as in a run; the table is its registry, `RAN`.
"""
import torch

from lra.kernels.additive_recurrence import additive_recurrence
from lra.kernels.attention import attention
from lra.kernels.cauchy import cauchy
from lra.kernels.dispatch import ran_table, reset
from lra.kernels.selective_scan import selective_scan
from lra.kernels.vandermonde import vandermonde


def survey(device=None, dtypes=(torch.float32, torch.bfloat16)):
    """Lines `family  path  reason` after running every family here, plus a heading."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    reset()
    for dtype in dtypes:
        q = torch.randn(2, 2, 40, 16, device=device, dtype=dtype)
        for causal in (False, True):
            attention(q, q, q, torch.tensor([40, 23], device=device), causal, dropout_p=0.1)
            additive_recurrence(q, q, q, causal=causal)
        x = torch.rand(1, 4, 40, device=device, dtype=dtype)
        B = torch.randn(1, 8, 40, device=device, dtype=dtype)
        selective_scan(x, x, -torch.ones(4, 8, device=device, dtype=dtype), B, B, x[0, :, 0])
    w = torch.complex(-torch.ones(2, 4), torch.randn(2, 4)).to(device)
    vandermonde(w, 0.1 * w, 40)
    cauchy(w, torch.exp(2j * torch.pi * torch.arange(16) / 16).to(device, w.dtype), w, conj=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return [f"kernel families on {device.type} ({name}):", *ran_table()]
