"""LRA_KERNELS forces a kernel implementation, and a typo in it is an error."""
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
