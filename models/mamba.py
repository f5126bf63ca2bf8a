"""Mamba: selective state space models.

Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces", 2023
(arXiv:2312.00752). The mixer, with E = expand * d_model channels:

    x, z = in_proj(u)                                   (B, L, E) each
    x = SiLU(causal depthwise conv1d of width d_conv (x))
    dt = softplus(dt_proj(x_proj_dt(x)))                 low rank: E -> dt_rank -> E
    B, C = x_proj_B(x), x_proj_C(x)                      (B, L, N) each, shared by the E channels
    h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t,  y_t = C_t h_t + D x_t   (lra.kernels.selective_scan)
    out = out_proj(y * SiLU(z))

A = -exp(A_log) with A_log = log(1 .. N) per channel (S4D-Real), D = 1, and the dt_proj bias
set so that softplus(bias) is log-uniform in [dt_min, dt_max]. A_log and D take no weight decay.

Bidirectional (the default): a second scan runs over the reversed sequence with its own conv,
x_proj, dt_proj, A_log and D (as in Vision Mamba and Caduceus), sharing in_proj, the gate z and
out_proj; the two outputs are summed before the gate. Separate parameters because the two
directions summarise different contexts (the past, the future) and cost only
E (d_conv + 2 dt_rank + 3 N + 3) parameters more, against 3 E d_model for the projections.
Padding sits at the end, so the reversed sequence starts with it: the conv input is zero there
(exactly the conv's own zero padding), and dt and x are zero at pads, so pads neither feed nor
decay the state and h is still 0 when the first real token arrives. The forward scan is causal,
so pads (after every real token) cannot reach real positions at all.

Blocks: pre-norm residual (Mamba's Block), u + dropout(mixer(norm(u))), and a final norm.

    import torch
    from lra.models.mamba import Mamba
    model = Mamba(d_model=64, n_layers=2)
    x = torch.randn(2, 100, 64)
    mask = torch.arange(100) < torch.tensor([[100], [60]])   # (2, 100), True at real tokens
    y = model(x, mask)                                         # (2, 100, 64)
"""
import math

import torch
from torch import nn
from torch.nn import functional as F

from lra.kernels.selective_scan import selective_scan, selective_scan_step
from lra.models.blocks import RecurrentStack, require_causal, ssm_optim, zero_pads
from lra.registry import register_model


class SelectiveSSM(nn.Module):
    """One scan direction: causal depthwise conv -> SiLU -> selective scan with input-dependent
    dt, B, C.

    (B, E, L) -> (B, E, L). The input must be zero at pads (`mask` False), which then stay out
    of the state.
    """

    def __init__(self, d_inner, d_state, d_conv, dt_rank, dt_min=1e-3, dt_max=1e-1, ssm_lr=None):
        super().__init__()
        self.conv = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner)
        nn.init.uniform_(self.dt_proj.weight, -dt_rank**-0.5, dt_rank**-0.5)
        log_dt = torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        dt = torch.exp(log_dt)  # (E,)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        A = torch.arange(1, d_state + 1, dtype=torch.float).repeat(d_inner, 1)  # (E, N): 1 .. N
        self.A_log = nn.Parameter(torch.log(A))  # -exp(A_log) = -(1 .. N)
        self.D = nn.Parameter(torch.ones(d_inner))
        # the dt bias, 1-D, is already undecayed at the global lr; with its own lr it is tagged
        tagged = (self.A_log, self.D) + ((self.dt_proj.bias,) if ssm_lr is not None else ())
        for p in tagged:
            p._optim = ssm_optim(ssm_lr)
        self.splits = (dt_rank, d_state, d_state)

    def _select(self, x):
        """The input-dependent step and matrices: x (..., E) -> dt (..., E), B, C (..., N)."""
        dt, B, C = self.x_proj(x).split(self.splits, dim=-1)
        return F.softplus(self.dt_proj(dt)), B, C

    def forward(self, x, mask=None):
        L = x.shape[-1]
        x = F.silu(self.conv(x)[..., :L])  # (B, E, L), causal: d_conv - 1 zeros padded in front
        dt, B, C = self._select(x.transpose(1, 2))  # (B, L, E), (B, L, N), (B, L, N)
        dt = dt.transpose(1, 2)  # (B, E, L)
        # dt = 0 makes a pad an identity step (no decay, no input); x = 0 silences its D x
        if mask is not None:
            pad = ~mask.unsqueeze(1)  # (B, 1, L)
            x, dt = x.masked_fill(pad, 0.0), dt.masked_fill(pad, 0.0)
        A = -self.A_log.exp()  # (E, N)
        device = x.device.type
        # under mixed precision x, B, C reach the scan in the autocast dtype (float32 inside the
        # kernel); dt, A, D keep the parameters' precision: exp(dt A) needs dt's digits
        mixed = torch.is_autocast_enabled(device)
        with torch.autocast(device, enabled=False):
            f = A.dtype
            low = torch.get_autocast_dtype(device) if mixed else f
            B, C = B.transpose(1, 2).to(low), C.transpose(1, 2).to(low)  # (B, N, L) each
            return selective_scan(x.to(low), dt.to(f), A, B, C, self.D)

    def step(self, x_t, state):
        """One time step: x_t (B, E), state = (conv window (B, E, d_conv), h (B, E, N))
        -> y_t (B, E), new state."""
        window, h = state
        window = torch.cat([window[..., 1:], x_t.unsqueeze(-1)], dim=-1)  # the last d_conv inputs
        x_t = F.silu((window * self.conv.weight.squeeze(1)).sum(-1) + self.conv.bias)  # (B, E)
        dt, B, C = self._select(x_t)
        y, h = selective_scan_step(x_t, dt, -self.A_log.exp(), B, C, self.D, h)
        return y, (window, h)


class MambaLayer(nn.Module):
    """The Mamba mixer, (B, L, d_model) -> (B, L, d_model); bidirectional sums a second, reversed
    scan."""

    def __init__(self, d_model, d_state=16, d_conv=4, expand=2, dt_rank="auto", bidirectional=True,
                 dt_min=1e-3, dt_max=1e-1, ssm_lr=None):
        super().__init__()
        if dt_rank == "auto":
            dt_rank = math.ceil(d_model / 16)
        sizes = {"dt_rank": dt_rank, "d_state": d_state, "d_conv": d_conv, "expand": expand}
        for name, value in sizes.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                hint = " or 'auto' (ceil(d_model / 16))" if name == "dt_rank" else ""
                raise ValueError(f"{name}={value!r} is not valid; use a positive integer{hint}")
        d_inner = expand * d_model
        self.bidirectional = bidirectional
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.ssm = nn.ModuleList(
            SelectiveSSM(d_inner, d_state=d_state, d_conv=d_conv, dt_rank=dt_rank, dt_min=dt_min,
                         dt_max=dt_max, ssm_lr=ssm_lr)
            for _ in range(2 if bidirectional else 1)
        )
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(self, u, mask=None):
        x, z = self.in_proj(u).chunk(2, dim=-1)  # (B, L, E) each
        x = zero_pads(x, mask).transpose(1, 2)  # (B, E, L)
        y = self.ssm[0](x, mask)
        if self.bidirectional:  # the backward scan: reverse, scan, reverse back; pads now lead
            back = None if mask is None else mask.flip(-1)
            y = y + self.ssm[1](x.flip(-1), back).flip(-1)
        return self.out_proj(y.transpose(1, 2) * F.silu(z))  # (B, L, d_model)

    def default_state(self, batch):
        """The zero state: (conv window (batch, E, d_conv), h (batch, E, N))."""
        ssm = self.ssm[0]
        w = ssm.conv.weight
        return w.new_zeros(batch, w.shape[0], w.shape[-1]), w.new_zeros(batch, *ssm.A_log.shape)

    def step(self, u_t, state):
        """One time step of a causal layer: u_t (B, d_model), state -> y_t (B, d_model), new
        state."""
        require_causal(self.bidirectional)
        x, z = self.in_proj(u_t).chunk(2, dim=-1)  # (B, E) each
        y, state = self.ssm[0].step(x, state)
        return self.out_proj(y * F.silu(z)), state


@register_model("mamba")
class Mamba(RecurrentStack):
    """A stack of pre-norm residual Mamba mixers with a final norm,
    (B, L, d_model) -> (B, L, d_model).

    d_state: N per channel. d_conv: width of the causal conv. expand: E = expand * d_model.
    dt_rank: rank of the dt projection, "auto" = ceil(d_model / 16). norm: "layer" | "batch".
    prenorm=False gives post-norm blocks and no final norm. A_log, D and the dt bias train
    without weight decay, at ssm_lr (None: the global lr).
    """

    def __init__(self, d_model=128, n_layers=4, d_state=16, d_conv=4, expand=2, dt_rank="auto",
                 dropout=0.0, bidirectional=True, norm="layer", prenorm=True, ssm_lr=None):
        layers = [MambaLayer(d_model, d_state=d_state, d_conv=d_conv, expand=expand,
                             dt_rank=dt_rank, bidirectional=bidirectional, ssm_lr=ssm_lr)
                  for _ in range(n_layers)]
        super().__init__(layers, d_model=d_model, dropout=dropout, norm=norm, prenorm=prenorm)
        # GPT-2 style, as in Mamba: shrink each residual branch's output by sqrt(n_layers)
        with torch.no_grad():
            for layer in self.layers:
                layer.mixer.out_proj.weight.div_(math.sqrt(n_layers))
