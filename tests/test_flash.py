"""FlashAttention: blockwise == reference == SDPA (forward and grads), skipped blocks,
flash == transformer."""
import pytest
import torch
from helpers import padded_batch, rel_err

from lra.kernels.attention import attention, attention_chunked, attention_reference
from lra.models.flash import Flash
from lra.models.transformer import Transformer


def qkv(B, L, H=2, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, L, d, generator=g, dtype=torch.float64, requires_grad=True)
            for _ in range(3)]


def forward_and_grads(fn, q, k, v, g):
    o = fn(q, k, v)
    return [o.detach(), *torch.autograd.grad((o * g).sum(), (q, k, v))]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("L", [37, 100])
@pytest.mark.parametrize("B", [1, 3])
def test_blockwise_and_sdpa_match_reference(B, L, causal, monkeypatch):
    q, k, v = qkv(B, L)
    lengths = torch.tensor([L, L - 5, 1] if B == 3 else [L - 5])
    g = torch.randn(q.shape, dtype=torch.float64)
    want = forward_and_grads(lambda *a: attention_reference(*a, lengths, causal), q, k, v, g)
    for i, n in enumerate(lengths.tolist()):  # padding queries: zeros, and no gradient to their q
        assert (want[0][i, :, n:] == 0).all() and (want[1][i, :, n:] == 0).all()
    monkeypatch.delenv("LRA_KERNELS", raising=False)
    paths = {
        "blockwise": lambda *a: attention_chunked(*a, lengths, causal, block_size=16),
        "sdpa dispatch": lambda *a: attention(*a, lengths, causal, block_size=16),
    }
    for path, fn in paths.items():
        for what, got, ref in zip(["o", "dq", "dk", "dv"], forward_and_grads(fn, q, k, v, g), want):
            err = rel_err(got, ref)
            assert err < 1e-12, f"{path} {what}: rel err {err:.2e}"


@pytest.mark.parametrize("causal", [False, True])
def test_reference_equals_each_row_alone(causal):
    q, k, v = qkv(3, 37)
    lengths = [37, 32, 1]
    o = attention_reference(q, k, v, torch.tensor(lengths), causal)
    for i, n in enumerate(lengths):
        row = (t[i:i + 1, :, :n] for t in (q, k, v))
        alone = attention_reference(*row, None, causal)
        err = rel_err(o[i:i + 1, :, :n], alone)
        assert err < 1e-14, f"row {i}: rel err {err:.2e}"
    for path in (attention_chunked, attention):  # no lengths: every key is real
        err = rel_err(path(q, k, v, None, causal), attention_reference(q, k, v, None, causal))
        assert err < 1e-12, f"{path.__name__} without lengths: rel err {err:.2e}"


def test_key_blocks_past_a_row_length_are_never_read():
    q, k, v = qkv(3, 100)
    lengths = torch.tensor([100, 40, 7])  # 7, 3 and 1 blocks of 16
    want = attention_reference(q, k, v, lengths)
    k2, v2 = k.detach().clone(), v.detach().clone()
    for i, n in enumerate(lengths.tolist()):
        end = -(-n // 16) * 16  # the end of the row's last block
        k2[i, :, end:], v2[i, :, end:] = float("nan"), float("nan")
    got = attention_chunked(q, k2, v2, lengths, block_size=16)
    assert torch.isfinite(got).all()
    assert rel_err(got, want) < 1e-12


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("path", [attention_reference, attention_chunked, attention])
def test_row_without_keys_gives_zeros_and_finite_grads(path, causal):
    q, k, v = qkv(3, 37)
    o = path(q, k, v, torch.tensor([37, 0, 5]), causal)
    assert torch.isfinite(o).all() and (o[1] == 0).all()
    o.sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all() and (t.grad[1] == 0).all()


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kernels", ["", "reference"])
def test_flash_equals_transformer(kernels, causal, monkeypatch):
    monkeypatch.setenv("LRA_KERNELS", kernels)
    opts = dict(d_model=16, n_layers=2, n_heads=2, bidirectional=not causal)
    torch.manual_seed(0)
    transformer = Transformer(**opts).double()
    torch.manual_seed(1)
    flash = Flash(block_size=16, **opts).double()
    flash.load_state_dict(transformer.state_dict())
    x, mask = padded_batch([37, 32, 1, 0], 37, 16)
    x.requires_grad_()
    g = torch.randn(4, 37, 16, dtype=torch.float64)
    results = []
    for model in (transformer, flash):
        y = model(x, mask)
        results.append([y, *torch.autograd.grad((y * g).sum(), [x, *model.parameters()])])
    names = ["y", "dx", *(n for n, _ in transformer.named_parameters())]
    for name, want, got in zip(names, *results):
        err = rel_err(got, want)
        assert err < 1e-12, f"LRA_KERNELS={kernels!r}: {name} rel err {err:.2e}"


def test_flash_draws_the_transformer_weights():
    torch.manual_seed(0)
    want = Transformer(d_model=16, n_layers=2, positions="learned").state_dict()
    torch.manual_seed(0)
    got = Flash(d_model=16, n_layers=2, positions="learned").state_dict()
    assert list(got) == list(want) and all(torch.equal(got[n], want[n]) for n in want)


@pytest.mark.parametrize("kernels", ["", "reference"])
def test_flash_trains_with_dropout(kernels, monkeypatch):
    monkeypatch.setenv("LRA_KERNELS", kernels)
    torch.manual_seed(0)
    model = Flash(d_model=16, n_layers=1, dropout=0.5, block_size=8).train()
    x, mask = padded_batch([20, 9], 20, 16)
    y = model(x.float(), mask)
    y[mask].square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    with torch.no_grad():
        assert rel_err(y, model.eval()(x.float(), mask)) > 1e-2  # dropout did act


def test_bad_options_and_masks_fail_clearly():
    with pytest.raises(ValueError, match="block_size"):
        Flash(d_model=16, n_layers=1, block_size=0)
    mask = torch.tensor([[True, False, True]])
    with pytest.raises(ValueError, match="padding at the end"):
        Flash(d_model=16, n_layers=1)(torch.randn(1, 3, 16), mask)


def spy_on_kernel_rates(monkeypatch):
    """The dropout_p of every call of our Triton attention kernel, appended as it runs."""
    import lra.kernels.attention.triton as kernels

    seen, real = [], kernels.attention_triton
    monkeypatch.setattr(kernels, "attention_triton",
                        lambda *a, **kw: seen.append(a[5]) or real(*a, **kw))
    return seen


def test_flash_trains_on_the_triton_kernel_with_dropout(triton_device, monkeypatch):
    """LRA_KERNELS=triton: every dropout_p goes to our kernel; the torch seed reproduces a step."""
    seen = spy_on_kernel_rates(monkeypatch)
    x, mask = padded_batch([20, 9], 20, 16)
    x, mask = x.float().to(triton_device), mask.to(triton_device)
    grads = []
    for seed in (0, 0):
        torch.manual_seed(0)
        model = Flash(d_model=16, n_layers=1, dropout=0.5).to(triton_device).train()
        torch.manual_seed(seed)
        y = model(x, mask)
        y[mask].square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert seen == [0.5, 0.5] and grads[0].isfinite().all()
    assert torch.equal(grads[0], grads[1])
    with torch.no_grad():
        assert rel_err(y, model.eval()(x, mask)) > 1e-2  # dropout did act


@pytest.mark.parametrize("kernels", ["", "reference"])
def test_flash_equals_transformer_with_a_narrow_qkv(kernels, monkeypatch):
    """qkv_dim < d_model (LRA's Pathfinder: 32 wide, qkv 16): same outputs and gradients."""
    monkeypatch.setenv("LRA_KERNELS", kernels)
    opts = dict(d_model=16, n_layers=2, n_heads=2, qkv_dim=8)
    torch.manual_seed(0)
    transformer = Transformer(**opts).double()
    flash = Flash(block_size=16, **opts).double()
    flash.load_state_dict(transformer.state_dict())
    x, mask = padded_batch([37, 32, 1], 37, 16)
    x.requires_grad_()
    results = []
    for model in (transformer, flash):
        y = model(x, mask)
        results.append([y, *torch.autograd.grad(y[mask].square().sum(), [x])])
    for want, got in zip(*results):
        assert rel_err(got, want) < 1e-10  # float64


def test_flash_sends_the_attention_dropout_rate_to_its_kernel(monkeypatch):
    """model.attention_dropout, not model.dropout, is the dropout_p the attention receives;
    null keeps the old behaviour (the same rate as dropout); eval sends 0."""
    import lra.models.flash as flash_module

    seen = []
    real = flash_module.attention
    monkeypatch.setattr(flash_module, "attention",
                        lambda *a, dropout_p=0.0, **kw: seen.append(dropout_p)
                        or real(*a, dropout_p=dropout_p, **kw))
    x, mask = padded_batch([20, 9], 20, 16)
    for attention_dropout, want in ((0.25, 0.25), (None, 0.5), (0.0, 0.0)):
        seen.clear()
        model = Flash(d_model=16, n_layers=2, dropout=0.5,
                      attention_dropout=attention_dropout).train()
        model(x.float(), mask)
        assert seen == [want, want]
    seen.clear()
    model.eval()(x.float(), mask)
    assert seen == [0.0, 0.0]


def test_flash_trains_on_the_triton_kernel_with_attention_dropout(triton_device, monkeypatch):
    """LRA_KERNELS=triton: attention_dropout is the kernel's dropout_p, dropout stays off it."""
    seen = spy_on_kernel_rates(monkeypatch)
    x, mask = padded_batch([20, 9], 20, 16)
    x, mask = x.float().to(triton_device), mask.to(triton_device)
    torch.manual_seed(0)
    model = Flash(d_model=16, n_layers=1, n_heads=2, dropout=0.0, attention_dropout=0.3,
                  qkv_dim=8).to(triton_device).train()
    y = model(x, mask)
    y[mask].square().mean().backward()
    assert seen == [0.3]
    assert all(p.grad.isfinite().all() for p in model.parameters())
