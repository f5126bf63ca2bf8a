"""`lra bench layers`: forward+backward time and peak memory of one block of each model.

    lra bench layers                                   # B8 L1024 D128 N64, one thread, CPU
    lra bench layers --models s4d s4 --length 4096 --device cuda

Each model is built through the registry with one layer and timed in a fresh process (so its
peak memory is its own), median of `--repeats` after a warm-up. Anchors run in the same
invocation and every model is also reported as a ratio to them:
- `matmul`: a fixed dense matmul, which normalises for the machine;
- `s4d-minimal`: the minimal S4D layer of the S4 authors' tutorial as written in the paper
  (lra.bench.core.minimal_s4d); the state-spaces/s4 figures measured once on a 2-core CPU
  (`RECORDED`) are printed beside.
Results go to `benchmarks/results/layers-<device>-<date>.json` and a printed table.
"""
import inspect
import multiprocessing
import queue as queue_module

from lra.bench.core import device_name, minimal_s4d, provenance, time_steps, write_record

RECORDED = {  # seconds, fwd+bwd, B8 L1024 H128 N64, one thread, 2-core x86 (shared/reference)
    "s4d": ("state-spaces/s4 S4D block", 0.52),
    "s4": ("state-spaces/s4 S4 block", 1.37),
}
ANCHORS = ("matmul", "s4d-minimal")


def _build(name, args):
    """A () -> None forward+backward step of `name` (a registered model or an anchor)."""
    import torch

    if name == "matmul":
        a = torch.randn(1024, 1024, device=args["device"], requires_grad=True)
        return lambda: (a @ a).sum().backward()
    if name == "s4d-minimal":
        layer = minimal_s4d(args["d_model"], args["d_state"]).to(args["device"])
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
        seconds, times, peak = time_steps(step, args["repeats"], cuda, warmup=1, budget=None)
        if not cuda:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**20
        queue.put({"model": name, "seconds": seconds, "all_seconds": times,
                   "peak_memory_mb": peak})
    except Exception as err:  # report the failure, keep benchmarking the others
        queue.put({"model": name, "error": f"{type(err).__name__}: {err}"})


def measure(name, args):
    """Run one measurement in a fresh process and return its record; a process that dies
    without one (killed, or failing before its own error handling) gives an error row."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_measure, args=(name, args, queue))
    process.start()
    while True:
        try:
            result = queue.get(timeout=1)
            break
        except queue_module.Empty:
            if not process.is_alive() and queue.empty():
                result = {"model": name, "error": f"its process ended with exit code "
                                                  f"{process.exitcode} before reporting"}
                break
    process.join()
    return result


def print_table(rows):
    print(f"{'model':<14}{'ms':>10}{'peak MB':>10}{'/matmul':>10}{'/s4d-min':>10}"
          "  recorded anchor")
    for row in rows:
        if "error" in row:
            print(f"{row['model']:<14}  failed: {row['error']}")
            continue
        recorded = (f"  {row['recorded_anchor']}: {1000 * row['recorded_seconds']:.0f} ms"
                    if "recorded_anchor" in row else "")
        print(f"{row['model']:<14}{1000 * row['seconds']:>10.1f}{row['peak_memory_mb']:>10.0f}"
              f"{row.get('x_matmul', float('nan')):>10.2f}"
              f"{row.get('x_s4d-minimal', float('nan')):>10.2f}{recorded}")


def bench_layers(models, out_dir="benchmarks/results", **args):
    """Time each model (and the anchors), print a table, write the JSON; return the record."""
    import torch

    from lra import registry

    names = models or list(registry.entries("model"))
    rows = [measure(name, args) for name in [*ANCHORS, *names]]
    anchors = {row["model"]: row.get("seconds") for row in rows[:len(ANCHORS)]}
    for row in rows:
        for anchor, seconds in anchors.items():
            if "seconds" in row and seconds:
                row[f"x_{anchor}"] = row["seconds"] / seconds
        if row["model"] in RECORDED:
            row["recorded_anchor"], row["recorded_seconds"] = RECORDED[row["model"]]
    cuda = args["device"].startswith("cuda")
    memory = ("torch.cuda.max_memory_allocated" if cuda else
              "the process's peak RSS, torch itself included (see the matmul row)")
    record = {"kind": "layers", "shape": args, "device": device_name(args["device"]),
              "torch": torch.__version__, "peak_memory": memory, **provenance(), "rows": rows}
    out = write_record(record, out_dir)
    print_table(rows)
    print(f"wrote {out}")
    return record
