"""The selective scan of Mamba in Triton, forward and backward (the math: reference.py).

Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces", 2023
(arXiv:2312.00752):

    h_t = a_t * h_{t-1} + u_t,   a_t = exp(dt_t A),   u_t = dt_t x_t B_t,   h_{-1} = 0
    y_t = C_t . h_t + D x_t

One program per (block of channels, batch) walks the length in chunks of T steps, holding the state
(BLOCK_D, N) in registers. Inside a chunk the pairs (a_t, u_t), tiles of (T, BLOCK_D, N), are
combined by `tl.associative_scan` with (a1, u1) o (a2, u2) = (a1 a2, a2 u1 + u2), which gives the
chunk's states from a zero start, h_t = P_t h_start + H_t with P_t the product of the decays so far;
the last one carries on. Each thread owns one (channel, state) pair and its T steps, so the scan
runs inside the thread. Decays lie in [0, 1], so nothing overflows whatever dt is. Nothing of size
(b, D, L, N) is written: the forward keeps only each chunk's start state, (b, D, L/T, N), for the
backward.

Backward, chunks from last to first: recompute the chunk's states from its saved start, then run the
adjoint G_t = dL/dh_t = C_t dy_t + a_{t+1} G_{t+1} as a reverse scan of the same form (the decays
shifted by one step) and carry a_s G_s, s the chunk's first step, to the chunk before. Then

    dL/d(dt_t A) = G_t a_t h_{t-1} = G_t (h_t - u_t)           -> the dt and A gradients
    dL/d(dt_t x_t) = B_t . G_t,  dL/dB_t = sum_d G_t dt_t x_t,  dL/dC_t = sum_d dy_t h_t,
    dL/dD = sum dy x

dB and dC sum over the channel blocks: by atomic adds, or, when torch's deterministic algorithms are
on (`trainer.deterministic=true`), each block stores its share in a buffer (channel blocks, b, N, L)
summed afterwards in a fixed order, so two backward passes give bit-identical gradients (the buffer
costs D / BLOCK_D times the size of B and C in float32, twice; freed after the sum). dA and dD per
batch go to a buffer summed here.
Inputs may be float32, float16 or bfloat16 (computed in float32) or float64 (computed in float64);
outputs and gradients take their input's dtype.

    from lra.kernels.selective_scan.triton import selective_scan_triton
    # x, dt (b, D, L); A (D, N); B, C (b, N, L); D (D,)
    y = selective_scan_triton(x, dt, A, B, C, D)
"""
import torch
import triton
import triton.language as tl

_TL = {torch.float32: tl.float32, torch.float64: tl.float64}  # the accumulator's dtype in a kernel


@triton.jit
def _linear_combine(a1, u1, a2, u2):
    """(a1, u1) then (a2, u2): h -> a2 (a1 h + u1) + u2."""
    return a1 * a2, a2 * u1 + u2


@triton.jit
def _scan_fwd(x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, y_ptr, states_ptr, n_channels, L, N,
              n_chunks, BLOCK_D: tl.constexpr, T: tl.constexpr, BLOCK_N: tl.constexpr,
              SAVE_STATES: tl.constexpr, ACC: tl.constexpr):
    pid_d, b = tl.program_id(0), tl.program_id(1)
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)  # (BD,)
    n = tl.arange(0, BLOCK_N)
    t = tl.arange(0, T)
    d_ok, n_ok = d < n_channels, n < N
    dn_ok = d_ok[:, None] & n_ok[None, :]  # (BD, BN)
    A = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=dn_ok, other=0.0).to(ACC)  # (BD, BN)
    Dd = tl.load(D_ptr + d, mask=d_ok, other=0.0).to(ACC)
    rows = (b * n_channels + d).to(tl.int64)[None, :] * L  # (1, BD): x, dt, y rows
    bc_rows = (b * N + n).to(tl.int64)[None, :] * L  # (1, BN): B, C rows
    state_at = ((b * n_channels + d).to(tl.int64)[:, None] * n_chunks) * N + n[None, :]  # (BD, BN)
    h = tl.zeros((BLOCK_D, BLOCK_N), dtype=ACC)
    for c in range(n_chunks):
        tc = (c * T + t)[:, None]  # (T, 1)
        t_ok = tc < L
        td_ok = t_ok & d_ok[None, :]  # (T, BD)
        tn_ok = t_ok & n_ok[None, :]  # (T, BN)
        # (T, BD); 0 past L: identity steps
        x = tl.load(x_ptr + rows + tc, mask=td_ok, other=0.0).to(ACC)
        dt = tl.load(dt_ptr + rows + tc, mask=td_ok, other=0.0).to(ACC)
        Bt = tl.load(B_ptr + bc_rows + tc, mask=tn_ok, other=0.0).to(ACC)  # (T, BN)
        Ct = tl.load(C_ptr + bc_rows + tc, mask=tn_ok, other=0.0).to(ACC)
        if SAVE_STATES:
            tl.store(states_ptr + state_at + c * N, h, mask=dn_ok)
        decay = tl.exp(dt[:, :, None] * A[None, :, :])  # (T, BD, BN)
        u = (dt * x)[:, :, None] * Bt[:, None, :]
        P, H = tl.associative_scan((decay, u), 0, _linear_combine)
        H = H + P * h[None, :, :]  # h_t
        y = tl.sum(H * Ct[:, None, :], axis=2) + Dd[None, :] * x  # (T, BD)
        tl.store(y_ptr + rows + tc, y, mask=td_ok)
        h = tl.sum(tl.where(t[:, None, None] == T - 1, H, 0.0), axis=0)  # the chunk's last state


@triton.jit
def _scan_bwd(x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, dy_ptr, states_ptr,
              dx_ptr, ddt_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, n_channels, L, N, n_chunks,
              BLOCK_D: tl.constexpr, T: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr,
              DETERMINISTIC: tl.constexpr):
    pid_d, b = tl.program_id(0), tl.program_id(1)
    if DETERMINISTIC:  # this channel block's own slice of the (blocks, b, N, L) buffers
        part = pid_d.to(tl.int64) * tl.num_programs(1) * N * L
        dB_ptr += part
        dC_ptr += part
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)  # (BD,)
    n = tl.arange(0, BLOCK_N)
    t = tl.arange(0, T)
    d_ok, n_ok = d < n_channels, n < N
    dn_ok = d_ok[:, None] & n_ok[None, :]  # (BD, BN)
    A = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=dn_ok, other=0.0).to(ACC)  # (BD, BN)
    Dd = tl.load(D_ptr + d, mask=d_ok, other=0.0).to(ACC)
    rows = (b * n_channels + d).to(tl.int64)[None, :] * L  # (1, BD)
    bc_rows = (b * N + n).to(tl.int64)[None, :] * L  # (1, BN)
    state_at = ((b * n_channels + d).to(tl.int64)[:, None] * n_chunks) * N + n[None, :]  # (BD, BN)
    carry = tl.zeros((BLOCK_D, BLOCK_N), dtype=ACC)  # a_s G_s of the chunk after this one
    dA = tl.zeros((BLOCK_D, BLOCK_N), dtype=ACC)
    dD = tl.zeros((BLOCK_D,), dtype=ACC)
    for i in range(n_chunks):
        c = n_chunks - 1 - i
        tc = (c * T + t)[:, None]  # (T, 1)
        t_ok = tc < L
        td_ok = t_ok & d_ok[None, :]  # (T, BD)
        tn_ok = t_ok & n_ok[None, :]  # (T, BN)
        next_ok = (t[:, None] < T - 1) & (tc + 1 < L) & d_ok[None, :]  # dt_{t+1} inside this chunk
        x = tl.load(x_ptr + rows + tc, mask=td_ok, other=0.0).to(ACC)  # (T, BD)
        dt = tl.load(dt_ptr + rows + tc, mask=td_ok, other=0.0).to(ACC)
        dt_next = tl.load(dt_ptr + rows + tc + 1, mask=next_ok, other=0.0).to(ACC)
        dy = tl.load(dy_ptr + rows + tc, mask=td_ok, other=0.0).to(ACC)
        Bt = tl.load(B_ptr + bc_rows + tc, mask=tn_ok, other=0.0).to(ACC)  # (T, BN)
        Ct = tl.load(C_ptr + bc_rows + tc, mask=tn_ok, other=0.0).to(ACC)
        h_start = tl.load(states_ptr + state_at + c * N, mask=dn_ok, other=0.0)  # (BD, BN)
        dtx = dt * x
        decay = tl.exp(dt[:, :, None] * A[None, :, :])  # a_t, (T, BD, BN)
        u = dtx[:, :, None] * Bt[:, None, :]
        P, H = tl.associative_scan((decay, u), 0, _linear_combine)
        H = H + P * h_start[None, :, :]  # h_t
        # a_{t+1}; 1 at the chunk's last step
        decay_next = tl.exp(dt_next[:, :, None] * A[None, :, :])
        P, G = tl.associative_scan((decay_next, dy[:, :, None] * Ct[:, None, :]), 0,
                                   _linear_combine, reverse=True)
        G = G + P * carry[None, :, :]  # G_t
        Q = G * (H - u)  # dL/d(dt_t A) = G_t a_t h_{t-1}
        GB = tl.sum(G * Bt[:, None, :], axis=2)  # dL/d(dt_t x_t), (T, BD)
        tl.store(dx_ptr + rows + tc, GB * dt + Dd[None, :] * dy, mask=td_ok)
        tl.store(ddt_ptr + rows + tc, tl.sum(Q * A[None, :, :], axis=2) + GB * x, mask=td_ok)
        dA += tl.sum(Q * dt[:, :, None], axis=0)
        dD += tl.sum(dy * x, axis=0)
        dBt = tl.sum(G * dtx[:, :, None], axis=1)  # this block's share of dL/dB_t, (T, BN)
        dCt = tl.sum(H * dy[:, :, None], axis=1)
        if DETERMINISTIC:
            tl.store(dB_ptr + bc_rows + tc, dBt, mask=tn_ok)
            tl.store(dC_ptr + bc_rows + tc, dCt, mask=tn_ok)
        else:
            tl.atomic_add(dB_ptr + bc_rows + tc, dBt, mask=tn_ok)
            tl.atomic_add(dC_ptr + bc_rows + tc, dCt, mask=tn_ok)
        carry = tl.sum(tl.where(t[:, None, None] == 0, decay * G, 0.0), axis=0)  # a_s G_s
    tl.store(dA_ptr + (b * n_channels + d)[:, None] * N + n[None, :], dA, mask=dn_ok)
    tl.store(dD_ptr + b * n_channels + d, dD, mask=d_ok)


def _config(N, channels, chunk):
    """BLOCK_N, BLOCK_D, T and warps: one (channel, state) pair per thread, T steps of it in the
    thread's registers.

    With BLOCK_D * BLOCK_N = 32 * warps the scan over a chunk runs inside each thread, with no
    shuffles.
    """
    block_n = triton.next_power_of_2(N)
    block_d = max(1, min(triton.next_power_of_2(channels), 128 // block_n))
    warps = max(1, min(4, block_d * block_n // 32))
    return block_n, block_d, chunk or max(1, min(16, 2048 // (block_d * block_n))), warps


def _check(x, dt, A, B, C, D):
    b, channels, L = x.shape if x.dim() == 3 else (None, None, None)
    N = A.shape[-1] if A.dim() == 2 else None
    want = {"x": (b, channels, L), "dt": (b, channels, L), "A": (channels, N), "B": (b, N, L),
            "C": (b, N, L), "D": (channels,)}
    got = {"x": x, "dt": dt, "A": A, "B": B, "C": C, "D": D}
    if b is None or N is None or any(tuple(got[k].shape) != v for k, v in want.items()):
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in got.items())
        raise ValueError(f"selective scan: got {shapes}; expected x, dt (b, D, L), A (D, N), "
                         "B, C (b, N, L), D (D,)")
    devices = sorted({str(t.device) for t in got.values()})
    if len(devices) > 1:
        raise ValueError(f"selective scan: inputs on several devices: {devices}")
    if L == 0 or b == 0:
        raise ValueError(f"selective scan: empty input, x {tuple(x.shape)}")


def _accumulator(*tensors):
    """float64 if any input is, else float32 (for float16 and bfloat16 too)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


class _SelectiveScan(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, chunk, save_states):
        x, dt, A, B, C, D = (t.contiguous() for t in (x, dt, A, B, C, D))
        b, channels, L = x.shape
        N = A.shape[1]
        acc = _accumulator(x, dt, A, B, C, D)
        block_n, block_d, chunk, warps = _config(N, channels, chunk)
        n_chunks = triton.cdiv(L, chunk)
        y = torch.empty_like(x)
        states = x.new_empty((b, channels, n_chunks, N) if save_states else (1,), dtype=acc)
        _scan_fwd[(triton.cdiv(channels, block_d), b)](
            x, dt, A, B, C, D, y, states, channels, L, N, n_chunks,
            BLOCK_D=block_d, T=chunk, BLOCK_N=block_n, SAVE_STATES=save_states, ACC=_TL[acc],
            num_warps=warps)
        if save_states:
            ctx.chunk = chunk
            ctx.save_for_backward(x, dt, A, B, C, D, states)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, dt, A, B, C, D, states = ctx.saved_tensors
        b, channels, L = x.shape
        N = A.shape[1]
        block_n, block_d, chunk, warps = _config(N, channels, ctx.chunk)
        acc = states.dtype
        dx, ddt = torch.empty_like(x), torch.empty_like(dt)
        blocks = triton.cdiv(channels, block_d)
        deterministic = torch.are_deterministic_algorithms_enabled()
        if deterministic:  # one slice per channel block, summed below
            dB, dC = x.new_empty((2, blocks, *B.shape), dtype=acc)
        else:  # atomic sums over the channel blocks
            dB, dC = x.new_zeros((2, *B.shape), dtype=acc)
        dA = x.new_empty((b, channels, N), dtype=acc)  # per batch, summed below
        dD = x.new_empty((b, channels), dtype=acc)
        _scan_bwd[(blocks, b)](
            x, dt, A, B, C, D, dy.contiguous(), states, dx, ddt, dA, dB, dC, dD, channels, L, N,
            states.shape[2], BLOCK_D=block_d, T=chunk, BLOCK_N=block_n, ACC=_TL[acc],
            DETERMINISTIC=deterministic, num_warps=warps)
        if deterministic:
            dB, dC = dB.sum(0), dC.sum(0)
        return (dx, ddt, dA.sum(0).to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
                dD.sum(0).to(D.dtype), None, None)


def selective_scan_triton(x, dt, A, B, C, D, chunk=None):
    """Same as `selective_scan_reference`: x, dt (b, D, L); A (D, N); B, C (b, N, L); D (D,)
    -> y (b, D, L).

    On CUDA tensors, or CPU tensors under TRITON_INTERPRET=1; y has x's dtype. `chunk`, a power of
    2, sets the time steps per chunk (default: 16 for N <= 128); the backward keeps b D N L / chunk
    states.
    """
    _check(x, dt, A, B, C, D)
    if chunk is not None and (chunk < 1 or chunk & (chunk - 1)):
        raise ValueError(f"selective scan: chunk={chunk} is not a power of 2")
    save_states = torch.is_grad_enabled() and any(t.requires_grad for t in (x, dt, A, B, C, D))
    return _SelectiveScan.apply(x, dt, A, B, C, D, chunk, save_states)
