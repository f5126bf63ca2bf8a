"""Each kernel family with float32 tl.dots at each dot precision it can be given (ieee, tf32x3,
tf32), TF32 rounding emulated in the interpreter: forward and every gradient against float64 on
odd shapes, within `helpers.TOLERANCES`; and the precision a forward chose is the one its backward
uses when the torch setting changes in between."""
import importlib
import inspect

import pytest
import torch
from helpers import PRECISIONS, TOLERANCES, rel_err

from lra.kernels.additive_recurrence import additive_causal_chunked, additive_noncausal_reference
from lra.kernels.attention.reference import attention_reference

pytest.importorskip("triton", reason="Triton is installed on Linux x86_64 only")
import lra.kernels.additive_recurrence.triton_causal as causal_kernels  # noqa: E402
import lra.kernels.additive_recurrence.triton_noncausal as noncausal_kernels  # noqa: E402
import lra.kernels.attention.triton as attention_kernels  # noqa: E402

pytestmark = pytest.mark.kernels

L = 70  # not a power of two: every family ends in a partial block


def attention_case(B=3):
    """Batch 1 causal; else rows of L, 37 and 1 keys, not causal."""
    lengths, causal = (None, True) if B == 1 else (torch.tensor([L, 37, 1])[:B], False)

    def kernel(q, k, v):
        n = None if lengths is None else lengths.to(q.device)
        return attention_kernels.attention_triton(q, k, v, n, causal)
    reference = lambda q, k, v: attention_reference(q, k, v, lengths, causal)  # noqa: E731
    g = torch.Generator().manual_seed(0)
    args = [torch.randn(B, 2, L, 24, generator=g, dtype=torch.float64) for _ in range(3)]
    return kernel, reference, args


def additive_args(B, dk, dv, key_scale=3.0):
    """float64 q, k, v (B, 2, L, .), keys uniform in +-key_scale, and an (L, dk) gain."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(B, 2, L, dk, generator=g, dtype=torch.float64)
    k = key_scale * (2 * torch.rand(B, 2, L, dk, generator=g, dtype=torch.float64) - 1)
    v = torch.randn(B, 2, L, dv, generator=g, dtype=torch.float64)
    return [q, k, v, torch.randn(L, dk, generator=g, dtype=torch.float64)]


def causal_case(B=2):
    """Chunks of 16 steps: four whole, one partial."""
    kernel = lambda q, k, v, g: causal_kernels.additive_causal_triton(q, k, v, g, chunk=16)  # noqa: E731
    reference = lambda q, k, v, g: additive_causal_chunked(q, k, v, gain=g)  # noqa: E731
    return kernel, reference, additive_args(B, 20, 12)


def noncausal_case(B=2):
    """Batch 1 unmasked; else rows of L and 29 real positions."""
    mask = None if B == 1 else torch.arange(L) < torch.tensor([[L], [29]])[:B]

    def kernel(q, k, v, g):
        return noncausal_kernels.additive_noncausal_triton(
            q, k, v, None if mask is None else mask.to(q.device), g)
    reference = lambda q, k, v, g: additive_noncausal_reference(q, k, v, mask, g)  # noqa: E731
    return kernel, reference, additive_args(B, 20, 12)


CASES = {"attention": attention_case, "additive_causal": causal_case,
         "additive_noncausal": noncausal_case}
# where each family reads its precision (once per call, saved for its backward)
CHOOSERS = {"attention": (attention_kernels, "fp32_dot_precision"),
            "additive_causal": (causal_kernels, "dot_precision"),
            "additive_noncausal": (noncausal_kernels, "dot_precision")}


def run(kernel, args, device, dtype, flip=None):
    """kernel's output on args (in dtype, on device) and the gradients of a fixed random
    projection of it, in float64 on the CPU; flip() runs between forward and backward."""
    leaves = [a.detach().to(device, dtype).requires_grad_() for a in args]
    out = kernel(*leaves)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    if flip is not None:
        flip()
    grads = torch.autograd.grad((out * w.to(out)).sum(), leaves)
    return [t.detach().cpu().double() for t in (out, *grads)]


def errors(family, device, dtype=torch.float32, **shape):
    """Relative error of the family's output and each gradient, on inputs in dtype, against
    float64 on the same (rounded) inputs."""
    kernel, reference, args = CASES[family](**shape)
    args = [a.to(dtype).double() for a in args]
    got = run(kernel, args, device, dtype)
    want = run(reference, args, "cpu", torch.float64)
    return [rel_err(a, b) for a, b in zip(got, want)]


def forcing(monkeypatch, family, precision):
    """Make the family's kernels take `precision` for float32 dots, whatever torch allows."""
    monkeypatch.setattr(*CHOOSERS[family], lambda *_: precision)


SHAPES = {"batch 1": dict(B=1), "padded batch": {}}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("family", CASES)
def test_each_precision_within_its_tolerance(family, shape, triton_device, emulated_dots,
                                             monkeypatch):
    measured = {}
    for precision in PRECISIONS:
        forcing(monkeypatch, family, precision)
        measured[precision] = max(errors(family, triton_device, **SHAPES[shape]))
        assert measured[precision] < TOLERANCES[family][precision], (precision, measured)
    # the emulation is on: TF32 rounds each operand to 11 significant bits, IEEE keeps 24
    assert measured["tf32"] > 100 * measured["ieee"], measured
    assert measured["tf32x3"] < 3 * measured["ieee"], measured


@pytest.mark.parametrize("family", CASES)
def test_float16_inputs_within_their_tolerance(family, triton_device, emulated_dots):
    """The additive recurrence computes in float32 tiles, so its dots take TF32 at half inputs
    (dot_precision): the emulation counts that too."""
    err = max(errors(family, triton_device, torch.float16))
    assert err < TOLERANCES[family]["float16"], err


@pytest.mark.parametrize("module", ["selective_scan", "vandermonde", "cauchy"])
def test_the_other_families_have_no_dots(module):
    """Their kernels sum in float32 on the FMA units: no dot precision to choose or tolerate."""
    source = inspect.getsource(importlib.import_module(f"lra.kernels.{module}.triton"))
    assert "@triton.jit" in source and "tl.dot" not in source


@pytest.fixture
def torch_tf32_setting():
    """Set torch's float32 matmul precision through either API; restored afterwards."""
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision

    def setting(api, tf32):
        if api == "fp32_precision":
            matmul.fp32_precision = "tf32" if tf32 else "ieee"
        else:
            matmul.fp32_precision = "none"  # the legacy flag raises once the new API was used
            matmul.allow_tf32 = tf32
    yield setting
    matmul.fp32_precision = before


@pytest.mark.parametrize("api", ["fp32_precision", "allow_tf32"])
@pytest.mark.parametrize("family", CASES)
def test_backward_keeps_the_precision_its_forward_chose(family, api, triton_device,
                                                        emulated_dots, torch_tf32_setting):
    kernel, _, args = CASES[family]()
    runs = {}
    for tf32 in (False, True):
        torch_tf32_setting(api, tf32)
        steady = run(kernel, args, triton_device, torch.float32)
        flipped = run(kernel, args, triton_device, torch.float32,
                      flip=lambda tf32=tf32: torch_tf32_setting(api, not tf32))
        assert all(torch.equal(a, b) for a, b in zip(steady, flipped)), f"forward tf32={tf32}"
        runs[tf32] = steady
    # the setting matters (output and every gradient), so the flip above could have shown
    assert not any(torch.equal(a, b) for a, b in zip(runs[False], runs[True]))
