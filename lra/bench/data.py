"""`lra bench data`: our ListOps and Pathfinder generators against slow references of the
original scripts (`lra.generators.reference`) run in the same invocation, on one core, with the
statistics of 32 px Pathfinder images set beside the release's.

    lra bench data                         # 1000 Pathfinder 32 px images, the others scaled
    lra bench data --n 100 --tasks listops pathfinder

Rates are samples per CPU second of this process (PNG encoding included for Pathfinder).
Results go to `benchmarks/results/data-<device>-<date>.json` and a printed table.
"""
import time

from lra.bench.core import device_name, provenance, write_record

RELEASE_32PX = {  # the released 32 px hard Pathfinder images (shared/reference)
    "mean_pixel": 20.3, "sd_of_image_means": 2.1, "fraction_above_0": 0.34,
    "fraction_above_127": 0.086, "fraction_with_max_255": 1.0, "label_mean_difference": 0.0}
ORIGINAL_SPEED = {  # samples per second on one core, measured once (shared/reference)
    "listops": ("the LRA ListOps script", 200.0),
    "pathfinder": ("snakes2.py, 32 px hard images, 0.5-0.7 s each", 1 / 0.6),
    "pathx": ("snakes2.py, 128 px hard images, 3.6 s each", 1 / 3.6),
}
GENERATORS = ("listops", "pathfinder", "pathx")


def data_sizes(n):
    """Samples per generator for `--n N` (N Pathfinder 32 px images from ours):
    (ours, reference)."""
    return {"listops": (20 * n, max(1, n // 5)), "pathfinder": (n, max(1, n // 50)),
            "pathx": (max(1, n // 10), max(1, n // 500))}


def _timed(run):
    """(what run() returns, CPU seconds, wall seconds) of one call in this process."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = run()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def _rate(count, cpu, wall):
    return {"samples": count, "cpu_seconds": cpu, "wall_seconds": wall,
            "per_second": count / max(cpu, 1e-9)}


def image_statistics(images, labels):
    """The release's figures of a stack of uint8 images (N, res, res) with their labels."""
    import numpy as np

    x = images.astype(np.float64)
    means = x.mean(axis=(1, 2))
    labels = np.asarray(labels)
    both = 0 < labels.sum() < len(labels)
    gap = means[labels == 1].mean() - means[labels == 0].mean() if both else 0.0
    return {"images": len(x), "mean_pixel": float(x.mean()),
            "sd_of_image_means": float(means.std()),
            "fraction_above_0": float((x > 0).mean()),
            "fraction_above_127": float((x > 127).mean()),
            "fraction_with_max_255": float((x.max(axis=(1, 2)) == 255).mean()),
            "label_mean_difference": float(gap)}


def _bench_listops(ours, reference):
    import itertools

    from lra.generators.listops import TreeSpec, samples
    from lra.generators.reference import listops_lines

    _, cpu, wall = _timed(lambda: list(itertools.islice(samples(TreeSpec(), seed=0), ours)))
    _, ref_cpu, ref_wall = _timed(lambda: listops_lines(reference, seed=0))
    return _rate(ours, cpu, wall), _rate(reference, ref_cpu, ref_wall), {}


def _bench_pathfinder(resolution, ours, reference):
    """Draw and PNG-encode images with ours (after an untimed warm-up that fills its caches, as
    a long run's would be) and with the reference; the drawings for the statistics too."""
    import numpy as np

    from lra.generators.pathfinder import draw, png, spec_for
    from lra.generators.reference import pathfinder_image

    spec = spec_for(resolution)

    def drawings(generator, seed, count):
        def one(i):
            drawing = generator(spec, np.random.default_rng([seed, i]), i % 2)
            png(drawing.pixels)
            return drawing
        return lambda: [one(i) for i in range(count)]

    warm = max(2, ours // 10)
    drawings(draw, 1, warm)()
    fast, cpu, wall = _timed(drawings(draw, 0, ours))
    slow, ref_cpu, ref_wall = _timed(drawings(pathfinder_image, 0, reference))
    # the reference draws the first of our images again, from the same seeds: the same pixels
    same = sum(np.array_equal(a.pixels, b.pixels) for a, b in zip(fast, slow))
    extra = {"warm_up_images": warm, "identical_to_ours": same}
    if resolution == 32:
        extra["statistics"] = {
            name: image_statistics(np.stack([d.pixels for d in drawn]), [d.label for d in drawn])
            for name, drawn in (("ours", fast), ("reference", slow))}
        extra["statistics"]["release"] = RELEASE_32PX
    return _rate(ours, cpu, wall), _rate(reference, ref_cpu, ref_wall), extra


def print_table(rows):
    print(f"{'generator':<12}{'ours/s':>10}{'reference/s':>13}{'speed-up':>10}"
          "   original (recorded)")
    for row in rows:
        same = (f"; {row['identical_to_ours']}/{row['reference']['samples']} reference images "
                "identical to ours" if "identical_to_ours" in row else "")
        print(f"{row['generator']:<12}{row['ours']['per_second']:>10.1f}"
              f"{row['reference']['per_second']:>13.2f}{row['speedup']:>9.0f}x   "
              f"{row['original']['per_second']:.2f}/s: {row['original']['what']}{same}")
    stats = next((row["statistics"] for row in rows if "statistics" in row), None)
    if stats:
        print(f"\n32 px images{'ours':>19}{'reference':>12}{'release':>10}")
        for key in RELEASE_32PX:
            print(f"{key:<24}" + "".join(f"{stats[name][key]:>{w}.3f}" for name, w in
                                         (("ours", 7), ("reference", 12), ("release", 10))))
        print(f"{'images':<24}{stats['ours']['images']:>7}{stats['reference']['images']:>12}")


def bench_data(n=1000, tasks=GENERATORS, out_dir="benchmarks/results"):
    """Time each generator and its reference on this core, print a table, write the JSON;
    return the record."""
    sizes = data_sizes(n)
    rows = []
    for task in tasks:
        ours, reference = sizes[task]
        if task == "listops":
            fast, slow, extra = _bench_listops(ours, reference)
        else:
            resolution = 32 if task == "pathfinder" else 128
            fast, slow, extra = _bench_pathfinder(resolution, ours, reference)
        original, original_rate = ORIGINAL_SPEED[task]
        rows.append({"generator": task, "ours": fast, "reference": slow,
                     "speedup": fast["per_second"] / slow["per_second"],
                     "original": {"what": original, "per_second": original_rate}, **extra})
    record = {"kind": "data", "device": device_name(), "n": n,
              "sizes": {t: sizes[t] for t in tasks},
              "timing": "CPU seconds of this process (one core), PNG encoding included for "
                        "Pathfinder", **provenance(), "rows": rows}
    out = write_record(record, out_dir)
    print_table(rows)
    print(f"wrote {out}")
    return record
