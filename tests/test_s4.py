"""S4: the Cauchy kernel, generating function == matrix powers, LegS init, options.

Its convolution == recurrence test is the registry's, in test_models.
"""
import copy
import math

import pytest
import torch
from conftest import run_steps
from helpers import rel_err

from lra.kernels.cauchy import cauchy, cauchy_chunked, cauchy_reference
from lra.models.s4 import S4, S4Layer, bilinear, legs_nplr, real_form


def random_layer(H=8, N=16, bidirectional=False, seed=0):
    """A float64 layer in eval mode with every SSM parameter moved away from its init."""
    torch.manual_seed(seed)
    layer = S4Layer(H, N, bidirectional=bidirectional).double().eval()
    with torch.no_grad():
        layer.log_A_real.uniform_(math.log(0.05), math.log(1.0))
        layer.A_imag.mul_(torch.empty_like(layer.A_imag).uniform_(0.5, 1.5))
        layer.log_dt.uniform_(math.log(1e-3), math.log(0.5))
        for p in (layer.P, layer.B):
            p.mul_(torch.empty_like(p).uniform_(0.5, 1.5))
    return layer


def legs(N):
    """HiPPO-LegS A (N, N) and B (N,), entry by entry."""
    A = torch.zeros(N, N, dtype=torch.float64)
    for n in range(N):
        for k in range(n + 1):
            A[n, k] = -(n + 1) if n == k else -math.sqrt((2 * n + 1) * (2 * k + 1))
    return A, torch.sqrt(2 * torch.arange(N, dtype=torch.float64) + 1)


def dense_kernel(layer, L):
    """K_l = C dA^l dB, l < L, from the dense real-state matrices; dA, dB by a plain solve."""
    dt, lam, P, B, C = layer.ssm(torch.float64)
    A, B, C = real_form(lam, P, B, C)  # (H, N, N), (H, N), (c, H, N)
    eye = torch.eye(A.shape[-1], dtype=A.dtype)
    X = dt[:, None, None] / 2 * A
    dA = torch.linalg.solve(eye - X, eye + X)
    x = torch.linalg.solve(eye - X, (dt.unsqueeze(-1) * B).unsqueeze(-1)).squeeze(-1)  # dB (H, N)
    ks = []
    for _ in range(L):
        ks.append((C * x).sum(-1))  # (c, H)
        x = (dA @ x.unsqueeze(-1)).squeeze(-1)
    return torch.stack(ks, -1)  # (c, H, L)


@pytest.mark.parametrize("K", [1, 37, 300])
def test_cauchy_matches_reference(K):
    torch.manual_seed(0)
    H, N = 5, 7
    v = torch.randn(3, H, N, dtype=torch.complex128, requires_grad=True)
    re, im = -torch.rand(H, N, dtype=torch.float64), 3 * torch.randn(H, N, dtype=torch.float64)
    w = torch.complex(re, im).requires_grad_()
    z = torch.complex(torch.randn(K, dtype=torch.float64), 10 * torch.randn(K, dtype=torch.float64))
    g = torch.randn(3, H, K, dtype=torch.complex128)
    naive = (v.unsqueeze(-1) / (z - w.unsqueeze(-1))).sum(-2)  # (3, H, K), (H, N, K) materialised
    assert rel_err(cauchy_reference(v, z, w, chunk=16), naive) < 1e-14
    # the conjugate-pair form (chunked over z, own backward) against the reference over all N modes
    ref = cauchy_reference(torch.cat([v, v.conj()], -1), z, torch.cat([w, w.conj()], -1))
    for ours in (cauchy_chunked(v, z, w, chunk=16), cauchy(v, z, w, conj=True)):
        err = rel_err(ours, ref)
        assert err < 1e-12, f"forward rel err {err:.1e}"
    grads = torch.autograd.grad((ours * g.conj()).real.sum(), (v, w))
    for got, want in zip(grads, torch.autograd.grad((ref * g.conj()).real.sum(), (v, w))):
        err = rel_err(got, want)
        assert err < 1e-12, f"gradient rel err {err:.1e}"
    r32 = cauchy_chunked(*(t.detach().to(torch.complex64) for t in (v, z, w)))
    err = rel_err(r32.to(ref.dtype), ref)
    assert err < 1e-5, f"float32 rel err {err:.1e}"


@pytest.mark.parametrize("L", [1, 37, 300])
def test_generating_function_equals_matrix_powers(L):
    layer = random_layer(bidirectional=True)  # both C channels
    params = [layer.log_dt, layer.log_A_real, layer.A_imag, layer.P, layer.B, layer.C]
    g = torch.randn(2, 8, L, dtype=torch.float64)
    K, K_dense = layer.kernel(L), dense_kernel(layer, L)  # (2, H, L)
    err = rel_err(K, K_dense)
    assert err < 1e-10, f"kernel rel err {err:.1e}"  # float64 reaches ~1e-14
    grads = torch.autograd.grad((K * g).sum(), params)
    for p, got, want in zip(params, grads, torch.autograd.grad((K_dense * g).sum(), params)):
        err = rel_err(got, want)
        assert err < 1e-8, f"gradient of {tuple(p.shape)} rel err {err:.1e}"


def test_float32_kernel_matches_float64():
    torch.manual_seed(0)
    layer = S4Layer(16, 64)  # the default init, float32
    err = rel_err(layer.kernel(1024).double(), copy.deepcopy(layer).double().kernel(1024))
    assert err < 1e-4, f"float32 kernel rel err {err:.1e}"


@pytest.mark.parametrize("N", [8, 64])
def test_legs_nplr_reproduces_hippo_legs(N):
    A, B = legs(N)
    lam, p, b, V = legs_nplr(N)
    assert torch.allclose(lam.real, torch.full_like(lam.real, -0.5)) and (lam.imag > 0).all()
    # complex form: the N/2 modes and their conjugates, rotated back by the unitary [V, conj V]
    Vf, lf, pf, bf = (torch.cat([x, x.conj()], -1) for x in (V, lam, p, b))
    assert rel_err(Vf.mH @ Vf, torch.eye(N, dtype=Vf.dtype)) < 1e-12
    err = rel_err(Vf @ (torch.diag(lf) - torch.outer(pf, pf.conj())) @ Vf.mH, A.to(Vf.dtype))
    assert err < 1e-12, f"A rel err {err:.1e}"
    assert rel_err(Vf @ bf, B.to(Vf.dtype)) < 1e-12
    # real form (what the layer's recurrence uses): orthogonally similar to LegS,
    # Q = sqrt2 [Re V, -Im V]
    A_r, B_r, _ = real_form(lam[None], p[None], b[None], torch.zeros(1, 1, N // 2, dtype=lam.dtype))
    Q = math.sqrt(2) * torch.cat([V.real, -V.imag], -1)  # (N, N)
    assert rel_err(Q.T @ Q, torch.eye(N, dtype=Q.dtype)) < 1e-12
    err = rel_err(Q @ A_r[0] @ Q.T, A)
    assert err < 1e-12, f"real-form A rel err {err:.1e}"
    assert rel_err(math.sqrt(2) * Q @ B_r[0], B) < 1e-12
    # and the layer starts there: Re Lambda = -1/2, Im Lambda, P, B as computed
    layer = S4Layer(3, N, bidirectional=False)
    _, lam_l, P_l, B_l, _ = layer.ssm(torch.float64)
    for got, want in ((lam_l, lam), (P_l, p), (B_l, b)):
        assert rel_err(got, want.expand_as(got)) < 1e-6


def test_nplr_eigenvalues_are_those_of_legs():
    lam, p, b, _ = legs_nplr(8)
    A_r, _, _ = real_form(lam[None], p[None], b[None], torch.zeros(1, 1, 4, dtype=lam.dtype))
    eig = torch.linalg.eigvals(A_r[0])
    assert eig.imag.abs().max() < 1e-8
    want = -torch.arange(8, 0, -1, dtype=torch.float64)  # -8 .. -1
    assert torch.allclose(eig.real.sort().values, want, atol=1e-8)


def test_bidirectional_with_zero_backward_C_is_causal():
    causal = random_layer(bidirectional=False)
    both = random_layer(bidirectional=True)
    both.load_state_dict({k: v for k, v in causal.state_dict().items() if k != "C"}, strict=False)
    with torch.no_grad():
        both.C[0] = causal.C[0]
        both.C[1] = 0
        u = torch.randn(3, 41, 8, dtype=torch.float64)
        err = rel_err(both(u), causal(u))
        assert err < 1e-12, f"rel err {err:.1e}"
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


def test_ssm_parameters_carry_their_optimiser_settings():
    model = S4(d_model=16, n_layers=2, d_state=8, lr=2e-3, lr_dt=5e-3)
    ssm = ("log_A_real", "A_imag", "P", "B")
    for name, p in model.named_parameters():
        if name.rsplit(".", 1)[-1] in ssm:
            assert p._optim == {"lr": 2e-3, "weight_decay": 0.0}, name
        elif name.endswith("log_dt"):
            assert p._optim == {"lr": 5e-3, "weight_decay": 0.0}, name
        else:
            assert not hasattr(p, "_optim"), name  # C, D, GLU, norms: the global settings


def test_dt_at_the_global_lr_without_decay_when_lr_dt_is_none():
    """S4's `lr: {dt: null, A: 0.001, B: 0.001}`: dt keeps the optimiser's lr, never decays."""
    model = S4(d_model=8, n_layers=1, d_state=4, lr=1e-3, lr_dt=None)
    assert model.layers[0].mixer.log_dt._optim == {"weight_decay": 0.0}
    assert model.layers[0].mixer.B._optim == {"lr": 1e-3, "weight_decay": 0.0}


def test_log_dt_init_range():
    layer = S4Layer(1000, 8, dt_min=1e-3, dt_max=1e-1)
    assert layer.log_dt.min() >= math.log(1e-3) and layer.log_dt.max() <= math.log(1e-1)


@pytest.mark.parametrize("bad", [{"d_state": 7}, {"dt_min": 0.2}, {"norm": "group"},
                                 {"n_ssm": 3}])
def test_bad_options_fail_clearly(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        S4(d_model=8, n_layers=1, **bad)


SHARED = ("log_A_real", "A_imag", "P", "B")  # the parameters n_ssm ties; dt, C, D stay per channel


def test_n_ssm_shares_lambda_p_b_across_channel_groups():
    """n_ssm = 2 of H = 6 channels: channel h uses row h mod 2 of Lambda, P, B. The kernel is the
    dense recurrence's, and that of a per-channel layer holding those rows; each shared row's
    gradient is the sum of its channels'."""
    torch.manual_seed(0)
    tied = S4Layer(6, 8, bidirectional=False, n_ssm=2).double().eval()
    with torch.no_grad():
        tied.log_A_real.uniform_(math.log(0.05), math.log(1.0))
        for p in (tied.A_imag, tied.P, tied.B):
            p.mul_(torch.empty_like(p).uniform_(0.5, 1.5))
    assert tied.log_A_real.shape == (2, 4) and tied.B.shape == (2, 4, 2)
    assert tied.log_dt.shape == (6,) and tied.C.shape == (1, 6, 4, 2)
    untied = S4Layer(6, 8, bidirectional=False).double().eval()
    untied.load_state_dict({k: v.repeat(3, *[1] * (v.ndim - 1)) if k in SHARED else v
                            for k, v in tied.state_dict().items()})
    k_tied, k_untied = tied.kernel(40), untied.kernel(40)
    assert rel_err(k_tied, dense_kernel(tied, 40)) < 1e-10
    torch.testing.assert_close(k_tied, k_untied)
    k_tied.square().sum().backward()
    k_untied.square().sum().backward()
    for name in SHARED:
        summed = getattr(untied, name).grad.reshape(3, 2, *getattr(tied, name).shape[1:]).sum(0)
        torch.testing.assert_close(getattr(tied, name).grad, summed)


def test_n_ssm_one_is_one_ssm_for_every_channel():
    layer = S4Layer(8, 4, n_ssm=1)
    assert all(getattr(layer, name).shape[0] == 1 for name in SHARED)
    assert S4Layer(8, 4).log_A_real.shape == (8, 2)  # null: one per channel


# ---- S4 V4's options (state-spaces/s4 62a14bb): softplus dt, B clipping, C's lr, dropout site


def v4_nplr_legs(N, b_clip):
    """V4's `hippo.nplr('legs', N, B_clip=b_clip)`, step by step: diagonalise -i (A + P P^T),
    keep the modes with negative imaginary part (ascending), B = V^* B_legs with Im B clamped."""
    A, B = legs(N)
    P = torch.sqrt(torch.arange(N, dtype=torch.float64) + 0.5)
    mu, V = torch.linalg.eigh((A + torch.outer(P, P)).to(torch.complex128) * -1j)
    order = mu.argsort()[:N // 2]
    V = V[:, order]
    B_v4 = V.mH @ B.to(V.dtype)
    B_v4 = torch.complex(B_v4.real, B_v4.imag.clamp(-b_clip, b_clip))
    return mu[order], V.mH @ P.to(V.dtype), B_v4


@pytest.mark.parametrize("N", [4, 64])
def test_b_clip_clamps_im_b_in_v4s_basis(N):
    """legs_nplr(N, b_clip=2) is V4's clipped init in our modes: each mode is the conjugate of
    one of V4's (mu -> -mu), and |b| and conj(p) b (what the kernel sees of b, whatever the
    eigenvectors' signs) are V4's clipped ones. Im B exceeds 2 at N = 4 and 64, so it bites."""
    lam, p, b, _ = legs_nplr(N, b_clip=2.0)
    mu_v4, p_v4, b_v4 = (x.flip(0) for x in v4_nplr_legs(N, 2.0))  # our order: mu ascending
    torch.testing.assert_close(lam.imag, -mu_v4)
    torch.testing.assert_close(b.abs(), b_v4.abs())
    torch.testing.assert_close(p.conj() * b, (p_v4.conj() * b_v4).conj())
    _, p0, b0, _ = legs_nplr(N)
    torch.testing.assert_close(p, p0)
    clipped = b_v4.imag.abs() >= 2.0
    assert clipped.any() and not clipped.all()
    torch.testing.assert_close(b[~clipped], b0[~clipped])  # untouched where V4 clamps nothing
    assert (b.abs()[clipped] < b0.abs()[clipped]).all()
    layer = S4Layer(4, N, b_clip=2.0)
    torch.testing.assert_close(layer.ssm(torch.float64)[3][0], b, rtol=1e-6, atol=1e-6)


def test_softplus_dt_starts_at_the_same_dt():
    """dt = softplus(p) with p = softplus^-1(dt): the same initial dt as exp(log dt), from the
    same draw; and V4's inv_transform clamp: no initial dt below 1e-4."""
    torch.manual_seed(0)
    exp = S4Layer(64, 4, dt_min=1e-4, dt_max=1e-1)
    torch.manual_seed(0)
    soft = S4Layer(64, 4, dt_min=1e-4, dt_max=1e-1, dt_transform="softplus")
    dt_exp, dt_soft = exp.ssm(torch.float64)[0], soft.ssm(torch.float64)[0]
    assert rel_err(dt_soft, dt_exp) < 1e-6
    assert not torch.allclose(soft.log_dt, exp.log_dt)  # a different parameter, the same dt
    torch.testing.assert_close(dt_soft, torch.nn.functional.softplus(soft.log_dt.double()))
    low = S4Layer(256, 4, dt_min=1e-6, dt_max=1e-5, dt_transform="softplus")
    assert low.ssm(torch.float64)[0].min() >= 1e-4 * (1 - 1e-6)


def test_c_learning_rate():
    """lr_C: C in its own group at that lr without decay; null: C with the global settings."""
    from lra.lit import param_groups
    model = S4(d_model=8, n_layers=2, d_state=4, lr_C=3e-4)
    Cs = [layer.mixer.C for layer in model.layers]
    assert all(C._optim == {"lr": 3e-4, "weight_decay": 0.0} for C in Cs)
    groups = param_groups(model, weight_decay=0.05)
    group_of_C = [g for g in groups if any(p is Cs[0] for p in g["params"])]
    assert len(group_of_C) == 1 and group_of_C[0]["lr"] == 3e-4
    assert group_of_C[0]["weight_decay"] == 0.0
    default = S4(d_model=8, n_layers=1, d_state=4)
    C = default.layers[0].mixer.C
    assert not hasattr(C, "_optim")
    decayed = [g for g in param_groups(default, weight_decay=0.05) if g["weight_decay"] == 0.05]
    assert any(p is C for p in decayed[0]["params"]) and "lr" not in decayed[0]


@pytest.mark.parametrize("tie", [False, True])
def test_dropout_site_both_also_drops_before_the_gelu(tie):
    """dropout_site "both" drops SSM(u) + D u before the GELU (tied over the length when
    tie_dropout); "post" leaves it; eval mode drops nothing either way."""
    torch.manual_seed(0)
    both = S4Layer(16, 4, dropout=0.5, dropout_site="both", tie_dropout=tie).train()
    post = S4Layer(16, 4, dropout=0.5).train()
    y = torch.ones(3, 50, 16)
    dropped = both.pre_activation(y)
    assert (dropped == 0).any() and set(dropped.unique().tolist()) <= {0.0, 2.0}
    if tie:
        assert (dropped == dropped[:, :1]).all()  # one mask per example and channel
    assert torch.equal(post.pre_activation(y), y)
    assert torch.equal(both.eval().pre_activation(y), y)
    u = torch.randn(2, 20, 16)
    post.load_state_dict(both.state_dict())
    torch.testing.assert_close(both(u), post.eval()(u))


def test_v4_options_keep_the_recurrent_view():
    """With softplus dt, clipped B, C's own lr and both dropout sites, forward equals `step`."""
    torch.manual_seed(0)
    model = S4(d_model=8, n_layers=2, d_state=8, bidirectional=False, dt_transform="softplus",
               b_clip=2.0, lr_C=1e-3, dropout=0.2, dropout_site="both", n_ssm=2,
               tie_dropout=True).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(torch.empty_like(p).uniform_(0.5, 1.5))
        u = torch.randn(2, 33, 8, dtype=torch.float64)
        state, steps = model.default_state(2), []
        for t in range(u.shape[1]):
            y_t, state = model.step(u[:, t], state)
            steps.append(y_t)
        err = rel_err(torch.stack(steps, 1), model(u))
    assert err < 1e-12, f"recurrent vs parallel view rel err {err:.1e}"


@pytest.mark.parametrize("bad", [{"dt_transform": "relu"}, {"dropout_site": "pre"},
                                 {"b_clip": 0.0}])
def test_bad_v4_options_fail_clearly(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        S4(d_model=8, n_layers=1, **bad)


def c_tilde_pair(max_len=40, bidirectional=True, seed=0):
    """The same-seed S4 layers without and with C_tilde, float64, in eval mode."""
    layers = []
    for C_tilde in (False, True):
        torch.manual_seed(seed)
        layers.append(S4Layer(8, 16, bidirectional=bidirectional, C_tilde=C_tilde,
                              max_len=max_len).double().eval())
    return layers


@pytest.mark.parametrize("L", [40, 17])
def test_c_tilde_starts_with_the_same_kernel(L):
    """C_tilde: the C parameter starts at C~ = C (I - dA^Lc), Lc = max_len | 1 = 41, and the
    kernel (the length-41 one, cut to L) is the one C gives; every other parameter is the
    same draw."""
    plain, tilde = c_tilde_pair()
    assert tilde.C_length == 41 and plain.C_length is None
    for name, p in plain.named_parameters():
        assert torch.equal(p, dict(tilde.named_parameters())[name]) == (name != "C"), name
    err = rel_err(tilde.kernel(L), plain.kernel(L))
    assert err < 1e-6, f"rel err {err:.1e}"  # C~ was rounded to float32 at init
    err = rel_err(tilde.kernel(L), dense_kernel(plain, L))
    assert err < 1e-6, f"rel err {err:.1e}"


@pytest.mark.parametrize("L, max_len", [(41, 41), (23, 41), (1000, 1000)])
def test_c_tilde_parallel_view_equals_recurrent_view(L, max_len):
    """With C_tilde, `step` (C = C~ (I - dA^Lc)^-1 by a solve, from the current parameters)
    equals the convolution, also after every parameter has moved off its init."""
    torch.manual_seed(0)
    model = S4(d_model=8, n_layers=2, d_state=16, bidirectional=False, C_tilde=True,
               max_len=max_len).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(torch.empty_like(p).uniform_(0.5, 1.5))
        u = torch.randn(2, L, 8, dtype=torch.float64)
        err = rel_err(run_steps(model, u), model(u))
    assert err < 1e-12, f"recurrent vs parallel view rel err {err:.1e}"


def test_c_tilde_gradient_is_cs_by_the_chain_rule():
    """The loss reaches the C~ parameter; C's gradient (C_tilde off, same function) is C~'s
    pulled back through C~ = C (I - dA^Lc): in the real form g_C = g_C~ (I - dA^Lc)^T, with
    dA^Lc by torch.linalg.matrix_power."""
    plain, tilde = c_tilde_pair(max_len=41, bidirectional=False)
    with torch.no_grad():
        tilde.C.copy_(torch.view_as_real(plain.tilde(41)))  # exactly C~(C) in float64
    u = torch.randn(2, 41, 8, dtype=torch.float64)
    grads = []
    for layer in (plain, tilde):
        layer(u).sin().sum().backward()
        grads.append(torch.view_as_complex(layer.C.grad))  # (1, H, N2)
    g_C, g_Ct = grads
    dt, lam, P, B, C = plain.ssm(torch.float64)
    A, B_r, _ = real_form(lam, P, B, C)
    dA, _ = bilinear(dt, A, B_r)
    M = torch.eye(16, dtype=torch.float64) - torch.linalg.matrix_power(dA, 41)  # (H, N, N)
    # param -> real form is C_r = 2 (Re c, -Im c) and grad(Re) + i grad(Im) is what .grad
    # holds, so the real-form gradient of the C~ parameter is (Re g, -Im g) / 2
    g_Ct_r = torch.cat([g_Ct.real, -g_Ct.imag], -1) / 2  # dloss/dC~_r (1, H, N)
    g_C_r = torch.einsum("chm,hnm->chn", g_Ct_r, M)  # dloss/dC_r = dloss/dC~_r M^T
    expected = torch.complex(g_C_r[..., :8], -g_C_r[..., 8:]) * 2
    assert g_Ct.abs().min() > 0
    assert rel_err(g_C, expected) < 1e-10
    assert rel_err(g_C, g_Ct) > 1e-2  # the factor matters


def test_c_tilde_off_is_unchanged():
    """C_tilde=False (the default) keeps the parameters, state (no extra entries) and outputs
    bit for bit, whatever max_len says."""
    outs = []
    for options in ({}, {"C_tilde": False, "max_len": 50}):
        torch.manual_seed(0)
        model = S4(d_model=8, n_layers=2, d_state=8, **options)
        outs.append((model.state_dict(), model(torch.randn(2, 50, 8))))
    (s0, y0), (s1, y1) = outs
    assert s0.keys() == s1.keys() and all(torch.equal(s0[k], s1[k]) for k in s0)
    assert torch.equal(y0, y1)


def test_c_tilde_needs_its_length_and_rejects_longer_inputs():
    with pytest.raises(ValueError, match="max_len"):
        S4(d_model=8, n_layers=1, C_tilde=True)
    model = S4(d_model=8, n_layers=1, C_tilde=True, max_len=20)
    assert model.max_len == 20  # lra.train checks the task's sequences against it
    model(torch.randn(1, 21, 8))  # 21 = 20 | 1 is the length C~ holds
    with pytest.raises(ValueError, match="raise model.max_len to at least 22"):
        model(torch.randn(1, 22, 8))
