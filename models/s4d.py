"""S4D: diagonal state space models.

Gu, Gupta, Goel, Re, "On the Parameterization and Initialization of Diagonal State Space
Models", NeurIPS 2022 (arXiv:2206.11893).

Each of the H channels runs its own SSM with a diagonal complex A of N/2 modes (d_state = N;
each mode stands for itself and its conjugate, hence the 2 Re):

    x'(t) = A x(t) + B u(t),    y(t) = 2 Re C x(t) + D u(t).

A learned step dt per channel discretises it (`disc`):
    zoh:       dA = exp(dt A),                      dB = (exp(dt A) - 1) / A * B
    bilinear:  dA = (1 + dt A/2) / (1 - dt A/2),    dB = dt / (1 - dt A/2) * B
so that

    x_k = dA x_{k-1} + dB u_k,    y_k = 2 Re C x_k + D u_k            (the recurrent view, `step`)

which unrolls into y = K * u + D u with the Vandermonde kernel (lra.kernels.vandermonde)

    K_l = 2 Re sum_n C_n dB_n dA_n^l = 2 Re sum_n C_n dB_n exp(l log dA_n),   l = 0 .. L-1,

applied by FFT of length 2L (the convolution view, `forward`). Bidirectional layers learn a
second C and add the same convolution run backwards over the sequence.

Initialisations of A_n = -1/2 + i Im A_n, n = 0 .. N/2-1:
    lin:  Im A_n = pi n
    inv:  Im A_n = N/pi (N/(2n+1) - 1)
    legs: Im A_n = the positive eigenvalues (/i) of the normal part S = A + P P^T of HiPPO-LegS
B (`B_init`): ones, or legs: V^* B_LegS, HiPPO-LegS's B in the eigenvectors V of S (then C starts
as randn * B, as state-spaces/s4's diagonal mode does). B is fixed (lr_B = 0) or trained.

    import torch
    from lra.models.s4d import S4D
    model = S4D(d_model=64, n_layers=2)
    x = torch.randn(2, 100, 64)
    mask = torch.arange(100) < torch.tensor([[100], [60]])   # (2, 100), True at real tokens
    y = model(x, mask)                                         # (2, 100, 64)
"""
import math

import torch
from torch import nn

from lra.kernels.vandermonde import vandermonde
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


def legs_skew(N):
    """r_n = sqrt(2n+1) (N,) and the skew-symmetric part M (N, N) of HiPPO-LegS's normal part
    S = A + P P^T = -1/2 I + M, M_nk = sign(k-n) r_n r_k / 2, both float64."""
    r = torch.arange(N, dtype=torch.float64).mul(2).add(1).sqrt()
    n = torch.arange(N)
    return r, 0.5 * torch.outer(r, r) * torch.sign(n[None, :] - n[:, None])


def legs_imag(N):
    """Imaginary parts of the eigenvalues of the normal part of HiPPO-LegS, the N/2 positive ones.

    HiPPO-LegS: A_nk = -sqrt(2n+1) sqrt(2k+1) (n > k), -(n+1) (n = k), 0 (n < k); P_n = sqrt(n+1/2).
    S = A + P P^T = -1/2 I + M with M skew-symmetric, M_nk = sign(k-n) sqrt(2n+1) sqrt(2k+1) / 2.
    """
    _, M = legs_skew(N)
    lam = torch.linalg.eigvalsh(-1j * M.to(torch.complex128))  # (N,) ascending; eig(M) = i lam
    return lam[N // 2:]  # (N/2,) the positive half


def legs_B(N):
    """|V^* B| for the N/2 positive eigenvalues of S (legs_imag's order), B_n = sqrt(2n+1): the
    LegS input matrix in S's eigenbasis. Only the magnitudes are kept: an eigenvector's phase is
    arbitrary, and C's complex normal init absorbs any phase."""
    r, M = legs_skew(N)  # r is also B_LegS
    _, V = torch.linalg.eigh(-1j * M.to(torch.complex128))  # (N, N) columns: eigenvectors
    return (V[:, N // 2:].conj().T @ r.to(torch.complex128)).abs()  # (N/2,)


def init_B(B_init, N):
    """B_n, n = 0 .. N/2-1, for B_init in "ones" | "legs" (complex128)."""
    if B_init == "ones":
        return torch.ones(N // 2, dtype=torch.complex128)
    if B_init == "legs":
        return legs_B(N).to(torch.complex128)
    raise ValueError(f"B_init={B_init!r} is not known; use 'ones' or 'legs'")


def init_imag(init, N):
    """Im A_n, n = 0 .. N/2-1, for init in "legs" | "inv" | "lin" (float64)."""
    n = torch.arange(N // 2, dtype=torch.float64)
    if init == "lin":
        return math.pi * n
    if init == "inv":
        return N / math.pi * (N / (2 * n + 1) - 1)
    if init == "legs":
        return legs_imag(N)
    raise ValueError(f"init={init!r} is not known; use 'legs', 'inv' or 'lin'")


class S4DLayer(LongConv):
    """One S4D layer: SSM convolution + D skip -> GELU -> dropout -> GLU linear.
    (B, L, H) -> (B, L, H).

    A, dt and B train without weight decay, A at `lr`, dt at `lr_dt`, B at `lr_B` (None: the
    global lr; lr_B = 0: B stays at its init, a buffer). n_ssm: how many (A, B) the H channels
    share (channel h uses row h mod n_ssm); None: one per channel. tie_dropout: one dropout mask
    per channel for every position. disc: "zoh" | "bilinear"; B_init: "ones" | "legs".
    """

    def __init__(self, d_model, d_state=64, dropout=0.0, bidirectional=True, init="legs",
                 lr=1e-3, lr_dt=1e-3, dt_min=1e-3, dt_max=1e-1, n_ssm=None, tie_dropout=False,
                 disc="zoh", B_init="ones", lr_B=0.0):
        super().__init__()
        if d_state % 2:
            raise ValueError(f"d_state={d_state} must be even: S4D keeps d_state/2 conjugate pairs")
        if disc not in ("zoh", "bilinear"):
            raise ValueError(f"disc={disc!r} is not known; use 'zoh' or 'bilinear'")
        check_dt_range(dt_min, dt_max)
        H, N2 = d_model, d_state // 2
        n_ssm = check_n_ssm(n_ssm, H)
        self.bidirectional, self.disc = bidirectional, disc
        log_dt = torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)  # (H,)
        # (n_ssm, N2) each, Re A = -exp(log_A_real)
        self.log_A_real = nn.Parameter(torch.full((n_ssm, N2), math.log(0.5)))
        self.A_imag = nn.Parameter(init_imag(init, d_state).float().repeat(n_ssm, 1))
        channels = 2 if bidirectional else 1
        B = init_B(B_init, d_state).to(torch.cfloat).repeat(n_ssm, 1)  # (n_ssm, N2)
        C = torch.randn(channels, H, N2, dtype=torch.cfloat) * tied_channels(B, H)
        self.C = nn.Parameter(torch.view_as_real(C))  # (c, H, N2, 2)
        self.D = nn.Parameter(torch.randn(H))
        if lr_B == 0:  # fixed: not in the state dict, so B = 1 models load as before
            self.register_buffer("B", torch.view_as_real(B), persistent=False)
        else:
            self.B = nn.Parameter(torch.view_as_real(B))  # (n_ssm, N2, 2)
            self.B._optim = ssm_optim(lr_B)
        self.log_dt._optim = ssm_optim(lr_dt)
        for p in (self.log_A_real, self.A_imag):
            p._optim = ssm_optim(lr)
        self.drop = make_dropout(dropout, tie_dropout)
        self.out = GLU(d_model)

    def _discrete(self):
        """The discretised SSM from the parameters: log dA (H, N2), dB (H, N2), C (c, H, N2);
        all complex (zoh: log dA = dt A)."""
        H = self.D.shape[0]
        A = tied_channels(torch.complex(-self.log_A_real.exp(), self.A_imag), H)  # (H, N2)
        B = tied_channels(torch.view_as_complex(self.B), H)  # (H, N2)
        dt = self.log_dt.exp().unsqueeze(-1)  # (H, 1)
        dtA = dt * A  # (H, N2)
        if self.disc == "zoh":
            log_dA, dB = dtA, (dtA.exp() - 1) / A * B
        else:  # bilinear
            log_dA, dB = ((1 + dtA / 2) / (1 - dtA / 2)).log(), dt / (1 - dtA / 2) * B
        return log_dA, dB, torch.view_as_complex(self.C)

    def kernel(self, L):
        """The convolution kernels, (c, H, L): c = 2 (forward, backward) if bidirectional else 1."""
        log_dA, dB, C = self._discrete()
        return vandermonde(C * dB, log_dA, L)  # (c, H, L)

    def default_state(self, batch):
        """The zero state, (batch, H, N/2) complex."""
        return torch.zeros(batch, self.D.shape[0], self.A_imag.shape[1],
                           dtype=self.A_imag.dtype.to_complex(), device=self.A_imag.device)

    def ssm_step(self, u_t, state):
        """The recurrence at one position, dA and dB from the current parameters:
        u_t (B, H), state (B, H, N/2) -> 2 Re C x_t (B, H), new state."""
        log_dA, dB, C = self._discrete()  # (H, N2), (H, N2), (c, H, N2)
        state = log_dA.exp() * state + dB * u_t.unsqueeze(-1)  # (B, H, N2)
        return 2 * (state * C[0]).sum(-1).real, state


@register_model("s4d")
class S4D(RecurrentStack):
    """A stack of residual S4D layers (the S4 LRA block), (B, L, d_model) -> (B, L, d_model).

    d_state: N, the state size per channel (N/2 complex modes). init: "legs" | "inv" | "lin".
    norm: "layer" | "batch"; prenorm adds a final norm. lr: learning rate of A; lr_dt: that of
    dt (None: the global lr); both without weight decay. dt_min, dt_max: the range of the
    initial dt (log-uniform). n_ssm: how many A the channels share (None: one each).
    tie_dropout: every dropout (layer and residual) draws one mask per channel for all positions.
    disc: "zoh" | "bilinear". B_init: "ones" | "legs" (HiPPO-LegS's B in S's eigenbasis).
    lr_B: learning rate of B (0: fixed at its init; None: the global lr), without weight decay.
    """

    def __init__(self, d_model=128, n_layers=4, d_state=64, dropout=0.0, bidirectional=True,
                 init="legs", norm="layer", prenorm=False, lr=1e-3, lr_dt=1e-3, dt_min=1e-3,
                 dt_max=1e-1, n_ssm=None, tie_dropout=False, disc="zoh", B_init="ones",
                 lr_B=0.0):
        layers = [S4DLayer(d_model, d_state=d_state, dropout=dropout, bidirectional=bidirectional,
                           init=init, lr=lr, lr_dt=lr_dt, dt_min=dt_min, dt_max=dt_max,
                           n_ssm=n_ssm, tie_dropout=tie_dropout, disc=disc, B_init=B_init,
                           lr_B=lr_B)
                  for _ in range(n_layers)]
        super().__init__(layers, d_model=d_model, dropout=dropout, norm=norm, prenorm=prenorm,
                         tie_dropout=tie_dropout)
