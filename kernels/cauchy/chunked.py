"""The S4 Cauchy product over conjugate pairs by real matmuls: `cauchy(..., conj=True)` on a CPU.

A pair of a mode and its conjugate adds up to one rational term with real coefficients,

    v / (z - w) + conj(v) / (z - conj(w))
        = (2 Re(v) z - 2 Re(v conj(w))) / (z^2 - 2 Re(w) z + |w|^2),

so the conjugate-pair sum is a real matrix (the 2 Re(v) and -2 Re(v conj(w)) rows) times one
complex Cauchy matrix G[h, n, k] = 1 / (z_k^2 - 2 Re(w_n) z_k + |w_n|^2), shared by every row
of v: one batched real matmul per chunk of z. Its backward is written out and rebuilds G, so
autograd keeps nothing of size (H, N, K). The plain sum (conj=False) has no such form: it runs
`cauchy_reference`.
"""
import torch


def _cauchy_matrix(a, m, z):
    """G = 1 / (z^2 - 2 a z + m) for a, m (H, N) real and z (K,) complex, as (H, N, 2K) real:
    [Re G | Im G].

    Filled in place (G = conj(den) / |den|^2): each fresh (H, N, K) buffer costs page faults on a
    CPU.
    """
    zr, zi = z.real.contiguous(), z.imag.contiguous()  # (K,)
    a2 = 2 * a.unsqueeze(-1)  # (H, N, 1)
    G = a.new_empty(*a.shape, 2, len(z))  # (H, N, 2, K)
    # Re den
    re = torch.mul(a2, -zr, out=G[..., 0, :]).add_(m.unsqueeze(-1)).add_(zr * zr - zi * zi)
    neg_im = torch.mul(a2, zi, out=G[..., 1, :]).sub_(2 * zr * zi)  # -Im den
    G.mul_(re.square().addcmul_(neg_im, neg_im).reciprocal_().unsqueeze(-2))
    return G.flatten(-2)


def _square(G):
    """G^2 for G as (..., 2K) real [Re | Im] -> the same layout."""
    Gr, Gi = G.unflatten(-1, (2, -1)).unbind(-2)
    E = torch.empty_like(G).unflatten(-1, (2, -1))
    torch.mul(Gr, Gr, out=E[..., 0, :]).addcmul_(Gi, Gi, value=-1)
    torch.mul(Gr, Gi, out=E[..., 1, :]).mul_(2)
    return E.flatten(-2)


def _split_complex(T):
    """(..., 2K) real [Re | Im] -> (..., K) complex."""
    return torch.complex(*T.chunk(2, -1))


def _join_complex(Y):
    """(..., K) complex -> (..., 2K) real [Re | Im]."""
    return torch.cat([Y.real, Y.imag], -1)


class _CauchyConj(torch.autograd.Function):
    """r[h, j, k] = sum_n (z_k alpha[h, j, n] + beta[h, j, n]) G[h, n, k],
    G = 1 / (z_k^2 - 2 a[h, n] z_k + m[h, n]).

    alpha, beta: (H, M, N), a, m: (H, N) real; z: (K,) complex, fixed (no gradient). It saves only
    its inputs and builds G chunk by chunk over z, in forward and again in backward, so no
    (H, N, K) tensor outlives a chunk. With Re(conj(Y) G) = [Re Y | Im Y] @ [Re G | Im G]^T,
    every reduction is a real matmul; dG/da = 2 z G^2 and dG/dm = -G^2 give the gradients.
    """

    @staticmethod
    def forward(ctx, alpha, beta, a, m, z, chunk):
        ctx.save_for_backward(alpha, beta, a, m, z)
        ctx.chunk = chunk
        X, M = torch.cat([alpha, beta], 1), alpha.shape[1]  # (H, 2M, N)
        out = []
        for zc in z.split(chunk):
            T = _split_complex(X @ _cauchy_matrix(a, m, zc))  # (H, 2M, k)
            out.append(zc * T[:, :M] + T[:, M:])  # (H, M, k)
        return torch.cat(out, -1)  # (H, M, K)

    @staticmethod
    def backward(ctx, g):
        alpha, beta, a, m, z = ctx.saved_tensors
        M = alpha.shape[1]
        d_alpha, d_beta, d_a, d_m = (torch.zeros_like(t) for t in (alpha, beta, a, m))
        for zc, gc in zip(z.split(ctx.chunk), g.split(ctx.chunk, -1)):
            G = _cauchy_matrix(a, m, zc)  # (H, N, 2k)
            E = _square(G)  # (H, N, 2k) G^2
            gz = gc * zc.conj()  # (H, M, k)
            Y = _join_complex(torch.cat([gz * zc.conj(), gz, gc], 1))  # (H, 3M, 2k)
            SG = Y[:, M:] @ G.mT  # (H, 2M, N): Re sum_k conj(g z*) G, Re sum_k conj(g) G
            # (H, M, N) each: Re sum_k conj(g z*^2, g z*, g) G^2
            S2, S1, S0 = (Y @ E.mT).split(M, 1)
            d_alpha += SG[:, :M]
            d_beta += SG[:, M:]
            d_a += 2 * (alpha * S2 + beta * S1).sum(1)
            d_m -= (alpha * S1 + beta * S0).sum(1)
        return d_alpha, d_beta, d_a, d_m, None, None


def cauchy_chunked(v, z, w, chunk=1024):
    """The conjugate-pair sum r = sum_n v_n / (z - w_n) + conj(v_n) / (z - conj(w_n)) by real
    matmuls: `cauchy_reference(v, z, w, conj=True)`, faster and in less memory.

    v: (..., H, N), z: (K,), w: (H, N), all complex; returns (..., H, K) complex. Gradients flow
    to v and w (z is fixed); memory stays at one (H, N, chunk) block of the Cauchy matrix.
    """
    lead, (H, N) = v.shape[:-2], w.shape
    v = v.reshape(-1, H, N).transpose(0, 1)  # (H, M, N)
    beta = -2 * (v.real * w.real.unsqueeze(1) + v.imag * w.imag.unsqueeze(1))  # -2 Re(v conj(w))
    r = _CauchyConj.apply(2 * v.real, beta, w.real, w.real**2 + w.imag**2, z, chunk)  # (H, M, K)
    return r.transpose(0, 1).reshape(*lead, H, len(z))
