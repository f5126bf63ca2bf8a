"""Transformer encoder, pre-norm: Vaswani et al., "Attention Is All You Need", NeurIPS 2017.

    x = x + pos
    x = x + dropout(Attention(LN(x), mask))
    x = x + dropout(MLP(LN(x)))
    y = LN(x)

    Attention = drop_att(softmax(Q K^T / sqrt(d_head) + mask)) V,   Q, K, V = LN(x) W_{q,k,v}
    MLP = Linear(d, d_ff) -> GELU -> Linear(d_ff, d)

The attention here is the plain PyTorch reference, written out: padded keys (and, with
bidirectional=False, future keys) get no weight. Q, K and V are qkv_dim wide in all (d_head =
qkv_dim / n_heads; default d_model), projected back to d_model; drop_att is the attention
dropout (attention_dropout; default the same rate as dropout), LRA's `attention_dropout_rate`
beside its `dropout_rate`. Positions are sinusoidal or learned (up to max_len).

    import torch
    from lra.models.transformer import Transformer
    model = Transformer(d_model=64, n_layers=2, n_heads=4)
    x = torch.randn(2, 100, 64)
    mask = torch.arange(100) < torch.tensor([[100], [60]])   # (2, 100), True at real tokens
    y = model(x, mask)                                         # (2, 100, 64)
"""
import math

import torch
from torch import nn

from lra.models.blocks import ResidualStack, head_dim
from lra.registry import register_model


def sinusoidal(L, d_model, device=None, dtype=None):
    """The fixed positions of Vaswani et al.: sin on even channels, cos on odd ones,
    (L, d_model)."""
    pos = torch.arange(L, device=device, dtype=torch.float64).unsqueeze(1)  # (L, 1)
    channels = torch.arange(0, d_model, 2, device=device, dtype=torch.float64)
    freq = torch.exp(channels * (-math.log(1e4) / d_model))  # (ceil(d/2),)
    pe = torch.zeros(L, d_model, device=device, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * freq)  # (L, ceil(d/2))
    pe[:, 1::2] = torch.cos(pos * freq[: d_model // 2])  # (L, floor(d/2))
    return pe.to(dtype)


class Attention(nn.Module):
    """Multi-head softmax attention with a key-padding mask and an optional causal mask.

    `attend`, if given, computes softmax(Q K^T / sqrt(d)) V instead of the reference lines
    below, as `attend(q, k, v, lengths, causal, dropout_p=p)` on (B, heads, L, d_head);
    `flash` passes its kernel dispatch here. Padding must then be at the end of each row.
    qkv_dim: the width of Q, K and V over all heads (default d_model); `dropout` drops
    attention weights.
    """

    def __init__(self, d_model, n_heads, dropout=0.0, causal=False, attend=None, qkv_dim=None):
        super().__init__()
        if qkv_dim is not None and n_heads >= 1 and qkv_dim % n_heads:
            raise ValueError(f"qkv_dim={qkv_dim} is not divisible by n_heads={n_heads}; choose "
                             "model.qkv_dim as a multiple of model.n_heads (or null: d_model)")
        self.qkv_dim = qkv_dim or d_model
        self.n_heads, self.d_head = n_heads, head_dim(self.qkv_dim, n_heads)
        self.causal, self.attend = causal, attend
        self.qkv = nn.Linear(d_model, 3 * self.qkv_dim)
        self.proj = nn.Linear(self.qkv_dim, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask=None):
        B, L, _ = x.shape
        D = self.qkv_dim
        qkv = self.qkv(x).view(B, L, 3, self.n_heads, self.d_head)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (B, nh, L, hs) each
        if self.attend is not None:
            lengths = None if mask is None else mask.sum(-1)  # (B,) real keys per row
            p = self.drop.p if self.training else 0.0
            y = self.attend(q, k, v, lengths, self.causal, dropout_p=p)  # (B, nh, L, hs)
            return self.proj(y.transpose(1, 2).reshape(B, L, D))  # (B, L, D)
        att = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, nh, L, L)
        if mask is None:
            allowed = torch.ones(B, 1, 1, L, dtype=torch.bool, device=x.device)
        else:
            allowed = mask[:, None, None, :]  # (B, 1, 1, L)
        if self.causal:
            past = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
            allowed = allowed & past  # (B, 1, L, L)
        # a finite fill: a row with every key masked gets uniform weights (then zeroed), never NaN
        att = att.masked_fill(~allowed, torch.finfo(att.dtype).min).softmax(-1)
        att = att * allowed.any(-1, keepdim=True)
        if mask is not None:  # padding queries get zeros, as in lra.kernels.attention
            att = att * mask[:, None, :, None]
        y = self.drop(att) @ v  # (B, nh, L, hs)
        return self.proj(y.transpose(1, 2).reshape(B, L, D))  # (B, L, D)


class MLP(nn.Module):
    """Position-wise Linear -> GELU -> dropout -> Linear; takes (and ignores) a mask."""

    def __init__(self, d_model, d_ff, dropout=0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(d_ff, d_model))

    def forward(self, x, mask=None):
        return self.net(x)


@register_model("transformer")
class Transformer(ResidualStack):
    """Pre-norm Transformer encoder, (B, L, d_model) -> (B, L, d_model).

    d_ff: MLP width (default 4 d_model). qkv_dim: attention width over all heads (default
    d_model). attention_dropout: the rate on attention weights (default: dropout; dropout
    covers positions, MLP and residual branches). positions: "sinusoidal" | "learned" (learned
    ones cover max_len positions). bidirectional=False: each position attends only to itself and
    the past. attend: an attention function for `Attention` (see there); None = reference.
    """

    def __init__(self, d_model=128, n_layers=4, n_heads=4, d_ff=None, dropout=0.0,
                 positions="sinusoidal", max_len=4096, bidirectional=True, attend=None,
                 attention_dropout=None, qkv_dim=None):
        if positions not in ("sinusoidal", "learned"):
            raise ValueError(
                f"positions={positions!r} is not known; use 'sinusoidal' or 'learned'")
        pos = nn.Embedding(max_len, d_model) if positions == "learned" else None
        if pos is not None:  # drawn before the blocks, so a seed gives the weights it always gave
            nn.init.normal_(pos.weight, std=0.02)
        mixers = []
        for _ in range(n_layers):
            mixers.append(Attention(
                d_model, n_heads=n_heads,
                dropout=dropout if attention_dropout is None else attention_dropout,
                causal=not bidirectional, attend=attend, qkv_dim=qkv_dim))
            mixers.append(MLP(d_model, d_ff=d_ff or 4 * d_model, dropout=dropout))
        super().__init__(mixers, d_model=d_model, dropout=dropout, norm="layer", prenorm=True)
        self.d_model = d_model
        self.max_len = max_len if positions == "learned" else None  # the longest input it supports
        self.pos = pos
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask=None):
        L = x.shape[1]
        if self.pos is None:
            x = x + sinusoidal(L, self.d_model, x.device, x.dtype)  # (B, L, D)
        elif L > self.max_len:
            raise ValueError(
                f"sequence length {L} exceeds max_len={self.max_len} of the learned positions; "
                f"raise model.max_len to at least {L} or use model.positions=sinusoidal"
            )
        else:
            x = x + self.pos.weight[:L]  # (B, L, D)
        return super().forward(self.drop(x), mask)
