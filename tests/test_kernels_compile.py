"""Every Triton kernel compiles for an H100 (sm_90) on this GPU-less machine (the compile check):
forward and backward, float32 and bfloat16, within the shared memory a block may use, and spilling
registers only where docs/performance.md says so. It compiles with the Triton of the environment
the tests run in (.venv: the newest release, what CI runs); `make kernels-check TRITON=3.6` runs
the whole check under Triton 3.6 (what the CUDA builds of torch 2.11 ship) in .venv-triton3.6."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lra.bench.compile_check import (
    FAMILIES,
    Compiled,
    Programs,
    compile_all,
    over_shared_memory,
    spilled,
    too_few_programs,
)

pytestmark = pytest.mark.kernels

# the spills docs/performance.md records: 8-40 bytes (float32) and 8 bytes
KNOWN_SPILLS = {("additive_recurrence", "_causal_states_back"), ("vandermonde", "_backward_kernel")}
KERNELS = {"attention": {"_fwd", "_delta", "_dkdv", "_dq"},
           "selective_scan": {"_scan_fwd", "_scan_bwd"},
           "additive_recurrence": {"_causal_states", "_causal_out", "_causal_dq",
                                   "_causal_states_back", "_causal_dv", "_causal_dk",
                                   "_noncausal_stats", "_noncausal_out", "_noncausal_dstate",
                                   "_noncausal_bwd_keys", "_noncausal_bwd_values"},
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
    # the recipes train attention with dropout: its Philox stream takes tiles of its own
    assert {"dropout" in r.case for r in results if r.family == "attention"} == {True, False}
    for case in {(r.family, r.case) for r in results}:  # each case's forward and backward
        assert len([r for r in results if (r.family, r.case) == case]) >= 2, case
    assert all(r.registers > 0 and r.warps > 0 for r in results)
    assert over_shared_memory(results, 90) == []
    assert {(r.family, r.kernel) for r in spilled(results)} <= KNOWN_SPILLS, [
        dataclasses.astuple(r) for r in spilled(results)]


def test_programs_per_launch_at_the_recipe_shapes_fill_an_h100():
    """Every launch of every family, forward and backward, counted at each recipe's training
    shape (meta tensors): two programs per SM or more, but for the launches that say why."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = ("import dataclasses, json; from lra.bench.compile_check import count_programs; "
              "print(json.dumps([dataclasses.asdict(c) for c in count_programs()]))")
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    counts = [Programs(**c) for c in json.loads(run.stdout.splitlines()[-1])]
    for family, kernels in KERNELS.items():
        prefix = {"attention": "flash/", "selective_scan": "mamba/", "vandermonde": "s4d/",
                  "cauchy": "s4/", "additive_recurrence": "lightnet/"}[family]
        recipes = {c.recipe for c in counts if c.family == family}
        assert len(recipes) == 9 and all(r.startswith(prefix) for r in recipes), recipes
        # LightNet's recipes are bidirectional: the non-causal kernels only
        expected = {k for k in kernels if "causal_" not in k or "noncausal" in k}
        assert {c.kernel for c in counts if c.family == family} == expected
    by_launch = {(c.recipe, c.kernel): c.programs for c in counts}
    # Path-X Mamba: 2 x 168 channels in blocks of 8, times the batch of 16
    assert by_launch["mamba/pathx", "_scan_bwd"] == 336 // 8 * 16
    assert too_few_programs(counts, 90) == []


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_kernels_check_runs_under_another_triton_in_its_own_environment():
    def dry_run(*variables):  # -B -n: every command make would run, none run
        env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL")}
        run = subprocess.run(["make", "--no-print-directory", "-B", "-n", "kernels-check",
                              *variables], cwd=Path(__file__).resolve().parents[1], env=env,
                             capture_output=True, text=True, check=True)
        return run.stdout.splitlines()

    check = "-m lra.bench.compile_check --arch 80"
    other = dry_run("TRITON=3.6", "ARGS=--arch 80")
    assert any(".venv-triton3.6/bin/python -m pip install" in line and '"triton==3.6.*"' in line
               and '"torch==' in line for line in other), other
    assert any(line.endswith(".venv-triton3.6/bin/python -m pip install -q --no-deps -e .")
               for line in other), other
    assert other[-1].endswith(f".venv-triton3.6/bin/python {check}"), other
    assert other[-1].startswith("env -u TRITON_INTERPRET")
    default = dry_run("ARGS=--arch 80")
    assert default[-1].endswith(f".venv/bin/python {check}"), default
    assert not any("triton" in line for line in default), default


def test_too_few_programs_flags_a_launch_that_does_not_say_why():
    full = Programs("selective_scan", "mamba/sc10", "_scan_bwd", 264)
    few = dataclasses.replace(full, programs=263)
    explained = Programs("vandermonde", "s4d/sc10", "_backward_kernel", 128)
    assert too_few_programs([full, few, explained], 90) == [few]
    assert too_few_programs([few], 80) == []  # 216 on an A100's 108 SMs
    assert too_few_programs([few], 75) == []  # an architecture of unknown SM count


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
