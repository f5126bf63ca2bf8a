"""Candidates timed side by side, as `lra bench kernels` and `lra bench train` both do.

    candidates = {"triton": triton_candidate(run, device, interpret),
                  "reference": Candidate("reference", run, "reference")}
    row = {..., "candidates": {label: measure(c, step, repeats, cuda) for label, c in ...}}
    add_ratios(row, anchors)                  # speedup_vs, x_reference, x_anchor
    record = comparison_record("kernels", name, cuda, peaks, options, rows)

A candidate runs under its own LRA_KERNELS (None: unset); one that cannot run here carries why
("not found", "skipped") instead of a run, and one that fails is reported while the others go on.
"""
import contextlib
import os
from dataclasses import dataclass, field
from typing import Callable

from lra.bench.core import error_text, provenance, time_steps

BYTES = ("3 x (inputs that get a gradient, parameters included) + 2 x (other inputs) + 2 x "
         "outputs, in bytes: each input read forward and backward and its gradient written, each "
         "output written and its gradient read")
MEMORY = "torch.cuda.max_memory_allocated over the warm-up steps, inputs included"
FLOPS = ("2.5 x 4 B h L^2 d x mean((n / L)^2) over rows of length n, x 1/2 if causal (forward "
         "4 B h L^2 d, backward 1.5x that; real queries x real keys)")
FORMULAS = {
    "tokens_per_s": "batch x length (all documents, padded positions included) / time",
    "bytes": BYTES, "flops": FLOPS,
    "fraction_of_peak": "bytes / time / peak HBM bandwidth; attention: FLOPs / time / peak dense "
                        "bf16 FLOP/s; null where the device's peaks are unknown",
    "speedup_vs": "the other candidate's ms / this candidate's ms (> 1: this one is faster)",
}


@dataclass
class Candidate:
    kind: str  # ours | reference | anchor
    run: Callable = None  # () -> output; None when it cannot run here
    env: str = None  # LRA_KERNELS while it runs; None: unset
    status: str = "ok"  # ok, or why it has no run: "not found", "skipped"
    reason: str = ""
    leaves: list = field(default_factory=list)  # an anchor's own parameters and input copies


def triton_candidate(run, device, interpret):
    """Ours with LRA_KERNELS=triton: on CUDA, or on a CPU in Triton's interpreter."""
    if device.startswith("cuda") or interpret:
        return Candidate("ours", run, "triton")
    return Candidate("ours", status="skipped",
                     reason="on a CPU Triton runs only in its interpreter: pass --interpret")


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


def measure(candidate, step, repeats, cuda):
    """Time `step` (forward + backward of `candidate`) under its LRA_KERNELS; how it went."""
    import torch

    if candidate.run is None:
        return {"kind": candidate.kind, "status": candidate.status, "reason": candidate.reason}
    record = {"kind": candidate.kind, "lra_kernels": candidate.env or "unset"}
    with kernels_env(candidate.env):
        try:
            seconds, times, peak = time_steps(step, repeats, cuda, warmup=2)
            record.update(status="ok", ms=1000 * seconds, all_ms=[1000 * t for t in times],
                          peak_memory_mb=peak)
        except Exception as err:  # a candidate that cannot run this shape is reported
            unavailable = any(text in str(err)
                              for text in ("No available kernel", "No viable backend"))
            record.update(status="unavailable" if unavailable else "failed", error=error_text(err))
    if cuda:
        torch.cuda.empty_cache()  # what a failed (say, out of memory) candidate held goes
    return record


def add_ratios(row, anchors):
    """speedup_vs[other] = other's ms / this one's ms for every timed candidate; the row's anchor
    is the first of `anchors` that ran (else the reference), and x_anchor, x_reference the
    ratios to it and to the reference."""
    timed = {name: c["ms"] for name, c in row["candidates"].items() if c["status"] == "ok"}
    row["anchor"] = next((a for a in (*anchors, "reference") if a in timed), None)
    for name, c in row["candidates"].items():
        if name in timed:
            c["speedup_vs"] = {other: ms / c["ms"] for other, ms in timed.items() if other != name}
            c["x_reference"] = c["speedup_vs"].get("reference")
            c["x_anchor"] = c["speedup_vs"].get(row["anchor"])


def add_throughput(c, tokens, work=("bytes", None), peaks=None):
    """tokens/s, achieved GB/s or TFLOP/s, and the fraction of the device's limit, for a timed
    candidate `c`; `work` is ("bytes" or "flops", the amount per call, or None)."""
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


def comparison_record(kind, name, cuda, peaks, options, rows):
    """The JSON record of a `kernels` or `train` bench on device `name`."""
    import torch

    return {"kind": kind, "device": name, "torch": torch.__version__, **provenance(),
            "options": options, "peaks": peaks,
            "peak_memory": (MEMORY if cuda else "not measured on a CPU"),
            "formulas": FORMULAS, "rows": rows}


def _cell(value, spec, width):
    return format(" " + ("-" if value is None else format(value, spec)), f">{width}")


def print_table(record):
    """One line per candidate: ms, tokens/s, peak MB, achieved rate and % of the device's limit,
    and the ratios to the reference and to the case's anchor (> 1: faster)."""
    print(f"{'case':<19}{'task':<11}{'B x L':>11}  {'candidate':<15}{'ms':>10}{'tokens/s':>11}"
          f"{'peak MB':>9}{'achieved':>16}{'% peak':>8}{'x ref':>7}{'x anchor':>9}  anchor")
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
                     _cell(fraction and 100 * fraction, ".1f", 8),
                     _cell(c["x_reference"], ".2f", 7), _cell(c["x_anchor"], ".2f", 9))
            print(f"{head}{''.join(cells)}  {row['anchor'] or ''}")
