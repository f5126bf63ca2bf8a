"""TF32 rounding emulated in Triton's interpreter (`helpers.honoured_dot_precision`): the rounding
itself, and a tl.dot at each input precision against float64."""
import numpy as np
import pytest
import torch
from helpers import emulated_dot, rel_err, round_to_tf32

pytestmark = pytest.mark.kernels
triton = pytest.importorskip("triton", reason="Triton is installed on Linux x86_64 only")
tl = pytest.importorskip("triton.language")


def tf32_by_frexp(x):
    """TF32 rounding built another way: the mantissa in [0.5, 1) scaled by 2^11 (1 implicit and
    10 explicit bits) and rounded half to even by torch.round."""
    m, e = torch.frexp(torch.as_tensor(x, dtype=torch.float64))
    return torch.ldexp(torch.round(m * 2**11) / 2**11, e).float().numpy()


def test_rounding_to_nearest_even_of_chosen_values():
    ulp = 2.0**-10  # TF32's spacing in [1, 2)
    cases = {1 + ulp / 2: 1.0,  # a tie goes to the even neighbour, down here
             1 + 3 * ulp / 2: 1 + 2 * ulp,  # and up here
             1 + ulp / 2 + 2.0**-20: 1 + ulp,  # past the tie: up
             1 + ulp / 2 - 2.0**-20: 1.0,
             -(1 + 3 * ulp / 2): -(1 + 2 * ulp),  # sign-symmetric
             2 - ulp / 4: 2.0,  # carries into the exponent
             2.0**-100 * (1 + 3 * ulp / 2): 2.0**-100 * (1 + 2 * ulp)}  # any exponent
    x = np.array(list(cases), dtype=np.float32)
    assert round_to_tf32(x).tolist() == list(cases.values())
    special = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0], dtype=np.float32)
    got = round_to_tf32(special)
    assert np.array_equal(got, special, equal_nan=True)
    assert np.signbit(got[4])


def test_rounding_matches_an_independent_construction():
    x = np.random.default_rng(0).standard_normal(100_000).astype(np.float32)
    x *= np.float32(10.0) ** np.random.default_rng(1).integers(-30, 30, x.size).astype(np.float32)
    rounded = round_to_tf32(x)
    assert np.array_equal(rounded, tf32_by_frexp(x))
    assert (rounded.view(np.uint32) & 0x1FFF == 0).all()  # 13 low bits clear
    assert np.abs(rounded / x - 1).max() <= 2.0**-11  # half a TF32 ulp


@triton.jit
def _dot_kernel(a, b, c, M: tl.constexpr, N: tl.constexpr, K: tl.constexpr,
                PRECISION: tl.constexpr):
    rows, cols, inner = tl.arange(0, M), tl.arange(0, N), tl.arange(0, K)
    x = tl.load(a + rows[:, None] * K + inner[None, :])
    y = tl.load(b + inner[:, None] * N + cols[None, :])
    tl.store(c + rows[:, None] * N + cols[None, :], tl.dot(x, y, input_precision=PRECISION))


def triton_dot(a, b, precision):
    c = torch.empty(a.shape[0], b.shape[1], dtype=torch.float32, device=a.device)
    M, K = a.shape
    _dot_kernel[(1,)](a, b, c, M, b.shape[1], K, PRECISION=precision)
    return c


@pytest.fixture
def operands(triton_device):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(*shape, generator=g).to(triton_device) for shape in ((32, 64), (64, 16))]


def test_dot_error_at_each_precision(operands, emulated_dots):
    a, b = operands
    exact = a.double() @ b.double()
    errors = {p: rel_err(triton_dot(a, b, p).cpu(), exact.cpu())
              for p in ("ieee", "tf32x3", "tf32")}
    assert errors["ieee"] < 1e-6 and errors["tf32x3"] < 1e-6, errors
    assert 1e-4 < errors["tf32"] < 2e-3, errors  # about 2^-11 per operand


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter's dot, on a CPU")
def test_emulated_dot_is_the_dot_of_rounded_operands(operands, emulated_dots):
    a, b = (t.numpy() for t in operands)
    hi = [round_to_tf32(t) for t in (a, b)]
    tf32 = triton_dot(*operands, "tf32").numpy()
    assert np.allclose(tf32, hi[0].astype(np.float64) @ hi[1], rtol=0, atol=1e-5)
    lo = [round_to_tf32(t - h) for t, h in zip((a, b), hi)]
    assert (lo[0] != 0).any() and np.abs(lo[0]).max() <= 2.0**-10 * np.abs(a).max()
    x3 = triton_dot(*operands, "tf32x3").numpy()
    assert np.array_equal(x3, emulated_dot(a, b, np.zeros_like(tf32), "tf32x3"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter's dot, on a CPU")
def test_without_the_fixture_the_interpreter_ignores_the_precision(operands):
    assert torch.equal(triton_dot(*operands, "tf32"), triton_dot(*operands, "ieee"))
