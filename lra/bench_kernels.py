"""`lra bench kernels`: each kernel at the LRA task shapes (`lra bench train`, in lra.bench_train, shares this).

    lra bench kernels --device cuda                          # every case at every task shape, with the anchors
    lra bench kernels --cases attention mamba --tasks text   # a subset
    lra bench kernels                                        # no GPU: the references at 1/16 of each shape
    lra bench kernels --interpret --cases attention --scale 0.01   # Triton too, in its CPU interpreter
    lra bench train --device cuda                            # one optimizer step, each model x task, S4 LRA configs
    lra bench train --models s4d mamba --tasks listops --d-model 64 --n-layers 1

Task shapes: ListOps 2000, Text 4096, Retrieval 2 x 4000 (two documents per example), Image 1024 (32 x 32),
Pathfinder 1024 (32 x 32), Path-X 16384 (128 x 128); ListOps, Text and Retrieval batches are padded, each
row's real length drawn uniformly from [L/2, L]. A kernel case holds a fixed number of tokens per call,
32K for attention (the anchors' 32 x 1K, 8 x 4K, 2 x 16K) and 64K for the others (B16 L4096, B64 L1024,
B4 L16384); the training bench takes the batch of conf/experiment/<model>/<task>.yaml. `--scale s`
multiplies batch and length by s (an image's side by sqrt s) and keeps every width.

Candidates, timed in one process (forward + backward, median of --repeats after a warm-up):
    triton      our dispatch with LRA_KERNELS=triton (CUDA; on a CPU only with --interpret)
    default     blocks and training: LRA_KERNELS unset, as `lra train` runs (Triton where it exists and runs)
    reference   LRA_KERNELS=reference: the PyTorch references
    anchors     found at run time: sdpa-<backend> (torch.nn.attention.sdpa_kernel), flex (FlexAttention with a
                key-padding block mask, CUDA; flex-qk: padding queries masked too, as ours skip them), mambapy,
                fla (fla-core's chunk_lightnet, CUDA), s4d-minimal
A missing anchor is reported as "not found", one that cannot run here as "skipped", never as an error.

Reported per candidate: ms; tokens/s = batch x length / time (padded positions included); peak memory (CUDA:
torch.cuda.max_memory_allocated over the warm-up and timed steps; not measured on a CPU, where a process's RSS
high-water mark cannot be split between cases); achieved throughput and, on a GPU of known peaks, the fraction
of the device's limit:
    memory-bound:  bytes / time / peak HBM bandwidth,
                   bytes = 3 x (inputs that get a gradient, parameters included) + 2 x (other inputs) + 2 x outputs
                   (each input read forward and backward, its gradient written; each output written, its gradient read)
    attention:     FLOPs / time / peak dense bf16 FLOP/s,  FLOPs = 2.5 x 4 B h L^2 d x mean((n / L)^2) (x 1/2 if causal)
Results: benchmarks/results/{kernels,train}-<device>-<stamp>.json and a printed table; docs/performance.md.
"""
import contextlib
import json
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Callable

from lra.errors import UserError
from lra.results import git_state

# torch, the kernels and Hydra are imported inside the functions: the CLI reads CASES when it builds its parser.

TASKS = {  # LRA task: (length, image side or None, padded batches, documents per example)
    "listops": (2000, None, True, 1),
    "text": (4096, None, True, 1),
    "retrieval": (4000, None, True, 2),
    "image": (1024, 32, False, 1),
    "pathfinder": (1024, 32, False, 1),
    "pathx": (16384, 128, False, 1),
}
PEAKS = {"H200": (4.8e12, 989e12), "H100 SXM": (3.35e12, 989e12)}  # HBM bytes/s, dense bf16 FLOP/s
CPU_SCALE = 1 / 16  # default --scale without a GPU
CPU_LAYERS = 1  # default --n-layers of `bench train` without a GPU
BYTES = ("3 x (inputs that get a gradient, parameters included) + 2 x (other inputs) + 2 x outputs, "
         "in bytes: each input read forward and backward and its gradient written, each output written "
         "and its gradient read")
MEMORY = "torch.cuda.max_memory_allocated over the warm-up and timed steps, inputs included"
FLOPS = ("2.5 x 4 B h L^2 d x mean((n / L)^2) over rows of length n, x 1/2 if causal (forward 4 B h L^2 d, "
         "backward 1.5x that; real queries x real keys)")


def device_peaks(name):
    """Peak HBM bandwidth and dense bf16 FLOP/s of a GPU by its name; None for any other device."""
    key = "H200" if "H200" in name else "H100 SXM" if "H100" in name and ("SXM" in name or "HBM3" in name) else None
    if key is None:
        return None
    bandwidth, flops = PEAKS[key]
    return {"device": key, "hbm_bytes_per_s": bandwidth, "bf16_flop_per_s": flops}


@dataclass
class Shape:
    """One task's shape for a case: batch rows (documents), length, key padding, device and low-precision dtype."""

    task: str
    batch: int
    length: int
    padded: bool
    device: str
    low: object  # torch dtype: bf16 on CUDA, float32 on a CPU (bf16 is broken in Triton's interpreter)

    def lengths(self):
        """Real lengths per row (B,), uniform in [L/2, L] and seeded, or None for a dense task."""
        import torch

        if not self.padded:
            return None
        g = torch.Generator().manual_seed(0)
        return torch.randint(self.length // 2, self.length + 1, (self.batch,), generator=g).to(self.device)

    def mask(self):
        import torch

        n = self.lengths()
        return None if n is None else torch.arange(self.length, device=self.device) < n[:, None]  # (B, L)


def scaled_length(task, length, scale):
    side = TASKS[task][1]
    if side:  # an image stays square
        side = max(2, round(math.isqrt(length) * math.sqrt(scale)))
        return side * side
    return max(8, round(length * scale))


def task_shape(task, budget, scale, device):
    """The batch (rows: documents) and length of `task` for a case holding `budget` tokens per call."""
    import torch

    length, _, padded, docs = TASKS[task]
    examples = max(1, int(budget * scale / (docs * length) + 1e-6))  # whole examples within the budget
    low = torch.bfloat16 if device.startswith("cuda") else torch.float32
    return Shape(task, examples * docs, scaled_length(task, length, scale), padded, device, low)


@dataclass
class Candidate:
    kind: str  # ours | reference | anchor
    run: Callable = None  # () -> output; None when it cannot run here
    env: str = None  # LRA_KERNELS while it runs; None: unset
    status: str = "ok"  # ok, or why it has no run: "not found", "skipped"
    reason: str = ""
    leaves: list = field(default_factory=list)  # an anchor's own parameters and input copies (gradients reset)


@dataclass
class Setup:
    """A case at one shape: the tensors it differentiates, our module if a layer, the candidates."""

    inputs: list
    tokens: int
    candidates: dict
    model: object = None  # our module (its parameters count as inputs)
    flops: float = None


def _triton_candidate(run, device, interpret):
    if device.startswith("cuda") or interpret:
        return Candidate("ours", run, "triton")
    return Candidate("ours", status="skipped", reason="on a CPU Triton runs only in its interpreter: pass --interpret")


def _optional(module, hint):
    """An optional anchor's package: (the module, None), or (None, a "not found" candidate saying why)."""
    import importlib

    try:
        return importlib.import_module(module), None
    except Exception as err:  # not installed, or installed but unable to load here
        reason = hint if isinstance(err, ImportError) else f"{hint}; importing {module} failed: {_error(err)}"
        return None, Candidate("anchor", status="not found", reason=reason)


def _leaf(t):
    return t.detach().requires_grad_()


def attention_case(shape, interpret):
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from lra.kernels.attention import attention, sdpa_attention

    B, L, heads, d = shape.batch, shape.length, 8, 64
    q, k, v = (torch.randn(B, heads, L, d, device=shape.device, dtype=shape.low, requires_grad=True) for _ in range(3))
    n = shape.lengths()
    ours = partial(attention, q, k, v, n)
    candidates = {"triton": _triton_candidate(ours, shape.device, interpret),
                  "reference": Candidate("reference", ours, "reference")}

    def sdpa(backend):
        with sdpa_kernel(backend):
            return sdpa_attention(q, k, v, n)

    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION),
                          ("cudnn", SDPBackend.CUDNN_ATTENTION), ("math", SDPBackend.MATH)):
        candidates[f"sdpa-{name}"] = Candidate("anchor", partial(sdpa, backend))
    candidates["flex"] = _flex_candidate(q, k, v, n, shape)
    candidates["flex-qk"] = _flex_candidate(q, k, v, n, shape, queries=True)
    real = 1.0 if n is None else (n.float() / L).square().mean().item()  # real queries x real keys
    return Setup([q, k, v], B * L, candidates, flops=2.5 * 4 * B * heads * L * L * d * real)


def _flex_candidate(q, k, v, n, shape, queries=False):
    """FlexAttention with a block mask of the padding keys (queries=True: and of the padding queries,
    which our kernels skip too; its output there is then undefined, ours zero)."""
    import torch

    flex, missing = _optional("torch.nn.attention.flex_attention", "torch.nn.attention.flex_attention (torch >= 2.5)")
    if missing:
        return missing
    if not shape.device.startswith("cuda"):
        return Candidate("anchor", status="skipped", reason="FlexAttention is timed on CUDA only")
    block_mask = None
    if n is not None:
        def keep(b, h, q_idx, kv_idx):
            return (kv_idx < n[b]) & (q_idx < n[b]) if queries else kv_idx < n[b]
        block_mask = flex.create_block_mask(keep, shape.batch, None, shape.length, shape.length, device=shape.device)
    compiled = torch.compile(flex.flex_attention)
    return Candidate("anchor", lambda: compiled(q, k, v, block_mask=block_mask))


def selective_scan_case(shape, interpret):
    """Mamba's scan at d_model 256, expand 2 (D = 512 channels), state 16, float32."""
    import torch
    import torch.nn.functional as F

    from lra.kernels.selective_scan import selective_scan

    B, L, D, N, dev = shape.batch, shape.length, 512, 16, shape.device
    x = torch.randn(B, D, L, device=dev, requires_grad=True)
    dt = _leaf(F.softplus(torch.randn(B, D, L, device=dev) - 4))
    A = _leaf(-torch.arange(1, N + 1, device=dev, dtype=torch.float32).repeat(D, 1))
    Bm, C = (torch.randn(B, N, L, device=dev, requires_grad=True) for _ in range(2))
    Dp = torch.ones(D, device=dev, requires_grad=True)
    ours = partial(selective_scan, x, dt, A, Bm, C, Dp)
    return Setup([x, dt, A, Bm, C, Dp], B * L, {"triton": _triton_candidate(ours, dev, interpret),
                                                 "reference": Candidate("reference", ours, "reference")})


def _additive_case(shape, interpret, causal):
    """LightNet's recurrence at 4 heads of 64 (d_model 256), bf16 on CUDA as fla's anchor runs."""
    import torch

    from lra.kernels.additive_recurrence import additive_recurrence

    B, L, heads, d, dev = shape.batch, shape.length, 4, 64, shape.device
    q, k, v = (torch.randn(B, heads, L, d, device=dev, dtype=shape.low, requires_grad=True) for _ in range(3))
    ours = partial(additive_recurrence, q, k, v, shape.mask(), causal)
    candidates = {"triton": _triton_candidate(ours, dev, interpret),
                  "reference": Candidate("reference", ours, "reference")}
    if causal:
        candidates["fla"] = _fla_candidate(q, k, v, shape)
    return Setup([q, k, v], B * L, candidates)


def _fla_candidate(q, k, v, shape):
    """fla-core's chunk_lightnet (causal only, no padding mask: it runs every position) on (B, T, H, K) copies."""
    import inspect

    lightnet, missing = _optional("fla.ops.lightnet", "pip install fla-core (chunk_lightnet)")
    if missing:
        return missing
    if not shape.device.startswith("cuda"):
        return Candidate("anchor", status="skipped", reason="fla-core's kernels need CUDA")
    qt, kt, vt = (_leaf(t.transpose(1, 2).contiguous()) for t in (q, k, v))  # its layout: (B, T, H, K)
    layout = {"head_first": False} if "head_first" in inspect.signature(lightnet.chunk_lightnet).parameters else {}
    return Candidate("anchor", lambda: lightnet.chunk_lightnet(qt, kt, vt, scale=1.0, **layout)[0], leaves=[qt, kt, vt])


def vandermonde_case(shape, interpret):
    """The S4D kernel of a bidirectional layer: H 256, N 64 (32 complex modes), one (2, H, L) kernel per call."""
    import torch

    from lra.kernels.vandermonde import vandermonde

    H, N2, dev = 256, 32, shape.device
    dt = torch.exp(torch.rand(H, 1, device=dev) * math.log(100) + math.log(1e-3))  # log-uniform in [1e-3, 1e-1]
    dtA = _leaf(dt * torch.complex(torch.full((H, N2), -0.5, device=dev), math.pi * torch.arange(N2, device=dev)
                                   .float().expand(H, N2)))
    C = torch.randn(2, H, N2, dtype=torch.complex64, device=dev, requires_grad=True)
    ours = partial(vandermonde, C, dtA, shape.length)
    return Setup([C, dtA], shape.length, {"triton": _triton_candidate(ours, dev, interpret),
                                          "reference": Candidate("reference", ours, "reference")})


def cauchy_case(shape, interpret):
    """The S4 Cauchy products of a bidirectional layer: 6 rows, H 256, N 64 (32 modes), (L | 1) // 2 + 1 points."""
    import torch

    from lra.kernels.cauchy import cauchy

    H, N2, dev = 256, 32, shape.device
    Lo = shape.length | 1
    z = 1j * torch.tan(math.pi / Lo * torch.arange(Lo // 2 + 1, device=dev, dtype=torch.float32))  # (K,)
    w = _leaf(torch.complex(torch.full((H, N2), -0.5, device=dev), torch.randn(H, N2, device=dev) * 10) * 0.01)
    v = torch.randn(6, H, N2, dtype=torch.complex64, device=dev, requires_grad=True)
    ours = partial(cauchy, v, z, w, True)
    return Setup([v, w], shape.length, {"triton": _triton_candidate(ours, dev, interpret),
                                        "reference": Candidate("reference", ours, "reference")})


def _layer_case(name, options, shape, interpret):
    """One residual block of a registered model at d_model 256, float32: ours under each LRA_KERNELS."""
    import torch

    from lra import registry

    model = registry.model(name)(d_model=256, n_layers=1, **options).to(shape.device)
    x = torch.randn(shape.batch, shape.length, 256, device=shape.device, requires_grad=True)
    ours = partial(model, x, shape.mask())
    candidates = {"triton": _triton_candidate(ours, shape.device, interpret),
                  "default": Candidate("ours", ours),
                  "reference": Candidate("reference", ours, "reference")}
    return Setup([x], shape.batch * shape.length, candidates, model=model)


def s4d_case(shape, interpret):
    from lra.bench import _minimal_s4d

    setup = _layer_case("s4d", {"d_state": 64, "bidirectional": True}, shape, interpret)
    minimal = _minimal_s4d(256, 64).to(shape.device)
    x = setup.inputs[0]
    setup.candidates["s4d-minimal"] = Candidate("anchor", lambda: minimal(x.transpose(1, 2)),
                                                leaves=list(minimal.parameters()))
    return setup


def s4_case(shape, interpret):
    return _layer_case("s4", {"d_state": 64, "bidirectional": True}, shape, interpret)


def mamba_case(shape, interpret):
    """Our causal Mamba block (the mambapy layer is causal) against mambapy's, d_model 256, state 16."""
    setup = _layer_case("mamba", {"d_state": 16, "bidirectional": False}, shape, interpret)
    mambapy, missing = _optional("mambapy.mamba", "pip install mambapy")
    if missing:
        setup.candidates["mambapy"] = missing
        return setup
    theirs = mambapy.Mamba(mambapy.MambaConfig(d_model=256, n_layers=1, d_state=16)).to(shape.device)
    x = setup.inputs[0]
    setup.candidates["mambapy"] = Candidate("anchor", lambda: theirs(x)[0], leaves=list(theirs.parameters()))
    return setup


# case: (what it times, tokens per call at full scale, builder, anchor order for the ratio column)
CASES = {
    "attention": ("FlashAttention with key padding, 8 heads x 64, bf16 on a GPU", 32768, attention_case,
                  ("flex", "sdpa-cudnn", "sdpa-flash", "sdpa-efficient", "sdpa-math")),
    "selective_scan": ("Mamba's selective scan, D 512, N 16, fp32", 65536, selective_scan_case, ()),
    "additive_causal": ("LightNet's causal additive recurrence, 4 heads x 64, bf16 on a GPU", 65536,
                        partial(_additive_case, causal=True), ("fla",)),
    "additive_noncausal": ("LightNet's non-causal additive recurrence, 4 heads x 64, bf16 on a GPU", 65536,
                           partial(_additive_case, causal=False), ()),
    "vandermonde": ("S4D Vandermonde kernel, bidirectional, H 256, N 64, fp32", 65536, vandermonde_case, ()),
    "cauchy": ("S4 Cauchy products, bidirectional, H 256, N 64, fp32", 65536, cauchy_case, ()),
    "s4d": ("S4D block, bidirectional, d_model 256, N 64, fp32", 65536, s4d_case, ("s4d-minimal",)),
    "s4": ("S4 block, bidirectional, d_model 256, N 64, fp32", 65536, s4_case, ()),
    "mamba": ("Mamba block, causal, d_model 256, N 16, fp32", 65536, mamba_case, ("mambapy",)),
}
UNBATCHED = ("vandermonde", "cauchy")  # one kernel serves every sequence: batch 1, tokens = L


@contextlib.contextmanager
def kernels_env(value):
    """LRA_KERNELS set to `value` (None: unset) inside the block, restored after."""
    before = os.environ.pop("LRA_KERNELS", None)
    if value is not None:
        os.environ["LRA_KERNELS"] = value
    try:
        yield
    finally:
        os.environ.pop("LRA_KERNELS", None)
        if before is not None:
            os.environ["LRA_KERNELS"] = before


def time_steps(step, repeats, cuda, warmup, budget=10.0):
    """Median seconds of `step()` over the timed calls after `warmup` calls, and every time taken.

    `repeats` timed calls, fewer when the last warm-up call shows they would take more than `budget` seconds.
    """
    import torch

    for _ in range(warmup):
        begin = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        last = time.perf_counter() - begin
    times = []
    for _ in range(max(1, min(repeats, int(budget / max(last, 1e-9))))):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            begin = time.perf_counter()
            step()
            times.append(time.perf_counter() - begin)
    return statistics.median(times), times


def _error(err):
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def measure(candidate, step, repeats, cuda):
    """Time `step` (forward + backward of `candidate`) under its LRA_KERNELS; a record of how it went."""
    import torch

    if candidate.run is None:
        return {"kind": candidate.kind, "status": candidate.status, "reason": candidate.reason}
    record = {"kind": candidate.kind, "lra_kernels": candidate.env or "unset"}
    with kernels_env(candidate.env):
        try:
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            seconds, times = time_steps(step, repeats, cuda, warmup=2)
            record.update(status="ok", ms=1000 * seconds, all_ms=[1000 * t for t in times],
                          peak_memory_mb=torch.cuda.max_memory_allocated() / 2**20 if cuda else None)
        except Exception as err:  # a candidate that cannot run this shape is reported, the others go on
            unavailable = any(text in str(err) for text in ("No available kernel", "No viable backend"))
            record.update(status="unavailable" if unavailable else "failed", error=_error(err))
    if cuda:
        torch.cuda.empty_cache()  # what a failed (say, out of memory) candidate held goes before the next
    return record


def _kernel_step(setup, candidate, sizes):
    """Forward + backward of one candidate with a fixed output gradient; records the output's bytes in sizes."""
    import torch

    leaves = [*setup.inputs, *(setup.model.parameters() if setup.model is not None else ()), *candidate.leaves]
    grad = []

    def step():
        for t in leaves:
            t.grad = None
        out = candidate.run()
        if not grad:
            grad.append(torch.randn_like(out))
            sizes.setdefault("output", out.numel() * out.element_size())
        out.backward(grad[0])

    return step


def case_bytes(setup, output_bytes):
    """The memory-bound traffic formula (BYTES) for a case."""
    tensors = list(setup.inputs) + (list(setup.model.parameters()) if setup.model is not None else [])
    size = sum(t.numel() * t.element_size() * (3 if t.requires_grad else 2) for t in tensors)
    return size + 2 * output_bytes


def add_ratios(row, anchors):
    """speedup_vs[other] = other's ms / this one's ms for every timed candidate; the row's anchor is the first
    of `anchors` that ran (else the reference), and x_anchor, x_reference the ratios to it and to the reference."""
    timed = {name: c["ms"] for name, c in row["candidates"].items() if c["status"] == "ok"}
    row["anchor"] = next((a for a in (*anchors, "reference") if a in timed), None)
    for name, c in row["candidates"].items():
        if name in timed:
            c["speedup_vs"] = {other: ms / c["ms"] for other, ms in timed.items() if other != name}
            c["x_reference"] = c["speedup_vs"].get("reference")
            c["x_anchor"] = c["speedup_vs"].get(row["anchor"])


def _throughput(c, tokens, work=("bytes", None), peaks=None):
    """tokens/s, achieved GB/s or TFLOP/s, and the fraction of the device's limit, for a timed candidate."""
    if c["status"] != "ok":
        return
    seconds = c["ms"] / 1000
    c["tokens_per_s"] = tokens / seconds
    kind, amount = work
    if amount is None:
        return
    if kind == "flops":
        c["tflop_per_s"] = amount / seconds / 1e12
        c["fraction_of_peak"] = amount / seconds / peaks["bf16_flop_per_s"] if peaks else None
    else:
        c["gb_per_s"] = amount / seconds / 1e9
        c["fraction_of_peak"] = amount / seconds / peaks["hbm_bytes_per_s"] if peaks else None


def bench_case(name, task, scale, device, repeats, interpret, peaks):
    """One case at one task's shape: every candidate timed; the row of the JSON."""
    import torch

    what, budget, build, anchors = CASES[name]
    shape = task_shape(task, budget, scale, device)
    if name in UNBATCHED:
        shape.batch = 1
    torch.manual_seed(0)
    setup = build(shape, interpret)
    sizes, candidates = {}, {}
    cuda = device.startswith("cuda")
    for label, candidate in setup.candidates.items():
        candidates[label] = measure(candidate, _kernel_step(setup, candidate, sizes), repeats, cuda)
    nbytes = case_bytes(setup, sizes["output"]) if "output" in sizes else None
    work = ("flops", setup.flops) if setup.flops is not None else ("bytes", nbytes)
    for c in candidates.values():
        _throughput(c, setup.tokens, work, peaks)
    row = {"case": name, "what": what, "task": task,
           "shape": {"batch": shape.batch, "length": shape.length, "padded": shape.padded,
                     "dtype": str(setup.inputs[0].dtype).removeprefix("torch.")},
           "tokens": setup.tokens, "bytes": nbytes, "flops": setup.flops, "candidates": candidates}
    add_ratios(row, anchors)
    return row


def _device(device):
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device} but no CUDA device is visible (torch {torch.__version__}); "
                        "leave --device out to bench on the CPU.")
    if not device.startswith(("cuda", "cpu")):
        raise UserError(f"--device {device!r} is not known; use cpu or cuda[:N].")
    return device


def _prepare(device, interpret, threads):
    """The device's name and peaks (None off a known GPU); Triton's interpreter switched on if asked (before import)."""
    import torch

    cuda = device.startswith("cuda")
    if interpret and not cuda:
        os.environ["TRITON_INTERPRET"] = "1"
    if not cuda:
        torch.set_num_threads(threads)
    name = torch.cuda.get_device_name(device) if cuda else f"cpu-{platform.machine()}"
    return name, device_peaks(name) if cuda else None


def _record(kind, name, cuda, peaks, options, rows):
    import torch

    return {"kind": kind, "device": name, "torch": torch.__version__, "git": git_state(),
            "created": datetime.now().isoformat(timespec="seconds"), "options": options,
            "peaks": peaks, "peak_memory": (MEMORY if cuda else "not measured on a CPU"),
            "formulas": {"tokens_per_s": "batch x length (all documents, padded positions included) / time",
                         "bytes": BYTES, "flops": FLOPS,
                         "fraction_of_peak": "bytes / time / peak HBM bandwidth; attention: FLOPs / time / "
                                             "peak dense bf16 FLOP/s; null where the device's peaks are unknown",
                         "speedup_vs": "the other candidate's ms / this candidate's ms (> 1: this one is faster)"},
            "rows": rows}


def _write(record, out_dir):
    slug = record["device"].replace(" ", "_").replace("/", "_")
    out = Path(out_dir) / f"{record['kind']}-{slug}-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    return out


def _cell(value, spec, width):
    return format(" " + ("-" if value is None else format(value, spec)), f">{width}")


def print_table(record):
    """One line per candidate: ms, tokens/s, peak MB, achieved rate and % of the device's limit, and the ratios
    to the reference and to the case's anchor (> 1: faster)."""
    print(f"{'case':<19}{'task':<11}{'B x L':>11}  {'candidate':<15}{'ms':>10}{'tokens/s':>11}{'peak MB':>9}"
          f"{'achieved':>16}{'% peak':>8}{'x ref':>7}{'x anchor':>9}  anchor")
    for row in record["rows"]:
        docs = "2x" if row["shape"].get("documents") == 2 else ""
        shape = f"{row['shape']['batch']}x{docs}{row['shape']['length']}"
        for label, c in row["candidates"].items():
            head = f"{row['case']:<19}{row['task']:<11}{shape:>11}  {label:<15}"
            if c["status"] != "ok":
                print(f"{head}{c['status']}: {c.get('reason') or c.get('error')}")
                continue
            fraction = c.get("fraction_of_peak")
            achieved = (f"{c['tflop_per_s']:.3g} TFLOP/s" if "tflop_per_s" in c
                        else f"{c['gb_per_s']:.3g} GB/s" if "gb_per_s" in c else None)
            cells = (_cell(c["ms"], ".2f", 10), _cell(c["tokens_per_s"], ".3g", 11),
                     _cell(c["peak_memory_mb"], ".0f", 9), _cell(achieved, "", 16),
                     _cell(fraction and 100 * fraction, ".1f", 8), _cell(c["x_reference"], ".2f", 7),
                     _cell(c["x_anchor"], ".2f", 9))
            print(f"{head}{''.join(cells)}  {row['anchor'] or ''}")


def _anchor_summary(rows):
    """Each anchor's state over the whole run: found (and timed), not found, or skipped here."""
    states = {}
    for row in rows:
        for label, c in row["candidates"].items():
            if c["kind"] == "anchor":
                state = "found" if c["status"] in ("ok", "failed", "unavailable") else c["status"]
                states[label] = "found" if "found" in (state, states.get(label)) else state
    return states


def bench_kernels(cases=None, tasks=None, scale=None, device=None, repeats=None, interpret=False, threads=1,
                  out_dir="benchmarks/results"):
    """Time every case at every task shape against its anchors; print the table, write the JSON; return the record."""
    device = _device(device)
    cuda = device.startswith("cuda")
    scale = scale or (1.0 if cuda else CPU_SCALE)
    repeats = repeats or (20 if cuda else 3)
    name, peaks = _prepare(device, interpret, threads)
    if not cuda:
        print(f"lra bench kernels: no GPU, timing on the CPU ({threads} thread(s)) at --scale {scale:g} of each "
              f"shape{'; Triton in its interpreter' if interpret else ''}")
    rows = [bench_case(case, task, scale, device, repeats, interpret, peaks)
            for case in (cases or CASES) for task in (tasks or TASKS)]
    options = {"scale": scale, "repeats": repeats, "interpret": interpret, "threads": threads}
    record = _record("kernels", name, cuda, peaks, options, rows)
    record["anchors"] = _anchor_summary(rows)
    out = _write(record, out_dir)
    print_table(record)
    print("anchors: " + ", ".join(f"{a} {state}" for a, state in record["anchors"].items()))
    print(f"wrote {out}")
    return record
