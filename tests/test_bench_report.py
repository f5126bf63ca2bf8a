"""`lra bench report`: bench JSON as Markdown, each H100 target of the kernels issue checked on
GPU runs only."""
import json
from pathlib import Path

from lra.bench.report import markdown

RESULTS = Path(__file__).parents[1] / "benchmarks" / "results"


def candidate(ms, kind="anchor"):
    return {"kind": kind, "status": "ok", "ms": ms}


def row(case, task, length=1024, **candidates):
    padded = task in ("listops", "text", "retrieval")  # as lra.bench.core.TASKS says
    return {"case": case, "task": task, "shape": {"batch": 2, "length": length, "padded": padded},
            "candidates": candidates}


def record(rows, device="NVIDIA H100 80GB HBM3", scale=1, kind="kernels"):
    return {"kind": kind, "device": device, "torch": "2.11", "options": {"scale": scale},
            "rows": rows}


KERNELS = [
    # faster than flex: yes
    row("attention", "listops", triton=candidate(1.0, "ours"), flex=candidate(1.2)),
    # 1.10x: no
    row("attention", "image", triton=candidate(1.3, "ours"), **{"sdpa-flash": candidate(1.18)}),
    row("additive_causal", "pathx", triton=candidate(5.0, "ours"),
        fla={"kind": "anchor", "status": "not found"}),  # no anchor to compare
    row("s4d", "text", triton=candidate(2.0, "ours")),  # 4.92 recorded / 2.0 = 2.46x: yes
    row("selective_scan", "text", triton=candidate(3.0, "ours"),
        reference=candidate(30.0, "reference")),  # no target
]


def test_gpu_run_checks_each_target_from_the_same_run():
    text = markdown(record(KERNELS), "k.json")
    lines = {line.split(" | ")[0] + line.split(" | ")[1]: line
             for line in text.splitlines() if line.startswith("| ")}
    assert lines["| attentionlistops"].endswith("| faster than flex | yes |")
    assert lines["| attentionimage"].endswith("| within 1.1x of sdpa-flash | **no** |")
    assert lines["| additive_causalpathx"].endswith("| faster than fla at 16K | anchor missing |")
    assert "2x state-spaces/s4 (4.92 ms, recorded) | yes |" in lines["| s4dtext"]
    assert lines["| selective_scantext"].endswith("|  |  |")
    # triton, reference, flex, then sdpa-flash
    assert "| 1 | - | 1.2 |" in lines["| attentionlistops"]
    assert "Targets met: 2 of 3 checked; 1 without their anchor." in text


def test_training_steps_need_twice_the_reference_throughput():
    rows = [row(model, "text", default=candidate(10.0, "ours"),
                reference=candidate(reference, "reference"))
            for model, reference in (("s4d", 25.0), ("mamba", 15.0))]
    text = markdown(record(rows, kind="train"), "t.json")
    assert "| s4d | text | 2 x 1024 | 10 | 25 | 2x the reference's tokens/s | yes |" in text
    assert "| mamba | text | 2 x 1024 | 10 | 15 | 2x the reference's tokens/s | **no** |" in text
    assert "ms per training step" in text


def test_cpu_or_scaled_runs_check_no_target():
    for rec in (record(KERNELS, device="cpu-x86_64"), record(KERNELS, scale=0.0625)):
        text = markdown(rec, "k.json")
        assert "not checked here" in text and "Targets met" not in text and "| yes |" not in text


def test_report_names_what_it_cannot_use(lra, tmp_path):
    (tmp_path / "layers.json").write_text(json.dumps({"kind": "layers", "rows": []}))
    (tmp_path / "torn.json").write_text('{"kind": "kern')
    (tmp_path / "gpu.json").write_text(json.dumps(record(KERNELS)))
    result = lra("bench", "report", "gpu.json")
    assert result.code == 0 and "### `lra bench kernels` on NVIDIA H100 80GB HBM3" in result.out
    for name, says in (("layers.json", "is not a `lra bench kernels` or `lra bench train` result"),
                       ("torn.json", "cannot read bench results torn.json")):
        result = lra("bench", "report", name)
        assert result.code == 2 and says in result.err
    result = lra("bench", "report")
    assert result.code == 2 and "takes one or more JSON files" in result.err
    result = lra("bench", "kernels", "gpu.json")
    assert result.code == 2 and "files go to `lra bench report`" in result.err


def test_report_reads_the_files_benches_wrote_before():
    files = sorted(RESULTS.glob("kernels-cpu-*.json")) + sorted(RESULTS.glob("train-cpu-*.json"))
    assert files
    for path in files:
        record = json.loads(path.read_text())
        text = markdown(record, path.name)
        assert f"### `lra bench {record['kind']}` on {record['device']}" in text
        assert text.count("\n| ") == 1 + len(record["rows"])  # the header, then a line a row
