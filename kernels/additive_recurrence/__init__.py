"""LightNet's additive linear recurrence, causal and non-causal.

Qin et al., "You Only Scan Once: Efficient Multi-dimension Sequential Modeling with
LightNet", 2024 (arXiv:2405.21022). Per head, with queries q_t, key logits k_t (both d_k
wide) and values v_t (d_v wide), each key channel j keeps a softmax over time:

    causal:      o_t = sum_j q_tj * sum_{s<=t} exp(k_sj - z_tj) g_sj v_s,    z_t = logcumsumexp(k)_t
    non-causal:  o_t = sum_j q_tj * sum_s softmax_s(k_.j)_s g_sj v_s        (one d_k x d_v matrix)

g is an optional gain on each normalised key (LightNet's LRPE passes cos / sin of the
position angle); without it g = 1. The causal form is gated linear attention with key
k'_t = exp(k_t - z_t) * g_t and per-channel log decay z_{t-1} - z_t <= 0:

    S_t = exp(z_{t-1} - z_t) * S_{t-1} + k'_t v_t^T,    o_t = S_t^T q_t

Every weight exp(k_s - z_t) (s <= t) and every decay lies in (0, 1], so nothing here
overflows, whatever the size of the keys. Shapes: q, k, g (B, H, L, d_k), v (B, H, L, d_v).

    reference.py         additive_causal_step, additive_causal_reference (step by step),
                         additive_causal_quadratic, additive_noncausal_reference (the softmax form)
    chunked.py           additive_causal_chunked (the causal CPU path), logcumsumexp
    triton_causal.py     additive_causal_triton: the chunked form, forward and backward
    triton_noncausal.py  additive_noncausal_triton: split softmax statistics, forward and backward

    from lra.kernels.additive_recurrence import additive_recurrence
    o = additive_recurrence(q, k, v, mask, causal=True)   # (B, H, L, d_v)
"""
import torch

from lra.kernels.additive_recurrence.chunked import additive_causal_chunked, logcumsumexp
from lra.kernels.additive_recurrence.reference import (
    additive_causal_quadratic,
    additive_causal_reference,
    additive_causal_step,
    additive_noncausal_reference,
)
from lra.kernels.dispatch import choose, probe_pair

__all__ = ["additive_recurrence", "additive_causal_chunked", "additive_causal_quadratic",
           "additive_causal_reference", "additive_causal_step", "additive_noncausal_reference",
           "logcumsumexp"]

FAMILY = "additive_recurrence"


def additive_recurrence(q, k, v, mask=None, causal=False, gain=None):
    """The chunked causal form or the non-causal softmax form, by Triton or PyTorch.

    mask (B, L) bool, True at real tokens, padding at the end: pads get key weight 0 (and, in
    the non-causal form, output 0, so the kernels skip them). In the causal form pads only
    follow real tokens, so they never reach them; their keys are still set to weight 0.
    Triton runs on CUDA tensors of float32 / float16 / bfloat16 (`LRA_KERNELS=reference|triton`
    forces a path; see lra.kernels.dispatch, which also falls back where the kernels fail). float64
    stays in PyTorch unless Triton is forced (then the kernel refuses it: it computes in float32).
    """
    unsupported = "float64 (the kernels compute in float32)" if q.dtype == torch.float64 else None
    on_triton = choose(FAMILY, q, probe=lambda: probe(q, causal), variant=causal,
                       unsupported=unsupported) == "triton"
    if not causal:
        if on_triton:
            from lra.kernels.additive_recurrence.triton_noncausal import additive_noncausal_triton

            return additive_noncausal_triton(q, k, v, mask, gain)
        return additive_noncausal_reference(q, k, v, mask, gain)
    if mask is not None:
        k = k.masked_fill(~mask[:, None, :, None], torch.finfo(k.dtype).min)
    if on_triton:
        from lra.kernels.additive_recurrence.triton_causal import additive_causal_triton

        return additive_causal_triton(q, k, v, gain)
    return additive_causal_chunked(q, k, v, gain=gain)


def probe(like, causal, B=1, H=2, L=40, d=8):
    """The kernels against the references on small inputs of `like`'s dtype and device."""
    from lra.kernels.additive_recurrence.triton_causal import additive_causal_triton
    from lra.kernels.additive_recurrence.triton_noncausal import additive_noncausal_triton

    g = torch.Generator().manual_seed(0)
    inputs = [torch.randn(B, H, L, d, generator=g).to(like.device, like.dtype) for _ in range(3)]
    tol = 6e-3 if like.dtype == torch.float32 else 3e-2  # float32: TF32 may be on (torch's too)
    if causal:
        probe_pair(lambda q, k, v: additive_causal_triton(q, k, v, None),
                   lambda q, k, v: additive_causal_chunked(q, k, v), inputs, tol,
                   "causal additive recurrence (o, dq, dk, dv)")
    else:
        probe_pair(lambda q, k, v: additive_noncausal_triton(q, k, v, None, None),
                   lambda q, k, v: additive_noncausal_reference(q, k, v, None, None), inputs, tol,
                   "non-causal additive recurrence (o, dq, dk, dv)")
