"""Triton FlashAttention: o, dq, dk, dv == attention_reference on odd shapes; the dispatch; the
flash model."""
import pytest
import torch
from helpers import rel_err, tolerance

from lra.kernels.attention import attention
from lra.kernels.attention.reference import attention_reference
from lra.models.flash import Flash

pytestmark = pytest.mark.kernels


def qkv(B, L, d, device, dtype=torch.float32, H=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, L, d, generator=g).to(device, dtype).requires_grad_()
            for _ in range(3)]


def forward_and_grads(fn, q, k, v, g):
    o = fn(q, k, v)
    return [o.detach(), *torch.autograd.grad((o * g).sum(), (q, k, v))]


def compare(q, k, v, lengths, causal, tol, reference_inputs=None, dropout_p=0.0, seed=0):
    """The Triton kernels against the fp32 reference (on reference_inputs if given; with dropout,
    given the kernels' keep-mask for `seed`): o, dq, dk, dv by relative error."""
    from lra.kernels.attention.triton import attention_triton, dropout_keep_mask

    g = torch.randn(q.shape, generator=torch.Generator().manual_seed(1)).to(q.device, q.dtype)
    got = forward_and_grads(lambda *a: attention_triton(*a, lengths, causal, dropout_p, seed),
                            q, k, v, g)
    B, H, L, _ = q.shape
    keep = dropout_keep_mask(seed, B, H, L, dropout_p, q.device) if dropout_p else None
    ref = [t.detach().float().requires_grad_() for t in reference_inputs or (q, k, v)]
    want = forward_and_grads(lambda *a: attention_reference(*a, lengths, causal, keep, dropout_p),
                             *ref, g.float())
    for what, a, b in zip(["o", "dq", "dk", "dv"], got, want):
        assert torch.isfinite(a).all(), f"{what} is not finite"
        err = rel_err(a, b)
        assert err < tol, f"{what}: rel err {err:.2e} (tolerance {tol:.0e})"
    return got


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("L", [37, 100])
@pytest.mark.parametrize("B", [1, 3])
def test_forward_and_grads_match_reference(B, L, causal, triton_device):
    q, k, v = qkv(B, L, 16, triton_device)
    # 32 = two whole key blocks; 95 ends in a partial one
    lengths = None if B == 1 else torch.tensor([L - 5, 1, 0])
    o, dq, dk, dv = compare(q, k, v, lengths, causal, tol=tolerance("attention"))
    if lengths is not None:  # the row without keys: zeros, forward and backward
        assert all((t[2] == 0).all() for t in (o, dq, dk, dv))
        # padded keys get no gradient
        assert (dk[1, :, 1:] == 0).all() and (dv[1, :, 1:] == 0).all()


@pytest.mark.parametrize("causal", [False, True])
def test_head_dim_that_is_not_a_power_of_two(causal, triton_device):
    q, k, v = qkv(3, 37, 24, triton_device)
    compare(q, k, v, torch.tensor([37, 20, 1]), causal, tol=tolerance("attention"))


def test_keys_past_a_row_length_are_never_read(triton_device):
    q, k, v = qkv(3, 100, 16, triton_device)
    lengths = torch.tensor([100, 40, 7])
    k_nan, v_nan = k.detach().clone(), v.detach().clone()
    for i, n in enumerate(lengths.tolist()):
        k_nan[i, :, n:], v_nan[i, :, n:] = float("nan"), float("nan")
    for causal in (False, True):
        compare(q, k_nan.requires_grad_(), v_nan.requires_grad_(), lengths, causal,
                tolerance("attention"),
                reference_inputs=(q, k, v))


def test_float16(triton_device):
    q, k, v = qkv(3, 100, 32, triton_device, torch.float16)
    compare(q, k, v, torch.tensor([100, 37, 1]), causal=True,
            tol=tolerance("attention", torch.float16))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="bfloat16 loads are wrong under Triton's CPU interpreter")
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("causal", [False, True])
def test_bfloat16_on_cuda(d, causal, triton_device):
    q, k, v = qkv(4, 1000, d, triton_device, torch.bfloat16, H=4)
    compare(q, k, v, torch.tensor([1000, 999, 130, 1]), causal,
            tol=tolerance("attention", torch.bfloat16))


def test_dispatch_takes_the_triton_path_when_forced(triton_device, monkeypatch):
    import lra.kernels.attention.triton as kernels

    calls = []
    real = kernels.attention_triton
    monkeypatch.setattr(kernels, "attention_triton", lambda *a: calls.append(1) or real(*a))
    q, k, v = qkv(1, 20, 16, triton_device)
    lengths = torch.tensor([13])
    o = attention(q, k, v, lengths, causal=True)
    assert calls == [1]
    assert rel_err(o, attention_reference(q, k, v, lengths, causal=True)) < tolerance("attention")
    attention(q, k, v, lengths, dropout_p=0.5)  # dropout runs in the kernels too
    assert calls == [1, 1]
    monkeypatch.setenv("LRA_KERNELS", "reference")
    attention(q, k, v, lengths)
    assert calls == [1, 1]


def test_flash_model_is_the_same_with_triton_and_reference(triton_device, monkeypatch):
    torch.manual_seed(0)
    model = Flash(d_model=32, n_layers=1, n_heads=2).to(triton_device)
    lengths = torch.tensor([37, 20, 1, 0])
    mask = (torch.arange(37) < lengths[:, None]).to(triton_device)  # (4, 37)
    x = torch.randn(4, 37, 32).to(triton_device).requires_grad_()
    # (y * g).sum(): not y^2, which LayerNorm flattens
    g = torch.randn(4, 37, 32).to(triton_device) * mask[..., None]
    results = {}
    for kernels in ("triton", "reference"):
        monkeypatch.setenv("LRA_KERNELS", kernels)
        y = model(x, mask)
        results[kernels] = [y, torch.autograd.grad((y * g).sum(), x)[0]]
    for what, got, want in zip(["y", "dx"], results["triton"], results["reference"]):
        err = rel_err(got, want)
        assert err < max(1e-5, tolerance("attention")), f"{what}: rel err {err:.2e}"


def test_bad_inputs_fail_clearly(triton_device):
    from lra.kernels.attention.triton import attention_triton

    q = torch.zeros(1, 1, 8, 16, device=triton_device)
    with pytest.raises(ValueError, match="one .B, heads, L, d. shape"):
        attention_triton(q, q[:, :, :4], q)
    with pytest.raises(ValueError, match="float16, bfloat16 or float32.*float64"):
        attention_triton(*[q.double()] * 3)
    big = torch.zeros(1, 1, 8, 256, device=triton_device)
    with pytest.raises(ValueError, match="head dims up to 128, got 256"):
        attention_triton(big, big, big)


@pytest.mark.parametrize("causal", [False, True])
def test_padding_queries_get_zeros_and_give_nothing(causal, triton_device):
    """Queries past a row's length: zero output and zero dq, and their values (here huge) change
    nothing else."""
    q, k, v = qkv(3, 100, 16, triton_device)
    lengths = torch.tensor([100, 40, 7])
    loud = q.detach().clone()
    for i, n in enumerate(lengths.tolist()):
        loud[i, :, n:] = 1e4 * torch.randn_like(loud[i, :, n:])
    o, dq, dk, dv = compare(loud.requires_grad_(), k, v, lengths, causal, tolerance("attention"))
    for i, n in enumerate(lengths.tolist()):
        assert (o[i, :, n:] == 0).all() and (dq[i, :, n:] == 0).all()


@pytest.mark.parametrize("dropout_p", [0.0, 0.2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gpu_tiles_compute_the_same(dtype, dropout_p, triton_device, monkeypatch):
    """The tiles picked for a GPU (dropout has its own), not the interpreter's small ones, give the
    same results."""
    import lra.kernels.attention.triton as kernels

    monkeypatch.setattr(kernels, "interpreting", lambda: False)
    q, k, v = qkv(3, 200, 64, triton_device, dtype)
    compare(q, k, v, torch.tensor([200, 130, 1]), causal=True,
            tol=tolerance("attention", dtype), dropout_p=dropout_p, seed=4)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("B", [1, 3])
def test_dropout_forward_and_backward_use_one_mask(B, causal, triton_device):
    """With dropout the kernels equal the reference given their keep-mask, forward and backward,
    on an odd length with padding (and batch 1 without)."""
    q, k, v = qkv(B, 37, 16, triton_device)
    lengths = None if B == 1 else torch.tensor([37, 20, 0])
    o, dq, dk, dv = compare(q, k, v, lengths, causal, tolerance("attention"), dropout_p=0.3,
                            seed=11)
    if lengths is not None:  # padding stays zero
        assert (o[1, :, 20:] == 0).all() and (dk[1, :, 20:] == 0).all()
        assert all((t[2] == 0).all() for t in (o, dq, dk, dv))


def test_dropout_zero_gives_the_kernel_without_dropout(triton_device):
    from lra.kernels.attention.triton import attention_triton

    q, k, v = qkv(2, 37, 16, triton_device)
    lengths = torch.tensor([37, 9])
    without = forward_and_grads(lambda *a: attention_triton(*a, lengths, True), q, k, v, q)
    zero = forward_and_grads(lambda *a: attention_triton(*a, lengths, True, 0.0, 123), q, k, v, q)
    assert all(torch.equal(a, b) for a, b in zip(without, zero))


def test_dropout_keeps_one_minus_p_and_the_seed_reproduces_it(triton_device):
    from lra.kernels.attention.triton import dropout_keep_mask

    B, H, L, p = 2, 2, 128, 0.3
    keep = dropout_keep_mask(5, B, H, L, p, triton_device)
    share = keep.float().mean().item()
    sigma = (p * (1 - p) / keep.numel()) ** 0.5
    assert abs(share - (1 - p)) < 5 * sigma, f"kept {share:.4f}, expected {1 - p} +- {sigma:.4f}"
    # no stripes: every batch-head and every query row keeps about the same share
    assert keep.float().mean((2, 3)).sub(1 - p).abs().max() < 0.02
    assert torch.equal(keep, dropout_keep_mask(5, B, H, L, p, triton_device))
    other = dropout_keep_mask(6, B, H, L, p, triton_device)
    assert (keep != other).float().mean() > 0.3  # about 2 p (1 - p) = 0.42 of them differ
    # each (batch-head) gets its own stream
    assert (keep[0, 0] != keep[1, 1]).any()


def test_the_same_torch_seed_reproduces_dropout_and_another_differs(triton_device):
    q, k, v = qkv(2, 37, 16, triton_device)
    outputs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        outputs.append(attention(q, k, v, torch.tensor([37, 30]), dropout_p=0.2).detach())
    assert torch.equal(outputs[0], outputs[1])
    assert not torch.equal(outputs[0], outputs[2])
