"""What the causal and the non-causal Triton kernels of the additive recurrence share.

Inputs float32, float16 or bfloat16; the math is float32 (dots in TF32x3 for float32 inputs, TF32
otherwise); outputs and gradients come in the input dtype. A gain g (B, H, L, d_k) broadcasts
without a copy: its strides go to the kernels, 0 along the dimensions it broadcasts over.
"""
import torch
import triton
import triton.language as tl

from lra.kernels.dispatch import is_hip, torch_allows_tf32

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# float32's lowest: a key of weight 0, never -inf (no inf - inf)
NEG = tl.constexpr(-3.4028234663852886e38)


@triton.jit
def load_gain(g, rows, ck, inside, sgt, sgc, HAS_GAIN: tl.constexpr):
    if HAS_GAIN:
        return tl.load(g + rows[:, None] * sgt + ck[None, :] * sgc, mask=inside,
                       other=0.0).to(tl.float32)
    else:
        return tl.where(inside, 1.0, 0.0)


@triton.jit
def load_tile(x, rows, cols, L, D):
    """x[rows, cols] of a (L, D) matrix in float32, 0 outside."""
    return tl.load(x + rows[:, None] * D + cols[None, :],
                   mask=(rows[:, None] < L) & (cols[None, :] < D), other=0.0).to(tl.float32)


def dot_precision(dtype):
    """tl.dot's precision for an input dtype, to read once per call and keep for the backward.

    float32: "tf32" where torch allows TF32 (`torch.backends.cuda.matmul.fp32_precision` when
    set, else `allow_tf32`), else TF32x3 (about float32's accuracy). ROCm: "ieee" for every dtype,
    the only precision its backend accepts. Other dtypes: "tf32": their tiles are upcast to
    float32 on load, so these dots do run in TF32; a half input rounds to TF32 exactly, the
    float32 intermediates fed to later dots do not (tests/test_kernels_precision.py measures it).
    """
    if is_hip():
        return "ieee"
    if dtype != torch.float32:
        return "tf32"
    return "tf32" if torch_allows_tf32() else "tf32x3"


def check_inputs(q, k, v, gain, mask=None):
    """Raise, saying what is wrong, unless the kernels can take these dtypes and shapes."""
    if q.dtype not in DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"the Triton additive recurrence takes q, k, v of one dtype among "
                         f"float32, float16 and bfloat16, got {q.dtype}, {k.dtype}, {v.dtype}; set "
                         "LRA_KERNELS=reference for float64")
    if q.dim() != 4 or k.shape != q.shape or v.shape[:-1] != q.shape[:-1]:
        raise ValueError(f"expected q, k (B, H, L, d_k) and v (B, H, L, d_v), got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    pairs = zip(gain.shape[::-1], k.shape[::-1]) if gain is not None else ()
    if gain is not None and (gain.dim() > 4 or any(n not in (1, m) for n, m in pairs)):
        raise ValueError(f"gain {tuple(gain.shape)} does not broadcast to the keys' shape "
                         f"{tuple(k.shape)}")
    if mask is not None and mask.shape != (q.shape[0], q.shape[2]):
        raise ValueError(f"mask {tuple(mask.shape)} must be (B, L) = {(q.shape[0], q.shape[2])}")


def gain_args(gain, k):
    """The gain as (tensor, strides over (B, H, L, d_k)), broadcast without a copy; k stands in
    when there is none."""
    if gain is None:
        return k, (0, 0, 0, 0)
    full = gain.expand_as(k)
    return full, full.stride()


def reduce_gain(dg, gain):
    """The gain's gradient from dg (B, H, L, d_k), summed over the dimensions the gain broadcasts
    along."""
    return dg.sum_to_size(gain.shape).to(gain.dtype)
