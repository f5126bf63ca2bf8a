"""What every `lra bench` command shares: task shapes, timing, device naming and the JSON files.

    seconds, times, peak_mb = time_steps(step, repeats=20, cuda=True, warmup=2)
    path = write_record({"kind": "kernels", "device": device_name("cuda"), **provenance(),
                         "rows": rows}, "benchmarks/results")

Timing: `warmup` untimed calls, then about `repeats` timed ones (fewer when the last warm-up call
shows they would take more than `budget` seconds), their median reported. On CUDA the timed calls
are `triton.testing.do_bench`'s (CUDA events, the L2 cache flushed before each call); on a CPU one
`time.perf_counter` loop. A record goes to `<out>/<kind>-<device>-<YYYYmmdd-HHMMSS>.json`, written
atomically (`lra.results.write_json_atomic`).

Nothing heavy is imported at import time: the CLI reads KERNEL_CASES when it builds its parser.
"""
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from lra.errors import UserError
from lra.results import git_state, write_json_atomic

TASKS = {  # LRA task: (length, image side or None, padded batches, documents per example)
    "listops": (2000, None, True, 1),
    "text": (4096, None, True, 1),
    "retrieval": (4000, None, True, 2),
    "image": (1024, 32, False, 1),
    "pathfinder": (1024, 32, False, 1),
    "pathx": (16384, 128, False, 1),
}
KERNEL_CASES = ("attention", "selective_scan", "additive_causal", "additive_noncausal",
                "vandermonde", "cauchy", "s4d", "s4", "mamba")  # lra.bench.kernels.CASES' keys
CPU_SCALE = 1 / 16  # default --scale of `bench kernels` and `bench train` without a GPU
CPU_LAYERS = 1  # default --n-layers of `bench train` without a GPU
PEAKS = {"H200": (4.8e12, 989e12), "H100 SXM": (3.35e12, 989e12)}  # HBM bytes/s, bf16 FLOP/s


@dataclass
class Shape:
    """One task's shape: batch rows (documents), length, key padding, device, the low-precision
    dtype of the kernels and the recipe's model options."""

    task: str
    batch: int
    length: int
    padded: bool
    device: str
    low: object  # torch dtype: bf16 on CUDA, float32 on a CPU (bf16 is broken in the interpreter)
    model: dict = None  # the recipe's model options (widths), where a case follows one

    def lengths(self):
        """Real lengths per row (B,), uniform in [L/2, L] and seeded, or None for a dense task."""
        import torch

        if not self.padded:
            return None
        g = torch.Generator().manual_seed(0)
        n = torch.randint(self.length // 2, self.length + 1, (self.batch,), generator=g)
        return n.to(self.device)

    def mask(self):
        import torch

        n = self.lengths()
        if n is None:
            return None
        return torch.arange(self.length, device=self.device) < n[:, None]  # (B, L)


def scaled_length(task, length, scale):
    """`length` of `task` times `scale`; an image's side times sqrt(scale), so it stays square."""
    side = TASKS[task][1]
    if side:
        side = max(2, round(math.isqrt(length) * math.sqrt(scale)))
        return side * side
    return max(8, round(length * scale))


def device_peaks(name):
    """Peak HBM bandwidth and dense bf16 FLOP/s of a GPU by its name; None for any other."""
    sxm = "H100" in name and ("SXM" in name or "HBM3" in name)
    key = "H200" if "H200" in name else "H100 SXM" if sxm else None
    if key is None:
        return None
    bandwidth, flops = PEAKS[key]
    return {"device": key, "hbm_bytes_per_s": bandwidth, "bf16_flop_per_s": flops}


def device_name(device="cpu"):
    """What the record and its file name call the device: the GPU's name, or cpu-<machine>."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(device)
    return f"cpu-{platform.machine()}"


def resolve_device(device):
    """`--device` checked, or cuda when one is visible, else cpu."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device} but no CUDA device is visible (torch "
                        f"{torch.__version__}); leave --device out to bench on the CPU.")
    if not device.startswith(("cuda", "cpu")):
        raise UserError(f"--device {device!r} is not known; use cpu or cuda[:N].")
    return device


def prepare_device(device, interpret, threads):
    """The device's name and peaks (None off a known GPU); on a CPU, `threads` threads and
    Triton's interpreter switched on if asked (before Triton is imported)."""
    import torch

    if device.startswith("cuda"):
        name = device_name(device)
        return name, device_peaks(name)
    if interpret:
        os.environ["TRITON_INTERPRET"] = "1"
    torch.set_num_threads(threads)
    return device_name(device), None


def _wall_seconds(step, cuda):
    import torch

    begin = time.perf_counter()
    step()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - begin


def time_steps(step, repeats, cuda, warmup, budget=10.0):
    """Time `step()` after `warmup` (>= 1) calls: (median seconds, every time taken, peak MB).

    The peak is torch.cuda.max_memory_allocated over the warm-up calls (read before do_bench,
    whose L2-flush buffer would count otherwise); None on a CPU. The timed calls: `repeats`, fewer
    when the last warm-up call shows they would take more than `budget` seconds (None: no limit);
    do_bench sizes its own count from that time, so on CUDA it is about `repeats`.
    """
    import torch

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    last = 0.0
    for _ in range(warmup):
        last = _wall_seconds(step, cuda)
    count = repeats if budget is None else max(1, min(repeats, int(budget / max(last, 1e-9))))
    if not cuda:
        times = [_wall_seconds(step, cuda) for _ in range(count)]
        return statistics.median(times), times, None
    from triton.testing import do_bench

    peak = torch.cuda.max_memory_allocated() / 2**20
    times = [ms / 1000 for ms in do_bench(step, warmup=0, rep=1000 * count * last,
                                          return_mode="all")]
    return statistics.median(times), times, peak


def error_text(err):
    """An exception in one line: its type and first line, at most 300 characters."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def provenance():
    """The git state and the time a record is made (its file name carries that time too)."""
    return {"git": git_state(), "created": datetime.now().isoformat(timespec="seconds")}


def write_record(record, out_dir):
    """Write `record` (with kind, device and created) atomically under `out_dir`; the path."""
    slug = record["device"].replace(" ", "_").replace("/", "_")
    stamp = datetime.fromisoformat(record["created"]).strftime("%Y%m%d-%H%M%S")
    out = Path(out_dir) / f"{record['kind']}-{slug}-{stamp}.json"
    write_json_atomic(out, record)
    return out


def minimal_s4d(d_model, d_state):
    """The tutorial S4D layer of the S4 authors, as written in the paper, re-implemented: the
    kernel materialised as (H, N/2, L) by an einsum, then an FFT convolution. An anchor of
    `lra bench layers` and of the s4d case of `lra bench kernels`."""
    import torch
    from torch import nn

    class MinimalS4D(nn.Module):
        def __init__(self):
            super().__init__()
            h, n = d_model, d_state // 2
            self.log_dt = nn.Parameter(torch.rand(h) * 4.6 - 6.9)
            self.C = nn.Parameter(torch.randn(h, n, 2) * 0.5 ** 0.5)
            self.log_A_real = nn.Parameter(torch.log(0.5 * torch.ones(h, n)))
            self.A_imag = nn.Parameter(torch.pi * torch.arange(n).float().repeat(h, 1))
            self.D = nn.Parameter(torch.randn(h))
            self.out = nn.Sequential(nn.Conv1d(h, 2 * h, 1), nn.GLU(dim=-2))

        def forward(self, u):  # (B, H, L)
            L = u.shape[-1]
            dt = self.log_dt.exp()[:, None]  # (H, 1)
            dtA = (-torch.exp(self.log_A_real) + 1j * self.A_imag) * dt  # (H, N/2)
            C = torch.view_as_complex(self.C) * (torch.exp(dtA) - 1.0) / (dtA / dt)
            steps = torch.arange(L, device=u.device)
            powers = torch.exp(dtA.unsqueeze(-1) * steps)  # (H, N/2, L)
            K = 2 * torch.einsum("hn,hnl->hl", C, powers).real  # (H, L)
            spectrum = torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(K, n=2 * L)
            y = torch.fft.irfft(spectrum, n=2 * L)[..., :L]
            return self.out(nn.functional.gelu(y + u * self.D[:, None]))

    return MinimalS4D()


# every recipe task's sequence length and documents per example (two for retrieval's pairs)
RECIPE_LENGTHS = {"listops": (2000, 1), "text": (4096, 1), "retrieval": (4000, 2),
                  "image": (1024, 1), "pathfinder": (1024, 1), "pathx": (16384, 1),
                  "sc10": (16000, 1), "sc35": (16000, 1), "scifar": (1024, 1)}


@dataclass
class Recipe:
    """One experiment's training shape: conf/experiment/<model>/<task>.yaml over the model's and
    the task's defaults. rows = batch x documents per example; model: the backbone's options;
    precision: the trainer's (the gpu trainer's unless the recipe sets its own)."""

    name: str
    task: str
    rows: int
    length: int
    model: dict
    precision: str = "bf16-mixed"

    def kernel_dtype(self):
        """The dtype the recipe's kernels see: bf16 under bf16-mixed, float32 under 32-true."""
        import torch

        return torch.bfloat16 if self.precision.startswith("bf16") else torch.float32

    def attention_head_dim(self):
        return attention_head_dim(self.model)

    def attention_dropout(self):
        rate = self.model.get("attention_dropout")
        return self.model["dropout"] if rate is None else rate


def attention_head_dim(model):
    """q, k, v width per head of a Transformer's options: qkv_dim (d_model when null) over
    n_heads."""
    return (model.get("qkv_dim") or model["d_model"]) // model["n_heads"]


def recipes(model):
    """The recipes of `model` (conf/experiment/<model>/*.yaml), in file-name order."""
    from omegaconf import OmegaConf

    import lra.conf

    root = Path(lra.conf.__file__).parent
    out = []
    for path in sorted((root / "experiment" / model).glob("*.yaml")):
        task = path.stem
        spec = OmegaConf.load(path)
        options = OmegaConf.merge(OmegaConf.load(root / "model" / f"{model}.yaml"),
                                  spec.get("model", {}))
        task_conf = OmegaConf.merge(OmegaConf.load(root / "task" / f"{task}.yaml"),
                                    spec.get("task", {}))
        length, docs = RECIPE_LENGTHS[task]
        if "resolution" in task_conf:
            length = task_conf.resolution ** 2
        length = min(length, task_conf.get("max_len", length))
        trainer = OmegaConf.merge(OmegaConf.load(root / "trainer" / "gpu.yaml"),
                                  spec.get("trainer", {}))
        out.append(Recipe(f"{model}/{task}", task, task_conf.batch_size * docs, length,
                          OmegaConf.to_container(options), str(trainer.precision)))
    return out
