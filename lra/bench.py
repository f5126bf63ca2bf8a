"""`lra bench layers`: forward+backward time and peak memory of one block of each model.

    lra bench layers                                   # B8 L1024 D128 N64, one thread, CPU
    lra bench layers --models s4d s4 --length 4096 --device cuda

Each model is built through the registry with one layer and timed in a fresh process (so
its peak memory is its own), median of `--repeats` after a warm-up. Anchors run in the same
invocation and every model is also reported as a ratio to them:
- `matmul`: a fixed dense matmul, which normalises for the machine;
- `s4d-minimal`: the minimal S4D layer of the S4 authors' tutorial as written in the paper
  (materialised Vandermonde kernel, einsum, FFT convolution), re-implemented here; the
  state-spaces/s4 figures measured once on a 2-core CPU (`RECORDED`) are printed beside.
Results go to `benchmarks/results/layers-<device>-<date>.json` and a printed table.

`lra bench data` (`bench_data`) times our ListOps and Pathfinder generators against slow
references of the original scripts (`lra.generators.reference`) run in the same invocation,
on one core, and sets the statistics of 32 px Pathfinder images beside the release's.
"""
import inspect
import json
import multiprocessing
import platform
import statistics
import time
from datetime import datetime
from pathlib import Path

from lra.results import git_state

RECORDED = {  # seconds, fwd+bwd, B8 L1024 H128 N64, one thread, 2-core x86 (shared/reference)
    "s4d": ("state-spaces/s4 S4D block", 0.52),
    "s4": ("state-spaces/s4 S4 block", 1.37),
}


def _minimal_s4d(d_model, d_state):
    """The tutorial S4D layer: kernel materialised as (H, N/2, L), then an FFT convolution."""
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
            dtA = (-torch.exp(self.log_A_real) + 1j * self.A_imag) * self.log_dt.exp()[:, None]
            C = torch.view_as_complex(self.C) * (torch.exp(dtA) - 1.0) / (dtA / self.log_dt.exp()[:, None])
            K = 2 * torch.einsum("hn,hnl->hl", C, torch.exp(dtA.unsqueeze(-1) * torch.arange(L))).real
            y = torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(K, n=2 * L), n=2 * L)[..., :L]
            return self.out(nn.functional.gelu(y + u * self.D[:, None]))

    return MinimalS4D()


def _build(name, args):
    import torch

    if name == "matmul":
        a = torch.randn(1024, 1024, device=args["device"], requires_grad=True)
        return lambda: (a @ a).sum().backward()
    if name == "s4d-minimal":
        layer = _minimal_s4d(args["d_model"], args["d_state"]).to(args["device"])
        u = torch.randn(args["batch"], args["d_model"], args["length"], device=args["device"])
        return lambda: layer(u).sum().backward()
    from lra import registry

    cls = registry.model(name)
    options = {"d_model": args["d_model"], "n_layers": 1}
    if "d_state" in inspect.signature(cls).parameters:
        options["d_state"] = args["d_state"]
    model = cls(**options).to(args["device"])
    x = torch.randn(args["batch"], args["length"], args["d_model"], device=args["device"])
    return lambda: model(x).sum().backward()


def _measure(name, args, queue):
    import resource

    import torch

    torch.set_num_threads(args["threads"])
    cuda = args["device"].startswith("cuda")
    try:
        step = _build(name, args)
        step()  # warm-up (and kernel caches)
        times = []
        for _ in range(args["repeats"]):
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            step()
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        peak = (torch.cuda.max_memory_allocated() if cuda
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20
        queue.put({"model": name, "seconds": statistics.median(times), "all_seconds": times,
                   "peak_memory_mb": peak})
    except Exception as err:  # report the failure, keep benchmarking the others
        queue.put({"model": name, "error": f"{type(err).__name__}: {err}"})


def measure(name, args):
    """Run one measurement in a fresh process and return its record."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_measure, args=(name, args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def bench_layers(models, out_dir="benchmarks/results", **args):
    """Time each model (and the anchors), print a table, write the JSON; return the record."""
    import torch

    from lra import registry

    names = models or list(registry.entries("model"))
    rows = [measure(name, args) for name in ["matmul", "s4d-minimal", *names]]
    anchors = {row["model"]: row.get("seconds") for row in rows[:2]}
    for row in rows:
        for anchor, seconds in anchors.items():
            if "seconds" in row and seconds:
                row[f"x_{anchor}"] = row["seconds"] / seconds
        if row["model"] in RECORDED:
            row["recorded_anchor"], row["recorded_seconds"] = RECORDED[row["model"]]
    device = (torch.cuda.get_device_name() if args["device"].startswith("cuda")
              else f"cpu-{platform.machine()}")
    memory = ("torch.cuda.max_memory_allocated" if args["device"].startswith("cuda") else
              "the process's peak RSS, torch itself included (see the matmul row)")
    record = {"kind": "layers", "shape": args, "device": device, "torch": torch.__version__,
              "peak_memory": memory, "git": git_state(),
              "created": datetime.now().isoformat(timespec="seconds"), "rows": rows}
    out = Path(out_dir) / f"layers-{device.replace(' ', '_')}-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    print(f"{'model':<14}{'ms':>10}{'peak MB':>10}{'/matmul':>10}{'/s4d-min':>10}  recorded anchor")
    for row in rows:
        if "error" in row:
            print(f"{row['model']:<14}  failed: {row['error']}")
            continue
        recorded = (f"  {row['recorded_anchor']}: {1000 * row['recorded_seconds']:.0f} ms"
                    if "recorded_anchor" in row else "")
        print(f"{row['model']:<14}{1000 * row['seconds']:>10.1f}{row['peak_memory_mb']:>10.0f}"
              f"{row.get('x_matmul', float('nan')):>10.2f}{row.get('x_s4d-minimal', float('nan')):>10.2f}"
              f"{recorded}")
    print(f"wrote {out}")
    return record


# --- lra bench data ------------------------------------------------------------------------

RELEASE_32PX = {  # the released 32 px hard Pathfinder images (shared/reference)
    "mean_pixel": 20.3, "sd_of_image_means": 2.1, "fraction_above_0": 0.34, "fraction_above_127": 0.086,
    "fraction_with_max_255": 1.0, "label_mean_difference": 0.0}
ORIGINAL_SPEED = {  # samples per second on one core, measured once (shared/reference)
    "listops": ("the LRA ListOps script", 200.0),
    "pathfinder": ("snakes2.py, 32 px hard images, 0.5-0.7 s each", 1 / 0.6),
    "pathx": ("snakes2.py, 128 px hard images, 3.6 s each", 1 / 3.6),
}


def data_sizes(n):
    """Samples per generator for `--n N` (N Pathfinder 32 px images from ours): (ours, reference)."""
    return {"listops": (20 * n, max(1, n // 5)), "pathfinder": (n, max(1, n // 50)),
            "pathx": (max(1, n // 10), max(1, n // 500))}


def _timed(make, count):
    """(items, CPU seconds, wall seconds) of `count` calls of make(i) in this process."""
    cpu, wall = time.process_time(), time.perf_counter()
    items = [make(i) for i in range(count)]
    return items, time.process_time() - cpu, time.perf_counter() - wall


def _rate(count, cpu, wall):
    return {"samples": count, "cpu_seconds": cpu, "wall_seconds": wall, "per_second": count / max(cpu, 1e-9)}


def image_statistics(images, labels):
    """The release's figures of a stack of uint8 images (N, res, res) with their labels."""
    import numpy as np

    x = images.astype(np.float64)
    means = x.mean(axis=(1, 2))
    labels = np.asarray(labels)
    gap = means[labels == 1].mean() - means[labels == 0].mean() if 0 < labels.sum() < len(labels) else 0.0
    return {"images": len(x), "mean_pixel": float(x.mean()), "sd_of_image_means": float(means.std()),
            "fraction_above_0": float((x > 0).mean()), "fraction_above_127": float((x > 127).mean()),
            "fraction_with_max_255": float((x.max(axis=(1, 2)) == 255).mean()),
            "label_mean_difference": float(gap)}


def _bench_listops(ours, reference):
    import itertools

    from lra.generators.listops import TreeSpec, samples
    from lra.generators.reference import listops_lines

    cpu, wall = time.process_time(), time.perf_counter()
    list(itertools.islice(samples(TreeSpec(), seed=0), ours))
    fast = _rate(ours, time.process_time() - cpu, time.perf_counter() - wall)
    cpu, wall = time.process_time(), time.perf_counter()
    listops_lines(reference, seed=0)
    return fast, _rate(reference, time.process_time() - cpu, time.perf_counter() - wall), {}


def _bench_pathfinder(resolution, ours, reference):
    """Draw and PNG-encode images with ours (after an untimed warm-up that fills its caches, as a
    long run's would be) and with the reference; the drawings for the statistics too."""
    import numpy as np

    from lra.generators.pathfinder import draw, png, spec_for
    from lra.generators.reference import pathfinder_image

    spec = spec_for(resolution)

    def make(generator, seed):
        def one(i):
            drawing = generator(spec, np.random.default_rng([seed, i]), i % 2)
            png(drawing.pixels)
            return drawing
        return one

    warm = max(2, ours // 10)
    _timed(make(draw, 1), warm)
    fast, cpu, wall = _timed(make(draw, 0), ours)
    slow, ref_cpu, ref_wall = _timed(make(pathfinder_image, 0), reference)
    # the reference draws the first of our images again, from the same seeds: the same pixels
    same = sum(np.array_equal(a.pixels, b.pixels) for a, b in zip(fast, slow))
    extra = {"warm_up_images": warm, "identical_to_ours": same}
    if resolution == 32:
        extra["statistics"] = {name: image_statistics(np.stack([d.pixels for d in drawn]), [d.label for d in drawn])
                               for name, drawn in (("ours", fast), ("reference", slow))}
        extra["statistics"]["release"] = RELEASE_32PX
    return _rate(ours, cpu, wall), _rate(reference, ref_cpu, ref_wall), extra


def bench_data(n=1000, tasks=("listops", "pathfinder", "pathx"), out_dir="benchmarks/results"):
    """Time each generator and its reference on this core, print a table, write the JSON; return the record."""
    sizes = data_sizes(n)
    rows = []
    for task in tasks:
        ours, reference = sizes[task]
        if task == "listops":
            fast, slow, extra = _bench_listops(ours, reference)
        else:
            fast, slow, extra = _bench_pathfinder(32 if task == "pathfinder" else 128, ours, reference)
        original, original_rate = ORIGINAL_SPEED[task]
        rows.append({"generator": task, "ours": fast, "reference": slow,
                     "speedup": fast["per_second"] / slow["per_second"],
                     "original": {"what": original, "per_second": original_rate}, **extra})
    device = f"cpu-{platform.machine()}"
    record = {"kind": "data", "device": device, "n": n, "sizes": {t: sizes[t] for t in tasks},
              "timing": "CPU seconds of this process (one core), PNG encoding included for Pathfinder",
              "git": git_state(), "created": datetime.now().isoformat(timespec="seconds"), "rows": rows}
    out = Path(out_dir) / f"data-{device}-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    print(f"{'generator':<12}{'ours/s':>10}{'reference/s':>13}{'speed-up':>10}   original (recorded)")
    for row in rows:
        same = (f"; {row['identical_to_ours']}/{row['reference']['samples']} reference images identical to ours"
                if "identical_to_ours" in row else "")
        print(f"{row['generator']:<12}{row['ours']['per_second']:>10.1f}{row['reference']['per_second']:>13.2f}"
              f"{row['speedup']:>9.0f}x   {row['original']['per_second']:.2f}/s: {row['original']['what']}{same}")
    stats = next((row["statistics"] for row in rows if "statistics" in row), None)
    if stats:
        print(f"\n32 px images{'ours':>19}{'reference':>12}{'release':>10}")
        for key in RELEASE_32PX:
            print(f"{key:<24}" + "".join(f"{stats[name][key]:>{w}.3f}" for name, w in
                                         (("ours", 7), ("reference", 12), ("release", 10))))
        print(f"{'images':<24}{stats['ours']['images']:>7}{stats['reference']['images']:>12}")
    print(f"wrote {out}")
    return record
