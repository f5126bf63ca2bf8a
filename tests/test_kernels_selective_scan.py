"""The Triton selective scan of Mamba against its PyTorch reference: forward and all six gradients.

Float32 kernels against float64 references on shapes that fill no block and no chunk (L = 37,
100; batch 1 and 3; N = 1, 16, 64; channel counts that are not a multiple of the channel block), a
float64 kernel with steps large enough to reset the state, half precision, the dispatch, and a whole
bidirectional Mamba with padding. Without CUDA the kernels run in Triton's interpreter
(tests/conftest.py sets TRITON_INTERPRET=1), so the shapes stay small.
"""
import pytest
import torch
from helpers import SCAN_NAMES, rel_err, scan_inputs

from lra.kernels.selective_scan import selective_scan
from lra.kernels.selective_scan.reference import selective_scan_reference
from lra.models.mamba import Mamba

pytestmark = pytest.mark.kernels

def leaves(tensors, dtype):
    return [t.detach().to(dtype).requires_grad_() for t in tensors]


def compare(inputs, dtype, chunk=None, return_grads=False):
    """Relative errors of the kernel in dtype against the float64 reference: y, then dx .. dD
    (and the kernel's gradients with return_grads)."""
    from lra.kernels.selective_scan.triton import selective_scan_triton
    ref = leaves(inputs, torch.float64)
    want = selective_scan_reference(*ref)
    g = torch.randn_like(want)
    want_grads = torch.autograd.grad((want * g).sum(), ref)
    got_leaves = leaves(inputs, dtype)
    got = selective_scan_triton(*got_leaves, chunk=chunk)
    assert got.dtype == dtype and got.shape == want.shape
    got_grads = torch.autograd.grad((got * g.to(dtype)).sum(), got_leaves)
    assert all(a.dtype == dtype and a.shape == w.shape for a, w in zip(got_grads, want_grads))
    errors = dict(y=rel_err(got, want), **{f"d{k}": rel_err(a, w)
                                           for k, a, w in zip(SCAN_NAMES, got_grads, want_grads)})
    print(", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
    return (errors, got_grads) if return_grads else errors


@pytest.mark.parametrize("b, d, n, L, chunk", [
    # one channel block, 6 of 8 used; 37 steps: 2 full chunks of 16 and 5 steps
    (1, 6, 16, 37, None),
    (3, 5, 1, 100, None),  # N = 1
    (1, 10, 16, 21, 8),  # two channel blocks of 8, the second 2/8 full: dB and dC sum over both
    (1, 3, 64, 20, 8),  # N = 64: blocks of 2 channels; chunks of 8
])
def test_kernel_matches_the_reference(triton_device, b, d, n, L, chunk):
    errors = compare(scan_inputs(b, d, n, L, triton_device), torch.float32, chunk)
    assert max(errors.values()) < 2e-5, errors


def test_float64_kernel_is_exact_with_steps_that_reset_the_state(triton_device):
    """dt |A| up to ~1e3: decays underflow to 0 mid-chunk; nothing overflows, float64 matches to
    rounding."""
    inputs = scan_inputs(1, 6, 16, 29, triton_device, dt_scale=50.0)
    errors = compare(inputs, torch.float64, chunk=8)
    assert max(errors.values()) < 1e-12, errors


def test_half_precision_computes_in_float32(triton_device):
    """float16 in and out, float32 inside: within float16 rounding of the float64 result on the
    same inputs."""
    inputs = [t.half().double() for t in scan_inputs(2, 5, 16, 20, triton_device)]
    errors = compare(inputs, torch.float16, chunk=8)
    assert max(errors.values()) < 3e-3, errors


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="bfloat16 needs CUDA (broken in the interpreter)")
def test_bfloat16_on_cuda(triton_device):
    inputs = [t.bfloat16().double() for t in scan_inputs(2, 64, 16, 300, triton_device)]
    errors = compare(inputs, torch.bfloat16)
    assert max(errors.values()) < 2e-2, errors


@pytest.fixture
def deterministic_algorithms():
    """torch's deterministic algorithms on (what `trainer.deterministic=true` sets), restored
    after."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)


def test_deterministic_backward_sums_block_partials_and_repeats_bit_for_bit(
        triton_device, monkeypatch, deterministic_algorithms):
    """11 channels in blocks of 8 (the second 3/8 full), odd L and batch 3: each block stores its
    share of dB, dC (no atomics), summed afterwards; two backward passes agree to the bit and with
    the float64 reference."""
    import lra.kernels.selective_scan.triton as module
    launches = []
    kernel = module._scan_bwd

    class Recorded:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                launches.append(kwargs["DETERMINISTIC"])
                return kernel[grid](*args, **kwargs)
            return launch
    monkeypatch.setattr(module, "_scan_bwd", Recorded())
    inputs = scan_inputs(3, 11, 16, 37, triton_device, seed=1)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)  # the same output gradient
        runs.append(compare(inputs, torch.float32, chunk=8, return_grads=True))
    first, second = runs
    assert launches == [True, True]
    assert max(first[0].values()) < 2e-5, first[0]
    for name, a, b in zip(SCAN_NAMES, first[1], second[1]):
        assert torch.equal(a, b), name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="a compiled kernel needs CUDA")
def test_deterministic_backward_repeats_bit_for_bit_at_a_training_shape(
        triton_device, deterministic_algorithms):
    """A Path-X-like scan (336 channels in 42 blocks, L = 4096, bfloat16): with atomics the block
    order varies run to run; with deterministic algorithms on, two backward passes agree to the
    bit."""
    from lra.kernels.selective_scan.triton import selective_scan_triton
    inputs = leaves(scan_inputs(2, 336, 16, 4096, triton_device), torch.bfloat16)
    g = torch.randn(2, 336, 4096, device=triton_device, dtype=torch.bfloat16)
    first, second = (torch.autograd.grad((selective_scan_triton(*inputs) * g).sum(), inputs)
                     for _ in range(2))
    for name, a, b in zip(SCAN_NAMES, first, second):
        assert torch.equal(a, b), name


def test_no_grad_forward_equals_the_forward_that_saves_states(triton_device):
    from lra.kernels.selective_scan.triton import selective_scan_triton
    inputs = scan_inputs(1, 6, 16, 20, triton_device)
    with torch.no_grad():
        y = selective_scan_triton(*leaves(inputs, torch.float32))
    assert torch.equal(y, selective_scan_triton(*leaves(inputs, torch.float32)).detach())


def test_dispatch_takes_the_triton_kernel_when_forced(triton_device, monkeypatch):
    import lra.kernels.selective_scan.triton as module
    calls = []
    kernel = module.selective_scan_triton

    def counted(*args):
        calls.append("selective_scan_triton")
        return kernel(*args)
    monkeypatch.setattr(module, "selective_scan_triton", counted)
    inputs = [t.float() for t in scan_inputs(1, 2, 3, 5, triton_device)]
    for choice, expected in (("triton", ["selective_scan_triton"]), ("reference", [])):
        monkeypatch.setenv("LRA_KERNELS", choice)
        calls.clear()
        y = selective_scan(*inputs)
        assert calls == expected
        assert rel_err(y, selective_scan_reference(*inputs)) < 1e-6
    monkeypatch.setenv("LRA_KERNELS", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="the selective scan.*on cpu"):
        selective_scan(*(t.cpu() for t in inputs))


def test_kernel_refuses_mismatched_shapes(triton_device):
    from lra.kernels.selective_scan.triton import selective_scan_triton
    x, dt, A, B, C, D = scan_inputs(1, 2, 3, 5, triton_device)
    with pytest.raises(ValueError, match=r"A \(3, 2\).*expected x, dt \(b, D, L\), A \(D, N\)"):
        selective_scan_triton(x, dt, A.T, B, C, D)
    with pytest.raises(ValueError, match="chunk=12 is not a power of 2"):
        selective_scan_triton(x, dt, A, B, C, D, chunk=12)


def test_bidirectional_mamba_with_padding_computes_the_same_with_either_kernel(
        triton_device, monkeypatch):
    torch.manual_seed(0)
    # bidirectional: a reversed scan, pads first
    model = Mamba(d_model=4, n_layers=1, d_state=4).to(triton_device)
    x = torch.randn(2, 12, 4, device=triton_device)
    mask = torch.arange(12, device=triton_device) < torch.tensor([[12], [7]], device=triton_device)
    runs = {}
    for choice in ("reference", "triton"):
        monkeypatch.setenv("LRA_KERNELS", choice)
        model.zero_grad()
        with torch.no_grad():
            y_eval = model(x, mask)
        y = model(x, mask)
        (y[mask].square().sum()).backward()
        runs[choice] = y_eval, y.detach(), [p.grad.clone() for p in model.parameters()]
    (y_eval_ref, y_ref, grads_ref), (y_eval, y, grads) = runs["reference"], runs["triton"]
    assert rel_err(y_eval, y_eval_ref) < 1e-5 and rel_err(y[mask], y_ref[mask]) < 1e-5
    for (name, _), got, want in zip(model.named_parameters(), grads, grads_ref):
        assert rel_err(got, want) < 1e-4, name


def test_mamba_under_mixed_precision_feeds_the_scan_half_inputs(triton_device, monkeypatch):
    """Under torch.autocast (float16 here: bfloat16 is broken in the interpreter) x, B, C reach the
    scan in float16 and dt, A, D in float32, not all upcast; the output stays within half precision
    of the float32 model, on either path (the PyTorch scan computes mixed inputs in float32)."""
    import lra.kernels.selective_scan.triton as module
    seen = []
    kernel = module.selective_scan_triton

    def spy(*args):
        seen.append(tuple(t.dtype for t in args))
        return kernel(*args)
    monkeypatch.setattr(module, "selective_scan_triton", spy)
    torch.manual_seed(0)
    model = Mamba(d_model=4, n_layers=1, d_state=4).to(triton_device)
    x = torch.randn(2, 12, 4, device=triton_device)
    mask = torch.arange(12, device=triton_device) < torch.tensor([[12], [7]], device=triton_device)
    want = model(x, mask)  # float32
    seen.clear()
    for choice in ("triton", "reference"):
        monkeypatch.setenv("LRA_KERNELS", choice)
        with torch.autocast(triton_device.type, dtype=torch.float16):
            y = model(x, mask)
        y.float().sum().backward()
        assert rel_err(y[mask], want[mask]) < 1e-2, choice
    half, single = torch.float16, torch.float32
    assert seen == [(half, single, single, half, half, single)] * 2  # both directions, Triton only
