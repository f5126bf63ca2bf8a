"""S4: structured state spaces with a normal plus low-rank (NPLR / DPLR) state matrix.

Gu, Goel, Re, "Efficiently Modeling Long Sequences with Structured State Spaces", ICLR 2022
(arXiv:2111.00396); initialisation and parameterisation as in Gu, Johnson, Timalsina, Rudra,
Re, "How to Train Your HiPPO", ICLR 2023 (arXiv:2206.12037).

Each of the H channels runs its own SSM with N = d_state states,

    x'(t) = A x(t) + B u(t),    y(t) = C x(t) + D u(t),    A = Lambda - P P^*,

in the eigenbasis of the normal part of HiPPO-LegS: A_LegS + P P^T = V Lambda V^* with
P_n = sqrt(n + 1/2), so Lambda = -1/2 + i mu, and P, B are taken into that basis. Modes
come in conjugate pairs; N/2 of them are kept (Lambda, P, B, C of shape (H, N/2)) and every
sum over modes counts each with its conjugate. Trained: Lambda (Re Lambda = -exp(log_A_real)
stays negative), P, B, log_dt, with their own `lr` and no weight decay; C and D with the rest
(C at `lr_C` and no weight decay when given). dt = exp(log_dt), or softplus(log_dt) with
`dt_transform="softplus"` (S4 V4's default; log_dt then holds softplus^-1(dt)).

The bilinear discretisation dA = (I - dt/2 A)^-1 (I + dt/2 A), dB = (I - dt/2 A)^-1 dt B gives

    x_k = dA x_{k-1} + dB u_k,    y_k = C x_k + D u_k                 (the recurrent view, `step`)

and the convolution y = K * u + D u with K_l = C dA^l dB, l < L (the convolution view, `forward`).
K comes from its truncated generating function at the roots of unity omega_k = exp(-2 pi i k / L):

    K^(omega) = sum_{l<L} K_l omega^l = C~ (I - omega dA)^-1 dB,   C~ = C (I - dA^L)
              = 2 / (1 + omega) C~ (g(omega) - A)^-1 B,    g = 2/dt (1 - omega) / (1 + omega)

and Woodbury on (g - Lambda + P P^*)^-1 leaves four Cauchy products (lra.kernels.cauchy):

    K^(omega) = dt/2 (1 + z) [r(C~ B) - r(C~ P) r(dt/2 P^* B) / (1 + r(dt/2 P^* P))],
    r(v) = sum_n v_n / (z - dt/2 Lambda_n)   (over all N modes: the N/2 kept and their conjugates),
    z = (1 - omega) / (1 + omega) = i tan(pi k / L),   so 2 / (1 + omega) = 1 + z.

An inverse real FFT gives K. L is rounded up to odd, so no frequency sits at omega = -1, where
g is infinite. C~ is computed from C in every forward, dA^L by repeated squaring of the dense
(H, N, N) dA in a real basis of the state (`real_form`).

C_tilde=True trains C~ itself, as S4 V4 (62a14bb `kernels/ssm.py` SSMKernelDPLR `_setup_C`): the
C parameter starts at C~ = C (I - dA^Lc) for the fixed length Lc = max_len rounded up to odd, the
kernel skips dA^L and is the length-Lc one cut to L (its first L taps are those of any longer
kernel), and `step` recovers C = C~ (I - dA^Lc)^-1 by a solve. V4 sets C~ for its dataset's
l_max at the first forward and doubles Lc (C~ <- C~ (I + dA^Lc)) when a longer input comes; ours
fixes Lc at init and rejects a longer input (a length learnt from the first batch would depend on
the batch and the process). The initial kernel is the same; the gradients differ by the factor,
dloss/dC = dloss/dC~ (I - dA^Lc)^T (real form).

Bidirectional layers learn a second C and add its convolution run backwards over the sequence.

    import torch
    from lra.models.s4 import S4
    model = S4(d_model=64, n_layers=2)
    x = torch.randn(2, 100, 64)
    mask = torch.arange(100) < torch.tensor([[100], [60]])   # (2, 100), True at real tokens
    y = model(x, mask)                                         # (2, 100, 64)
"""
import math

import torch
from torch import nn

from lra.kernels.cauchy import cauchy
from lra.models.blocks import (
    GLU,
    LongConv,
    RecurrentStack,
    check_dt_range,
    check_n_ssm,
    make_dropout,
    ssm_optim,
    tied_channels,
)
from lra.registry import register_model


def legs_nplr(N, b_clip=None):
    """HiPPO-LegS as NPLR, A = V (Lambda - p p^*) V^* and B = V b, with the conjugates appended
    to each.

    HiPPO-LegS: A_nk = -sqrt(2n+1) sqrt(2k+1) (n > k), -(n+1) (n = k), 0 (n < k); B_n = sqrt(2n+1).
    S = A + P P^T (P_n = sqrt(n+1/2)) is -1/2 I plus a skew-symmetric M; eig(M) = i mu comes from
    the Hermitian -i M. The other N/2 modes are the conjugates: V_full = [V, conj(V)] is unitary.
    b_clip: clamp Im b to [-b_clip, b_clip], as S4 V4 does (`hippo.nplr(..., B_clip=2.0)`); None:
    no clipping. V4 keeps the modes with mu < 0 of the same eigensolver call; ours are their
    conjugates, and the solver's vector for +mu is +-conj of its vector for -mu, so our b is
    +-conj of V4's B and clamping Im b clamps Im B alike (tests/test_s4.py checks it against V4's
    steps).
    Returns Lambda (N/2,), p (N/2,), b (N/2,), V (N, N/2), all complex128.
    """
    n = torch.arange(N, dtype=torch.float64)
    r = (2 * n + 1).sqrt()  # (N,)
    A = -torch.tril(torch.outer(r, r), -1) - torch.diag(n + 1)  # (N, N)
    P = (n + 0.5).sqrt()
    S = (A + torch.outer(P, P)).to(torch.complex128)  # -1/2 I + M
    mu, U = torch.linalg.eigh(-0.5j * (S - S.T))  # -i M: (N,) ascending, (N, N)
    V = U[:, N // 2:]  # (N, N/2) the modes with mu > 0
    lam = torch.complex(torch.full((N // 2,), -0.5, dtype=torch.float64), mu[N // 2:])
    b = V.mH @ r.to(V.dtype)
    if b_clip is not None:
        b = torch.complex(b.real, b.imag.clamp(-b_clip, b_clip))
    return lam, V.mH @ P.to(V.dtype), b, V


def dt_parameter(log_dt, transform):
    """The trained parameter that gives the step sizes dt = exp(log_dt) (H,): log_dt itself
    ("exp"), or softplus^-1(dt) = log(expm1(dt)) ("softplus"), dt first clamped to >= 1e-4 as
    V4's `inv_transform` does (in float64, so that softplus gives dt back)."""
    if transform == "exp":
        return log_dt
    return log_dt.double().exp().clamp(min=1e-4).expm1().log().to(log_dt.dtype)


DT_TRANSFORMS = {"exp": torch.exp, "softplus": torch.nn.functional.softplus}
DROPOUT_SITES = ("post", "both")  # after the GELU only | before and after it (S4 V4)


def check_choice(option, value, choices):
    if value not in choices:
        raise ValueError(f"{option}={value!r} is not known; use one of {', '.join(choices)}")


def check_C_tilde(C_tilde, max_len):
    if C_tilde and max_len is None:
        raise ValueError("C_tilde=True sets C~ = C (I - dA^L) for a fixed length L and needs "
                         "max_len, the longest sequence (S4 V4: the dataset's l_max); set "
                         "model.max_len, or model.C_tilde=false")
    if max_len is not None and not max_len >= 1:
        raise ValueError(f"max_len={max_len} must be a whole number >= 1, or null")


def real_form(lam, p, b, C):
    """The same SSM over a real state of size N, xi = (Re x, Im x) of the N/2 complex modes.

    x' = Lambda x - 2 p Re(p^* x) + b u and y = 2 Re(c x) (each mode plus its conjugate) read,
    with q = (Re p, Im p):  A = [[Re L, -Im L], [Im L, Re L]] - 2 q q^T,  B = (Re b, Im b),
    C = 2 (Re c, -Im c). lam, p, b: (H, N/2), C: (c, H, N/2) complex
    -> A (H, N, N), B (H, N), C (c, H, N).
    """
    Lr, Li = torch.diag_embed(lam.real), torch.diag_embed(lam.imag)  # (H, N/2, N/2)
    A = torch.cat([torch.cat([Lr, -Li], -1), torch.cat([Li, Lr], -1)], -2)  # (H, N, N)
    q = torch.cat([p.real, p.imag], -1)  # (H, N)
    A = A - 2 * q.unsqueeze(-1) * q.unsqueeze(-2)
    return A, torch.cat([b.real, b.imag], -1), 2 * torch.cat([C.real, -C.imag], -1)


def bilinear(dt, A, B):
    """dA = (I - dt/2 A)^-1 (I + dt/2 A) = 2 (I - dt/2 A)^-1 - I, dB = (I - dt/2 A)^-1 dt B.

    dt: (H,), A: (H, N, N), B: (H, N) -> dA (H, N, N), dB (H, N).
    """
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    W = torch.linalg.inv(eye - dt[:, None, None] / 2 * A)  # (H, N, N)
    return 2 * W - eye, (W @ (dt.unsqueeze(-1) * B).unsqueeze(-1)).squeeze(-1)


def complex_modes(C):
    """The inverse of real_form's C: 2 (Re c, -Im c) (c, H, N) -> c (c, H, N/2) complex."""
    N2 = C.shape[-1] // 2
    return torch.complex(C[..., :N2], -C[..., N2:]) / 2


def power(dA, C, L):
    """C dA^L by repeated squaring: dA (H, N, N), C (c, H, N) -> (c, H, N)."""
    while L:
        if L & 1:
            C = torch.einsum("chn,hnm->chm", C, dA)
        L >>= 1
        if L:
            dA = dA @ dA
    return C


class S4Layer(LongConv):
    """One S4 layer: SSM convolution + D skip -> GELU -> dropout -> GLU linear.
    (B, L, H) -> (B, L, H). dropout_site "both" also drops before the GELU, as S4 V4's FFTConv
    (62a14bb `kernels/fftconv.py`: dropout, then its GELU) inside its S4Block (dropout again).

    Lambda, P, B and dt train without weight decay, Lambda, P, B at `lr`, dt at `lr_dt`
    (None: the global lr, as S4's `lr: {dt: null, A: 0.001, B: 0.001}`). n_ssm: how many
    (Lambda, P, B) the H channels share, channel h using row h mod n_ssm (None: one per channel);
    dt, C and D stay per channel. tie_dropout: one dropout mask per channel for every position.
    dt_transform: "exp" | "softplus", how log_dt gives dt; the initial dt is the same. lr_C: the
    learning rate of C, without weight decay (None: the global lr and weight decay). b_clip:
    clamp Im B at init (V4: 2.0; None: no clipping). C_tilde: train C~ = C (I - dA^Lc), Lc =
    max_len rounded up to odd, as V4 (see the module docstring); longer inputs are rejected.
    """

    def __init__(self, d_model, d_state=64, dropout=0.0, bidirectional=True, lr=1e-3,
                 lr_dt=1e-3, dt_min=1e-3, dt_max=1e-1, n_ssm=None, tie_dropout=False,
                 dt_transform="exp", lr_C=None, b_clip=None, dropout_site="post",
                 C_tilde=False, max_len=None):
        super().__init__()
        if d_state % 2:
            raise ValueError(f"d_state={d_state} must be even: S4 keeps d_state/2 conjugate pairs")
        check_dt_range(dt_min, dt_max)
        check_choice("dt_transform", dt_transform, DT_TRANSFORMS)
        check_choice("dropout_site", dropout_site, DROPOUT_SITES)
        if b_clip is not None and not b_clip > 0:
            raise ValueError(f"b_clip={b_clip} must be positive; set model.b_clip > 0 or null")
        check_C_tilde(C_tilde, max_len)
        H = d_model
        n_ssm = check_n_ssm(n_ssm, H)
        self.bidirectional = bidirectional
        self.dt_transform = dt_transform
        lam, p, b, _ = legs_nplr(d_state, b_clip)
        log_dt = torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(dt_parameter(log_dt, dt_transform))  # (H,)
        # (n_ssm, N2), Re Lambda = -exp(log_A_real)
        self.log_A_real = nn.Parameter((-lam.real).log().float().repeat(n_ssm, 1))
        self.A_imag = nn.Parameter(lam.imag.float().repeat(n_ssm, 1))  # (n_ssm, N2)
        # (n_ssm, N2, 2) each
        self.P = nn.Parameter(torch.view_as_real(p.to(torch.cfloat).repeat(n_ssm, 1)))
        self.B = nn.Parameter(torch.view_as_real(b.to(torch.cfloat).repeat(n_ssm, 1)))
        channels = 2 if bidirectional else 1
        C = torch.randn(channels, H, d_state // 2, dtype=torch.cfloat)
        self.C = nn.Parameter(torch.view_as_real(C))  # (c, H, N2, 2)
        self.D = nn.Parameter(torch.randn(H))
        self.C_length = max_len | 1 if C_tilde else None  # Lc, odd: the length C~ is set for
        if C_tilde:
            with torch.no_grad():
                self.C.copy_(torch.view_as_real(self.tilde(self.C_length)))
        self.log_dt._optim = ssm_optim(lr_dt)
        if lr_C is not None:
            self.C._optim = ssm_optim(lr_C)
        for param in (self.log_A_real, self.A_imag, self.P, self.B):
            param._optim = ssm_optim(lr)
        self.drop = make_dropout(dropout, tie_dropout)
        self.pre_drop = (make_dropout(dropout, tie_dropout) if dropout_site == "both"
                         else nn.Identity())
        self.out = GLU(d_model)

    def pre_activation(self, y):
        """SSM(u) + D u, dropped before the GELU when dropout_site is "both"."""
        return self.pre_drop(y)

    def ssm(self, dtype=None):
        """dt (H,), Lambda, P, B (H, N/2), C (c, H, N/2) from the parameters, in dtype (real;
        complex to match); Lambda, P and B spread from their n_ssm rows to the H channels."""
        dtype = dtype or self.D.dtype
        H = self.D.shape[0]
        dt = DT_TRANSFORMS[self.dt_transform](self.log_dt.to(dtype))
        lam = torch.complex(-self.log_A_real.to(dtype).exp(), self.A_imag.to(dtype))
        P, B, C = (torch.view_as_complex(x.to(dtype)) for x in (self.P, self.B, self.C))
        return dt, tied_channels(lam, H), tied_channels(P, H), tied_channels(B, H), C

    def tilde(self, L):
        """C~ = C (I - dA^L) from the current parameters, in float64: (c, H, N/2) complex."""
        dt, lam, P, B, C = self.ssm(torch.float64)
        A, B_r, C_r = real_form(lam, P, B, C)  # (H, N, N), (H, N), (c, H, N)
        dA, _ = bilinear(dt, A, B_r)
        return complex_modes(C_r - power(dA, C_r, L))

    def kernel(self, L):
        """The convolution kernels, (c, H, L): c = 2 (forward, backward) if bidirectional else 1."""
        dt, lam, P, B, C = self.ssm()
        if self.C_length is None:
            Lo = L | 1  # odd: no frequency at omega = -1
            A, B_r, C_r = real_form(lam, P, B, C)  # (H, N, N), (H, N), (c, H, N)
            dA, _ = bilinear(dt, A, B_r)
            Ct = complex_modes(C_r - power(dA, C_r, Lo))  # (c, H, N2) C~ = C (I - dA^Lo)
        elif L > self.C_length:
            raise ValueError(f"sequence length {L} exceeds the length {self.C_length} C~ was set "
                             f"for (C_tilde=True); raise model.max_len to at least {L}")
        else:
            Lo, Ct = self.C_length, C  # the parameter is C~ for length Lo
        k = torch.arange(Lo // 2 + 1, device=dt.device, dtype=dt.dtype)
        # (K,) (1 - omega) / (1 + omega) at omega_k = exp(-2 pi i k / Lo)
        z = 1j * torch.tan(math.pi / Lo * k)
        Pc = (dt / 2).unsqueeze(-1) * P.conj()  # (H, N2)
        v = torch.cat([Ct * B, Ct * P, (Pc * B)[None], (Pc * P)[None]])  # (2c+2, H, N2)
        r = cauchy(v, z, (dt / 2).unsqueeze(-1) * lam, conj=True)  # (2c+2, H, K)
        c = C.shape[0]
        k_f = r[:c] - r[c:2 * c] * r[2 * c] / (1 + r[2 * c + 1])  # (c, H, K) Woodbury
        k_f = k_f * (dt.unsqueeze(-1) / 2 * (1 + z))  # 2 / (1 + omega) = 1 + z, times dt/2 from r
        return torch.fft.irfft(k_f, n=Lo)[..., :L]  # (c, H, L)

    def default_state(self, batch):
        """The zero state, (batch, H, N) float64: real and imaginary parts of the N/2 modes."""
        return torch.zeros(batch, self.D.shape[0], 2 * self.A_imag.shape[1], dtype=torch.float64,
                           device=self.D.device)

    def ssm_step(self, u_t, state):
        """The recurrence at one position, in float64 with the dense dA (H, N, N), dB, C (H, N)
        from the current parameters: u_t (B, H), state (B, H, N) -> C x_t (B, H), new state."""
        dt, lam, P, B, C = self.ssm(torch.float64)
        A, B, C = real_form(lam, P, B, C)  # (H, N, N), (H, N), (c, H, N)
        dA, dB = bilinear(dt, A, B)
        if self.C_length is not None:  # C = C~ (I - dA^Lc)^-1: (I - dA^Lc)^T C^T = C~^T
            eye = torch.eye(dA.shape[-1], dtype=dA.dtype, device=dA.device)
            M = eye - torch.linalg.matrix_power(dA, self.C_length)  # (H, N, N)
            C = torch.linalg.solve(M.mT, C.unsqueeze(-1)).squeeze(-1)  # (c, H, N)
        state = torch.einsum("hnm,bhm->bhn", dA, state) + dB * u_t.unsqueeze(-1).to(dB.dtype)
        return (state * C[0]).sum(-1).to(u_t.dtype), state  # (B, H), (B, H, N)


@register_model("s4")
class S4(RecurrentStack):
    """A stack of residual S4 layers (the S4 LRA block), (B, L, d_model) -> (B, L, d_model).

    d_state: N, the state size per channel (N/2 complex modes). norm: "layer" | "batch"; prenorm
    adds a final norm. lr: learning rate of Lambda, P, B; lr_dt: that of dt (None: the global
    lr); none of them decays. dt_min, dt_max: the range of the initial dt (log-uniform).
    n_ssm: how many (Lambda, P, B) the channels share (None: one each). tie_dropout: every
    dropout (layer and residual) draws one mask per channel for all positions.
    dt_transform: "exp" | "softplus" (dt from its parameter). lr_C: C's learning rate, no weight
    decay (None: the global lr and weight decay). b_clip: |Im B| bound at init (None: none).
    dropout_site: "post" (after the GELU) | "both" (before and after it, as S4 V4).
    C_tilde: train C~ = C (I - dA^L) for L = max_len, as S4 V4, in place of C. max_len: the
    longest input (None: any; C_tilde needs it).
    """

    def __init__(self, d_model=128, n_layers=4, d_state=64, dropout=0.0, bidirectional=True,
                 norm="layer", prenorm=False, lr=1e-3, lr_dt=1e-3, dt_min=1e-3, dt_max=1e-1,
                 n_ssm=None, tie_dropout=False, dt_transform="exp", lr_C=None, b_clip=None,
                 dropout_site="post", C_tilde=False, max_len=None):
        layers = [S4Layer(d_model, d_state=d_state, dropout=dropout, bidirectional=bidirectional,
                          lr=lr, lr_dt=lr_dt, dt_min=dt_min, dt_max=dt_max, n_ssm=n_ssm,
                          tie_dropout=tie_dropout, dt_transform=dt_transform, lr_C=lr_C,
                          b_clip=b_clip, dropout_site=dropout_site, C_tilde=C_tilde,
                          max_len=max_len)
                  for _ in range(n_layers)]
        super().__init__(layers, d_model=d_model, dropout=dropout, norm=norm, prenorm=prenorm,
                         tie_dropout=tie_dropout)
        self.max_len = max_len  # the longest input it supports (lra.train checks the task's)
