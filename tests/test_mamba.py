"""Mamba: chunked scan == sequential scan (forward, every gradient), padding, inits, options.

Its step == forward test is the registry's, in test_models.
"""
import math

import pytest
import torch
from helpers import SCAN_NAMES, padded_batch, rel_err, scan_inputs
from torch.nn import functional as F

from lra.kernels.selective_scan import (
    selective_scan,
    selective_scan_chunked,
    selective_scan_reference,
    selective_scan_step,
)
from lra.models.mamba import Mamba, MambaLayer


@pytest.mark.parametrize("n", [1, 16])
@pytest.mark.parametrize("b", [1, 3])
@pytest.mark.parametrize("L", [37, 300])
def test_chunked_scan_equals_sequential(L, b, n):
    inputs = scan_inputs(b, 6, n, L, requires_grad=True)
    g = torch.randn(b, 6, L, dtype=torch.float64)
    want = selective_scan_reference(*inputs)
    got = selective_scan_chunked(*inputs, chunk=16)  # 16 divides neither 37 nor 300
    err = rel_err(got, want)
    assert err < 1e-12, f"forward: rel err {err:.1e}"
    assert rel_err(selective_scan(*inputs), want) < 1e-12
    grads_want = torch.autograd.grad((want * g).sum(), inputs)
    grads_got = torch.autograd.grad((got * g).sum(), inputs)
    for name, a, w in zip(SCAN_NAMES, grads_got, grads_want):
        err = rel_err(a, w)
        assert err < 1e-10, f"d{name}: rel err {err:.1e}"  # float64 reaches ~1e-16


def test_chunked_scan_in_float32():
    inputs = scan_inputs(3, 6, 16, 300, requires_grad=True)
    want = selective_scan_reference(*inputs)
    got = selective_scan_chunked(*(t.detach().float() for t in inputs))
    err = rel_err(got.double(), want)
    assert err < 1e-5, f"float32 forward: rel err {err:.1e}"


def test_large_steps_stay_exact():
    """dt |A| up to ~1e3 per step: decays underflow to 0 (a reset), nothing overflows."""
    inputs = scan_inputs(2, 6, 16, 37, dt_scale=50.0, requires_grad=True)
    want = selective_scan_reference(*inputs)
    got = selective_scan_chunked(*inputs, chunk=8)
    assert torch.isfinite(got).all()
    assert rel_err(got, want) < 1e-12
    grads = torch.autograd.grad(got.sum(), inputs)
    for name, a, w in zip(SCAN_NAMES, grads, torch.autograd.grad(want.sum(), inputs)):
        assert torch.isfinite(a).all() and rel_err(a, w) < 1e-10, name


def test_zero_step_leaves_the_state_unchanged():
    torch.manual_seed(0)
    b, d, n = 3, 6, 16
    x_t, B_t, C_t, h = torch.randn(b, d), torch.randn(b, n), torch.randn(b, n), torch.randn(b, d, n)
    A, D = -torch.rand(d, n) * n, torch.randn(d)
    y, h_next = selective_scan_step(x_t, torch.zeros(b, d), A, B_t, C_t, D, h)
    assert torch.equal(h_next, h)
    torch.testing.assert_close(y, (h * C_t.unsqueeze(1)).sum(-1) + D * x_t)
    # in the scan: steps with dt = 0 in front (whatever x is there) leave every later output
    # as it was
    x, dt, A, B, C, D = scan_inputs(b, d, n, 37)
    k = 9

    def pre(z, fill):  # k steps in front of z, filled by fill(z[..., :k])
        return torch.cat([fill(z[..., :k]), z], dim=-1)

    args = (pre(x, lambda z: 100 * torch.randn_like(z)), pre(dt, torch.zeros_like), A,
            pre(B, torch.randn_like), pre(C, torch.randn_like), D)
    for scan in (selective_scan_reference, selective_scan):
        err = rel_err(scan(*args)[..., k:], selective_scan_reference(x, dt, A, B, C, D))
        assert err < 1e-12, f"{scan.__name__}: rel err {err:.1e}"


def random_layer(H=8, N=4, bidirectional=False, seed=0):
    """A float64 layer in eval mode with dt spread over [1e-3, 0.5] so the states carry far."""
    torch.manual_seed(seed)
    layer = MambaLayer(H, N, bidirectional=bidirectional, dt_max=0.5).double().eval()
    with torch.no_grad():
        for ssm in layer.ssm:
            ssm.D.normal_()
    return layer


def test_backward_scan_sees_only_the_future():
    layer = random_layer(bidirectional=True)
    with torch.no_grad():
        forward = layer.ssm[0]
        forward.x_proj.weight[-4:] = 0  # C = 0 and D = 0: the forward scan adds nothing
        forward.D.zero_()
        u = torch.randn(1, 30, 8, dtype=torch.float64)
        u2 = u.clone()
        u2[:, :10] = torch.randn(1, 10, 8, dtype=torch.float64)  # a new past for t >= 10
        assert rel_err(layer(u2)[:, 10:], layer(u)[:, 10:]) < 1e-12
        assert rel_err(layer(u2)[:, :10], layer(u)[:, :10]) > 1e-3


@pytest.mark.parametrize("bidirectional", [True, False])
def test_padding_does_not_reach_real_tokens(bidirectional):
    torch.manual_seed(0)
    model = Mamba(d_model=8, n_layers=2, d_state=4, bidirectional=bidirectional).double().eval()
    lengths = [37, 20, 1]
    x, mask = padded_batch(lengths, 46, 8)  # (3, 46): ragged, 9+ pads each
    with torch.no_grad():
        y = model(x, mask)
        short = model(x[:, :37], mask[:, :37])  # 9 fewer pads
        err = rel_err(short[mask[:, :37]], y[mask])
        assert err < 1e-12, f"extra pads change real outputs: rel err {err:.1e}"
        for i, n in enumerate(lengths):
            err = rel_err(y[i, :n], model(x[i : i + 1, :n])[0])
            assert err < 1e-12, f"sequence {i} (length {n}) differs when padded: rel err {err:.1e}"


def test_initialisation():
    layer = MambaLayer(512, 16, bidirectional=True)  # E = 1024 channels, dt_rank 32
    for ssm in layer.ssm:
        dt = F.softplus(ssm.dt_proj.bias.detach())
        assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 1e-1 * (1 + 1e-5)
        assert dt.min() < 2e-3 and dt.max() > 5e-2  # spread log-uniformly over the range
        assert ssm.dt_proj.weight.abs().max() <= 32**-0.5
        torch.testing.assert_close(-ssm.A_log.exp(), -torch.arange(1.0, 17.0).expand(1024, 16))
        assert torch.equal(ssm.D, torch.ones(1024))


def test_A_log_and_D_skip_weight_decay():
    model = Mamba(d_model=16, n_layers=2, d_state=4)
    tagged = {name: p._optim for name, p in model.named_parameters() if hasattr(p, "_optim")}
    assert len(tagged) == 2 * 2 * 2  # (A_log, D) x two directions x two layers
    assert all(name.endswith(("A_log", "D")) for name in tagged)
    assert all(o == {"weight_decay": 0.0} for o in tagged.values())


@pytest.mark.parametrize("bad", [{"dt_rank": "big"}, {"dt_rank": 0}, {"d_conv": 0},
                                 {"d_state": 2.5}, {"norm": "group"}])
def test_bad_options_fail_clearly(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        Mamba(d_model=8, n_layers=1, **bad)


def test_out_proj_shrinks_with_depth():
    torch.manual_seed(0)
    deep = Mamba(d_model=64, n_layers=16)
    bound = 1 / math.sqrt(128) / 4  # kaiming-uniform bound of Linear(128, 64), over sqrt(16)
    assert all(layer.mixer.out_proj.weight.abs().max() <= bound for layer in deep.layers)
