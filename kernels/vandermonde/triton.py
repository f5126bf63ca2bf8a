"""The S4D Vandermonde product in Triton, forward and backward (the math: reference.py).

Gu, Gupta, Goel, Re, "On the Parameterization and Initialization of Diagonal State Space Models",
NeurIPS 2022 (arXiv:2206.11893):

    K[m, h, l] = 2 Re sum_n C~[m, h, n] E[h, n, l],    E[h, n, l] = exp(dtA[h, n] l),   l < L

Triton has no complex type: C~ travels as its real view (..., 2) and the complex arithmetic is
written out. Every E is taken afresh as exp(Re dtA l) (cos(2 pi phi) + i sin(2 pi phi)), never as a
running power, so its error does not grow with l. m runs over the leading dimensions of C~ (the two
directions of a bidirectional layer), which share E.

The phase, reduced before sin and cos: Im dtA l reaches 2e6 rad at L = 16384 (LegS frequencies),
where a float32 product is off by 0.1 rad and libdevice takes its slow path. So the host splits the
turns per step f = Im dtA / 2 pi (in float64) as f = f_hi + f_lo with f_hi short enough that
f_hi l is exact for every l < L, and the kernel takes phi = frac(f_hi l) + frac(f_lo l), brought to
[-1/2, 1/2): the only rounding left is f_lo l's, |f| l 2^-48 turns in float32.

Forward: one program per (block of m, block of h, block of l) loops over n with a (BM, BH, BL) tile
of K in registers; nothing of size (H, N, L) is ever formed.

Backward: for real g = dLoss/dK, torch's gradient of a complex leaf x
(dLoss/dRe x + i dLoss/dIm x) is

    grad C~[m, h, n] = 2 S0[m, h, n],    grad dtA[h, n] = 2 sum_m conj(C~[m, h, n]) S1[m, h, n],
    S0 = sum_l g[m, h, l] conj(E[h, n, l]),    S1 = sum_l l g[m, h, l] conj(E[h, n, l]).

One program per (block of m, h, block of n) walks l in blocks, rebuilds E and reduces S0 and S1 in
registers; the sum over m is left to torch. complex64 runs in float32, complex128 in float64.

    from lra.kernels.vandermonde.triton import vandermonde_triton
    K = vandermonde_triton(C_tilde, dtA, L)   # (..., H, N), (H, N) complex -> (..., H, L) real
"""
import math

import torch
import triton
import triton.language as tl


@triton.jit
def _unit_phasor(f_hi, f_lo, lf):
    """cos and sin of 2 pi (f_hi + f_lo) l, reduced to [-pi, pi) first; f_hi l is exact."""
    p = f_hi * lf
    q = f_lo * lf
    turns = (p - tl.floor(p)) + (q - tl.floor(q))  # in [0, 2)
    turns -= tl.floor(turns + 0.5)
    angle = 6.283185307179586 * turns
    return tl.cos(angle), tl.sin(angle)


@triton.jit
def _forward_kernel(c_ptr, a_ptr, k_ptr, M, H, N, L, BM: tl.constexpr, BH: tl.constexpr,
                    BL: tl.constexpr):
    """c (M, H, N, 2): C~'s real view; a (H, N, 3): Re dtA, f_hi, f_lo; k (M, H, L) real,
    written."""
    l = tl.program_id(0) * BL + tl.arange(0, BL)  # (BL,)
    h = tl.program_id(1) * BH + tl.arange(0, BH)  # (BH,)
    m = tl.program_id(2) * BM + tl.arange(0, BM)  # (BM,)
    h_ok = h < H
    mh_ok = (m < M)[:, None] & h_ok[None, :]  # (BM, BH)
    rows = (m[:, None] * H + h[None, :]).to(tl.int64)  # (BM, BH)
    lf = l.to(k_ptr.dtype.element_ty)[None, :]  # (1, BL)
    acc = tl.zeros((BM, BH, BL), dtype=k_ptr.dtype.element_ty)
    for n in range(N):
        a_at = a_ptr + (h * N + n) * 3  # (BH,)
        ar = tl.load(a_at, mask=h_ok, other=0.0)[:, None]  # (BH, 1)
        f_hi = tl.load(a_at + 1, mask=h_ok, other=0.0)[:, None]
        f_lo = tl.load(a_at + 2, mask=h_ok, other=0.0)[:, None]
        mag = tl.exp(ar * lf)  # (BH, BL)
        cos, sin = _unit_phasor(f_hi, f_lo, lf)
        er, ei = mag * cos, mag * sin
        c_at = c_ptr + (rows * N + n) * 2  # (BM, BH)
        cr = tl.load(c_at, mask=mh_ok, other=0.0)[:, :, None]  # (BM, BH, 1)
        ci = tl.load(c_at + 1, mask=mh_ok, other=0.0)[:, :, None]
        acc += cr * er[None, :, :] - ci * ei[None, :, :]  # Re(C E)
    out = k_ptr + rows[:, :, None] * L + l[None, None, :]  # (BM, BH, BL)
    tl.store(out, 2 * acc, mask=mh_ok[:, :, None] & (l < L)[None, None, :])


@triton.jit
def _backward_kernel(g_ptr, a_ptr, s_ptr, M, H, N, L, BM: tl.constexpr, BN: tl.constexpr,
                     BL: tl.constexpr):
    """g (M, H, L) real, a (H, N, 3) as in the forward; s (2, M, H, N, 2) written: the real views
    of S0 and S1."""
    n = tl.program_id(0) * BN + tl.arange(0, BN)  # (BN,)
    h = tl.program_id(1)
    m = tl.program_id(2) * BM + tl.arange(0, BM)  # (BM,)
    n_ok, m_ok = n < N, m < M
    a_at = a_ptr + (h * N + n) * 3
    ar = tl.load(a_at, mask=n_ok, other=0.0)[:, None]  # (BN, 1)
    f_hi = tl.load(a_at + 1, mask=n_ok, other=0.0)[:, None]
    f_lo = tl.load(a_at + 2, mask=n_ok, other=0.0)[:, None]
    g_rows = (m * H + h).to(tl.int64)[:, None] * L  # (BM, 1)
    dtype = s_ptr.dtype.element_ty
    s0r = tl.zeros((BM, BN), dtype=dtype)
    s0i = tl.zeros((BM, BN), dtype=dtype)
    s1r = tl.zeros((BM, BN), dtype=dtype)
    s1i = tl.zeros((BM, BN), dtype=dtype)
    for start in range(0, L, BL):
        l = start + tl.arange(0, BL)  # (BL,)
        l_ok = l < L
        lf = tl.where(l_ok, l, 0).to(dtype)[None, :]  # (1, BL); past L, E = 1 meets g = 0
        # (BM, BL)
        g = tl.load(g_ptr + g_rows + l[None, :], mask=m_ok[:, None] & l_ok[None, :], other=0.0)
        mag = tl.exp(ar * lf)  # (BN, BL)
        cos, sin = _unit_phasor(f_hi, f_lo, lf)
        er = (mag * cos)[None, :, :]  # (1, BN, BL)
        ei = (mag * sin)[None, :, :]
        g0 = g[:, None, :]  # (BM, 1, BL)
        g1 = g0 * lf[None, :, :]
        s0r += tl.sum(g0 * er, 2)  # (BM, BN)
        s0i -= tl.sum(g0 * ei, 2)
        s1r += tl.sum(g1 * er, 2)
        s1i -= tl.sum(g1 * ei, 2)
    at = s_ptr + ((m[:, None] * H + h).to(tl.int64) * N + n[None, :]) * 2  # (BM, BN)
    ok = m_ok[:, None] & n_ok[None, :]
    s1_at = at + M * H * N * 2
    tl.store(at, s0r, mask=ok)
    tl.store(at + 1, s0i, mask=ok)
    tl.store(s1_at, s1r, mask=ok)
    tl.store(s1_at + 1, s1i, mask=ok)


def _forward_blocks(M, H, L, itemsize):
    """(BM, BH, BL): a tile of about 2048 float32 (1024 float64) outputs, l fastest, with fewer
    channels per tile while that leaves under 512 programs (four per SM of an H100)."""
    tile = 8192 // itemsize
    BM = min(triton.next_power_of_2(M), 4)
    BL = min(triton.next_power_of_2(L), 128)
    BH = min(triton.next_power_of_2(H), max(1, tile // (BM * BL)))
    while BH > 1 and triton.cdiv(L, BL) * triton.cdiv(H, BH) * triton.cdiv(M, BM) < 512:
        BH //= 2
    return BM, BH, BL


def _backward_blocks(M, N, itemsize):
    """(BM, BN, BL): (BM, BN, BL) products of about 2048 float32 (1024 float64) elements per step
    of l."""
    tile = 8192 // itemsize
    BM = min(triton.next_power_of_2(M), 4)
    BN = min(triton.next_power_of_2(N), 32)
    return BM, BN, max(16, tile // (BM * BN))


def real_view(x):
    """A complex tensor's contiguous real view (..., 2)."""
    return torch.view_as_real(x.resolve_conj().contiguous())


def _modes(dtA, L):
    """(H, N, 3) in dtA's real dtype: Re dtA and the turns per step Im dtA / 2 pi = f_hi + f_lo,
    split in float64 so that f_hi has few enough bits for f_hi l to be exact for l < L."""
    real = dtA.real.dtype
    bits = {torch.float32: 24, torch.float64: 53}[real]  # significand bits
    keep = max(1, bits - (L - 1).bit_length())  # of f_hi, so that f_hi l < 2^bits
    f = dtA.imag.double() / (2 * math.pi)
    mantissa, exponent = torch.frexp(f)  # f = mantissa 2^exponent, |mantissa| in [1/2, 1)
    f_hi = torch.ldexp(torch.round(mantissa * 2.0**keep), exponent - keep)  # keep bits of f
    return torch.stack([dtA.real, f_hi.to(real), (f - f_hi).to(real)], -1).contiguous()


def _vandermonde_forward(C, dtA, L):
    """C (M, H, N), dtA (H, N) complex of one dtype -> K (M, H, L) real."""
    M, H, N = C.shape
    K = torch.empty(M, H, L, dtype=C.real.dtype, device=C.device)
    BM, BH, BL = _forward_blocks(M, H, L, K.element_size())
    grid = (triton.cdiv(L, BL), triton.cdiv(H, BH), triton.cdiv(M, BM))
    _forward_kernel[grid](real_view(C), _modes(dtA, L), K, M, H, N, L, BM=BM, BH=BH, BL=BL)
    return K


def _vandermonde_sums(g, dtA, M):
    """S0, S1 (M, H, N) complex from g (M, H, L) real and dtA (H, N) complex."""
    H, N = dtA.shape
    L = g.shape[-1]
    S = torch.empty(2, M, H, N, 2, dtype=g.dtype, device=g.device)
    BM, BN, BL = _backward_blocks(M, N, g.element_size())
    grid = (triton.cdiv(N, BN), H, triton.cdiv(M, BM))
    _backward_kernel[grid](g, _modes(dtA, L), S, M, H, N, L, BM=BM, BN=BN, BL=BL)
    return torch.view_as_complex(S).unbind(0)


class _Vandermonde(torch.autograd.Function):
    """K = 2 Re(C~ V) with its gradients to C~ and dtA; saves only its inputs."""

    @staticmethod
    def forward(ctx, C, dtA, L):
        ctx.save_for_backward(C, dtA)
        return _vandermonde_forward(C, dtA, L)

    @staticmethod
    def backward(ctx, g):
        C, dtA = ctx.saved_tensors
        S0, S1 = _vandermonde_sums(g.to(C.real.dtype).contiguous(), dtA, C.shape[0])
        grad_C = 2 * S0 if ctx.needs_input_grad[0] else None
        grad_dtA = 2 * (C.conj() * S1).sum(0) if ctx.needs_input_grad[1] else None
        return grad_C, grad_dtA, None


def vandermonde_triton(C_tilde, dtA, L):
    """K[..., h, l] = 2 Re sum_n C~[..., h, n] exp(dtA[h, n] l), l < L, by the Triton kernels.

    C_tilde: (..., H, N) complex, dtA: (H, N) complex, on a CUDA device (or the CPU under
    TRITON_INTERPRET=1); returns (..., H, L) real, differentiable in C_tilde and dtA.
    complex128 runs in float64, anything else in float32.
    """
    if dtA.dim() != 2 or C_tilde.shape[-2:] != dtA.shape:
        raise ValueError(f"vandermonde_triton takes C_tilde (..., H, N) and dtA (H, N); got "
                         f"C_tilde {tuple(C_tilde.shape)} and dtA {tuple(dtA.shape)}")
    if L < 1:
        raise ValueError(f"L={L} must be at least 1")
    dtype = torch.promote_types(torch.promote_types(C_tilde.dtype, dtA.dtype), torch.complex64)
    lead = C_tilde.shape[:-2]
    C = C_tilde.to(dtype).reshape(-1, *dtA.shape)  # (M, H, N)
    return _Vandermonde.apply(C, dtA.to(dtype), L).reshape(*lead, dtA.shape[0], L)
