"""The selective scan, one step at a time: the recurrent view and the test oracle.

    h_t = exp(dt_t A) * h_{t-1} + dt_t B_t x_t,    y_t = C_t . h_t + D x_t,    h_{-1} = 0
"""
import torch


def selective_scan_step(x_t, dt_t, A, B_t, C_t, D, h):
    """One time step: x_t, dt_t (b, D); B_t, C_t (b, N); h (b, D, N) -> y_t (b, D), h."""
    decay = torch.exp(dt_t.unsqueeze(-1) * A)  # (b, D, N)
    h = decay * h + (dt_t * x_t).unsqueeze(-1) * B_t.unsqueeze(1)
    return (h * C_t.unsqueeze(1)).sum(-1) + D * x_t, h


def selective_scan_reference(x, dt, A, B, C, D):
    """The math: `selective_scan_step` over t = 0 .. L-1 from h = 0; autograd gives the backward."""
    h = x.new_zeros(x.shape[0], *A.shape)  # (b, D, N)
    ys = []
    for t in range(x.shape[-1]):
        y_t, h = selective_scan_step(x[..., t], dt[..., t], A, B[..., t], C[..., t], D, h)
        ys.append(y_t)
    return torch.stack(ys, -1)  # (b, D, L)
