"""`lra bench kernels`: each kernel at the LRA task shapes, against the references and anchors.

    lra bench kernels --device cuda                         # every case at every task shape
    lra bench kernels --cases attention mamba --tasks text  # a subset
    lra bench kernels                                       # no GPU: references at 1/16 of a shape
    lra bench kernels --interpret --cases attention --scale 0.01   # Triton in its CPU interpreter

Task shapes (lra.bench.core.TASKS): ListOps 2000, Text 4096, Retrieval 2 x 4000 (two documents
per example), Image 1024 (32 x 32), Pathfinder 1024 (32 x 32), Path-X 16384 (128 x 128); ListOps,
Text and Retrieval batches are padded, each row's real length drawn uniformly from [L/2, L]. Each
case runs at the recipe's shape for its model and task (conf/experiment/<model>/<task>.yaml,
lra.bench.core.recipes): its batch, its widths (attention heads and head width; Mamba's 2 d_model
channels and state; LightNet's heads with 2w keys and the LRPE gain; S4D's and S4's channels and
modes) and, on a GPU, the dtypes bf16-mixed training gives the kernels (bf16 q, k, v and gains; bf16
x, B, C with float32 dt, A, D; the S4 kernels in complex64; the layer cases under bf16 autocast).
`--scale s` multiplies batch and length by s (an image's side by sqrt s) and keeps every width.

Candidates, timed in one process (forward + backward, median of --repeats after a warm-up):
    triton      our dispatch with LRA_KERNELS=triton (CUDA; on a CPU only with --interpret)
    default     blocks: LRA_KERNELS unset, as `lra train` runs (Triton where it exists and runs)
    reference   LRA_KERNELS=reference: the PyTorch references
    anchors     found at run time: sdpa-<backend> (torch.nn.attention.sdpa_kernel), flex
                (FlexAttention with a key-padding block mask, CUDA; flex-qk: padding queries
                masked too, as ours skip them), mambapy, fla (fla-core's chunk_lightnet, CUDA),
                s4d-minimal
A missing anchor is reported as "not found", one that cannot run here as "skipped", never as an
error.

Reported per candidate: ms; tokens/s = batch x length / time (padded positions included); peak
memory (CUDA: torch.cuda.max_memory_allocated over the warm-up steps; not measured on a CPU,
where a process's RSS high-water mark cannot be split between cases); achieved throughput and,
on a GPU of known peaks, the fraction of the device's limit:
    memory-bound:  bytes / time / peak HBM bandwidth, bytes = 3 x (inputs that get a gradient,
                   parameters included) + 2 x (other inputs) + 2 x outputs (each input read
                   forward and backward, its gradient written; each output written, its
                   gradient read)
    attention:     FLOPs / time / peak dense bf16 FLOP/s,
                   FLOPs = 2.5 x 4 B h L^2 d x mean((n / L)^2) (x 1/2 if causal)
Results: benchmarks/results/kernels-<device>-<stamp>.json and a printed table;
docs/performance.md.
"""
import importlib
import inspect
import math
from dataclasses import dataclass
from functools import partial

from lra.bench.candidates import (
    Candidate,
    add_ratios,
    add_throughput,
    comparison_record,
    measure,
    print_table,
    triton_candidate,
)
from lra.bench.core import (
    CPU_SCALE,
    TASKS,
    Shape,
    attention_head_dim,
    error_text,
    minimal_s4d,
    prepare_device,
    recipes,
    resolve_device,
    scaled_length,
    write_record,
)

# torch and the kernels are imported inside the functions: Triton's interpreter is chosen
# (prepare_device) before Triton is imported.


@dataclass
class Setup:
    """A case at one shape: the tensors it differentiates, our module if a layer, the candidates."""

    inputs: list
    tokens: int
    candidates: dict
    model: object = None  # our module (its parameters count as inputs)
    flops: float = None


def task_shape(model, task, scale, device):
    """The recipe `model`/`task`'s batch (rows: documents), length and model options, scaled."""
    import torch

    length, _, padded, _ = TASKS[task]
    [recipe] = [r for r in recipes(model) if r.task == task]
    low = recipe.kernel_dtype() if device.startswith("cuda") else torch.float32
    return Shape(task, max(1, round(recipe.rows * scale)), scaled_length(task, length, scale),
                 padded, device, low, recipe.model)


def _optional(module, hint):
    """An optional anchor's package: (the module, None), or (None, a "not found" candidate)."""
    try:
        return importlib.import_module(module), None
    except Exception as err:  # not installed, or installed but unable to load here
        reason = (hint if isinstance(err, ImportError)
                  else f"{hint}; importing {module} failed: {error_text(err)}")
        return None, Candidate("anchor", status="not found", reason=reason)


def _leaf(t):
    return t.detach().requires_grad_()


def _ours(run, device, interpret):
    """Our dispatch forced to Triton and to the references."""
    return {"triton": triton_candidate(run, device, interpret),
            "reference": Candidate("reference", run, "reference")}


def attention_case(shape, interpret):
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from lra.kernels.attention import attention, attention_sdpa

    B, L, heads = shape.batch, shape.length, shape.model["n_heads"]
    d = attention_head_dim(shape.model)
    q, k, v = (torch.randn(B, heads, L, d, device=shape.device, dtype=shape.low,
                           requires_grad=True) for _ in range(3))
    n = shape.lengths()
    candidates = _ours(partial(attention, q, k, v, n), shape.device, interpret)

    def sdpa(backend):
        with sdpa_kernel(backend):
            return attention_sdpa(q, k, v, n)

    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION),
                          ("efficient", SDPBackend.EFFICIENT_ATTENTION),
                          ("cudnn", SDPBackend.CUDNN_ATTENTION), ("math", SDPBackend.MATH)):
        candidates[f"sdpa-{name}"] = Candidate("anchor", partial(sdpa, backend))
    candidates["flex"] = _flex_candidate(q, k, v, n, shape)
    candidates["flex-qk"] = _flex_candidate(q, k, v, n, shape, queries=True)
    real = 1.0 if n is None else (n.float() / L).square().mean().item()  # real q x real keys
    flops = 2.5 * 4 * B * heads * L * L * d * real
    return Setup([q, k, v], B * L, candidates, flops=flops)


def _flex_candidate(q, k, v, n, shape, queries=False):
    """FlexAttention with a block mask of the padding keys (queries=True: and of the padding
    queries, which our kernels skip too; its output there is then undefined, ours zero)."""
    import torch

    flex, missing = _optional("torch.nn.attention.flex_attention",
                              "torch.nn.attention.flex_attention (torch >= 2.5)")
    if missing:
        return missing
    if not shape.device.startswith("cuda"):
        return Candidate("anchor", status="skipped", reason="FlexAttention is timed on CUDA only")
    block_mask = None
    if n is not None:
        def keep(b, h, q_idx, kv_idx):
            return (kv_idx < n[b]) & (q_idx < n[b]) if queries else kv_idx < n[b]
        block_mask = flex.create_block_mask(keep, shape.batch, None, shape.length, shape.length,
                                            device=shape.device)
    compiled = torch.compile(flex.flex_attention)
    return Candidate("anchor", lambda: compiled(q, k, v, block_mask=block_mask))


def selective_scan_case(shape, interpret):
    """Mamba's scan at the recipe's 2 d_model channels and state N: x, B, C in the training's
    low dtype (what Mamba passes under bf16-mixed), dt, A, D in float32."""
    import torch
    import torch.nn.functional as F

    from lra.kernels.selective_scan import selective_scan

    B, L, dev = shape.batch, shape.length, shape.device
    D, N = 2 * shape.model["d_model"], shape.model["d_state"]
    x = torch.randn(B, D, L, device=dev, dtype=shape.low, requires_grad=True)
    dt = _leaf(F.softplus(torch.randn(B, D, L, device=dev) - 4))
    A = _leaf(-torch.arange(1, N + 1, device=dev, dtype=torch.float32).repeat(D, 1))
    Bm, C = (torch.randn(B, N, L, device=dev, dtype=shape.low, requires_grad=True)
             for _ in range(2))
    Dp = torch.ones(D, device=dev, requires_grad=True)
    ours = partial(selective_scan, x, dt, A, Bm, C, Dp)
    return Setup([x, dt, A, Bm, C, Dp], B * L, _ours(ours, dev, interpret))


def _additive_case(shape, interpret, causal):
    """LightNet's recurrence at the recipe's heads of width w: with LRPE 2w keys and queries, w
    values and a gain (L, 2w) of cos and sin, as the model passes them; bf16 on CUDA."""
    import torch

    from lra.kernels.additive_recurrence import additive_recurrence

    B, L, heads, dev = shape.batch, shape.length, shape.model["n_heads"], shape.device
    w = shape.model["d_model"] // heads
    lrpe = shape.model["positions"] in ("lrpe", "both")
    dk = 2 * w if lrpe else w
    q, k = (torch.randn(B, heads, L, dk, device=dev, dtype=shape.low, requires_grad=True)
            for _ in range(2))
    v = torch.randn(B, heads, L, w, device=dev, dtype=shape.low, requires_grad=True)
    gain = None
    if lrpe:
        phi = torch.arange(L, device=dev)[:, None] * 1e4 ** (-torch.arange(w, device=dev) / w)
        gain = torch.cat([phi.cos(), phi.sin()], -1).to(shape.low)  # (L, 2w)
    run = partial(additive_recurrence, q, k, v, shape.mask(), causal, gain)
    candidates = _ours(run, dev, interpret)
    if causal:
        candidates["fla"] = _fla_candidate(q, k, v, shape)
    return Setup([q, k, v], B * L, candidates)


def _fla_candidate(q, k, v, shape):
    """fla-core's chunk_lightnet (causal only, no padding mask, no gain: it runs every position) on
    (B, T, H, K) copies."""
    lightnet, missing = _optional("fla.ops.lightnet", "pip install fla-core (chunk_lightnet)")
    if missing:
        return missing
    if not shape.device.startswith("cuda"):
        return Candidate("anchor", status="skipped", reason="fla-core's kernels need CUDA")
    qt, kt, vt = (_leaf(t.transpose(1, 2).contiguous()) for t in (q, k, v))  # (B, T, H, K)
    parameters = inspect.signature(lightnet.chunk_lightnet).parameters
    layout = {"head_first": False} if "head_first" in parameters else {}
    return Candidate("anchor", lambda: lightnet.chunk_lightnet(qt, kt, vt, scale=1.0, **layout)[0],
                     leaves=[qt, kt, vt])


def vandermonde_case(shape, interpret):
    """The S4D kernel of a bidirectional layer at the recipe's H and N (N/2 complex modes), one
    (2, H, L) kernel per call."""
    import torch

    from lra.kernels.vandermonde import vandermonde

    H, N2, dev = shape.model["d_model"], shape.model["d_state"] // 2, shape.device
    log_dt = torch.rand(H, 1, device=dev) * math.log(100) + math.log(1e-3)
    dt = torch.exp(log_dt)  # log-uniform in [1e-3, 1e-1]
    A = torch.complex(torch.full((H, N2), -0.5, device=dev),
                      math.pi * torch.arange(N2, device=dev).float().expand(H, N2))
    dtA = _leaf(dt * A)
    C = torch.randn(2, H, N2, dtype=torch.complex64, device=dev, requires_grad=True)
    ours = partial(vandermonde, C, dtA, shape.length)
    return Setup([C, dtA], shape.length, _ours(ours, dev, interpret))


def cauchy_case(shape, interpret):
    """The S4 Cauchy products of a bidirectional layer at the recipe's H and N: 6 rows, N/2 modes,
    (L | 1) // 2 + 1 points."""
    import torch

    from lra.kernels.cauchy import cauchy

    H, N2, dev = shape.model["d_model"], shape.model["d_state"] // 2, shape.device
    Lo = shape.length | 1
    points = torch.arange(Lo // 2 + 1, device=dev, dtype=torch.float32)
    z = 1j * torch.tan(math.pi / Lo * points)  # (K,)
    w = _leaf(torch.complex(torch.full((H, N2), -0.5, device=dev),
                            torch.randn(H, N2, device=dev) * 10) * 0.01)
    v = torch.randn(6, H, N2, dtype=torch.complex64, device=dev, requires_grad=True)
    ours = partial(cauchy, v, z, w, True)
    return Setup([v, w], shape.length, _ours(ours, dev, interpret))


def _layer_case(name, options, shape, interpret):
    """One residual block of a registered model at the recipe's d_model, under bf16 autocast on
    CUDA (as bf16-mixed trains), float32 on a CPU: ours under each LRA_KERNELS."""
    import torch

    from lra import registry

    width = shape.model["d_model"]
    model = registry.model(name)(d_model=width, n_layers=1, **options).to(shape.device)
    x = torch.randn(shape.batch, shape.length, width, device=shape.device, requires_grad=True)
    mask, cuda = shape.mask(), shape.device.startswith("cuda")

    def ours():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            return model(x, mask).float()

    candidates = {"triton": triton_candidate(ours, shape.device, interpret),
                  "default": Candidate("ours", ours),
                  "reference": Candidate("reference", ours, "reference")}
    return Setup([x], shape.batch * shape.length, candidates, model=model)


def s4d_case(shape, interpret):
    state = shape.model["d_state"]
    setup = _layer_case("s4d", {"d_state": state, "bidirectional": True}, shape, interpret)
    minimal = minimal_s4d(shape.model["d_model"], state).to(shape.device)
    x = setup.inputs[0]
    setup.candidates["s4d-minimal"] = Candidate("anchor", lambda: minimal(x.transpose(1, 2)),
                                                leaves=list(minimal.parameters()))
    return setup


def s4_case(shape, interpret):
    return _layer_case("s4", {"d_state": shape.model["d_state"], "bidirectional": True}, shape,
                       interpret)


def mamba_case(shape, interpret):
    """Our causal Mamba block (the mambapy layer is causal) against mambapy's, at the recipe's
    d_model and state."""
    width, state = shape.model["d_model"], shape.model["d_state"]
    setup = _layer_case("mamba", {"d_state": state, "bidirectional": False}, shape, interpret)
    mambapy, missing = _optional("mambapy.mamba", "pip install mambapy")
    if missing:
        setup.candidates["mambapy"] = missing
        return setup
    config = mambapy.MambaConfig(d_model=width, n_layers=1, d_state=state)
    theirs = mambapy.Mamba(config).to(shape.device)
    x = setup.inputs[0]
    setup.candidates["mambapy"] = Candidate("anchor", lambda: theirs(x)[0],
                                            leaves=list(theirs.parameters()))
    return setup


# case: (what it times, the model whose recipes give its shapes, builder, anchor order for the
# ratio)
CASES = {
    "attention": ("FlashAttention with key padding, the flash recipe's heads, bf16 on a GPU",
                  "flash", attention_case, ("flex", "sdpa-cudnn", "sdpa-flash", "sdpa-efficient",
                                            "sdpa-math")),
    "selective_scan": ("Mamba's selective scan, 2 d_model channels, bf16 x, B, C on a GPU",
                       "mamba", selective_scan_case, ()),
    "additive_causal": ("LightNet's causal additive recurrence, 2w keys and the LRPE gain, bf16 "
                        "on a GPU", "lightnet", partial(_additive_case, causal=True), ("fla",)),
    "additive_noncausal": ("LightNet's non-causal additive recurrence, 2w keys and the LRPE gain, "
                           "bf16 on a GPU", "lightnet", partial(_additive_case, causal=False), ()),
    "vandermonde": ("S4D Vandermonde kernel, bidirectional, complex64", "s4d", vandermonde_case,
                    ()),
    "cauchy": ("S4 Cauchy products, bidirectional, complex64", "s4", cauchy_case, ()),
    "s4d": ("S4D block, bidirectional, bf16 autocast on a GPU", "s4d", s4d_case, ("s4d-minimal",)),
    "s4": ("S4 block, bidirectional, bf16 autocast on a GPU", "s4", s4_case, ()),
    "mamba": ("Mamba block, causal, bf16 autocast on a GPU", "mamba", mamba_case, ("mambapy",)),
}
UNBATCHED = ("vandermonde", "cauchy")  # one kernel serves every sequence: batch 1, tokens = L


def _kernel_step(setup, candidate, sizes):
    """Forward + backward of one candidate with a fixed output gradient; records the output's
    bytes in `sizes`."""
    import torch

    parameters = setup.model.parameters() if setup.model is not None else ()
    leaves = [*setup.inputs, *parameters, *candidate.leaves]
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
    """The memory-bound traffic formula (lra.bench.candidates.BYTES) for a case."""
    parameters = list(setup.model.parameters()) if setup.model is not None else []
    size = sum(t.numel() * t.element_size() * (3 if t.requires_grad else 2)
               for t in [*setup.inputs, *parameters])
    return size + 2 * output_bytes


def bench_case(name, task, scale, device, repeats, interpret, peaks):
    """One case at one task's shape: every candidate timed; the row of the JSON."""
    import torch

    what, model, build, anchors = CASES[name]
    shape = task_shape(model, task, scale, device)
    if name in UNBATCHED:
        shape.batch = 1
    torch.manual_seed(0)
    setup = build(shape, interpret)
    sizes, candidates = {}, {}
    cuda = device.startswith("cuda")
    for label, candidate in setup.candidates.items():
        step = _kernel_step(setup, candidate, sizes)
        candidates[label] = measure(candidate, step, repeats, cuda)
    nbytes = case_bytes(setup, sizes["output"]) if "output" in sizes else None
    work = ("flops", setup.flops) if setup.flops is not None else ("bytes", nbytes)
    for c in candidates.values():
        add_throughput(c, setup.tokens, work, peaks)
    row = {"case": name, "what": what, "task": task,
           "shape": {"batch": shape.batch, "length": shape.length, "padded": shape.padded,
                     "dtype": str(setup.inputs[0].dtype).removeprefix("torch."),
                     "recipe": f"{model}/{task}"},
           "tokens": setup.tokens, "bytes": nbytes, "flops": setup.flops,
           "candidates": candidates}
    add_ratios(row, anchors)
    return row


def anchor_summary(rows):
    """Each anchor's state over the whole run: found (and timed), not found, or skipped here."""
    states = {}
    for row in rows:
        for label, c in row["candidates"].items():
            if c["kind"] == "anchor":
                state = "found" if c["status"] in ("ok", "failed", "unavailable") else c["status"]
                states[label] = "found" if "found" in (state, states.get(label)) else state
    return states


def bench_kernels(cases=None, tasks=None, scale=None, device=None, repeats=None, interpret=False,
                  threads=1, out_dir="benchmarks/results"):
    """Time every case at every task shape against its anchors; print the table, write the
    JSON; return the record."""
    device = resolve_device(device)
    cuda = device.startswith("cuda")
    scale = scale or (1.0 if cuda else CPU_SCALE)
    repeats = repeats or (20 if cuda else 3)
    name, peaks = prepare_device(device, interpret, threads)
    if not cuda:
        print(f"lra bench kernels: no GPU, timing on the CPU ({threads} thread(s)) at --scale "
              f"{scale:g} of each shape{'; Triton in its interpreter' if interpret else ''}")
    rows = [bench_case(case, task, scale, device, repeats, interpret, peaks)
            for case in (cases or CASES) for task in (tasks or TASKS)]
    options = {"scale": scale, "repeats": repeats, "interpret": interpret, "threads": threads}
    record = comparison_record("kernels", name, cuda, peaks, options, rows)
    record["anchors"] = anchor_summary(rows)
    out = write_record(record, out_dir)
    print_table(record)
    print("anchors: " + ", ".join(f"{a} {state}" for a, state in record["anchors"].items()))
    print(f"wrote {out}")
    return record
