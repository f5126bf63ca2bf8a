"""The Triton additive recurrence against the PyTorch forms: forward and every gradient on odd
shapes, large keys, ragged padding, the dispatch, and a LightNet model on either path."""
import pytest
import torch
from helpers import rel_err, tolerance

from lra.kernels.additive_recurrence import (
    additive_causal_chunked,
    additive_noncausal_reference,
    additive_recurrence,
)
from lra.models.lightnet import LightNet

pytestmark = pytest.mark.kernels


def inputs(B, H, L, dk, dv, gain_shape=None, key_scale=3.0, seed=0):
    """float64 q, k, v (B, H, L, .) and a gain of gain_shape (None: no gain); keys uniform in
    +-key_scale."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, L, dk, generator=g, dtype=torch.float64)
    k = key_scale * (2 * torch.rand(B, H, L, dk, generator=g, dtype=torch.float64) - 1)
    v = torch.randn(B, H, L, dv, generator=g, dtype=torch.float64)
    gain = None if gain_shape is None else torch.randn(gain_shape, generator=g, dtype=torch.float64)
    return q, k, v, gain


def value_and_grads(fn, args, seed=1):
    """fn's output and the gradients of a random projection of it w.r.t. each tensor in args."""
    out = fn(*args)
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out)
    return out, torch.autograd.grad((out * w).sum(), [a for a in args if a is not None])


def check(fast, reference, args, device, dtype=torch.float32, tol=None, grad_tol=None):
    """fast on (args in dtype, on device) against reference in float64: output and every
    gradient, by default within the family's tolerance at dtype (helpers.TOLERANCES)."""
    family = "additive_causal" if reference is chunked else "additive_noncausal"
    tol = tol or tolerance(family, dtype)
    grad_tol = grad_tol or tolerance(family, dtype)
    args64 = [None if a is None else a.clone().requires_grad_() for a in args]
    argsd = [None if a is None else a.to(device, dtype).requires_grad_() for a in args]
    want, want_grads = value_and_grads(reference, args64)
    out, grads = value_and_grads(fast, argsd)
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    err = rel_err(out.cpu(), want)
    assert err < tol, f"forward: rel err {err:.1e}"
    for name, got, exp in zip("qkvg", grads, want_grads):
        assert torch.isfinite(got).all(), f"d{name} is not finite"
        err = rel_err(got.cpu(), exp)
        assert err < grad_tol, f"d{name}: rel err {err:.1e}"


def chunked(q, k, v, g):
    """The causal PyTorch form, as the causal kernels are called."""
    return additive_causal_chunked(q, k, v, gain=g)


def softmax_form(mask):
    """The non-causal PyTorch form under mask, as a function of (q, k, v, g)."""
    return lambda q, k, v, g: additive_noncausal_reference(q, k, v, mask, g)


CAUSAL_CASES = {  # B, H, L, d_k, d_v, gain shape, chunk
    "3 chunks of 16, gain (L, d_k)": (1, 2, 37, 6, 5, (37, 6), 16),
    "batch 3, 2 chunks of 64, 2 value blocks, no gain": (3, 1, 100, 12, 20, None, 64),
    "2 key blocks, 5 value blocks, gain (B, 1, L, d_k)": (2, 1, 70, 20, 70, (2, 1, 70, 20), None),
}


@pytest.mark.parametrize("case", CAUSAL_CASES)
def test_causal_matches_the_chunked_reference(triton_device, case):
    from lra.kernels.additive_recurrence.triton_causal import additive_causal_triton

    B, H, L, dk, dv, gain_shape, chunk = CAUSAL_CASES[case]
    check(lambda q, k, v, g: additive_causal_triton(q, k, v, g, chunk=chunk), chunked,
          inputs(B, H, L, dk, dv, gain_shape), triton_device)


# the interpreter's numpy overflows in masked-out scores
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("keys", ["ramp", "500"])
def test_causal_large_keys_stay_exact(triton_device, keys):
    """A ramp of 40 per step rises ~600 inside one chunk (the step-by-step branch) between ordinary
    chunks (the one-dot branch); keys of +-500 put every chunk on the step-by-step branch."""
    from lra.kernels.additive_recurrence.triton_causal import additive_causal_triton

    # 2 key blocks
    q, k, v, gain = inputs(2, 1, 60, 20, 5, (60, 20), key_scale=500.0 if keys == "500" else 3.0)
    if keys == "ramp":
        k[:, :, 20:36] += 40.0 * torch.arange(16, dtype=torch.float64)[:, None]
    # float32 spacing at 500 is 3e-5: keys that size carry that error, whatever the dot precision,
    # and dk amplifies the dots' rounding ~15 times (TF32 emulated: 7e-3, against 5e-4 at keys of 3)
    check(lambda q, k, v, g: additive_causal_triton(q, k, v, g, chunk=16), chunked, (q, k, v, gain),
          triton_device, tol=max(2e-5, tolerance("additive_causal")),
          grad_tol=max(1e-3, 10 * tolerance("additive_causal")))


NONCAUSAL_CASES = {  # B, H, L, d_k, d_v, gain shape, lengths (None: no mask), key scale
    "ragged lengths with an empty row": (3, 2, 37, 6, 5, (37, 6), [37, 11, 0], 3.0),
    "7 blocks of 16 steps, 3 value blocks, no mask": (1, 1, 100, 12, 70, None, None, 3.0),
    "2 key blocks, keys of 50, ragged": (2, 1, 70, 70, 9, (2, 1, 70, 70), [70, 33], 50.0),
}


@pytest.mark.parametrize("case", NONCAUSAL_CASES)
def test_noncausal_matches_the_softmax_reference(triton_device, case):
    from lra.kernels.additive_recurrence.triton_noncausal import additive_noncausal_triton

    B, H, L, dk, dv, gain_shape, lengths, scale = NONCAUSAL_CASES[case]
    mask = None if lengths is None else torch.arange(L) < torch.tensor(lengths)[:, None]  # (B, L)
    q, k, v, gain = inputs(B, H, L, dk, dv, gain_shape, key_scale=scale)
    if mask is not None:
        k[~mask[:, None, :, None].expand_as(k)] = 1e4  # huge keys at pads must get weight 0
    mask_d = None if mask is None else mask.to(triton_device)
    # keys of 50 carry float32's spacing there (4e-6) into the weights: ~1e-6 at any precision
    tol = max(tolerance("additive_noncausal"), 1e-5 if scale > 3 else 0)
    check(lambda q, k, v, g: additive_noncausal_triton(q, k, v, mask_d, g), softmax_form(mask),
          (q, k, v, gain), triton_device, tol=tol, grad_tol=tol)


def test_forced_triton_takes_the_kernels_and_refuses_float64(triton_device, monkeypatch):
    import lra.kernels.additive_recurrence.triton_causal as causal_kernels
    import lra.kernels.additive_recurrence.triton_noncausal as noncausal_kernels

    calls = []
    for module, name in ((causal_kernels, "additive_causal_triton"),
                         (noncausal_kernels, "additive_noncausal_triton")):
        kernel = getattr(module, name)

        def counted(*a, kernel=kernel, name=name, **kw):
            calls.append(name)
            return kernel(*a, **kw)
        monkeypatch.setattr(module, name, counted)
    q, k, v, gain = (t.float().to(triton_device) for t in inputs(2, 1, 19, 6, 5, (19, 6)))
    mask = (torch.arange(19) < torch.tensor([[19], [7]])).to(triton_device)
    for causal in (True, False):
        out = additive_recurrence(q, k, v, mask, causal=causal, gain=gain)
        monkeypatch.setenv("LRA_KERNELS", "reference")
        want = additive_recurrence(q, k, v, mask, causal=causal, gain=gain)
        monkeypatch.setenv("LRA_KERNELS", "triton")
        assert rel_err(out, want) < tolerance("additive_causal" if causal else "additive_noncausal")
    assert calls == ["additive_causal_triton", "additive_noncausal_triton"]
    with pytest.raises(ValueError, match="float64.*LRA_KERNELS=reference"):
        additive_recurrence(q.double(), k.double(), v.double(), causal=True)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_lightnet_is_the_same_on_either_path(triton_device, monkeypatch, bidirectional):
    torch.manual_seed(0)
    model = LightNet(d_model=16, n_layers=1, n_heads=2, positions="both",
                     bidirectional=bidirectional).to(triton_device)
    x, w = torch.randn(2, 3, 37, 16, device=triton_device).unbind(0)
    mask = (torch.arange(37) < torch.tensor([[37], [20], [1]])).to(triton_device)  # (3, 37)
    results = {}
    for path in ("triton", "reference"):
        monkeypatch.setenv("LRA_KERNELS", path)
        y = model(x, mask)
        grads = torch.autograd.grad((y * w * mask[..., None]).sum(), list(model.parameters()))
        results[path] = y, grads
    (y, grads), (y_ref, grads_ref) = results["triton"], results["reference"]
    family = "additive_noncausal" if bidirectional else "additive_causal"
    err = rel_err(y[mask], y_ref[mask])
    assert err < max(1e-5, tolerance(family)), f"output: rel err {err:.1e}"
    for (name, _), got, want in zip(model.named_parameters(), grads, grads_ref):
        err = rel_err(got, want)
        assert err < max(1e-4, tolerance(family)), f"d{name}: rel err {err:.1e}"


@pytest.mark.parametrize("bidirectional", [True, False])
def test_lightnet_under_mixed_precision_runs_the_kernels_in_the_autocast_dtype(
        triton_device, monkeypatch, bidirectional):
    """Under torch.autocast (float16 here: bfloat16 is broken in the interpreter) q, k, v and the
    LRPE gain reach the kernel in float16, not upcast; the output stays within half precision of
    the float32 layer, on either path (the PyTorch forms compute half inputs in float32)."""
    import lra.kernels.additive_recurrence.triton_causal as causal_kernels
    import lra.kernels.additive_recurrence.triton_noncausal as noncausal_kernels

    seen = []

    def spying_on(kernel):
        def spy(q, k, v, *rest):
            seen.append((q.dtype, k.dtype, v.dtype, rest[-1].dtype))  # the gain is last
            return kernel(q, k, v, *rest)
        return spy
    for module, name in ((causal_kernels, "additive_causal_triton"),
                         (noncausal_kernels, "additive_noncausal_triton")):
        monkeypatch.setattr(module, name, spying_on(getattr(module, name)))
    torch.manual_seed(0)
    model = LightNet(d_model=16, n_layers=1, n_heads=2, positions="both",
                     bidirectional=bidirectional).to(triton_device)
    x = torch.randn(3, 37, 16, device=triton_device)
    mask = (torch.arange(37) < torch.tensor([[37], [20], [1]])).to(triton_device)
    want = model(x, mask)  # float32
    seen.clear()
    for path in ("triton", "reference"):
        monkeypatch.setenv("LRA_KERNELS", path)
        with torch.autocast(triton_device.type, dtype=torch.float16):
            y = model(x, mask)
        y.float().sum().backward()
        assert rel_err(y[mask], want[mask]) < 1e-2, path
    assert seen == [(torch.float16,) * 4]  # the Triton path only, not upcast


needs_cuda = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


# bf16 loads are broken in the interpreter
@pytest.mark.parametrize("dtype", [torch.float16, pytest.param(torch.bfloat16, marks=needs_cuda)])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "noncausal"])
def test_half_precision_inputs_compute_in_float32(triton_device, causal, dtype):
    from lra.kernels.additive_recurrence.triton_causal import additive_causal_triton
    from lra.kernels.additive_recurrence.triton_noncausal import additive_noncausal_triton

    L = 100
    mask = torch.arange(L) < torch.tensor([[L], [43]])
    # the reference sees the same values
    args = [a.to(dtype).double() for a in inputs(2, 2, L, 20, 12, (L, 20))]
    if causal:
        fast, reference = additive_causal_triton, chunked
    else:
        mask_d = mask.to(triton_device)
        fast = lambda q, k, v, g: additive_noncausal_triton(q, k, v, mask_d, g)  # noqa: E731
        reference = softmax_form(mask)
    check(fast, reference, args, triton_device, dtype=dtype)


def test_noncausal_pads_give_zeros_and_are_never_read(triton_device):
    from lra.kernels.additive_recurrence.triton_noncausal import additive_noncausal_triton

    q, k, v, gain = inputs(2, 2, 70, 6, 5, (70, 6))
    mask = torch.arange(70) < torch.tensor([[70], [19]])
    mask_d = mask.to(triton_device)
    fast = lambda q, k, v, g: additive_noncausal_triton(q, k, v, mask_d, g)  # noqa: E731
    check(fast, softmax_form(mask), (q, k, v, gain), triton_device)
    nan = [t.clone() for t in (q, k, v)]
    for t in nan:
        t[1, :, 19:] = float("nan")
    out, grads = value_and_grads(fast, [a.to(triton_device, torch.float32).requires_grad_()
                                        for a in (*nan, gain)])
    assert all(torch.isfinite(t).all() for t in (out, *grads))
    assert (out[1, :, 19:] == 0).all() and all((g[1, :, 19:] == 0).all() for g in grads[:3])
    want = additive_noncausal_reference(q, k, v, mask, gain)
    assert rel_err(out.cpu(), want) < tolerance("additive_noncausal")


def test_gpu_blocks_compute_the_same(triton_device, monkeypatch):
    """The blocks picked for a GPU (causal: chunks of 64, key and value blocks of 32; non-causal:
    parts of 256 steps), not the interpreter's small ones, give the same results: 3 key blocks,
    2 value blocks."""
    import lra.kernels.additive_recurrence.triton_causal as causal_kernels
    import lra.kernels.additive_recurrence.triton_noncausal as noncausal_kernels

    monkeypatch.setattr(causal_kernels, "interpreting", lambda: False)
    monkeypatch.setattr(noncausal_kernels, "interpreting", lambda: False)
    args = inputs(2, 1, 300, 70, 40, (300, 70))
    mask = torch.arange(300) < torch.tensor([[300], [180]])
    mask_d = mask.to(triton_device)
    check(causal_kernels.additive_causal_triton, chunked, args, triton_device)
    check(lambda q, k, v, g: noncausal_kernels.additive_noncausal_triton(q, k, v, mask_d, g),
          softmax_form(mask), args, triton_device)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_noncausal_backward_keeps_no_per_block_copies(triton_device):
    """Path-X-like LightNet head (2w = 80 keys in two blocks of 64, w = 40 values in two blocks of
    32), bf16: the backward's peak beyond what it starts with stays under 12 bytes per key element;
    float32 shares per value block of dq, dk and dg alone were 24."""
    from lra.kernels.additive_recurrence.triton_noncausal import additive_noncausal_triton

    B, H, L = 2, 4, 16384
    q, k = (torch.randn(B, H, L, 80, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            for _ in range(2))
    v = torch.randn(B, H, L, 40, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    gain = torch.randn(L, 80, device="cuda", dtype=torch.bfloat16)
    o = additive_noncausal_triton(q, k, v, None, gain)
    do = torch.randn_like(o)
    torch.cuda.synchronize()
    start = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    o.backward(do)
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() - start < 12 * q.numel()
    assert all(t.grad.dtype == torch.bfloat16 for t in (q, k, v))
