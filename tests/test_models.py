"""Contract tests every registered backbone gets, plugins included: shapes, gradients, padding,
and for those with a recurrent view (`step`), that it equals the parallel view.

Each backbone is built as `registry.model(name)(d_model=32, n_layers=2)` with its own defaults.
"""
import inspect

import pytest
import torch
from conftest import run_steps
from helpers import padded_batch, rel_err

from lra import registry
from lra.models.blocks import TiedDropout

NAMES = sorted(registry.entries("model"))
D = 32
TOL = 1e-4  # relative error ||a - b|| / ||b|| in float32


def takes(name, option):
    """Whether the backbone `name` has the keyword option `option`."""
    return option in inspect.signature(registry.model(name)).parameters


STEPPED = [n for n in NAMES if hasattr(registry.model(n), "step")]  # those with a recurrent view


def build(name, seed=0):
    torch.manual_seed(seed)
    return registry.model(name)(d_model=D, n_layers=2).eval()


@pytest.mark.parametrize("name", NAMES)
def test_output_shape(name):
    model = build(name)
    for B, L in [(3, 23), (1, 5)]:
        x = torch.randn(B, L, D)
        assert model(x).shape == (B, L, D)
        assert model(x, torch.ones(B, L, dtype=torch.bool)).shape == (B, L, D)


@pytest.mark.parametrize("name", NAMES)
def test_backward_gives_finite_grads(name):
    model = build(name).train()
    x, mask = padded_batch([23, 17, 1], 23, D, dtype=torch.float32)
    y = model(x, mask)
    (y[mask] ** 2).mean().backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name}: no gradient for {pname}"
            assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"


@pytest.mark.parametrize("name", NAMES)
def test_padding_does_not_change_real_positions(name):
    model = build(name)
    lengths = [23, 17, 1]
    x, mask = padded_batch(lengths, 23, D, dtype=torch.float32)
    with torch.no_grad():
        y = model(x, mask)  # (3, 23, D)
        for i, n in enumerate(lengths):
            alone = model(x[i : i + 1, :n])  # (1, n, D), no padding at all
            err = rel_err(y[i, :n], alone[0])
            assert err < TOL, (f"{name}: sequence {i} (length {n}) differs when padded: "
                               f"rel err {err:.2e}")
        assert torch.isfinite(y).all(), f"{name}: non-finite outputs (at pads too)"
        x_more, mask_more = padded_batch(lengths, 23 + 9, D, dtype=torch.float32)
        x_more[:, :23] = x  # same tokens, 9 more pads of garbage
        y_more = model(x_more, mask_more)
        err = rel_err(y_more[:, :23][mask], y[mask])
        assert err < TOL, f"{name}: 9 more pad positions change real outputs: rel err {err:.2e}"


# Options fail with messages that say what to change


@pytest.mark.parametrize("name", [n for n in NAMES if takes(n, "n_heads")])
def test_heads_must_divide_width(name):
    with pytest.raises(ValueError, match="d_model=130 is not divisible by n_heads=4"):
        registry.model(name)(d_model=130, n_heads=4)
    with pytest.raises(ValueError, match="n_heads=0 must be a positive integer"):
        registry.model(name)(d_model=16, n_heads=0)


def test_transformer_learned_positions_bound_the_length():
    model = registry.model("transformer")(d_model=16, n_layers=1, positions="learned", max_len=8)
    assert model(torch.randn(2, 8, 16)).shape == (2, 8, 16)
    with pytest.raises(ValueError, match=r"sequence length 9 exceeds max_len=8.*model.max_len"):
        model(torch.randn(2, 9, 16))


def test_transformer_qkv_dim_sets_the_attention_width():
    """LRA's qkv_dim: Q, K, V qkv_dim wide over all heads, projected back to d_model; null is
    d_model, drawing the weights the model drew before the option existed."""
    build = registry.model("transformer")
    torch.manual_seed(0)
    narrow = build(d_model=16, n_layers=1, n_heads=2, qkv_dim=8)
    shapes = {n: tuple(p.shape) for n, p in narrow.named_parameters()}
    assert (24, 16) in shapes.values() and (16, 8) in shapes.values()
    assert (48, 16) not in shapes.values()
    assert narrow(torch.randn(2, 5, 16)).shape == (2, 5, 16)
    torch.manual_seed(0)
    default = build(d_model=16, n_layers=1, n_heads=2).state_dict()
    torch.manual_seed(0)
    full = build(d_model=16, n_layers=1, n_heads=2, qkv_dim=16).state_dict()
    assert all(torch.equal(default[n], full[n]) for n in default)
    with pytest.raises(ValueError, match="qkv_dim=10 is not divisible by n_heads=4"):
        build(d_model=16, n_heads=4, qkv_dim=10)


def test_transformer_attention_dropout_is_its_own_rate():
    """attention_dropout drops attention weights only; dropout the rest; null = dropout."""
    build = registry.model("transformer")
    x, mask = padded_batch([9, 6], 9, 16, dtype=torch.float32)

    def rates(model):
        return sorted({m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)})

    assert rates(build(d_model=16, n_layers=1, dropout=0.3)) == [0.3]
    assert rates(build(d_model=16, n_layers=1, dropout=0.3, attention_dropout=0.1)) == [0.1, 0.3]
    model = build(d_model=16, n_layers=1, dropout=0.0, attention_dropout=0.5).train()
    torch.manual_seed(0)
    y = model(x, mask)
    with torch.no_grad():
        assert rel_err(y, model.eval()(x, mask)) > 1e-2  # only the attention weights dropped
    model = build(d_model=16, n_layers=1, dropout=0.0, attention_dropout=0.0).train()
    with torch.no_grad():
        assert torch.equal(model(x, mask), model.eval()(x, mask))


def test_transformer_fully_masked_row_is_finite():
    model = registry.model("transformer")(d_model=16, n_layers=1).train()
    x = torch.randn(2, 5, 16, requires_grad=True)
    mask = torch.tensor([[True] * 5, [False] * 5])
    model(x, mask).sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_model_same_outputs(name):
    first, second, other = build(name, seed=7), build(name, seed=7), build(name, seed=8)
    x, mask = padded_batch([23, 11], 23, D, dtype=torch.float32)
    for (key, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), key
    assert torch.equal(first(x, mask), second(x, mask))
    assert any(not torch.equal(a, b) for a, b in zip(first.parameters(), other.parameters()))


@pytest.mark.parametrize("name", [n for n in NAMES if takes(n, "bidirectional")])
def test_causal_view_ignores_the_future(name):
    """`bidirectional=False` (every built-in takes it): changing later tokens leaves earlier
    outputs."""
    torch.manual_seed(0)
    model = registry.model(name)(d_model=D, n_layers=2, bidirectional=False).eval()
    x = torch.randn(2, 19, D)
    changed = x.clone()
    changed[:, 12:] = torch.randn(2, 7, D)
    assert rel_err(model(changed)[:, :12], model(x)[:, :12]) < TOL
    assert rel_err(model(changed)[:, 12:], model(x)[:, 12:]) > TOL


def causal_float64(name, seed=0):
    """A causal (bidirectional=False where it has the option) float64 model in eval mode, 8 wide,
    with every parameter moved off its init: each entry scaled by a factor in [0.5, 1.5]."""
    torch.manual_seed(seed)
    options = {"bidirectional": False} if takes(name, "bidirectional") else {}
    model = registry.model(name)(d_model=8, n_layers=2, **options).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(torch.empty_like(p).uniform_(0.5, 1.5))
    return model


@pytest.mark.parametrize("L", [37, 1000])
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("name", STEPPED)
def test_parallel_view_equals_recurrent_view(name, B, L):
    """forward (a convolution, a scan) equals `step` from `default_state`, position by position."""
    model = causal_float64(name)
    u = torch.randn(B, L, 8, dtype=torch.float64)
    with torch.no_grad():
        err = rel_err(run_steps(model, u), model(u))
    assert err < 1e-12, f"{name}: recurrent vs parallel view rel err {err:.1e}"  # float64: ~1e-15


@pytest.mark.parametrize("name", STEPPED)
def test_step_follows_the_parameters(name):
    """No setup call: after the parameters change, the next steps use the new ones."""
    model = causal_float64(name)
    u = torch.randn(2, 20, 8, dtype=torch.float64)
    with torch.no_grad():
        run_steps(model, u)
        for p in model.parameters():
            p.mul_(torch.empty_like(p).uniform_(0.5, 1.5))
        err = rel_err(run_steps(model, u), model(u))
    assert err < 1e-12, f"{name}: steps after a parameter change, rel err {err:.1e}"


@pytest.mark.parametrize("name", [n for n in STEPPED if takes(n, "bidirectional")])
def test_step_needs_a_causal_model(name):
    model = registry.model(name)(d_model=8, n_layers=1, bidirectional=True)
    with pytest.raises(ValueError, match="bidirectional=False"):
        model.step(torch.randn(2, 8), model.default_state(2))


@pytest.mark.parametrize("name", [n for n in NAMES if takes(n, "norm")])
def test_batchnorm_statistics_ignore_pads(name):
    """In training mode BatchNorm counts real positions only: padding, however large, changes
    nothing."""
    torch.manual_seed(0)
    model = registry.model(name)(d_model=16, n_layers=2, norm="batch", prenorm=True).train()
    x = torch.randn(3, 20, 16)
    mask = torch.arange(20) < torch.tensor([[20], [11], [4]])  # (3, 20)
    x_more = 100 * torch.randn(3, 29, 16)  # other garbage at the pads, and 9 more of them
    x_more[:, :20] = torch.where(mask.unsqueeze(-1), x, x_more[:, :20])
    y, y_more = model(x, mask), model(x_more, torch.nn.functional.pad(mask, (0, 9)))
    err = rel_err(y_more[:, :20][mask], y[mask])
    assert err < 1e-5, f"rel err {err:.1e}"


@pytest.mark.parametrize("name", [n for n in STEPPED if takes(n, "n_ssm")])
def test_tied_ssms_keep_the_recurrent_view(name):
    """With n_ssm = 2 (channel groups sharing their SSM), forward still equals `step`."""
    torch.manual_seed(0)
    model = registry.model(name)(d_model=8, n_layers=2, bidirectional=False,
                                 n_ssm=2).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(torch.empty_like(p).uniform_(0.5, 1.5))
        u = torch.randn(2, 30, 8, dtype=torch.float64)
        err = rel_err(run_steps(model, u), model(u))
    assert err < 1e-12, f"{name}: n_ssm=2, recurrent vs parallel view rel err {err:.1e}"


def test_tied_dropout_draws_one_mask_per_example_and_channel():
    torch.manual_seed(0)
    drop = TiedDropout(0.5).train()
    x = torch.randn(4, 50, 16)
    scale = drop(x) / x  # (4, 50, 16): 0 or 1 / (1 - p)
    assert torch.equal(scale, scale[:, :1].expand_as(scale))  # the same at every position
    assert set(scale.unique().tolist()) == {0.0, 2.0}
    assert not torch.equal(scale[0], scale[1])  # a mask per example
    assert torch.equal(drop.eval()(x), x)
    y = torch.nn.Dropout(0.5).train()(x) / x
    assert not torch.equal(y, y[:, :1].expand_as(y))  # untied: a mask per position


@pytest.mark.parametrize("name", [n for n in NAMES if takes(n, "tie_dropout")])
def test_tie_dropout_ties_every_dropout_of_the_model(name):
    """tie_dropout=True: the layer's dropout and the residual branch's, in every block, are tied
    over the length; by default none is."""
    model = registry.model(name)(d_model=D, n_layers=2, dropout=0.3, tie_dropout=True)
    drops = [m for m in model.modules() if isinstance(m, (TiedDropout, torch.nn.Dropout))]
    assert len(drops) == 4 and all(isinstance(m, TiedDropout) for m in drops)
    untied = registry.model(name)(d_model=D, n_layers=2, dropout=0.3)
    assert not any(isinstance(m, TiedDropout) for m in untied.modules())
