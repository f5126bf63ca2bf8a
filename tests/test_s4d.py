"""S4D: the Vandermonde kernel, the inits, bidirectional, optimiser tags.

Its convolution == recurrence test is the registry's, in test_models.
"""
import math

import numpy as np
import pytest
import torch
from helpers import rel_err

from lra.kernels.vandermonde import vandermonde, vandermonde_reference
from lra.models.s4d import S4D, S4DLayer, init_imag


def random_layer(H=8, N=16, bidirectional=False, seed=0):
    """A float64 layer in eval mode with every SSM parameter drawn at random."""
    torch.manual_seed(seed)
    layer = S4DLayer(H, N, bidirectional=bidirectional, init="lin").double().eval()
    with torch.no_grad():
        layer.log_A_real.uniform_(math.log(0.05), math.log(1.0))
        layer.A_imag.uniform_(-10, 10)
        layer.log_dt.uniform_(math.log(1e-3), math.log(0.5))
    return layer


def naive_vandermonde(C, dtA, L):
    """K[..., h, l] = 2 Re sum_n C[..., h, n] exp(dtA[h, n] l), with (H, N/2, L) materialised."""
    l = torch.arange(L, dtype=dtA.real.dtype)
    return 2 * (C.unsqueeze(-1) * torch.exp(dtA.unsqueeze(-1) * l)).sum(-2).real  # (..., H, L)


@pytest.mark.parametrize("L", [1, 2, 33, 1000])
def test_vandermonde_matches_naive_sum(L):
    torch.manual_seed(0)
    H, N2 = 5, 7
    C = torch.randn(2, H, N2, dtype=torch.complex128, requires_grad=True)
    re, im = -0.1 * torch.rand(H, N2, dtype=torch.float64), torch.randn(H, N2, dtype=torch.float64)
    dtA = torch.complex(re, im).requires_grad_()
    g = torch.randn(2, H, L, dtype=torch.float64)
    ours, naive = vandermonde_reference(C, dtA, L), naive_vandermonde(C, dtA, L)
    assert rel_err(ours, naive) < 1e-12
    assert rel_err(vandermonde(C, dtA, L), naive) < 1e-12
    grads = torch.autograd.grad((ours * g).sum(), (C, dtA))
    for got, want in zip(grads, torch.autograd.grad((naive * g).sum(), (C, dtA))):
        assert rel_err(got, want) < 1e-10
    K32 = vandermonde_reference(C.detach().to(torch.complex64), dtA.detach().to(torch.complex64), L)
    assert rel_err(K32.double(), naive) < 1e-5


def test_bidirectional_with_zero_backward_C_is_causal():
    causal = random_layer(bidirectional=False)
    both = random_layer(bidirectional=True)
    both.load_state_dict({k: v for k, v in causal.state_dict().items() if k != "C"}, strict=False)
    with torch.no_grad():
        both.C[0] = causal.C[0]
        both.C[1] = 0
        u = torch.randn(3, 41, 8, dtype=torch.float64)
        assert rel_err(both(u), causal(u)) < 1e-12
        both.C[1] = torch.randn_like(both.C[1])
        assert rel_err(both(u), causal(u)) > 1e-3  # the backward half does contribute


def test_bidirectional_backward_half_sees_only_the_future():
    layer = random_layer(bidirectional=True)
    with torch.no_grad():
        layer.C[0] = 0  # keep only the backward kernel: y_t depends on u_s for s >= t
        u = torch.randn(1, 30, 8, dtype=torch.float64)
        u2 = u.clone()
        u2[:, :10] = torch.randn(1, 10, 8, dtype=torch.float64)  # a new past for t = 10
        assert rel_err(layer(u2)[:, 10:], layer(u)[:, 10:]) < 1e-12


@pytest.mark.parametrize("N", [8, 64])
def test_init_eigenvalues(N):
    n = np.arange(N // 2)
    np.testing.assert_allclose(init_imag("lin", N).numpy(), np.pi * n)
    np.testing.assert_allclose(init_imag("inv", N).numpy(), N / np.pi * (N / (2 * n + 1) - 1))
    # LegS: the dense normal part S = A + P P^T of HiPPO-LegS, built entry by entry
    A = np.zeros((N, N))
    for i in range(N):
        for j in range(i + 1):
            A[i, j] = -(i + 1) if i == j else -np.sqrt((2 * i + 1) * (2 * j + 1))
    P = np.sqrt(np.arange(N) + 0.5)
    w = np.linalg.eigvals(A + np.outer(P, P))
    np.testing.assert_allclose(w.real, -0.5, atol=1e-8)
    np.testing.assert_allclose(init_imag("legs", N).numpy(), np.sort(w.imag[w.imag > 0]), rtol=1e-8)
    layer = S4DLayer(4, N, init="legs")
    A_layer = torch.complex(-layer.log_A_real.exp(), layer.A_imag)  # (H, N/2)
    np.testing.assert_allclose(A_layer.real.detach().numpy(), -0.5, rtol=1e-6)


def test_ssm_parameters_carry_their_optimiser_settings():
    model = S4D(d_model=16, n_layers=2, d_state=8, lr=2e-3, lr_dt=None)
    tagged = {name for name, p in model.named_parameters() if hasattr(p, "_optim")}
    for name, p in model.named_parameters():
        if name.endswith(("log_A_real", "A_imag")):
            assert p._optim == {"lr": 2e-3, "weight_decay": 0.0}, name
        elif name.endswith("log_dt"):  # lr_dt=None: the global lr, no decay
            assert p._optim == {"weight_decay": 0.0}, name
    assert len(tagged) == 3 * 2
    assert all(n.endswith(("log_dt", "log_A_real", "A_imag")) for n in tagged)


def test_log_dt_init_range():
    layer = S4DLayer(1000, 8)
    assert layer.log_dt.min() >= math.log(1e-3) and layer.log_dt.max() <= math.log(1e-1)


def test_dt_range_reaches_the_layers():
    """S4D's Path-X recipe starts dt at [1e-4, 1e-1]: some channels start below 1e-3."""
    torch.manual_seed(0)
    model = S4D(d_model=256, n_layers=2, d_state=8, dt_min=1e-4, dt_max=1e-1)
    for layer in model.layers:
        log_dt = layer.mixer.log_dt
        assert log_dt.min() >= math.log(1e-4) and log_dt.max() <= math.log(1e-1)
        assert log_dt.min() < math.log(1e-3)
    with pytest.raises(ValueError, match="dt_min"):
        S4D(d_model=4, n_layers=1, d_state=4, dt_min=1e-1, dt_max=1e-3)


@pytest.mark.parametrize("bad", [dict(d_state=7), dict(init="nope"), dict(norm="group"),
                                 dict(n_ssm=3)])
def test_bad_options_fail_clearly(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        S4D(d_model=8, n_layers=1, **bad)


def test_n_ssm_shares_a_across_channel_groups():
    """n_ssm = 2 of H = 6: channel h uses A[h mod 2] (dt, C, D per channel), the same kernel as a
    per-channel layer holding those rows; a shared row's gradient sums its channels'."""
    torch.manual_seed(0)
    tied = S4DLayer(6, 8, bidirectional=False, n_ssm=2).double().eval()
    with torch.no_grad():
        tied.log_A_real.uniform_(math.log(0.05), math.log(1.0))
        tied.A_imag.uniform_(-10, 10)
    assert tied.A_imag.shape == (2, 4) and tied.log_dt.shape == (6,)
    untied = S4DLayer(6, 8, bidirectional=False).double().eval()
    shared = ("log_A_real", "A_imag")
    untied.load_state_dict({k: v.repeat(3, 1) if k in shared else v
                            for k, v in tied.state_dict().items()})
    k_tied, k_untied = tied.kernel(30), untied.kernel(30)
    torch.testing.assert_close(k_tied, k_untied)
    k_tied.square().sum().backward()
    k_untied.square().sum().backward()
    for name in shared:
        summed = getattr(untied, name).grad.reshape(3, 2, 4).sum(0)
        torch.testing.assert_close(getattr(tied, name).grad, summed)
    assert tied.default_state(3).shape == (3, 6, 4)
