"""Blocks shared by the backbones, following the S4 LRA setup.

    Residual(mixer, d_model=, dropout=, norm="layer", prenorm=False, tie_dropout=False)
        pre-norm:  x + dropout(mixer(norm(x), mask))
        post-norm: norm(x + dropout(mixer(x, mask)))
    TiedDropout(p): dropout with one mask per example and channel, shared by every position
        (S4's `tie_dropout`); make_dropout(p, tie) picks it or nn.Dropout.
    ResidualStack(mixers, d_model=, ...): a Residual around each mixer, [a final norm]; every
        backbone is one. RecurrentStack: one whose mixers have a recurrent view (`step`).
    GLU(d_model):  Linear(d, 2d) then a GLU, the output projection after an SSM.
    head_dim(d_model, n_heads): the one check that heads divide the width.

Every norm takes `(x, mask)`. LayerNorm and RMSNorm are per position, so padding cannot reach real
positions. BatchNorm normalises each channel of (B, L, D) with statistics taken over
real positions only (`mask`), so padding does not mix into them either.
"""
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from lra.kernels.fftconv import fftconv


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm over the last dim that accepts (and ignores) a mask."""

    def forward(self, x, mask=None):
        return super().forward(x)


class RMSNorm(nn.RMSNorm):
    """nn.RMSNorm over the last dim that accepts (and ignores) a mask; per position, so
    padding-safe."""

    def __init__(self, d_model):
        super().__init__(d_model, eps=1e-6)

    def forward(self, x, mask=None):
        return super().forward(x)


class MaskedBatchNorm(nn.Module):
    """BatchNorm over the channels of (B, L, D), counting only real positions in training.

    Running statistics are updated with `momentum` like nn.BatchNorm1d (unbiased variance);
    evaluation uses them, which is per position and so padding-safe.
    """

    def __init__(self, d_model, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model))
        self.register_buffer("running_mean", torch.zeros(d_model))
        self.register_buffer("running_var", torch.ones(d_model))

    def forward(self, x, mask=None):
        if self.training:
            real = torch.ones_like(x[..., :1]) if mask is None else mask.unsqueeze(-1)
            m = real.to(x.dtype)  # (B, L, 1)
            count = m.sum().clamp(min=1)
            mean = (x * m).sum((0, 1)) / count  # (D,)
            var = (((x - mean) * m) ** 2).sum((0, 1)) / count  # (D,)
            with torch.no_grad():
                unbiased = var * count / (count - 1).clamp(min=1)
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(unbiased, self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


NORMS = {"layer": LayerNorm, "rms": RMSNorm, "batch": MaskedBatchNorm}


def make_norm(kind, d_model):
    """"layer" | "rms" | "batch" -> a norm called as norm(x, mask)."""
    if kind not in NORMS:
        raise ValueError(f"norm={kind!r} is not known; use one of {', '.join(NORMS)}")
    return NORMS[kind](d_model)


class TiedDropout(nn.Module):
    """Dropout tied over the length: x (B, L, D) * m / (1 - p) with m ~ Bernoulli(1 - p) of shape
    (B, 1, D), one draw per example and channel, the same at every position (S4's DropoutNd with
    `tie=True`). Identity in eval mode; a (B, D) input (one position, `step`) draws (B, D)."""

    def __init__(self, p=0.0):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout={p} must lie in [0, 1)")
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        shape = (x.shape[0], *[1] * (x.ndim - 2), x.shape[-1])  # (B, 1, ..., D)
        keep = torch.empty(shape, device=x.device, dtype=x.dtype).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


def make_dropout(p, tie=False):
    """Dropout at rate p: one mask per position (nn.Dropout), or tied over the length."""
    return TiedDropout(p) if tie else nn.Dropout(p)


class Residual(nn.Module):
    """A residual block around `mixer(x, mask) -> x`, pre-norm or post-norm; `tie_dropout`
    ties the residual branch's dropout over the length (TiedDropout)."""

    def __init__(self, mixer, *, d_model, dropout=0.0, norm="layer", prenorm=False,
                 tie_dropout=False):
        super().__init__()
        self.mixer = mixer
        self.norm = make_norm(norm, d_model)
        self.drop = make_dropout(dropout, tie_dropout)
        self.prenorm = prenorm

    def forward(self, x, mask=None):
        z = self.norm(x, mask) if self.prenorm else x
        x = x + self.drop(self.mixer(z, mask))
        return x if self.prenorm else self.norm(x, mask)

    def step(self, x_t, state):
        """The block at one position, x_t (B, d_model), around the mixer's own `step`."""
        z = self.norm(x_t) if self.prenorm else x_t
        y_t, state = self.mixer.step(z, state)
        x_t = x_t + self.drop(y_t)
        return (x_t if self.prenorm else self.norm(x_t)), state


class ResidualStack(nn.Module):
    """One residual block around each of `mixers`, in order, then a final norm when pre-norm
    (after post-norm blocks the last block's norm is the last step).

    Every backbone is one: (B, L, d_model) -> (B, L, d_model). A family passes the mixers of all
    its layers, each built by keyword: a Transformer's are attention, MLP, attention, MLP, ...
    """

    def __init__(self, mixers, *, d_model, dropout=0.0, norm="layer", prenorm=False,
                 tie_dropout=False):
        super().__init__()
        block = partial(Residual, d_model=d_model, dropout=dropout, norm=norm, prenorm=prenorm,
                        tie_dropout=tie_dropout)
        self.layers = nn.ModuleList(block(mixer) for mixer in mixers)
        self.norm = make_norm(norm, d_model) if prenorm else None

    def forward(self, x, mask=None):
        for layer in self.layers:
            x = layer(x, mask)
        return x if self.norm is None else self.norm(x, mask)


class RecurrentStack(ResidualStack):
    """A ResidualStack whose mixers all have a recurrent view, and so has one itself.

    The step API, the same for every family (a layer's and a backbone's):
        state = module.default_state(batch)          the state before the first position
        y_t, state = module.step(x_t, state)         one position, x_t and y_t (batch, d_model)
    Stepping through x[:, 0], x[:, 1], ... gives forward(x) of a causal configuration
    (bidirectional=False; a bidirectional layer's step raises). There is no setup call: each step
    discretises from the current parameters, so it never goes stale. Step a module in eval mode
    (BatchNorm then uses its running statistics).
    """

    def default_state(self, batch):
        """One state per block, each the zero state of its mixer."""
        return [layer.mixer.default_state(batch) for layer in self.layers]

    def step(self, x_t, state):
        """One position through every block: x_t (B, d_model) -> y_t (B, d_model), new states."""
        new_state = []
        for layer, layer_state in zip(self.layers, state):
            x_t, layer_state = layer.step(x_t, layer_state)
            new_state.append(layer_state)
        return (x_t if self.norm is None else self.norm(x_t)), new_state


def require_causal(bidirectional):
    """The recurrent view runs forwards in time only: a bidirectional layer has none."""
    if bidirectional:
        raise ValueError(
            "step is only defined for a causal layer; build it with bidirectional=False")


def head_dim(d_model, n_heads):
    """The width of one head, d_model / n_heads, for every model with heads; fails clearly
    unless n_heads is a positive divisor of d_model."""
    if n_heads < 1:
        raise ValueError(f"n_heads={n_heads} must be a positive integer; set model.n_heads >= 1")
    if d_model % n_heads:
        raise ValueError(
            f"d_model={d_model} is not divisible by n_heads={n_heads}; "
            f"choose model.d_model as a multiple of model.n_heads")
    return d_model // n_heads


class GLU(nn.Module):
    """Position-wise output projection: Linear(d, 2d), then a * sigmoid(b)."""

    def __init__(self, d_model):
        super().__init__()
        self.proj = nn.Linear(d_model, 2 * d_model)

    def forward(self, x):
        return nn.functional.glu(self.proj(x), dim=-1)  # (B, L, 2D) -> (B, L, D)


def check_dt_range(dt_min, dt_max):
    """The initial step sizes are log-uniform in [dt_min, dt_max]: 0 < dt_min <= dt_max."""
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"dt_min={dt_min} must lie in (0, dt_max={dt_max}]; "
                         "lower model.dt_min or raise model.dt_max")


def ssm_optim(lr):
    """The optimiser settings of a state-space parameter (`param._optim`): no weight decay, and
    its own learning rate `lr`, or the global one when lr is None (S4's `lr: {dt: null}`)."""
    return {"weight_decay": 0.0} if lr is None else {"lr": lr, "weight_decay": 0.0}


def tied_channels(param, H):
    """A state-space parameter of n_ssm rows (n_ssm, ...) for all H channels (H, ...): channel h
    uses row h mod n_ssm (S4's `n_ssm`: H / n_ssm channels share each A and B)."""
    return param if param.shape[0] == H else param.repeat(H // param.shape[0],
                                                          *[1] * (param.ndim - 1))


def check_n_ssm(n_ssm, d_model):
    """n_ssm (None: d_model, every channel its own) must divide d_model; returns it."""
    n_ssm = d_model if n_ssm is None else n_ssm
    if n_ssm < 1 or d_model % n_ssm:
        raise ValueError(f"n_ssm={n_ssm} must be a positive divisor of d_model={d_model}; "
                         "set model.n_ssm to one, or null for one SSM per channel")
    return n_ssm


def zero_pads(x, mask):
    """Zero the padded positions of (B, L, D) activations; a no-op without a mask."""
    return x if mask is None else x.masked_fill(~mask.unsqueeze(-1), 0.0)


class LongConv(nn.Module):
    """The S4-family layer around a linear SSM: y = GLU(dropout(GELU(SSM(u) + D u))), where a
    subclass's `pre_activation` may also act on SSM(u) + D u before the GELU.

    Subclasses define its two views, `kernel(L) -> (c, H, L)` (the convolution; c = 2 adds a
    backward kernel) and `ssm_step(u_t, state) -> (C x_t (B, H), state)` (the recurrence, from
    `default_state(batch)`), and `bidirectional`, the skip `D` (H,), `drop` and `out`. The kernel
    and the FFT run in the parameters' precision.
    """

    def forward(self, u, mask=None):
        L = u.shape[1]
        with torch.autocast(u.device.type, enabled=False):
            u = zero_pads(u, mask).to(self.D.dtype).transpose(1, 2)  # (B, H, L)
            y = fftconv(u, self.kernel(L), self.D)  # (B, H, L)
        return self.out(self.drop(F.gelu(self.pre_activation(y.transpose(1, 2)))))  # (B, L, H)

    def step(self, u_t, state):
        """One position of a causal layer: u_t (B, H), state -> y_t (B, H), new state."""
        require_causal(self.bidirectional)
        y, state = self.ssm_step(u_t, state)  # (B, H)
        return self.out(self.drop(F.gelu(self.pre_activation(y + self.D * u_t)))), state

    def pre_activation(self, y):
        """What the GELU receives: y itself (a subclass may drop before the activation)."""
        return y
