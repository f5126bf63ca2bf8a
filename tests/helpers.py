"""Helpers shared by the test modules (test modules import this, never each other). Files in the
real data releases' formats are written by writers.py."""
import contextlib
import json
import math
import textwrap
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from lra import registry

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "lra" / "published.csv"


def rel_err(a, b):
    """Relative error |a - b| / |b| in float64 (complex128 for complex tensors), as
    flash-linear-attention compares kernels."""
    a, b = (t.detach().to(torch.complex128 if t.is_complex() else torch.float64) for t in (a, b))
    return ((a - b).norm() / b.norm().clamp(min=1e-30)).item()


def padded_batch(lengths, L, D, seed=1, dtype=torch.float64):
    """x (B, L, D) with large garbage at the pads, and its mask (B, L) of real positions."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), L, D, generator=g, dtype=dtype)
    mask = torch.arange(L) < torch.tensor(lengths).unsqueeze(1)  # (B, L)
    x[~mask] = 100 * torch.randn(int((~mask).sum()), D, generator=g, dtype=dtype)
    return x, mask


# --- tasks ---------------------------------------------------------------------------------

SCAN_NAMES = ("x", "dt", "A", "B", "C", "D")


def scan_inputs(b, d, n, L, device="cpu", dt_scale=1.0, seed=0, requires_grad=False):
    """The selective scan's float64 x, dt, A, B, C, D on `device`; dt spans about 1e-3 to 2
    times dt_scale, A is in [-n, 0)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d, L, generator=g, dtype=torch.float64)
    dt = dt_scale * torch.nn.functional.softplus(
        2 * torch.randn(b, d, L, generator=g, dtype=torch.float64) - 2)
    A = -n * torch.rand(d, n, generator=g, dtype=torch.float64) - 0.01
    B, C = torch.randn(2, b, n, L, generator=g, dtype=torch.float64)
    D = torch.randn(d, generator=g, dtype=torch.float64)
    return [t.to(device).requires_grad_(requires_grad) for t in (x, dt, A, B, C, D)]


def loaded(cls, root, **options):
    """The task module `cls` over the files under root, set up."""
    data = cls(data_dir=str(root), **options)
    data.setup()
    return data


def task_from_yaml(name, cls):
    """The module conf/task/<name>.yaml builds (over data_dir "data", seed 0), after checking that
    the file and the registry both name `cls`."""
    options = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "task" / f"{name}.yaml"))
    assert options.pop("name") == name == cls.name and registry.task(name) is cls
    return cls(data_dir="data", seed=0, **options)


def assert_eval_loaders_keep_every_example(data, batch_size):
    """The val and test loaders give each split's examples once, in order, in batches of
    `batch_size`, the last one partial (no shuffling, no drop_last)."""
    for split, loader in (("val", data.val_dataloader()), ("test", data.test_dataloader())):
        batches = list(loader)
        targets = data.splits[split].targets
        assert len(batches) == math.ceil(len(targets) / batch_size)
        assert torch.cat([b["target"] for b in batches]).tolist() == targets.tolist()


# --- plugins -------------------------------------------------------------------------------

TOY_MODEL = '''
from torch import nn


class Toy(nn.Module):
    """A position-wise MLP: the smallest backbone that honours the contract."""

    def __init__(self, d_model=16, n_layers=1, dropout=0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(), nn.Dropout(dropout))

    def forward(self, x, mask=None):
        return x + self.net(x)
'''


def write_plugin(site, dist, package, model_name, model_source):
    """Lay out an installed distribution: code, a config folder and its entry points."""
    (site / package / "conf" / "model").mkdir(parents=True)
    (site / package / "__init__.py").write_text("")
    (site / package / "model.py").write_text(model_source)
    (site / package / "conf" / "__init__.py").write_text("")
    (site / package / "conf" / "model" / f"{model_name}.yaml").write_text(
        f"name: {model_name}\nd_model: 16\nn_layers: 1\ndropout: 0.0\n")
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(f"""\
        [lra.models]
        {model_name} = {package}.model:Toy

        [lra.configs]
        {package} = {package}.conf
        """))


# --- result files --------------------------------------------------------------------------

def run_record(model, task, seed, acc, status="completed", **extra):
    """A hand-made result record of one run, test accuracy `acc`."""
    return {"schema": 1, "run_id": f"{task}-{model}-s{seed}-{status}", "model": model, "task": task,
            "seed": seed, "status": status,
            "metrics": {"test_acc": acc, "val_acc": acc + 0.01, "best_epoch": 3,
                        "majority_rate": 0.2},
            "protocol": {"recipe": "default", "pretraining": "scratch", "data_fingerprint": "ab"},
            "device": "cpu", "params": 1000 + seed, "throughput_tokens_per_s": 2000.0,
            "peak_memory_mb": 100.0 + seed, "wall_time_s": 36.0, "device_hours": 0.01,
            "ended_at": "2026-11-23T10:30:00+00:00", "error": None, **extra}


def write_run_file(runs: Path, name: str, content) -> Path:
    """runs/name holding `content`: a string as it is, anything else as JSON."""
    path = runs / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


# --- fp32 dot precision in the interpreter -------------------------------------------------

def round_to_tf32(x):
    """float32 array x rounded to TF32 (8 exponent bits, 10 explicit mantissa bits), to nearest
    with ties to even: add 0xFFF plus the kept part's lowest bit, then clear the 13 low bits.
    inf and NaN pass through."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((bits + np.uint32(0xFFF) + ((bits >> 13) & np.uint32(1)))
               & np.uint32(0xFFFFE000)).view(np.float32)
    return np.where(np.isfinite(x), rounded, x).astype(np.float32)


def emulated_dot(a, b, acc, precision):
    """acc + a @ b for float32 a, b as tl.dot computes it on NVIDIA tensor cores:
    - "ieee": in float32 (the FMA units);
    - "tf32": each operand rounded to TF32, products summed in float32;
    - "tf32x3": a = a_hi + a_lo, b = b_hi + b_lo with every part TF32, and
      (a_lo b_hi + a_hi b_lo) + a_hi b_hi (Triton's F32DotTC pass, which also drops a NaN that
      only the small terms make, as when a_lo = inf - inf)."""
    if precision == "ieee":
        return np.matmul(a, b, dtype=np.float32) + acc
    a_hi, b_hi = round_to_tf32(a), round_to_tf32(b)
    if precision == "tf32":
        return np.matmul(a_hi, b_hi, dtype=np.float32) + acc
    a_lo, b_lo = round_to_tf32(a - a_hi), round_to_tf32(b - b_hi)
    small = np.matmul(a_lo, b_hi, dtype=np.float32) + np.matmul(a_hi, b_lo, dtype=np.float32)
    return np.matmul(a_hi, b_hi, dtype=np.float32) + (acc + np.where(np.isnan(small), 0, small))


@contextlib.contextmanager
def honoured_dot_precision():
    """Make Triton's interpreter honour tl.dot's input_precision for float32 operands (it computes
    every dot in float32 otherwise): `emulated_dot` replaces its create_dot while inside."""
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    plain = builder.create_dot

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        precision = input_precision.name.lower()
        floats = a.data.dtype == b.data.dtype == d.data.dtype == np.float32
        if not floats or precision not in ("ieee", "tf32", "tf32x3"):
            return plain(self, a, b, d, input_precision, max_num_imprecise_acc)
        out = emulated_dot(a.data, b.data, d.data, precision)
        return interpreter.TensorHandle(out.astype(np.float32), d.dtype.scalar)

    builder.create_dot = create_dot
    try:
        yield
    finally:
        builder.create_dot = plain


PRECISIONS = ("ieee", "tf32x3", "tf32")
MARGIN = 10
# Relative error of a kernel's output and each gradient against float64 on the same inputs, per
# family and float32 dot precision (or half dtype), measured by tests/test_kernels_precision.py
# with TF32 emulated in the interpreter (L = 70, batch 1 and a padded batch; the largest error of
# the output and the gradients). docs/performance.md has the table.
MEASURED = {
    "attention": {"ieee": 2.2e-7, "tf32x3": 3.2e-7, "tf32": 5.3e-4, "float16": 4.0e-4},
    "additive_causal": {"ieee": 2.5e-7, "tf32x3": 2.6e-7, "tf32": 5.2e-4, "float16": 4.8e-4},
    "additive_noncausal": {"ieee": 2.5e-7, "tf32x3": 2.7e-7, "tf32": 4.6e-4, "float16": 4.1e-4},
}


def one_digit_up(x):
    """x rounded up to one significant digit: 2.2e-6 -> 3e-6."""
    unit = 10.0 ** math.floor(math.log10(x))
    return math.ceil(x / unit - 1e-9) * unit


# MARGIN times the measured error, rounded up. bfloat16 cannot be measured there (its loads are
# wrong in the interpreter): its bound is the GPU tests' earlier one.
TOLERANCES = {family: {**{key: one_digit_up(MARGIN * err) for key, err in errors.items()},
                       "bfloat16": 2e-2}
              for family, errors in MEASURED.items()}


def tolerance(family, dtype=torch.float32):
    """TOLERANCES for a family's kernel on inputs in dtype; float32 at the dot precision the
    kernel chooses now (torch's TF32 setting; IEEE on ROCm), as a GPU run would."""
    if dtype != torch.float32:
        return TOLERANCES[family][str(dtype).removeprefix("torch.")]
    if family == "attention":
        from lra.kernels.dispatch import fp32_dot_precision as choose
    else:
        from lra.kernels.additive_recurrence.triton_common import dot_precision

        def choose():
            return dot_precision(torch.float32)
    return TOLERANCES[family][choose()]
