"""`lra bench kernels` and `lra bench train` at tiny scales on the CPU: every case, candidate and
anchor is listed (found or not), timed candidates carry positive times, and the ratios are those of
the times."""
import json
import sys
import types

import pytest
import torch

from lra.bench.core import KERNEL_CASES, device_peaks
from lra.bench.kernels import CASES

STATES = {"ok", "skipped", "not found", "failed", "unavailable"}


def _record(tmp_path, kind):
    [path] = (tmp_path / "out").glob(f"{kind}-cpu-*.json")
    return json.loads(path.read_text())


def _check_ratios(row):
    timed = {name: c for name, c in row["candidates"].items() if c["status"] == "ok"}
    assert row["anchor"] in timed
    for name, c in timed.items():
        assert c["ms"] > 0 and all(ms > 0 for ms in c["all_ms"])
        assert c["tokens_per_s"] == pytest.approx(row["tokens"] / (c["ms"] / 1000))
        for other, x in c["speedup_vs"].items():
            assert x == pytest.approx(timed[other]["ms"] / c["ms"])
        if name != row["anchor"]:
            assert c["x_anchor"] == pytest.approx(timed[row["anchor"]]["ms"] / c["ms"])


class _FakeMamba(torch.nn.Module):
    """Stands in for mambapy's Mamba (forward returns (y, hiddens)), to show a found anchor is
    timed."""

    def __init__(self, config):
        super().__init__()
        self.proj = torch.nn.Linear(config.d_model, config.d_model)

    def forward(self, x):
        return self.proj(x), None


def test_bench_kernels_lists_every_case_candidate_and_anchor(lra, tmp_path, monkeypatch):
    fake = types.ModuleType("mambapy.mamba")
    fake.Mamba, fake.MambaConfig = _FakeMamba, lambda **options: types.SimpleNamespace(**options)
    monkeypatch.setitem(sys.modules, "mambapy", types.ModuleType("mambapy"))
    monkeypatch.setitem(sys.modules, "mambapy.mamba", fake)
    monkeypatch.setitem(sys.modules, "fla", None)  # fla-core missing, installed or not
    result = lra("bench", "kernels", "--tasks", "listops", "--scale", "0.004", "--repeats", "1",
                 "--out", "out")
    assert result.code == 0, result.err
    record = _record(tmp_path, "kernels")
    rows = {row["case"]: row for row in record["rows"]}
    assert set(rows) == set(CASES) and {row["task"] for row in record["rows"]} == {"listops"}
    for row in rows.values():
        assert {c["status"] for c in row["candidates"].values()} <= STATES
        assert row["candidates"]["triton"]["status"] == "skipped"  # no --interpret
        assert row["candidates"]["reference"]["lra_kernels"] == "reference"
        _check_ratios(row)
    attention = rows["attention"]
    anchors = {"sdpa-flash", "sdpa-efficient", "sdpa-cudnn", "sdpa-math", "flex", "flex-qk"}
    assert anchors <= set(attention["candidates"])
    assert attention["candidates"]["flex"]["status"] == "skipped" and attention["flops"] > 0
    assert attention["candidates"]["flex-qk"]["status"] == "skipped"
    assert rows["additive_causal"]["candidates"]["fla"]["status"] == "not found"
    assert record["anchors"]["fla"] == "not found" and record["anchors"]["mambapy"] == "found"
    mamba = rows["mamba"]
    assert mamba["candidates"]["mambapy"]["status"] == "ok" and mamba["anchor"] == "mambapy"
    assert rows["s4d"]["candidates"]["s4d-minimal"]["status"] == "ok"
    vandermonde = rows["vandermonde"]  # one kernel for every sequence
    assert vandermonde["shape"]["batch"] == 1
    assert vandermonde["tokens"] == vandermonde["shape"]["length"]
    scan = rows["selective_scan"]  # recipe mamba/listops: d_model 128, d_state 16
    assert scan["shape"]["recipe"] == "mamba/listops"
    # x, dt (B, 256, L), B, C (B, 16, L), A (256, 16), D (256,); the output (B, 256, L)
    L, B = scan["shape"]["length"], scan["shape"]["batch"]
    inputs = 2 * B * 256 * L + 2 * B * 16 * L + 256 * 16 + 256
    assert scan["bytes"] == 4 * (3 * inputs + 2 * B * 256 * L)
    # recipe lightnet/listops: 4 heads of 34 with LRPE, so q, k (B, 4, L, 68), v and o (B, 4, L, 34)
    additive = rows["additive_noncausal"]
    L, B = additive["shape"]["length"], additive["shape"]["batch"]
    assert additive["bytes"] == 4 * (3 * B * 4 * L * (68 + 68 + 34) + 2 * B * 4 * L * 34)
    assert record["peaks"] is None and record["options"]["scale"] == 0.004
    assert "fla" in result.out and "not found" in result.out and "wrote" in result.out


def test_bench_kernels_interpret_times_the_triton_attention(lra, tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    pytest.importorskip("triton", reason="Triton is installed on Linux x86_64 only")
    result = lra("bench", "kernels", "--interpret", "--cases", "attention", "--tasks", "image",
                 "--scale", "0.002", "--repeats", "1", "--out", "out")
    assert result.code == 0, result.err
    [row] = _record(tmp_path, "kernels")["rows"]
    triton = row["candidates"]["triton"]
    assert triton["status"] == "ok" and triton["lra_kernels"] == "triton"
    B, L = row["shape"]["batch"], row["shape"]["length"]
    assert (B, L) == (1, 4) and not row["shape"]["padded"]
    # recipe flash/image: 8 heads of 8 (qkv_dim 64); a dense task: every key is real
    assert row["flops"] == 2.5 * 4 * B * 8 * L * L * 8
    assert triton["tflop_per_s"] == pytest.approx(row["flops"] / (triton["ms"] / 1000) / 1e12)
    _check_ratios(row)


def test_bench_train_times_a_step_per_model_and_task(lra, tmp_path):
    result = lra("bench", "train", "--models", "s4d", "transformer", "s4",
                 "--tasks", "listops", "retrieval", "--scale", "0.004", "--d-model", "16",
                 "--batch", "1", "--repeats", "1", "--out", "out")
    assert result.code == 0, result.err
    record = _record(tmp_path, "train")
    rows = {(row["case"], row["task"]): row for row in record["rows"]}
    assert set(rows) == {(m, t) for m in ("s4d", "transformer", "s4")
                         for t in ("listops", "retrieval")}
    for (model, task), row in rows.items():
        shape = row["shape"]
        # n_layers: 1 on a CPU
        assert shape["d_model"] == 16 and shape["n_layers"] == 1 and shape["batch"] == 1
        assert shape["precision"] == "32-true"  # bf16-mixed on a GPU only
        assert row["tokens"] == shape["batch"] * shape["documents"] * shape["length"]
        assert f"{model}/{task}" in row["what"]  # the S4 LRA experiment's config
        assert row["candidates"]["triton"]["status"] == "skipped"
        assert {row["candidates"][c]["status"] for c in ("default", "reference")} == {"ok"}
        assert row["anchor"] == "reference"
        _check_ratios(row)
    retrieval = rows[("s4d", "retrieval")]["shape"]
    assert retrieval["documents"] == 2 and retrieval["length"] == 16
    s4 = rows[("s4", "listops")]["shape"]  # its C~ is built for the scaled length, not 2048
    assert s4["max_len"] == s4["length"] + 1
    assert "no GPU" in result.out and "wrote" in result.out


@pytest.mark.parametrize("args, message", [
    (("--scale", "2"), "--scale 2.0 must be in (0, 1]"),
    pytest.param(("--device", "cuda"), "no CUDA device", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="a CUDA device is visible")),
])
def test_bench_rejects_bad_options(lra, args, message):
    result = lra("bench", "kernels", *args)
    assert result.code == 2 and message in result.err


def test_device_peaks_by_name():
    assert device_peaks("NVIDIA H100 80GB HBM3")["hbm_bytes_per_s"] == 3.35e12
    assert device_peaks("NVIDIA H200")["bf16_flop_per_s"] == 989e12
    assert device_peaks("NVIDIA A100-SXM4-40GB") is None
    assert device_peaks("NVIDIA H100 PCIe") is None


def test_the_cli_lists_the_cases_the_bench_has():
    assert KERNEL_CASES == tuple(CASES)
