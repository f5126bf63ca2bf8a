"""LightNet: the additive linear recurrence with multi-dimensional positions.

Qin, Mao, Shen, Li, Zhang, Dai, Zhong, "You Only Scan Once: Efficient Multi-dimension
Sequential Modeling with LightNet", 2024 (arXiv:2405.21022).

Token mixer, per head (q = silu(x W_q), k = x W_k, v = x W_v, each d_head wide), with an
additive recurrence: every key channel j keeps a softmax over time (lra.kernels.additive_recurrence)

    causal:          o_t = sum_j q_tj sum_{s<=t} exp(k_sj) v_s / sum_{s<=t} exp(k_sj)
    bidirectional:   o_t = sum_j q_tj sum_s softmax_s(k_.j) v_s          (one pass, any scan order)

then a low-rank gated output norm, y = W_o (RMSNorm(o) * sigmoid(W_2 W_1 x)), W_1: d -> gate_rank.
Block (pre-norm, residual): [x += MD-TPE(RMSNorm x)], x += mixer(RMSNorm x), x += GLU(RMSNorm x);
a final RMSNorm after the stack. Pads are zeroed before every sequence-mixing op and their keys
get weight 0, so they never reach real positions.

Positions. `grid=None`: token t sits at 1-D position t. `grid=[32, 32]`: the sequence is a
row-major 32 x 32 image and token t sits at (t // 32, t % 32); the recurrence still runs in one
pass over the flattened sequence (the paper's point: an additive recurrence needs one scan).
- MD-LRPE (positions "lrpe" or "both"), implemented as the paper's LRPE of the cosine kind: the
  d_head channels of q and of the normalised key split into one group per grid axis; channel c of
  group a gets the angle phi_c(p) = p_a * theta_c, theta_c = lrpe_base ** (-c / group width), and
  q -> [q cos phi, q sin phi], key weight w -> [w cos phi, w sin phi] (both halves keep the key's
  decay). A query at p then reads a key at p' through sum_j q_j w_j cos(phi_j(p) - phi_j(p')):
  relative in every axis, e^{i phi(p)} = prod_a e^{i phi(p_a e_a)}. Angles are fixed, not learned.
- MD-TPE (positions "tpe" or "both"): per grid axis a, a Toeplitz operator along that axis with a
  per-channel exponentially decaying kernel, t_a[r] = c+ (lambda+)^r for r >= 0 and, when
  bidirectional, t_a[-r] = c- (lambda-)^r (r > 0), applied by FFT; the axes' outputs are summed
  (so (r, c) mixes with its row and its column), RMS-normed and projected: the multi-dimensional
  TPE of the paper's code (one 1-D TPE per axis, summed), with decays lambda = sigmoid(learned)
  and scales c learned. TNN's RPE network for the coefficients is not implemented.

    import torch
    from lra.models.lightnet import LightNet
    model = LightNet(d_model=64, n_layers=2, n_heads=4)
    x = torch.randn(2, 100, 64)
    mask = torch.arange(100) < torch.tensor([[100], [60]])   # (2, 100), True at real tokens
    y = model(x, mask)                                         # (2, 100, 64)
    image = LightNet(d_model=64, n_layers=2, grid=[32, 32], positions="both")
    y = image(torch.randn(2, 1024, 64))                        # a row-major 32 x 32 image
"""
import math

import torch
from torch import nn
from torch.nn import functional as F

from lra.kernels.additive_recurrence import additive_recurrence
from lra.models.blocks import GLU, ResidualStack, RMSNorm, head_dim, ssm_optim, zero_pads
from lra.registry import register_model

POSITIONS = ("lrpe", "tpe", "both", "none")


def grid_shape(L, grid):
    """The axes of the sequence: (L,) without a grid, else the grid, which must hold exactly L
    tokens."""
    if grid is None:
        return (L,)
    if math.prod(grid) != L:
        raise ValueError(
            f"sequence length {L} does not match grid={list(grid)} ({math.prod(grid)} positions); "
            f"set model.grid to the task's image shape or to null for 1-D positions"
        )
    return tuple(grid)


def lrpe_angles(shape, d, base, device=None, dtype=None):
    """MD-LRPE angles, (prod(shape), d): channel group a (width ceil(d / len(shape))) follows
    axis a."""
    e = -(-d // len(shape))
    theta = base ** (-torch.arange(e, device=device, dtype=torch.float64) / e)  # (e,)
    axes = (torch.arange(n, device=device) for n in shape)
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)  # (*shape, m)
    coords = coords.reshape(-1, len(shape)).to(torch.float64)  # (L, m), row-major
    return (coords.unsqueeze(-1) * theta).flatten(1)[:, :d].to(dtype)  # (L, m e) -> (L, d)


class TPE(nn.Module):
    """MD-TPE: per-axis Toeplitz operators (exponential kernels per channel), summed, RMS-normed,
    projected."""

    def __init__(self, d_model, grid=None, bidirectional=True, ssm_lr=None):
        super().__init__()
        self.grid = grid
        axes, sides = 1 if grid is None else len(grid), 2 if bidirectional else 1
        lam = 1 - 10 ** -torch.empty(axes, sides, d_model).uniform_(0.3, 3.0)  # in [0.5, 0.999]
        self.decay_logit = nn.Parameter(torch.logit(lam))  # (axes, sides, D)
        self.scale = nn.Parameter(torch.ones(axes, sides, d_model))
        for p in (self.decay_logit, self.scale):
            p._optim = ssm_optim(ssm_lr)
        self.norm = RMSNorm(d_model)
        self.proj = nn.Linear(d_model, d_model)

    def kernel(self, axis, n):
        """The circular kernel of length 2n for `axis`: t[r] at r, t[-r] at 2n - r, (2n, D)."""
        r = torch.arange(n, device=self.scale.device, dtype=self.scale.dtype)[:, None]  # (n, 1)
        log_decay = F.logsigmoid(self.decay_logit[axis]).unsqueeze(1)  # (sides, 1, D)
        t = self.scale[axis].unsqueeze(1) * torch.exp(r * log_decay)  # (sides, n, D): c lambda^r
        # t[-(n-1)] .. t[-1]: the backward side, or zeros when causal
        back = t[1, 1:].flip(0) if t.shape[0] == 2 else t.new_zeros(n - 1, t.shape[-1])
        return torch.cat([t[0], t.new_zeros(1, t.shape[-1]), back])  # (2n, D)

    def forward(self, x, mask=None):
        B, L, D = x.shape
        shape = grid_shape(L, self.grid)
        xg = zero_pads(x, mask).reshape(B, *shape, D)
        u = 0
        for a, n in enumerate(shape):
            xa = xg.movedim(a + 1, -2)  # (B, ..., n, D): axis a next to the channels
            k_f = torch.fft.rfft(self.kernel(a, n), dim=0)  # (n+1, D)
            xa_f = torch.fft.rfft(xa, n=2 * n, dim=-2)  # (B, ..., n+1, D)
            ya = torch.fft.irfft(xa_f * k_f, n=2 * n, dim=-2)[..., :n, :]  # (B, ..., n, D)
            u = u + ya.movedim(-2, a + 1)
        return self.proj(self.norm(u.reshape(B, L, D)))


class LightNetMixer(nn.Module):
    """q, k, v projections, the additive recurrence (with MD-LRPE), the low-rank gated output
    norm."""

    def __init__(self, d_model, n_heads=4, bidirectional=True, grid=None, lrpe=True,
                 lrpe_base=1e4, gate_rank=16):
        super().__init__()
        self.n_heads, self.d_head = n_heads, head_dim(d_model, n_heads)
        self.causal, self.grid = not bidirectional, grid
        self.lrpe, self.lrpe_base = lrpe, lrpe_base
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.gate = nn.Sequential(nn.Linear(d_model, gate_rank, bias=False),
                                  nn.Linear(gate_rank, d_model))
        self.norm = RMSNorm(d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x, mask=None):
        B, L, D = x.shape
        x = zero_pads(x, mask)
        qkv = self.qkv(x).view(B, L, 3, self.n_heads, self.d_head)
        # under mixed precision q, k, v and the gain reach the recurrence in the autocast dtype
        # (float32 inside the kernels); otherwise in at least float32
        mixed = torch.is_autocast_enabled(x.device.type)
        with torch.autocast(x.device.type, enabled=False):
            exact = torch.promote_types(qkv.dtype, torch.float32)
            dtype = torch.get_autocast_dtype(x.device.type) if mixed else exact
            q, k, v = qkv.to(dtype).permute(2, 0, 3, 1, 4)  # (B, nh, L, hd) each
            q, gain = F.silu(q), None
            if self.lrpe:
                shape = grid_shape(L, self.grid)
                # angles to ~L rad: taken in float32 at least, only cos and sin rounded to dtype
                phi = lrpe_angles(shape, q.shape[-1], self.lrpe_base, x.device, exact)  # (L, hd)
                cos, sin = phi.cos().to(dtype), phi.sin().to(dtype)
                q = torch.cat([q * cos, q * sin], -1)  # (B, nh, L, 2 hd)
                k = torch.cat([k, k], -1)  # both halves share the key's softmax
                gain = torch.cat([cos, sin], -1)  # (L, 2 hd)
            o = additive_recurrence(q, k, v, mask, causal=self.causal, gain=gain)  # (B, nh, L, hd)
        o = o.transpose(1, 2).reshape(B, L, D).to(x.dtype)
        return self.out(self.norm(o) * torch.sigmoid(self.gate(x)))  # (B, L, D)


class ChannelGLU(nn.Module):
    """The channel mixer: blocks.GLU (Linear(d, 2d), a * sigmoid(b)) then Linear(d, d); ignores
    the mask."""

    def __init__(self, d_model):
        super().__init__()
        self.glu = GLU(d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x, mask=None):
        return self.out(self.glu(x))


@register_model("lightnet")
class LightNet(ResidualStack):
    """A stack of LightNet blocks, (B, L, d_model) -> (B, L, d_model).

    n_heads: heads of the recurrence (d_model / n_heads wide). bidirectional: the one-pass
    softmax form; False: causal. grid: None (1-D positions) or the shape the sequence fills
    row-major, e.g. [32, 32]. positions: "lrpe" | "tpe" | "both" | "none" (MD-LRPE, MD-TPE).
    gate_rank: rank of the output gate. lrpe_base: base of the LRPE frequencies. ssm_lr: the
    learning rate of MD-TPE's decays and scales (None: the global lr), never weight-decayed.
    """

    def __init__(self, d_model=128, n_layers=4, n_heads=4, dropout=0.0, bidirectional=True,
                 grid=None, positions="lrpe", gate_rank=16, lrpe_base=10000.0, ssm_lr=None):
        d_head = head_dim(d_model, n_heads)
        if positions not in POSITIONS:
            raise ValueError(
                f"positions={positions!r} is not known; use one of {', '.join(POSITIONS)}")
        if grid is not None:
            grid = tuple(int(n) for n in grid)
            if not grid or min(grid) < 1:
                raise ValueError(f"grid={list(grid)} must list positive sizes, e.g. [32, 32]; "
                                 "or set model.grid=null")
            if positions in ("lrpe", "both") and d_head < len(grid):
                raise ValueError(
                    f"grid has {len(grid)} axes but a head is {d_head} channels wide; "
                    "MD-LRPE needs a channel per axis: lower model.n_heads or use "
                    "model.positions=tpe"
                )
        mixers = []
        for _ in range(n_layers):
            if positions in ("tpe", "both"):
                mixers.append(TPE(d_model, grid=grid, bidirectional=bidirectional,
                                  ssm_lr=ssm_lr))
            mixers.append(LightNetMixer(d_model, n_heads=n_heads, bidirectional=bidirectional,
                                        grid=grid, lrpe=positions in ("lrpe", "both"),
                                        lrpe_base=lrpe_base, gate_rank=gate_rank))
            mixers.append(ChannelGLU(d_model))
        super().__init__(mixers, d_model=d_model, dropout=dropout, norm="rms", prenorm=True)
