"""The S4 Cauchy product in Triton, forward and backward (the math: reference.py).

Gu, Goel, Re, "Efficiently Modeling Long Sequences with Structured State Spaces", ICLR 2022
(arXiv:2111.00396), Lemma C.3: for every row m, channel h and point z_k,

    r[m, h, k] = sum_n v[m, h, n] D1[h, n, k]                                  (plain)
    r[m, h, k] = sum_n v[m, h, n] D1[h, n, k] + conj(v[m, h, n]) D2[h, n, k]   (conj)
    D1 = 1 / (z_k - w[h, n]),   D2 = 1 / (z_k - conj(w[h, n])),

conj adding each mode's conjugate. Triton has no complex type: v, z, w travel as their real views
(..., 2) and the complex arithmetic is written out. With P = D1 + D2 and Q = D1 - D2 (P = Q = D1
when plain), a term is Re(v) P + i Im(v) Q. The rows m (the several v of one S4 layer) share D1
and D2.

Forward: one program per (block of m, block of h, block of k) loops over n with a (BM, BH, BK)
tile of r in registers; nothing of size (H, N, K) is ever formed.

Backward: for g = dLoss/dr in torch's convention (dLoss/dRe r + i dLoss/dIm r), the gradients of
the complex leaves v and w (z gets none) are

    grad v[m, h, n] = T0[m, h, n],    grad w[h, n] = sum_m conj(v[m, h, n]) T1[m, h, n],
    T0 = sum_k g conj(D1) + conj(g) D2,    T1 = sum_k g conj(D1^2) + conj(g) D2^2,

with the D2 terms only for conj. One program per (block of m, h, block of n) walks k in blocks,
rebuilds D1 and D2 and reduces T0 and T1 in registers; the sum over m is left to torch.
complex64 runs in float32, complex128 in float64.

    from lra.kernels.cauchy.triton import cauchy_triton
    r = cauchy_triton(v, z, w, conj=True)   # (..., H, N), (K,), (H, N) -> (..., H, K), complex
"""
import torch
import triton
import triton.language as tl

from lra.kernels.vandermonde.triton import real_view  # the same complex-to-real view


@triton.jit
def _reciprocal(dr, di):
    """1 / (dr + i di) as (real, imaginary)."""
    inv = 1.0 / (dr * dr + di * di)
    return dr * inv, -di * inv


@triton.jit
def _resolvents(zr, zi, wr, wi, CONJ: tl.constexpr):
    """D1 = 1 / (z - w) and D2 = 1 / (z - conj(w)) (0 when not CONJ), as (D1r, D1i, D2r, D2i)."""
    d1r, d1i = _reciprocal(zr - wr, zi - wi)
    if CONJ:
        d2r, d2i = _reciprocal(zr - wr, zi + wi)
    else:
        d2r, d2i = tl.zeros_like(d1r), tl.zeros_like(d1i)
    return d1r, d1i, d2r, d2i


@triton.jit
def _forward_kernel(v_ptr, z_ptr, w_ptr, r_ptr, M, H, N, K, CONJ: tl.constexpr,
                    BM: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr):
    """v (M, H, N, 2), z (K, 2), w (H, N, 2): real views; r (M, H, K, 2) written."""
    k = tl.program_id(0) * BK + tl.arange(0, BK)  # (BK,)
    h = tl.program_id(1) * BH + tl.arange(0, BH)  # (BH,)
    m = tl.program_id(2) * BM + tl.arange(0, BM)  # (BM,)
    k_ok, h_ok = k < K, h < H
    mh_ok = (m < M)[:, None] & h_ok[None, :]  # (BM, BH)
    rows = (m[:, None] * H + h[None, :]).to(tl.int64)  # (BM, BH)
    zr = tl.load(z_ptr + 2 * k, mask=k_ok, other=0.0)[None, :]  # (1, BK)
    zi = tl.load(z_ptr + 2 * k + 1, mask=k_ok, other=0.0)[None, :]
    dtype = r_ptr.dtype.element_ty
    acc_r = tl.zeros((BM, BH, BK), dtype=dtype)
    acc_i = tl.zeros((BM, BH, BK), dtype=dtype)
    for n in range(N):
        w_at = w_ptr + (h * N + n) * 2  # (BH,)
        wr = tl.load(w_at, mask=h_ok, other=1.0)[:, None]  # (BH, 1); spare rows at w = 1, off z = 0
        wi = tl.load(w_at + 1, mask=h_ok, other=0.0)[:, None]
        d1r, d1i, d2r, d2i = _resolvents(zr, zi, wr, wi, CONJ)  # (BH, BK) each
        pr, pi = (d1r + d2r)[None, :, :], (d1i + d2i)[None, :, :]  # P = D1 + D2
        qr, qi = (d1r - d2r)[None, :, :], (d1i - d2i)[None, :, :]  # Q = D1 - D2
        v_at = v_ptr + (rows * N + n) * 2  # (BM, BH)
        vr = tl.load(v_at, mask=mh_ok, other=0.0)[:, :, None]  # (BM, BH, 1)
        vi = tl.load(v_at + 1, mask=mh_ok, other=0.0)[:, :, None]
        acc_r += vr * pr - vi * qi  # Re(v) P + i Im(v) Q
        acc_i += vr * pi + vi * qr
    out = r_ptr + (rows[:, :, None] * K + k[None, None, :]) * 2  # (BM, BH, BK)
    ok = mh_ok[:, :, None] & k_ok[None, None, :]
    tl.store(out, acc_r, mask=ok)
    tl.store(out + 1, acc_i, mask=ok)


@triton.jit
def _backward_kernel(g_ptr, z_ptr, w_ptr, t_ptr, M, H, N, K, CONJ: tl.constexpr,
                     BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """g (M, H, K, 2), z (K, 2), w (H, N, 2): real views; t (2, M, H, N, 2) written: T0 and T1."""
    n = tl.program_id(0) * BN + tl.arange(0, BN)  # (BN,)
    h = tl.program_id(1)
    m = tl.program_id(2) * BM + tl.arange(0, BM)  # (BM,)
    n_ok, m_ok = n < N, m < M
    w_at = w_ptr + (h * N + n) * 2
    wr = tl.load(w_at, mask=n_ok, other=1.0)[:, None]  # (BN, 1); spare modes at w = 1, off z = 0
    wi = tl.load(w_at + 1, mask=n_ok, other=0.0)[:, None]
    g_rows = (m * H + h).to(tl.int64)[:, None] * K  # (BM, 1)
    dtype = t_ptr.dtype.element_ty
    t0r = tl.zeros((BM, BN), dtype=dtype)
    t0i = tl.zeros((BM, BN), dtype=dtype)
    t1r = tl.zeros((BM, BN), dtype=dtype)
    t1i = tl.zeros((BM, BN), dtype=dtype)
    for start in range(0, K, BK):
        k = start + tl.arange(0, BK)  # (BK,)
        k_ok = k < K
        zr = tl.load(z_ptr + 2 * k, mask=k_ok, other=0.0)[None, :]  # (1, BK)
        zi = tl.load(z_ptr + 2 * k + 1, mask=k_ok, other=0.0)[None, :]
        g_at = g_ptr + (g_rows + k[None, :]) * 2  # (BM, BK)
        g_ok = m_ok[:, None] & k_ok[None, :]
        gr = tl.load(g_at, mask=g_ok, other=0.0)[:, None, :]  # (BM, 1, BK)
        gi = tl.load(g_at + 1, mask=g_ok, other=0.0)[:, None, :]
        d1r, d1i, d2r, d2i = _resolvents(zr, zi, wr, wi, CONJ)  # (BN, BK) each
        # past K, z = 0 may equal w: zero those columns rather than trust 0 * (1 / 0)
        keep = k_ok[None, :]
        d1r, d1i = tl.where(keep, d1r, 0.0), tl.where(keep, d1i, 0.0)
        d2r, d2i = tl.where(keep, d2r, 0.0), tl.where(keep, d2i, 0.0)
        # g conj(X) + conj(g) Y = Re(g) Re(X+Y) + Im(g) Im(X+Y) + i (Im(g) Re(X-Y) - Re(g) Im(X-Y))
        t0r += tl.sum(gr * (d1r + d2r)[None, :, :] + gi * (d1i + d2i)[None, :, :], 2)  # (BM, BN)
        t0i += tl.sum(gi * (d1r - d2r)[None, :, :] - gr * (d1i - d2i)[None, :, :], 2)
        s1r, s1i = d1r * d1r - d1i * d1i, 2 * d1r * d1i  # D1^2
        s2r, s2i = d2r * d2r - d2i * d2i, 2 * d2r * d2i  # D2^2
        t1r += tl.sum(gr * (s1r + s2r)[None, :, :] + gi * (s1i + s2i)[None, :, :], 2)
        t1i += tl.sum(gi * (s1r - s2r)[None, :, :] - gr * (s1i - s2i)[None, :, :], 2)
    at = t_ptr + ((m[:, None] * H + h).to(tl.int64) * N + n[None, :]) * 2  # (BM, BN)
    ok = m_ok[:, None] & n_ok[None, :]
    t1_at = at + M * H * N * 2
    tl.store(at, t0r, mask=ok)
    tl.store(at + 1, t0i, mask=ok)
    tl.store(t1_at, t1r, mask=ok)
    tl.store(t1_at + 1, t1i, mask=ok)


def _forward_blocks(M, H, K, itemsize):
    """(BM, BH, BK): a tile of about 2048 float32 (1024 float64) outputs, k fastest."""
    tile = 8192 // itemsize
    BM = min(triton.next_power_of_2(M), 8)
    BK = min(triton.next_power_of_2(K), 128)
    BH = min(triton.next_power_of_2(H), max(1, tile // (BM * BK)))
    return BM, BH, BK


def _backward_blocks(M, N, itemsize):
    """(BM, BN, BK): (BM, BN, BK) products of about 2048 float32 (1024 float64) elements per step
    of k."""
    tile = 8192 // itemsize
    BM = min(triton.next_power_of_2(M), 8)
    BN = min(triton.next_power_of_2(N), 32)
    return BM, BN, max(16, tile // (BM * BN))


class _Cauchy(torch.autograd.Function):
    """r = sum_n v D1 (+ conj(v) D2) with its gradients to v and w; saves only its inputs."""

    @staticmethod
    def forward(ctx, v, z, w, conj):
        ctx.save_for_backward(v, z, w)
        ctx.conj = conj
        M, H, N = v.shape
        K = z.shape[0]
        r = torch.empty(M, H, K, 2, dtype=v.real.dtype, device=v.device)
        BM, BH, BK = _forward_blocks(M, H, K, r.element_size())
        grid = (triton.cdiv(K, BK), triton.cdiv(H, BH), triton.cdiv(M, BM))
        _forward_kernel[grid](real_view(v), real_view(z), real_view(w), r, M, H, N, K, CONJ=conj,
                              BM=BM, BH=BH, BK=BK)
        return torch.view_as_complex(r)

    @staticmethod
    def backward(ctx, g):
        v, z, w = ctx.saved_tensors
        M, H, N = v.shape
        T = torch.empty(2, M, H, N, 2, dtype=v.real.dtype, device=v.device)
        BM, BN, BK = _backward_blocks(M, N, T.element_size())
        grid = (triton.cdiv(N, BN), H, triton.cdiv(M, BM))
        _backward_kernel[grid](real_view(g.to(v.dtype)), real_view(z), real_view(w), T, M, H, N,
                               len(z), CONJ=ctx.conj, BM=BM, BN=BN, BK=BK)
        T0, T1 = torch.view_as_complex(T).unbind(0)  # (M, H, N) each
        grad_v = T0 if ctx.needs_input_grad[0] else None
        grad_w = (v.conj() * T1).sum(0) if ctx.needs_input_grad[2] else None
        return grad_v, None, grad_w, None


def cauchy_triton(v, z, w, conj=False):
    """r[..., h, k] = sum_n v[..., h, n] / (z[k] - w[h, n]) (+ the conjugate modes if conj) by the
    Triton kernels.

    v: (..., H, N), z: (K,), w: (H, N), all complex, on a CUDA device (or the CPU under
    TRITON_INTERPRET=1); returns (..., H, K) complex, differentiable in v and w. z is a fixed
    set of points: it gets no gradient. complex128 runs in float64, anything else in float32.
    """
    if w.dim() != 2 or z.dim() != 1 or v.shape[-2:] != w.shape:
        raise ValueError(f"cauchy_triton takes v (..., H, N), z (K,) and w (H, N); got "
                         f"v {tuple(v.shape)}, z {tuple(z.shape)} and w {tuple(w.shape)}")
    if z.requires_grad and torch.is_grad_enabled():
        raise ValueError("cauchy_triton gives no gradient to the points z; pass z.detach(), "
                         "or use cauchy_reference, which differentiates in z too")
    dtype = torch.promote_types(torch.promote_types(v.dtype, w.dtype),
                                torch.promote_types(z.dtype, torch.complex64))
    lead = v.shape[:-2]
    v = v.to(dtype).reshape(-1, *w.shape)  # (M, H, N)
    r = _Cauchy.apply(v, z.to(dtype), w.to(dtype), bool(conj))  # (M, H, K)
    return r.reshape(*lead, w.shape[0], len(z))
