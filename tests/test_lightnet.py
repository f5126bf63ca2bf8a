"""LightNet: the recurrence's causal forms agree, the softmax form, large keys, padding, 2-D
positions."""
import pytest
import torch
from helpers import padded_batch, rel_err

from lra.kernels.additive_recurrence import (
    additive_causal_chunked,
    additive_causal_quadratic,
    additive_causal_reference,
    additive_noncausal_reference,
    additive_recurrence,
    logcumsumexp,
)
from lra.models.lightnet import TPE, LightNet, lrpe_angles


def inputs(B, L, dk=6, dv=5, H=2, key_scale=3.0, dtype=torch.float64, seed=0):
    """q, k, v (B, H, L, .) and a gain (L, dk), all requiring grad."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, L, dk, generator=g, dtype=dtype)
    k = key_scale * (2 * torch.rand(B, H, L, dk, generator=g, dtype=dtype) - 1)
    v = torch.randn(B, H, L, dv, generator=g, dtype=dtype)
    gain = torch.randn(L, dk, generator=g, dtype=dtype)
    return [t.requires_grad_() for t in (q, k, v, gain)]


def value_and_grads(fn, args, seed=1):
    out = fn(*args)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return out, torch.autograd.grad((out * w).sum(), args)


@pytest.mark.parametrize("L", [37, 200])
@pytest.mark.parametrize("B", [1, 3])
def test_causal_sequential_quadratic_chunked_agree(L, B):
    args = inputs(B, L)
    ref, ref_grads = value_and_grads(lambda q, k, v, g: additive_causal_reference(q, k, v, g), args)
    # chunks of 16, which divides neither L
    forms = {"quadratic": lambda q, k, v, g: additive_causal_quadratic(q, k, v, g),
             "chunked": lambda q, k, v, g: additive_causal_chunked(q, k, v, chunk=16, gain=g)}
    for name, fn in forms.items():
        out, grads = value_and_grads(fn, args)
        err = rel_err(out, ref)
        assert err < 1e-12, f"{name} forward: rel err {err:.1e}"
        for arg, got, want in zip("qkvg", grads, ref_grads):
            err = rel_err(got, want)
            assert err < 1e-11, f"{name} d{arg}: rel err {err:.1e}"


def test_causal_is_the_running_softmax_average():
    """o_t = sum_j q_tj sum_{s<=t} exp(k_sj) v_s / sum_{s<=t} exp(k_sj), written out (no gain)."""
    q, k, v, _ = (t.detach() for t in inputs(2, 23))
    e = k.exp()  # small keys: the naive form is safe here
    # w[t]: (B, H, t+1, dk), the weights of the keys up to t
    w = [e[:, :, : t + 1] / e[:, :, : t + 1].sum(2, keepdim=True) for t in range(23)]
    naive = torch.stack([torch.einsum("bhj,bhsj,bhsv->bhv", q[:, :, t], w[t], v[:, :, : t + 1])
                         for t in range(23)], 2)
    assert rel_err(additive_causal_chunked(q, k, v, chunk=8), naive) < 1e-12


def test_noncausal_equals_the_explicit_softmax_form():
    q, k, v, gain = (t.detach() for t in inputs(3, 29))
    lengths = [29, 11, 0]
    mask = torch.arange(29) < torch.tensor(lengths).unsqueeze(1)  # (3, 29)
    out = additive_noncausal_reference(q, k, v, mask, gain)
    for b, n in enumerate(lengths):
        if n == 0:
            assert out[b].abs().max() == 0  # no real token: nothing to read
            continue
        w = k[b, :, :n].exp() / k[b, :, :n].exp().sum(1, keepdim=True)  # (H, n, dk), over time
        want = torch.einsum("htj,hsj,sj,hsv->htv", q[b, :, :n], w, gain[:n], v[b, :, :n])
        err = rel_err(out[b, :, :n], want)
        assert err < 1e-12, f"sequence {b} (length {n}): rel err {err:.1e}"
        assert (out[b, :, n:] == 0).all()  # pads output nothing


@pytest.mark.parametrize("magnitude", [50.0, 500.0])
def test_large_keys_stay_finite_and_correct_in_float32(magnitude):
    """Keys of size 50 (and 500, where chunked halves its chunks) in float32 against float64."""
    q, k, v, gain = inputs(3, 150, key_scale=magnitude, dtype=torch.float32)
    q64, k64, v64, g64 = (t.detach().double() for t in (q, k, v, gain))
    checks = {
        "chunked": (lambda q, k, v, g: additive_causal_chunked(q, k, v, gain=g),
                    additive_causal_reference(q64, k64, v64, g64)),
        "non-causal": (lambda q, k, v, g: additive_noncausal_reference(q, k, v, gain=g),
                       q64 @ ((torch.softmax(k64, 2) * g64).transpose(-1, -2) @ v64)),
    }
    for name, (fn, want) in checks.items():
        out, grads = value_and_grads(fn, (q, k, v, gain))
        err = rel_err(out.double(), want)
        assert err < 1e-5, f"{name}, keys of {magnitude}: rel err {err:.1e}"
        finite = all(torch.isfinite(g).all() for g in grads)
        assert finite, f"{name}, keys of {magnitude}: non-finite gradient"


def test_dispatch_masks_pads():
    q, k, v, gain = (t.detach() for t in inputs(2, 19))
    mask = torch.arange(19) < torch.tensor([[19], [7]])
    k_garbage = k.clone()
    k_garbage[1, :, 7:] = 1e4  # pads with huge keys must not leak in
    for causal in (True, False):
        out = additive_recurrence(q, k_garbage, v, mask, causal=causal, gain=gain)
        alone = additive_recurrence(q[1:, :, :7], k[1:, :, :7], v[1:, :, :7], causal=causal,
                                    gain=gain[:7])
        assert rel_err(out[1, :, :7], alone[0]) < 1e-12


@pytest.mark.parametrize("bidirectional", [True, False])
def test_padding_invariance_with_ragged_lengths(bidirectional):
    torch.manual_seed(0)
    model = LightNet(d_model=16, n_layers=2, n_heads=2, positions="both",
                     bidirectional=bidirectional).double().eval()
    lengths = [37, 20, 1]
    x, mask = padded_batch(lengths, 37, 16)
    with torch.no_grad():
        y = model(x, mask)
        for i, n in enumerate(lengths):
            err = rel_err(y[i, :n], model(x[i : i + 1, :n])[0])
            assert err < 1e-10, f"sequence {i} (length {n}): rel err {err:.1e}"


def test_causal_model_ignores_the_future():
    torch.manual_seed(0)
    model = LightNet(d_model=16, n_layers=2, n_heads=2, positions="both", bidirectional=False,
                     grid=[4, 5]).double()
    x = torch.randn(2, 20, 16, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 9:] = torch.randn(2, 11, 16, dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(model(x2)[:, :9], model(x)[:, :9]) < 1e-12


def test_grid_model_runs_and_checks_the_length():
    model = LightNet(d_model=16, n_layers=1, n_heads=2, grid=[4, 5], positions="both")
    y = model(torch.randn(3, 20, 16))
    assert y.shape == (3, 20, 16) and torch.isfinite(y).all()
    match = r"sequence length 21 does not match grid=\[4, 5\].*model.grid"
    with pytest.raises(ValueError, match=match):
        model(torch.randn(3, 21, 16))


def test_lrpe_2d_rotation_is_the_product_of_row_and_column_rotations():
    rows, cols, d = 4, 5, 8
    phi = lrpe_angles((rows, cols), d, 10000.0, dtype=torch.float64).view(rows, cols, d)
    rot = torch.polar(torch.ones_like(phi), phi)  # e^{i phi}: the unitary LRPE map per channel
    for r in range(rows):
        for c in range(cols):
            assert torch.allclose(rot[r, c], rot[r, 0] * rot[0, c], atol=1e-14)
    # the first half of the channels follows the row only, the second half the column only
    assert torch.equal(phi[:, :1, : d // 2].expand(-1, cols, -1), phi[..., : d // 2])
    assert torch.equal(phi[:1, :, d // 2 :].expand(rows, -1, -1), phi[..., d // 2 :])
    # so q~(p) . k~(p') = sum_j q_j k_j cos(phi_j(p) - phi_j(p')) depends on p - p' alone
    assert torch.allclose(phi[3, 4] - phi[1, 2], phi[2, 2] - phi[0, 0], atol=1e-14)
    flat = lrpe_angles((rows * cols,), d, 10000.0, dtype=torch.float64)  # 1-D positions
    assert not torch.allclose(phi[1, 0], flat[cols])


def test_tpe_on_a_grid_mixes_along_rows_and_columns_only():
    torch.manual_seed(0)
    tpe = TPE(8, grid=(4, 5)).double()
    x = torch.randn(1, 20, 8, dtype=torch.float64)
    x2 = x.clone()
    x2[0, 2 * 5 + 3] += 1.0  # perturb (2, 3)
    y, y2 = tpe(x).view(4, 5, 8), tpe(x2).view(4, 5, 8)
    changed = (y - y2).abs().amax(-1) > 1e-12  # (4, 5)
    cross = torch.zeros(4, 5, dtype=torch.bool)
    cross[2, :], cross[:, 3] = True, True
    assert torch.equal(changed, cross)


@pytest.mark.parametrize("bad, match", [
    ({"d_model": 30, "n_heads": 4}, "n_heads=4"),
    ({"positions": "rope"}, "positions='rope'"),
    ({"grid": [0, 4]}, "grid"),
])
def test_bad_options_fail_clearly(bad, match):
    with pytest.raises(ValueError, match=match):
        LightNet(**{"d_model": 16, "n_layers": 1, **bad})


# 30 and 500 split chunks (down to one step at 500)
@pytest.mark.parametrize("scale", [1.0, 30.0, 500.0])
def test_chunked_logcumsumexp_equals_torchs(scale):
    g = torch.Generator().manual_seed(0)
    k = (scale * torch.randn(3, 2, 337, 7, generator=g, dtype=torch.float64)).requires_grad_()
    k.data[1, :, 300:] = torch.finfo(torch.float64).min  # weight-0 keys, as the dispatch masks pads
    w = torch.randn(k.shape, generator=g, dtype=torch.float64)
    want = torch.logcumsumexp(k, dim=-2)
    got = logcumsumexp(k)
    assert rel_err(got, want) < 1e-12
    (want_grad,), (got_grad,) = (torch.autograd.grad((z * w).sum(), k) for z in (want, got))
    assert rel_err(got_grad, want_grad) < 1e-10
