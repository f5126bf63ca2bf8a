"""The Transformer of models/transformer.py with its attention computed by FlashAttention.

Dao, Fu, Ermon, Rudra, Re, "FlashAttention: Fast and Memory-Efficient Exact Attention with
IO-Awareness", NeurIPS 2022; Dao, "FlashAttention-2", 2023.

Same model, same weights, same outputs: pre-norm blocks

    x = x + dropout(Attention(LN(x), mask)),    x = x + dropout(MLP(LN(x))),    y = LN(x)

but softmax(Q K^T / sqrt(d_head)) V goes through `lra.kernels.attention.attention`, which
walks the keys in blocks of `block_size` with an online softmax (running max m, running
sum l, o = acc / l) and stops each row's key loop at its length, read from the mask (padding
is at the end). On CUDA that is our Triton kernel (kernels/attention/triton.py), attention dropout
(attention_dropout) included (a Philox stream the backward regenerates), elsewhere torch's SDPA
with a boolean mask;
a GPU the kernel fails on falls back to SDPA with one warning (lra.kernels.dispatch), and
`LRA_KERNELS=reference` runs the blockwise algorithm itself.
A state dict moves between `flash` and `transformer` as is, and both draw the same initial
weights from the same seed.

    import torch
    from lra.models.flash import Flash
    model = Flash(d_model=64, n_layers=2, n_heads=4, block_size=64)
    x = torch.randn(2, 100, 64)
    mask = torch.arange(100) < torch.tensor([[100], [60]])   # (2, 100), True at real tokens
    y = model(x, mask)                                         # (2, 100, 64)
"""
from functools import partial

import torch

from lra.kernels.attention import attention
from lra.models.transformer import Transformer
from lra.registry import register_model


@register_model("flash")
class Flash(Transformer):
    """Pre-norm Transformer encoder with FlashAttention, (B, L, d_model) -> (B, L, d_model).

    Options as `transformer`, plus block_size: keys per block of the online softmax.
    The mask must be True on a prefix of each row (padding at the end).
    """

    def __init__(self, d_model=128, n_layers=4, n_heads=4, d_ff=None, dropout=0.0,
                 positions="sinusoidal", max_len=4096, bidirectional=True, block_size=64,
                 attention_dropout=None, qkv_dim=None):
        if block_size < 1:
            raise ValueError(f"block_size={block_size} must be a positive number of keys; "
                             "set model.block_size >= 1")
        super().__init__(d_model=d_model, n_layers=n_layers, n_heads=n_heads, d_ff=d_ff,
                         dropout=dropout, positions=positions, max_len=max_len,
                         bidirectional=bidirectional,
                         attend=partial(attention, block_size=block_size),
                         attention_dropout=attention_dropout, qkv_dim=qkv_dim)

    def forward(self, x, mask=None):
        if mask is not None:
            positions = torch.arange(mask.shape[1], device=mask.device)
            prefix = positions < mask.sum(-1, keepdim=True)  # (B, L)
            if not torch.equal(mask, prefix):
                raise ValueError(
                    "flash needs the padding at the end of each row (mask True on a prefix); "
                    "pad sequences on the right, or use model=transformer for arbitrary masks"
                )
        return super().forward(x, mask)
