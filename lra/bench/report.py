"""`lra bench report`: bench JSON files as Markdown tables, with the H100 targets of the
kernels issue checked.

    lra bench report benchmarks/results/kernels-NVIDIA_H100_80GB_HBM3-*.json
    lra bench report benchmarks/results/train-*.json > report.md

One row per case and task shape: the milliseconds of ours (`triton`; `default` for training
steps), of the PyTorch reference and of every anchor that ran, and, where the issue sets a target
for that row, the target and whether this run met it. Ratios come from the same run, except for
the state-spaces/s4 blocks, which cannot run here and are compared with their recorded H100
times. Targets are checked only for GPU runs at full scale (`--scale 1`); a CPU run's table says
so instead.
"""
import json
from pathlib import Path

from lra.errors import UserError

# state-spaces/s4 with its CUDA extension, B16 H256 L4096 (the text shape)
RECORDED_MS = {"s4d": 4.92, "s4": 6.67}
VERDICTS = {True: "yes", False: "**no**", None: "anchor missing"}  # met, missed, not comparable


def target(row, kind):
    """(what the issue asks of a row of a `kind` bench, whether this run met it), or None where
    it asks nothing."""
    case, task, timed = row["case"], row["task"], _timed(row)
    ours = timed.get("default" if kind == "train" else "triton")
    if ours is None:
        return None
    if kind == "train":
        return _faster("2x the reference's tokens/s", ours, timed.get("reference"), 2.0)
    if case == "attention" and row["shape"]["padded"]:
        return _faster("faster than flex", ours, timed.get("flex"), 1.0)
    if case == "attention":
        return _faster("within 1.1x of sdpa-flash", ours, timed.get("sdpa-flash"), 1 / 1.1)
    if case == "mamba":
        return _faster("20x mambapy", ours, timed.get("mambapy"), 20.0)
    if case == "additive_causal":
        if task == "pathx":
            return _faster("faster than fla at 16K", ours, timed.get("fla"), 1.0)
        return _faster("within 1.2x of fla", ours, timed.get("fla"), 1 / 1.2)
    if case in RECORDED_MS and task == "text":
        recorded = RECORDED_MS[case]
        return _faster(f"2x state-spaces/s4 ({recorded} ms, recorded)", ours, recorded, 2.0)
    return None


def _timed(row):
    return {name: c["ms"] for name, c in row["candidates"].items() if c.get("status") == "ok"}


def _faster(what, ours, theirs, factor):
    """Met when theirs / ours >= factor; unknown (None) when the anchor did not run."""
    if theirs is None:
        return what, None
    return what, theirs / ours >= factor


def load(path):
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read bench results {path}: {err}. Give the JSON files "
                        "`lra bench kernels` or `lra bench train` wrote "
                        "(benchmarks/results/).") from err
    if record.get("kind") not in ("kernels", "train") or not isinstance(record.get("rows"), list):
        raise UserError(f"{path} is not a `lra bench kernels` or `lra bench train` result (kind "
                        f"{record.get('kind')!r}); `lra bench layers` and `data` files have their "
                        "own tables.")
    return record


def markdown(record, source):
    """One record as a Markdown section: a heading, how it was run, and the table."""
    gpu = not record["device"].startswith("cpu") and record["options"].get("scale") == 1
    names = [n for n in ("triton", "default", "reference")
             if any(n in r["candidates"] for r in record["rows"])]
    anchors = sorted({n for r in record["rows"] for n, c in r["candidates"].items()
                      if c.get("kind") == "anchor" and c.get("status") == "ok"})
    unit = "ms per training step" if record["kind"] == "train" else "ms, forward + backward"
    lines = [f"### `lra bench {record['kind']}` on {record['device']}", "",
             f"`{source}`: torch {record['torch']}, options {json.dumps(record['options'])}; "
             + unit + ("" if gpu else "; targets are for a GPU at full scale, not checked here"),
             "",
             "| case | task | B x L | " + " | ".join([*names, *anchors]) + " | target | met |",
             "|" + "---|" * (5 + len(names) + len(anchors))]
    goals = []
    for row in record["rows"]:
        timed = _timed(row)
        shape = f"{row['shape']['batch']} x {row['shape']['length']}"
        cells = [f"{timed[n]:.3g}" if n in timed else "-" for n in (*names, *anchors)]
        goal = target(row, record["kind"]) if gpu else None
        verdict = "" if goal is None else VERDICTS[goal[1]]
        goals += [goal] if goal else []
        lines.append(f"| {row['case']} | {row['task']} | {shape} | " + " | ".join(cells)
                     + f" | {goal[0] if goal else ''} | {verdict} |")
    if gpu:
        missing = sum(g[1] is None for g in goals)
        met = sum(g[1] is True for g in goals)
        lines += ["", f"Targets met: {met} of {len(goals) - missing} checked"
                  + (f"; {missing} without their anchor" if missing else "") + "."]
    return "\n".join(lines)


def report(paths):
    """Print each file's Markdown section; return the text."""
    if not paths:
        raise UserError("lra bench report takes one or more JSON files from benchmarks/results/ "
                        "(written by lra bench kernels or lra bench train)")
    text = "\n\n".join(markdown(load(p), p) for p in paths) + "\n"
    print(text, end="")
    return text
