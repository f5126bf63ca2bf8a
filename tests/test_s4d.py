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


def impulse_response(layer, L):
    """The causal layer's SSM kernel from its recurrence: 2 Re C x_l after a unit impulse at 0."""
    H = layer.D.shape[0]
    state, ys = layer.default_state(1), []
    for t in range(L):
        u_t = torch.ones(1, H, dtype=torch.float64) if t == 0 else torch.zeros(1, H).double()
        y, state = layer.ssm_step(u_t, state)
        ys.append(y[0])
    return torch.stack(ys, -1)  # (H, L)


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
@pytest.mark.parametrize("B_init,lr_B", [("ones", 0.0), ("legs", 0.0), ("legs", None)])
def test_discretisations_keep_the_recurrent_view(disc, B_init, lr_B):
    """For each disc and B (fixed or trained, moved off its init), the Vandermonde kernel is the
    recurrence's impulse response, and the whole model's forward equals its steps."""
    torch.manual_seed(0)
    layer = S4DLayer(6, 8, bidirectional=False, disc=disc, B_init=B_init, lr_B=lr_B,
                     n_ssm=2).double().eval()
    with torch.no_grad():
        layer.log_dt.uniform_(math.log(1e-2), math.log(0.5))
        layer.A_imag.uniform_(-10, 10)
        layer.B.mul_(torch.empty_like(layer.B).uniform_(0.5, 1.5))
        assert rel_err(layer.kernel(40)[0], impulse_response(layer, 40)) < 1e-12
    model = S4D(d_model=6, n_layers=2, d_state=8, bidirectional=False, disc=disc,
                B_init=B_init, lr_B=lr_B).double().eval()
    u = torch.randn(2, 25, 6, dtype=torch.float64)
    with torch.no_grad():
        state, ys = model.default_state(2), []
        for t in range(25):
            y, state = model.step(u[:, t], state)
            ys.append(y)
        assert rel_err(torch.stack(ys, 1), model(u)) < 1e-12


def test_bilinear_kernel_is_the_written_out_formula():
    """bilinear: K_l = 2 Re sum_n C_n B_n dt / (1 - dt A_n/2) ((1 + dt A_n/2) / (1 - dt A_n/2))^l,
    and it differs from zoh's on the same parameters."""
    layer = random_layer()
    bil = S4DLayer(8, 16, bidirectional=False, disc="bilinear").double().eval()
    bil.load_state_dict(layer.state_dict())
    A = torch.complex(-bil.log_A_real.exp(), bil.A_imag)  # (H, N2)
    dt = bil.log_dt.exp().unsqueeze(-1)  # (H, 1)
    dA, dB = (1 + dt * A / 2) / (1 - dt * A / 2), dt / (1 - dt * A / 2)
    l = torch.arange(30, dtype=torch.float64)
    C = torch.view_as_complex(bil.C)[0]
    want = 2 * (C * dB).unsqueeze(-1).mul(dA.unsqueeze(-1) ** l).sum(-2).real  # (H, L)
    with torch.no_grad():
        assert rel_err(bil.kernel(30)[0], want) < 1e-12
        assert rel_err(layer.kernel(30)[0], want) > 1e-3


def test_legs_B_is_hippo_legs_input_in_the_eigenbasis():
    """B_init=legs: |v_n^* B| for the unit eigenvectors v_n of the dense S = A + P P^T of
    HiPPO-LegS (B_n = sqrt(2n+1)) with Im > 0, in init_imag's order; C starts as randn * B."""
    N = 16
    A = np.zeros((N, N))
    for i in range(N):
        for j in range(i + 1):
            A[i, j] = -(i + 1) if i == j else -np.sqrt((2 * i + 1) * (2 * j + 1))
    P = np.sqrt(np.arange(N) + 0.5)
    w, V = np.linalg.eig(A + np.outer(P, P))
    keep = np.argsort(w.imag)[N // 2:]
    B = np.sqrt(2 * np.arange(N) + 1)
    want = np.abs(V[:, keep].conj().T @ B) / np.linalg.norm(V[:, keep], axis=0)
    torch.manual_seed(0)
    layer = S4DLayer(4, N, bidirectional=False, B_init="legs")
    B_layer = torch.view_as_complex(layer.B)  # (H, N/2)
    np.testing.assert_allclose(B_layer.real.numpy(), np.tile(want, (4, 1)), rtol=1e-5)
    assert (B_layer.imag == 0).all()
    torch.manual_seed(0)
    ones = S4DLayer(4, N, bidirectional=False)  # same draws: C differs by the factor B
    torch.testing.assert_close(torch.view_as_complex(layer.C),
                               torch.view_as_complex(ones.C) * B_layer)


def test_B_is_fixed_by_default_and_trains_with_its_own_settings():
    """lr_B = 0 (default): B = 1 is a buffer outside the state dict (checkpoints as before);
    lr_B = None: a parameter at the global lr; lr_B = 2e-3: its own lr; never weight decay."""
    fixed = S4D(d_model=8, n_layers=1, d_state=8)
    assert "B" not in dict(fixed.named_parameters()) and not any(
        k.endswith(".B") for k in fixed.state_dict())
    assert (torch.view_as_complex(fixed.layers[0].mixer.B) == 1).all()
    for lr_B, want in [(None, {"weight_decay": 0.0}), (2e-3, {"lr": 2e-3, "weight_decay": 0.0})]:
        model = S4D(d_model=8, n_layers=2, d_state=8, lr_B=lr_B, n_ssm=2)
        Bs = {n: p for n, p in model.named_parameters() if n.endswith(".B")}
        assert len(Bs) == 2 and all(p.shape == (2, 4, 2) for p in Bs.values())
        assert all(p._optim == want for p in Bs.values())
    with pytest.raises(ValueError, match="disc"):
        S4D(d_model=8, n_layers=1, disc="euler")
    with pytest.raises(ValueError, match="B_init"):
        S4D(d_model=8, n_layers=1, B_init="rand")
