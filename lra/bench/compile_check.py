"""Compile every Triton kernel for a CUDA GPU on a machine that has none.

Triton lowers a kernel all the way to a cubin with the ptxas it ships, no driver needed. This module
stands in a driver that reports the target GPU, runs each kernel family's launcher, forward and
backward, on CPU tensors at the head and state sizes the experiments use, and compiles each launch
instead of running it. It catches, before any GPU time is spent, what the interpreter cannot: code
the compiler rejects (dot shapes, dtypes), tiles needing more shared memory than the GPU has, and
register spills (a stack frame: with 255 registers full, the rest lives in slow local memory). It
also says how many blocks of each fit on an SM at once, by registers and shared memory (occupancy:
what hides latency). Then it counts the programs of every launch at each recipe's training shape
(conf/experiment: batch, length, widths; meta tensors, nothing computed) and flags a launch with
fewer than two programs per SM (264 on an H100's 132 SMs), unless WHY_FEW_PROGRAMS says why.

    python -m lra.bench.compile_check                  # H100/H200 (sm_90), every family
    python -m lra.bench.compile_check --arch 80 --families attention

Run it in a process where TRITON_INTERPRET is unset (the interpreter replaces the kernels at
import). It runs unchanged under Triton 3.6 (what the CUDA builds of torch 2.11 ship) and 3.9:
`make kernels-check TRITON=3.6` runs it in .venv-triton3.6.
The launchers' outputs are left uninitialised: only the compiled kernels are looked at.
"""
import argparse
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

# bytes of shared memory a block may opt into
SHARED_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448}
# streaming multiprocessors of the GPU each architecture stands for (A100, H100 SXM)
SMS = {80: 108, 90: 132}
# launches that may have fewer than two programs per SM, and why
_PARAMETER_KERNEL = ("the parameters' gradient, once a step whatever the batch: (H, N/2) work "
                     "walking the length, small next to the batch's FFT convolution")
WHY_FEW_PROGRAMS = {("vandermonde", "_backward_kernel"): _PARAMETER_KERNEL,
                    ("cauchy", "_backward_kernel"): _PARAMETER_KERNEL}
# per SM: (shared memory bytes, warps, blocks); every one of these has 65,536 registers and
# reserves 1 KB per block
SM = {80: (167936, 64, 32), 86: (102400, 48, 16), 89: (102400, 48, 24), 90: (233472, 64, 32)}


@dataclass
class Compiled:
    family: str
    case: str
    kernel: str
    warps: int
    stages: int
    shared: int  # bytes
    registers: int  # per thread
    stack: int  # bytes per thread: spilled registers


class _CompileOnlyDriver:
    """Enough of Triton's driver for a launch to compile for `arch` and stop there."""

    def __init__(self, arch):
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", arch, 32)

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return self.target


def _resources(cubin):
    """(registers, stack bytes) per thread of a cubin, read with the cuobjdump Triton ships."""
    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([str(tool), "--dump-resource-usage", f.name], capture_output=True,
                             text=True, check=True)
    usage = [line for line in out.stdout.splitlines() if "REG:" in line]
    fields = dict(item.split(":", 1) for line in usage for item in line.split())
    return int(fields["REG"]), int(fields["STACK"])


def _attention(dtype, sizes):
    import torch

    from lra.kernels.attention.triton import attention_triton

    for d, causal, dropout in sizes:
        q, k, v = (torch.randn(2, 2, 100, d, dtype=dtype, requires_grad=True) for _ in range(3))
        case = f"d={d}{' causal' if causal else ''}{' dropout' if dropout else ''}"
        yield case, partial(attention_triton, q, k, v, torch.tensor([100, 60]), causal, dropout)


def _selective_scan(dtype, sizes):
    import torch

    from lra.kernels.selective_scan.triton import selective_scan_triton

    for N in sizes:
        x, dt = (torch.rand(2, 256, 50, dtype=dtype, requires_grad=True) for _ in range(2))
        B, C = (torch.randn(2, N, 50, dtype=dtype, requires_grad=True) for _ in range(2))
        A, D = -torch.rand(256, N, requires_grad=True), torch.ones(256, requires_grad=True)
        run = partial(selective_scan_triton, x, dt, A, B, C, D)
        yield f"N={N}", run
        yield f"N={N} deterministic", partial(_deterministic, run)


def _deterministic(run):
    """run's forward and backward with torch's deterministic algorithms on (the scan's backward
    then sums per-block buffers); a leaf stands in for the output."""
    import torch

    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        y = run()
        y.sum().backward()
    finally:
        torch.use_deterministic_algorithms(before)
    return y.detach().requires_grad_()


def _additive_recurrence(dtype, sizes):
    """LightNet's shapes: with LRPE a head of width w has 2w keys (a gain per position) and w
    values."""
    import torch

    from lra.kernels.additive_recurrence.triton_causal import additive_causal_triton
    from lra.kernels.additive_recurrence.triton_noncausal import additive_noncausal_triton

    for width in sizes:
        L = 300  # several chunks: a loop over one chunk would be specialised away
        q, k = (torch.randn(2, 2, L, 2 * width, dtype=dtype, requires_grad=True) for _ in range(2))
        v = torch.randn(2, 2, L, width, dtype=dtype, requires_grad=True)
        gain = torch.randn(L, 2 * width, dtype=dtype)
        mask = torch.arange(L) < torch.tensor([[L], [180]])
        yield f"w={width} causal", partial(additive_causal_triton, q, k, v, gain)
        yield f"w={width}", partial(additive_noncausal_triton, q, k, v, mask, gain)


def _vandermonde(dtype, sizes):
    import torch

    from lra.kernels.vandermonde.triton import vandermonde_triton

    for modes in sizes:
        C = torch.randn(2, 16, modes, dtype=torch.complex64, requires_grad=True)
        dtA = torch.complex(-torch.rand(16, modes), torch.randn(16, modes)).requires_grad_()
        yield f"modes={modes}", partial(vandermonde_triton, C, dtA, 100)


def _cauchy(dtype, sizes):
    import torch

    from lra.kernels.cauchy.triton import cauchy_triton

    for conj in sizes:
        v = torch.randn(4, 16, 32, dtype=torch.complex64, requires_grad=True)
        w = torch.randn(16, 32, dtype=torch.complex64, requires_grad=True)
        z = torch.randn(51, dtype=torch.complex64)
        yield "conj" if conj else "plain", partial(cauchy_triton, v, z, w, conj)


# (head dim, causal, dropout p): the experiments use 16-64 wide heads, most with dropout (its
# Philox stream changes the forward and dq tiles)
ATTENTION_SIZES = [(d, causal, dropout) for d in (16, 32, 64, 128) for causal in (False, True)
                   for dropout in (0.0, 0.1)]
# family: (cases, the dtypes its models run it in, sizes, the sizes of a --quick check)
FAMILIES = {
    # quick: the recipes' path (non-causal, dropout, d <= 64 tiles), and the d > 64 tiles with the
    # largest block (bf16 forward at d=128) and the causal mask
    "attention": (_attention, ("float32", "bfloat16"), ATTENTION_SIZES,
                  [(64, False, 0.1), (128, True, 0.0)]),
    # state sizes
    "selective_scan": (_selective_scan, ("float32", "bfloat16"), (4, 16, 64), (16,)),
    # head widths
    "additive_recurrence": (_additive_recurrence, ("float32", "bfloat16"), (26, 34, 40, 64, 72),
                            (64,)),
    "vandermonde": (_vandermonde, ("float32",), (2, 32), (32,)),  # S4D's N / 2 for state 4 and 64
    "cauchy": (_cauchy, ("float32",), (False, True), (True,)),
}


def _refuse_interpreter():
    if os.environ.get("TRITON_INTERPRET", "0").strip() not in ("", "0"):
        raise RuntimeError("TRITON_INTERPRET is set: the kernels are interpreted, not compiled; "
                           "run the compile check in a process without it")


def _recipe_launches(family):
    """(recipe, a call of the family's launcher at its training shape) on meta tensors."""
    import torch

    from lra.bench.core import recipes

    meta = dict(device="meta", requires_grad=True)
    if family == "attention":
        from lra.kernels.attention.triton import attention_triton
        for r in recipes("flash"):
            heads, low = r.model["n_heads"], r.kernel_dtype()
            q, k, v = (torch.empty(r.rows, heads, r.length, r.attention_head_dim(),
                                   dtype=low, **meta) for _ in range(3))
            yield r.name, partial(attention_triton, q, k, v, None, not r.model["bidirectional"],
                                  r.attention_dropout())
    elif family == "selective_scan":
        from lra.kernels.selective_scan.triton import selective_scan_triton
        for r in recipes("mamba"):
            E, N, low = 2 * r.model["d_model"], r.model["d_state"], r.kernel_dtype()
            x, dt = (torch.empty(r.rows, E, r.length, dtype=low, **meta) for _ in range(2))
            B, C = (torch.empty(r.rows, N, r.length, dtype=low, **meta) for _ in range(2))
            A, D = torch.empty(E, N, **meta), torch.empty(E, **meta)
            yield r.name, partial(selective_scan_triton, x, dt, A, B, C, D)
    elif family == "additive_recurrence":
        from lra.kernels.additive_recurrence.triton_causal import additive_causal_triton
        from lra.kernels.additive_recurrence.triton_noncausal import additive_noncausal_triton
        for r in recipes("lightnet"):
            heads, low = r.model["n_heads"], r.kernel_dtype()
            w = r.model["d_model"] // heads
            dk = 2 * w if r.model["positions"] in ("lrpe", "both") else w
            q, k = (torch.empty(r.rows, heads, r.length, dk, dtype=low, **meta) for _ in range(2))
            v = torch.empty(r.rows, heads, r.length, w, dtype=low, **meta)
            if r.model["bidirectional"]:
                yield r.name, partial(additive_noncausal_triton, q, k, v)
            else:
                yield r.name, partial(additive_causal_triton, q, k, v)
    elif family == "vandermonde":
        from lra.kernels.vandermonde.triton import vandermonde_triton
        for r in recipes("s4d"):
            c, H, modes = 1 + r.model["bidirectional"], r.model["d_model"], r.model["d_state"] // 2
            C = torch.empty(c, H, modes, dtype=torch.complex64, **meta)
            dtA = torch.empty(H, modes, dtype=torch.complex64, **meta)
            yield r.name, partial(vandermonde_triton, C, dtA, r.length)
    elif family == "cauchy":
        from lra.kernels.cauchy.triton import cauchy_triton
        for r in recipes("s4"):
            c, H, modes = 1 + r.model["bidirectional"], r.model["d_model"], r.model["d_state"] // 2
            v = torch.empty(2 * c + 2, H, modes, dtype=torch.complex64, **meta)
            w = torch.empty(H, modes, dtype=torch.complex64, **meta)
            z = torch.empty((r.length | 1) // 2 + 1, dtype=torch.complex64, device="meta")
            yield r.name, partial(cauchy_triton, v, z, w, True)


@dataclass
class Programs:
    family: str
    recipe: str
    kernel: str
    programs: int


def count_programs(families=tuple(FAMILIES)):
    """The programs of each launch, forward and backward, at every recipe's training shape:
    yields a Programs per launch. Nothing is compiled or run (meta tensors)."""
    import math

    _refuse_interpreter()

    from triton.runtime.jit import JITFunction

    launches, launch = [], JITFunction.run

    def count_instead(self, *args, grid, warmup, **kwargs):
        size = grid(kwargs) if callable(grid) else grid
        launches.append((self.fn.__name__, math.prod(size)))

    JITFunction.run = count_instead
    try:
        for family in families:
            for recipe, run in _recipe_launches(family):
                launches.clear()
                run().real.sum().backward()
                for name, programs in launches:
                    yield Programs(family, recipe, name, programs)
    finally:
        JITFunction.run = launch


def too_few_programs(counts, arch):
    """The launches with fewer than two programs per SM of sm_`arch` that WHY_FEW_PROGRAMS does not
    explain."""
    sms = SMS.get(arch)
    return [c for c in counts if sms is not None and c.programs < 2 * sms
            and (c.family, c.kernel) not in WHY_FEW_PROGRAMS]


def compile_all(arch=90, families=tuple(FAMILIES), quick=False):
    """Compile each family's kernels for sm_`arch`, forward and backward; yields a Compiled per
    launch."""
    _refuse_interpreter()
    import torch
    from triton.runtime import driver
    from triton.runtime.jit import JITFunction

    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown kernel families {sorted(unknown)}; known: {', '.join(FAMILIES)}")
    launches, launch = [], JITFunction.run

    def compile_instead(self, *args, grid, warmup, **kwargs):
        kernel = launch(self, *args, grid=grid, warmup=True, **kwargs)
        launches.append((self.fn.__name__, kernel))
        return kernel

    previous = driver._active
    driver.set_active(_CompileOnlyDriver(arch))
    JITFunction.run = compile_instead
    try:
        for family in families:
            cases, dtypes, sizes, quick_sizes = FAMILIES[family]
            for dtype_name in dtypes:
                for case, run in cases(getattr(torch, dtype_name), quick_sizes if quick else sizes):
                    launches.clear()
                    run().real.sum().backward()
                    for name, kernel in launches:
                        meta = kernel.metadata
                        registers, stack = _resources(kernel.asm["cubin"])
                        yield Compiled(family, f"{dtype_name} {case}", name, meta.num_warps,
                                       meta.num_stages, meta.shared, registers, stack)
    finally:
        JITFunction.run = launch
        driver._active = previous  # None: built on first use, as before


def over_shared_memory(results, arch):
    """The launches that need more shared memory than sm_`arch` gives a block: they would fail to
    launch."""
    limit = SHARED_LIMIT.get(arch)
    return [r for r in results if limit is not None and r.shared > limit]


def blocks_per_sm(r, arch):
    """How many blocks of a launch fit on one SM of sm_`arch` at once (by registers, shared memory,
    warps); fewer warps resident leave less to hide memory latency with. None for an architecture
    not in SM."""
    if arch not in SM:
        return None
    shared, warps, blocks = SM[arch]
    per_warp = -(-r.registers * 32 // 256) * 256  # registers are given out per warp, 256 at a time
    return min(65536 // per_warp // r.warps, shared // (r.shared + 1024), warps // r.warps, blocks)


def spilled(results):
    """The launches whose registers spill to local memory: they run, slower."""
    return [r for r in results if r.stack]


def main(argv=None):
    import triton

    parser = argparse.ArgumentParser(prog="python -m lra.bench.compile_check",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--arch", type=int, default=90,
                        help="compute capability x 10: 90 H100/H200, 80 A100")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--quick", action="store_true",
                        help="one or two sizes per family instead of all")
    parser.add_argument("--strict", action="store_true", help="fail on spilled registers and on "
                        "launches with under two programs per SM too, not only on launches over "
                        "the shared memory limit")
    args = parser.parse_args(argv)
    results = []
    print(f"{'family':<20} {'case':<30} {'kernel':<20} "
          "warps stages shared_B regs stack_B blocks/SM")
    for r in compile_all(args.arch, args.families, args.quick):
        results.append(r)
        blocks = blocks_per_sm(r, args.arch)
        print(f"{r.family:<20} {r.case:<30} {r.kernel:<20} {r.warps:>5} {r.stages:>6} "
              f"{r.shared:>8} {r.registers:>4} {r.stack:>7} {'-' if blocks is None else blocks:>9}",
              flush=True)
    too_big, spills = over_shared_memory(results, args.arch), spilled(results)
    print(f"\n{len(results)} launches compiled for sm_{args.arch} by Triton {triton.__version__}")
    sms = SMS.get(args.arch)
    print(f"\nprograms per launch at the recipes' training shapes (sm_{args.arch}: "
          f"{sms or '?'} SMs)\n{'family':<20} {'recipe':<20} {'kernel':<22} programs  per SM")
    counts = list(count_programs(args.families))
    for c in counts:
        why = WHY_FEW_PROGRAMS.get((c.family, c.kernel), "")
        per_sm = f"{c.programs / sms:7.1f}" if sms else "      -"
        print(f"{c.family:<20} {c.recipe:<20} {c.kernel:<22} {c.programs:>8} {per_sm}"
              f"{'  (few: ' + why + ')' if why and sms and c.programs < 2 * sms else ''}")
    few = too_few_programs(counts, args.arch)
    for r in too_big:
        print(f"  too big: {r.family} {r.case} {r.kernel} needs {r.shared} B of shared memory, "
              f"sm_{args.arch} has {SHARED_LIMIT[args.arch]}")
    for r in spills:
        print(f"  spills: {r.family} {r.case} {r.kernel}: {r.registers} registers and {r.stack} B "
              "of stack a thread")
    for c in few:
        print(f"  few programs: {c.family} {c.recipe} {c.kernel}: {c.programs}, under two per SM "
              f"({2 * sms})")
    return 1 if too_big or (args.strict and (spills or few)) else 0

if __name__ == "__main__":
    sys.exit(main())
