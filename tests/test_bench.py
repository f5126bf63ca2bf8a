"""`lra bench layers` writes a JSON record with same-run anchor ratios; the core every bench
shares (timing, the JSON files) and the package's layout."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lra import config, registry
from lra.bench.core import time_steps, write_record

CONF = Path(__file__).parents[1] / "conf"


def test_bench_layers_writes_ratios_to_same_run_anchors(lra, tmp_path):
    result = lra("bench", "layers", "--models", "s4d", "--batch", "1", "--length", "37",
                 "--d-model", "8", "--d-state", "4", "--repeats", "1", "--out", "out")
    assert result.code == 0, result.err
    [path] = (tmp_path / "out").glob("layers-cpu-*.json")
    record = json.loads(path.read_text())
    rows = {row["model"]: row for row in record["rows"]}
    assert set(rows) == {"matmul", "s4d-minimal", "s4d"}
    assert record["shape"]["length"] == 37 and record["shape"]["threads"] == 1
    s4d = rows["s4d"]
    assert s4d["seconds"] > 0 and s4d["peak_memory_mb"] > 0
    assert s4d["x_matmul"] == s4d["seconds"] / rows["matmul"]["seconds"]
    assert s4d["recorded_anchor"].startswith("state-spaces/s4")
    assert "s4d-minimal" in result.out and str(path.name) in result.out


def test_list_models_counts_parameters_at_a_given_width(lra):
    small, large = (lra("list", "models", "--params", "--d-model", str(d)).out for d in (16, 32))
    count = {d: int(next(line for line in text.splitlines() if line.split()[0] == "s4d")
                    .split()[2].replace(",", "")) for d, text in ((16, small), (32, large))}
    assert 0 < count[16] < count[32]
    assert "tasks:" not in small
    options = config.options(OmegaConf.to_container(OmegaConf.load(CONF / "model" / "s4d.yaml")))
    built = registry.model("s4d")(**{**options, "d_model": 16})
    assert count[16] == sum(p.numel() for p in built.parameters())


def test_time_steps_on_a_cpu_times_repeats_after_the_warm_up():
    calls = []
    seconds, times, peak = time_steps(lambda: calls.append(1), repeats=3, cuda=False, warmup=2)
    assert len(calls) == 5 and len(times) == 3 and peak is None
    assert seconds == sorted(times)[1]


def test_time_steps_cuts_the_repeats_to_the_budget():
    seconds, times, _ = time_steps(lambda: time.sleep(0.05), repeats=5, cuda=False, warmup=1,
                                   budget=0.12)
    assert 1 <= len(times) <= 2 and seconds >= 0.05


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_time_steps_on_cuda_go_through_do_bench():
    a = torch.randn(1024, 1024, device="cuda")
    seconds, times, peak = time_steps(lambda: a @ a, repeats=5, cuda=True, warmup=1)
    assert seconds > 0 and len(times) >= 1 and peak >= 4


def test_write_record_names_the_file_by_kind_device_and_time(tmp_path):
    record = {"kind": "kernels", "device": "NVIDIA H100 80GB/HBM3",
              "created": "2026-01-02T03:04:05", "rows": []}
    path = write_record(record, tmp_path / "out")
    assert path.name == "kernels-NVIDIA_H100_80GB_HBM3-20260102-030405.json"
    assert json.loads(path.read_text()) == record and os.listdir(tmp_path / "out") == [path.name]


def test_the_bench_package_imports_no_torch():
    code = "import sys, lra.bench, lra.bench.core; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

