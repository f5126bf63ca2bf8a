"""LRA_KERNELS forces a kernel implementation, and a typo in it is an error."""
import os
import subprocess
import sys

import pytest

from lra.kernels.dispatch import forced, refuse_triton


@pytest.mark.parametrize("value, expected", [("", None), ("reference", "reference"),
                                             ("Triton", "triton"), (" reference ", "reference")])
def test_forced_reads_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv("LRA_KERNELS", value)
    assert forced() == expected


def test_an_unknown_choice_is_an_error_not_a_silent_default(monkeypatch):
    monkeypatch.setenv("LRA_KERNELS", "tirton")
    with pytest.raises(ValueError, match="'tirton' is not known; set it to reference or triton"):
        forced()


def test_a_family_without_triton_refuses_only_when_triton_is_forced(monkeypatch):
    monkeypatch.delenv("LRA_KERNELS", raising=False)
    refuse_triton("the toy family")
    monkeypatch.setenv("LRA_KERNELS", "triton")
    with pytest.raises(NotImplementedError, match="no Triton kernel exists yet for the toy family"):
        refuse_triton("the toy family")


def test_unset_takes_triton_only_for_cuda_tensors(monkeypatch):
    import torch

    from lra.kernels.dispatch import use_triton
    monkeypatch.delenv("LRA_KERNELS", raising=False)
    assert not use_triton("the toy family", torch.zeros(1))
    monkeypatch.setenv("LRA_KERNELS", "reference")
    assert not use_triton("the toy family", torch.zeros(1))


def test_forcing_triton_where_it_cannot_run_says_why(monkeypatch):
    pytest.importorskip("triton", reason="Triton is installed on Linux x86_64 only")
    import torch

    from lra.kernels.dispatch import use_triton
    monkeypatch.setenv("LRA_KERNELS", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="the toy family.*on cpu.*TRITON_INTERPRET=1"):
        use_triton("the toy family", torch.zeros(1))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert use_triton("the toy family", torch.zeros(1))


# --- failing safe on a GPU, simulated on a CPU ---------------------------------------------------

def on_device(t):
    """t on the GPU where there is one, else on the CPU that the `gpu` fixture passes for one."""
    import torch

    return t.to("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture
def gpu(monkeypatch):
    """An sm_90 GPU: the real one, or CPU tensors taken for a GPU's (Triton runs them under its
    interpreter); LRA_KERNELS unset, and a dispatch that has probed and warned about nothing yet."""
    pytest.importorskip("triton", reason="Triton is installed on Linux x86_64 only")
    import torch

    from lra.kernels import dispatch

    monkeypatch.delenv("LRA_KERNELS", raising=False)
    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        monkeypatch.setattr(dispatch, "on_gpu", lambda tensor: True)
    monkeypatch.setattr(dispatch, "capability", lambda tensor: (9, 0))
    monkeypatch.setattr(dispatch, "is_hip", lambda: False)
    dispatch.reset()
    yield dispatch
    dispatch.reset()


def fallback_warnings(record):
    return [str(w.message) for w in record if "Triton kernel is not used" in str(w.message)]


def test_bfloat16_before_sm80_takes_the_reference_with_one_warning(gpu, monkeypatch):
    import torch

    monkeypatch.setattr(gpu, "capability", lambda tensor: (7, 5))
    x = on_device(torch.zeros(4, dtype=torch.bfloat16))
    with pytest.warns(RuntimeWarning) as record:
        assert gpu.choose("toy", x) == "reference"
        assert gpu.choose("toy", x) == "reference"
    assert fallback_warnings(record) == [
        "toy: the Triton kernel is not used on this GPU (bfloat16 tiles need sm_80 or newer; this "
        "GPU is sm_75); running the PyTorch reference from now on"]
    assert gpu.RAN["toy"] == {"path": "reference",
                              "reason": "bfloat16 tiles need sm_80 or newer; this GPU is sm_75"}
    assert gpu.choose("other", x.float()) == "triton"  # float32 tiles fit sm_75
    monkeypatch.setattr(gpu, "capability", lambda tensor: (8, 0))
    assert gpu.choose("third", x) == "triton"


@pytest.mark.parametrize("error", ["OutOfResources", "CompilationError", "mismatch"])
def test_a_failing_first_launch_warns_once_and_the_family_keeps_the_reference(gpu, error):
    import torch
    from triton.compiler.errors import CompilationError
    from triton.runtime.errors import OutOfResources

    calls = []

    def probe():
        calls.append(1)
        if error == "OutOfResources":
            raise OutOfResources(81920, 65536, "shared memory")
        if error == "CompilationError":
            raise CompilationError("src", None, "bad tile")
        gpu.check_probe([torch.ones(3)], [torch.ones(3) * 1.1], 1e-3, "toy output")

    x = on_device(torch.zeros(3))
    with pytest.warns(RuntimeWarning) as record:
        paths = [gpu.choose("toy", x, probe=probe) for _ in range(3)]
    assert paths == ["reference"] * 3 and calls == [1]  # probed once, warned once
    (message,) = fallback_warnings(record)
    reason = gpu.RAN["toy"]["reason"]
    assert gpu.RAN["toy"]["path"] == "reference" and reason in message
    expected = {"OutOfResources": "OutOfResources: out of resource: shared memory",
                "CompilationError": "CompilationError", "mismatch": "relative error 9.09e-02"}
    assert expected[error] in reason
    # another dtype is probed on its own
    assert gpu.choose("toy", x.double(), probe=lambda: None) == "triton" and calls == [1]


def test_a_passing_probe_runs_triton_and_a_forced_kernel_is_never_probed(gpu, monkeypatch):
    import torch

    calls = []
    x = on_device(torch.zeros(3))
    assert gpu.choose("toy", x, probe=lambda: calls.append(1)) == "triton"
    assert gpu.choose("toy", x, probe=lambda: calls.append(1)) == "triton"
    assert calls == [1] and gpu.RAN["toy"] == {"path": "triton", "reason": None}
    monkeypatch.setenv("LRA_KERNELS", "triton")
    assert gpu.choose("forced", x, probe=lambda: 1 / 0) == "triton"  # errors surface, unhidden


def test_a_family_whose_kernel_fails_gives_the_reference_result(gpu, monkeypatch):
    """A real family: the Cauchy kernel's launcher raises OutOfResources; cauchy() still answers,
    with the reference's numbers."""
    import torch
    from triton.runtime.errors import OutOfResources

    import lra.kernels.cauchy.triton as kernels
    from lra.kernels.cauchy import cauchy, cauchy_chunked

    def broken(*args):
        raise OutOfResources(81920, 65536, "shared memory")

    monkeypatch.setattr(kernels, "cauchy_triton", broken)
    v = on_device(torch.complex(torch.randn(2, 3), torch.randn(2, 3)))
    z = on_device(torch.exp(2j * torch.pi * torch.arange(8) / 8).to(torch.complex64))
    with pytest.warns(RuntimeWarning, match="cauchy: .*OutOfResources"):
        r = cauchy(v, z, -v.abs() + 0j, conj=True)
    assert torch.equal(r, cauchy_chunked(v, z, -v.abs() + 0j))
    assert gpu.RAN["cauchy"]["path"] == "reference"


def test_a_kernel_that_computes_wrong_numbers_is_caught_by_the_probe(gpu, monkeypatch):
    import torch

    import lra.kernels.vandermonde.triton as kernels
    from lra.kernels.vandermonde import vandermonde, vandermonde_reference

    real = kernels.vandermonde_triton
    monkeypatch.setattr(kernels, "vandermonde_triton", lambda *a: real(*a) * 1.01)
    C = on_device(torch.complex(torch.randn(2, 3), torch.randn(2, 3)))
    dtA = on_device(torch.complex(-0.1 * torch.ones(2, 3), torch.randn(2, 3)))
    with pytest.warns(RuntimeWarning, match="vandermonde: .*probe differs from the reference"):
        K = vandermonde(C, dtA, 20)
    assert torch.equal(K, vandermonde_reference(C, dtA, 20))


def test_the_real_kernels_pass_their_probes(gpu):
    """Each family's probe: Triton stays chosen, no warning, even when the first call comes from
    validation (inference mode) under autocast. Under the interpreter float32 only: bfloat16 loads
    are wrong there, which the attention probe duly catches."""
    import warnings

    import torch

    from lra.kernels.survey import survey

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        device = on_device(torch.zeros(1)).device
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
            lines = survey(device, dtypes=(torch.float32,))
    families = {line.split()[0]: line.split()[1] for line in lines[1:]}
    assert families == dict.fromkeys(["additive_recurrence", "attention", "cauchy",
                                      "selective_scan", "vandermonde"], "triton"), lines
    assert torch.float32 in {key[1] for key in gpu._probed}


def test_without_triton_a_gpu_scan_warns_once_that_it_loops_per_step(gpu, monkeypatch):
    import torch

    from lra.kernels.selective_scan import selective_scan, selective_scan_chunked

    monkeypatch.setattr(gpu, "triton_installed", lambda: False)
    x = torch.rand(1, 2, 10)
    args = [on_device(t) for t in (x, x, -torch.ones(2, 4), torch.randn(1, 4, 10),
                                   torch.randn(1, 4, 10), torch.ones(2))]
    with pytest.warns(RuntimeWarning) as record:
        y = selective_scan(*args)
        selective_scan(*args)
    assert fallback_warnings(record) == [
        "selective_scan: the Triton kernel is not used on this GPU (Triton is not installed); "
        "running selective_scan_chunked, a per-step loop (slow on a GPU) from now on"]
    assert torch.equal(y, selective_scan_chunked(*args))


def test_a_head_dim_above_the_kernels_goes_to_sdpa(gpu, monkeypatch):
    import torch

    from lra.kernels.attention import attention, attention_sdpa

    q = on_device(torch.randn(1, 2, 9, 160))
    with pytest.warns(RuntimeWarning, match="head dim 160 is above the kernels' 128"):
        o = attention(q, q, q)
    assert torch.equal(o, attention_sdpa(q, q, q))
    monkeypatch.setenv("LRA_KERNELS", "triton")  # forced: still SDPA, not an error
    assert torch.equal(attention(q, q, q), o)


def test_rocm_takes_ieee_dots(gpu, monkeypatch):
    import torch

    from lra.kernels.additive_recurrence import triton_common

    monkeypatch.setattr(gpu, "is_hip", lambda: True)
    monkeypatch.setattr(triton_common, "is_hip", lambda: True)
    assert gpu.fp32_dot_precision() == "ieee"
    assert {triton_common.dot_precision(t) for t in (torch.float32, torch.bfloat16)} == {"ieee"}
    bf16 = on_device(torch.zeros(1, dtype=torch.bfloat16))
    assert gpu.choose("toy", bf16) == "triton"  # no sm_ rule


def test_dot_precision_honours_both_torch_apis_and_never_raises(monkeypatch):
    import types

    import torch

    from lra.kernels.additive_recurrence.triton_common import dot_precision
    from lra.kernels.dispatch import fp32_dot_precision

    def both():
        return fp32_dot_precision(), dot_precision(torch.float32)

    matmul = types.SimpleNamespace(fp32_precision="none", allow_tf32=True)
    monkeypatch.setattr(torch.backends.cuda, "matmul", matmul)
    assert both() == ("tf32", "tf32")
    matmul.allow_tf32 = False
    assert both() == ("ieee", "tf32x3")
    matmul.fp32_precision = "tf32"
    assert both() == ("tf32", "tf32")
    matmul.fp32_precision = "ieee"
    matmul.allow_tf32 = True
    assert both() == ("ieee", "tf32x3")
    assert dot_precision(torch.bfloat16) == "tf32"

    class Mixed:  # torch raises on allow_tf32 once the two APIs were mixed
        fp32_precision = "none"

        @property
        def allow_tf32(self):
            raise RuntimeError("mix of the legacy and new APIs")

    monkeypatch.setattr(torch.backends.cuda, "matmul", Mixed())
    assert both() == ("ieee", "tf32x3")


def test_attention_reads_the_dot_precision_once_per_call(triton_device, monkeypatch):
    """Forward and backward share the precision read in the forward."""
    import torch

    import lra.kernels.attention.triton as kernels

    reads = []
    monkeypatch.setattr(kernels, "fp32_dot_precision", lambda: reads.append(1) or "ieee")
    q = torch.randn(1, 1, 20, 16, device=triton_device, requires_grad=True)
    kernels.attention_triton(q, q, q).sum().backward()
    assert reads == [1] and q.grad.isfinite().all()


def test_doctor_kernels_prints_what_each_family_runs(lra, monkeypatch):
    monkeypatch.setenv("LRA_KERNELS", "reference")
    result = lra("doctor", "--kernels")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0].startswith("kernel families on ")
    assert sorted(line.split()[0] for line in lines[1:]) == [
        "additive_recurrence", "attention", "cauchy", "selective_scan", "vandermonde"]
    assert all(line.split(None, 2)[1:] == ["reference", "LRA_KERNELS=reference"]
               for line in lines[1:])


def test_the_result_record_lists_what_each_family_ran(lra, tmp_path, monkeypatch):
    from conftest import TINY, load_results

    from lra.kernels.dispatch import reset

    monkeypatch.delenv("LRA_KERNELS", raising=False)
    reset()
    result = lra("train", *TINY)
    assert result.code == 0, result.err
    [record] = load_results(tmp_path / "leaderboard" / "runs")
    assert record["kernels"]["vandermonde"] == {"path": "reference",
                                                "reason": "the tensors are on cpu"}
    reset()


@pytest.mark.parametrize("setting, expected", [(None, "1"), ("0", "0")])
def test_importing_the_dispatch_pins_triton_fp_fusion_unless_set(setting, expected):
    """The tolerances were measured with fused multiply-add on; Triton 3.10 turns it off by
    default. A user's own setting is kept."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_DEFAULT_FP_FUSION"}
    if setting is not None:
        env["TRITON_DEFAULT_FP_FUSION"] = setting
    code = "import os, lra.kernels.dispatch; print(os.environ['TRITON_DEFAULT_FP_FUSION'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == expected


def test_trainer_float32_matmul_reaches_the_kernels_dot_choice():
    """trainer.float32_matmul=high, set in every training process by a callback, is what lets the
    kernels' float32 dots round to TF32; highest keeps them exact."""
    import pickle

    import torch

    from lra.kernels.dispatch import torch_allows_tf32
    from lra.train import Float32Matmul

    try:
        pickle.loads(pickle.dumps(Float32Matmul("high"))).setup(None, None, "fit")  # ddp_spawn
        assert torch_allows_tf32()
        Float32Matmul("highest").setup(None, None, "fit")
        assert not torch_allows_tf32()
    finally:
        torch.set_float32_matmul_precision("highest")
