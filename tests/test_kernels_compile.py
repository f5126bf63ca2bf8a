"""Every Triton kernel compiles for an H100 (sm_90) on this GPU-less machine (the compile check):
forward and backward, float32 and bfloat16, within the shared memory a block may use, and spilling
registers only where docs/performance.md says so."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest

from lra.bench.compile_check import FAMILIES, Compiled, compile_all, over_shared_memory, spilled

pytestmark = pytest.mark.kernels

# the spills docs/performance.md records: 8-40 bytes (float32) and 8 bytes
KNOWN_SPILLS = {("additive_recurrence", "_causal_states_back"), ("vandermonde", "_backward_kernel")}
KERNELS = {"attention": {"_fwd", "_delta", "_dkdv", "_dq"},
           "selective_scan": {"_scan_fwd", "_scan_bwd"},
           "additive_recurrence": {"_causal_states", "_causal_out", "_causal_dq",
                                   "_causal_states_back", "_causal_dv", "_causal_dk",
                                   "_noncausal_stats", "_noncausal_out", "_noncausal_dstate",
                                   "_noncausal_bwd"},
           "vandermonde": {"_forward_kernel", "_backward_kernel"},
           "cauchy": {"_forward_kernel", "_backward_kernel"}}


def test_every_kernel_compiles_for_sm90_within_its_limits():
    # compiled, not interpreted
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = ("import dataclasses, json; from lra.bench.compile_check import compile_all; "
              "print(json.dumps([dataclasses.asdict(r) for r in compile_all(90, quick=True)]))")
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    results = [Compiled(**r) for r in json.loads(run.stdout.splitlines()[-1])]

    assert {r.family for r in results} == set(FAMILIES)
    for family, kernels in KERNELS.items():
        assert {r.kernel for r in results if r.family == family} == kernels
    for case in {(r.family, r.case) for r in results}:  # each case's forward and backward
        assert len([r for r in results if (r.family, r.case) == case]) >= 2, case
    assert all(r.registers > 0 and r.warps > 0 for r in results)
    assert over_shared_memory(results, 90) == []
    assert {(r.family, r.kernel) for r in spilled(results)} <= KNOWN_SPILLS, [
        dataclasses.astuple(r) for r in spilled(results)]


def test_the_compile_check_refuses_to_run_interpreted(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(RuntimeError, match="run the compile check in a process without it"):
        next(compile_all(90))


def test_an_unknown_family_is_named(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError,
                       match="unknown kernel families \\['flashy'\\]; known: attention"):
        next(compile_all(90, ["flashy"]))


def test_over_the_limit_and_spills_are_reported():
    fits = Compiled("attention", "bfloat16 d=64", "_fwd", 4, 3, 65536, 200, 0)
    too_big = dataclasses.replace(fits, shared=300_000)
    spills = dataclasses.replace(fits, registers=255, stack=416)
    assert over_shared_memory([fits, too_big, spills], 90) == [too_big]
    assert over_shared_memory([fits], 86) == []  # 64 KiB fits an sm_86 block (99 KiB)
    assert spilled([fits, too_big, spills]) == [spills]


def test_blocks_per_sm_by_registers_shared_memory_and_warps():
    from lra.bench.compile_check import blocks_per_sm

    base = Compiled("attention", "bfloat16 d=64", "_fwd", 8, 3, 0, 255, 0)
    # 255 registers x 256 threads: the register file holds one block
    assert blocks_per_sm(base, 90) == 1
    # 16 warps' worth
    assert blocks_per_sm(dataclasses.replace(base, warps=4, registers=128), 90) == 4
    # 228 KB
    assert blocks_per_sm(dataclasses.replace(base, warps=4, registers=32, shared=100_000), 90) == 2
    # the block limit
    assert blocks_per_sm(dataclasses.replace(base, warps=1, registers=16), 90) == 32
    # 48 warps on sm_86
    assert blocks_per_sm(dataclasses.replace(base, warps=4, registers=32), 86) == 12
    assert blocks_per_sm(base, 75) is None
