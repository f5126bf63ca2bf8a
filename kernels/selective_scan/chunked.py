"""The selective scan on a CPU: the recurrence in place, chunk by chunk, with its own backward.

Why no parallel form on the PyTorch path: every (b, d, n) has its own decay exp(dt_t A_n), so
the chunk-local "masked decay matrix" is (b, D, N, T, T), T times the work of the recurrence,
and the cumsum trick h_t = e^{S_t} sum_s e^{-S_s} u_s (S = cumsum dt A) overflows in float32
once dt |A| summed over a chunk passes ~88, which a selective dt (a large dt resets the state)
reaches. The recurrence itself only multiplies by decays in [0, 1], so it is stable for any dt.
`selective_scan_chunked` therefore runs it step by step on cache-sized (b, N, D) slices with
in-place ops, and writes its own backward so that nothing of size (b, D, N, L) is kept.
"""
import torch
from torch.autograd.function import once_differentiable


class _ChunkedScan(torch.autograd.Function):
    """Forward: the recurrence in place on h (b, N, D), keeping h at the start of every chunk.

    Backward: chunks from last to first; recompute the chunk's decays and states from its saved
    start, then run the adjoint recurrence G_t = dL/dh_t backwards in time:

        G_t = C_t dy_t + exp(dt_{t+1} A) * G_{t+1}
        dL/d(dt_t A) = G_t * exp(dt_t A) * h_{t-1}      -> the dt and A gradients
        dL/d(dt_t x_t) = B_t . G_t,   dL/dB_t = sum_d G_t dt_t x_t,   dL/dC_t = sum_d dy_t h_t
    """

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, chunk):
        L = x.shape[-1]
        At = A.t().contiguous()  # (N, D): the state is kept as (b, N, D), D contiguous
        xs, dts = x.permute(2, 0, 1).contiguous(), dt.permute(2, 0, 1).contiguous()  # (L, b, D)
        Bs, Cs = B.permute(2, 0, 1).contiguous(), C.permute(2, 0, 1).contiguous()  # (L, b, N)
        dtxs = dts * xs  # (L, b, D)
        h = x.new_zeros(x.shape[0], *At.shape)  # (b, N, D)
        decay = torch.empty_like(h)
        starts = x.new_empty(-(-L // chunk), *h.shape)  # (chunks, b, N, D)
        y = x.new_empty(L, x.shape[0], 1, x.shape[1])  # (L, b, 1, D)
        for t in range(L):
            if t % chunk == 0:
                starts[t // chunk] = h
            torch.mul(At, dts[t].unsqueeze(1), out=decay).exp_()  # exp(dt_t A), (b, N, D)
            h.mul_(decay).addcmul_(Bs[t].unsqueeze(-1), dtxs[t].unsqueeze(1))  # h_t
            torch.bmm(Cs[t].unsqueeze(1), h, out=y[t])  # C_t . h_t, (b, 1, D)
        ctx.chunk = chunk
        ctx.save_for_backward(xs, dts, At, Bs, Cs, D, starts)
        return (y.squeeze(2) + D * xs).permute(1, 2, 0)  # (b, D, L)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        xs, dts, At, Bs, Cs, D, starts = ctx.saved_tensors
        T, L = ctx.chunk, xs.shape[0]
        dys = dy.permute(2, 0, 1).contiguous()  # (L, b, D)
        dtxs = dts * xs
        # states and decays of one chunk, (T, b, N, D)
        H, decay = starts.new_empty(2, T, *starts.shape[1:])
        G, gA, Q = starts.new_zeros(3, *starts.shape[1:])  # (b, N, D) each; G carries across chunks
        gdt, gdtx = torch.empty_like(dts), torch.empty_like(dts)  # (L, b, D)
        gB, gC = torch.empty_like(Bs), torch.empty_like(Cs)  # (L, b, N)
        for c in reversed(range(starts.shape[0])):
            s, e = c * T, min(L, c * T + T)
            prev = starts[c]
            for i, t in enumerate(range(s, e)):  # recompute h_s .. h_{e-1}
                torch.mul(At, dts[t].unsqueeze(1), out=decay[i]).exp_()
                torch.mul(decay[i], prev,
                          out=H[i]).addcmul_(Bs[t].unsqueeze(-1), dtxs[t].unsqueeze(1))
                prev = H[i]
            for i in reversed(range(e - s)):
                t = s + i
                G.addcmul_(Cs[t].unsqueeze(-1), dys[t].unsqueeze(1))  # G_t, (b, N, D)
                torch.linalg.vecdot(H[i], dys[t].unsqueeze(1), out=gC[t])  # (b, N)
                torch.linalg.vecdot(G, dtxs[t].unsqueeze(1), out=gB[t])  # (b, N)
                torch.bmm(Bs[t].unsqueeze(1), G, out=gdtx[t].unsqueeze(1))  # (b, 1, D)
                torch.mul(G, decay[i], out=Q).mul_(H[i - 1] if i else starts[c])  # dL/d(dt_t A)
                torch.linalg.vecdot(Q, At, dim=1, out=gdt[t])  # (b, D)
                gA.addcmul_(Q, dts[t].unsqueeze(1))
                G.mul_(decay[i])  # exp(dt_t A) G_t, carried to t - 1
        gx = gdtx * dts + D * dys  # (L, b, D)
        gdt += gdtx * xs
        gD = (dys * xs).sum((0, 1))  # (D,)
        gx, gdt, gB, gC = (z.permute(1, 2, 0) for z in (gx, gdt, gB, gC))  # (L, b, .) -> (b, ., L)
        return gx, gdt, gA.sum(0).t(), gB, gC, gD, None


def selective_scan_chunked(x, dt, A, B, C, D, chunk=32):
    """Same as `selective_scan_reference`, 3-4x faster on CPU, keeping O(b D N L / chunk).

    The backward keeps the state at every `chunk`-th step and recomputes the states inside a
    chunk from it; any chunk >= 1 gives the same result (it trades memory for cache traffic).
    Inputs of several dtypes (bfloat16 x, B, C under mixed precision) are computed in their common
    dtype, at least float32; y comes back in x's dtype.
    """
    inputs = (x, dt, A, B, C, D)
    dtype = torch.promote_types(_common_dtype(inputs), torch.float32)
    return _ChunkedScan.apply(*(t.to(dtype) for t in inputs), chunk).to(x.dtype)


def _common_dtype(tensors):
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype
