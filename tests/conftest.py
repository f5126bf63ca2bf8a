"""Shared fixtures: run `lra` in-process, the way a user would from a shell."""
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

# Without CUDA the Triton kernels run in Triton's interpreter, which must be chosen before triton
# is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from helpers import honoured_dot_precision  # noqa: E402

from lra import registry  # noqa: E402
from lra.cli import main  # noqa: E402

# A small, fast run: tiny S4D, two short epochs, every eval example counted.
TINY = ["trainer=debug", "model.d_model=16", "model.n_layers=1", "model.d_state=8",
        "task.n_train=256", "task.n_val=64", "task.n_test=100", "task.batch_size=32"]


class Result:
    def __init__(self, code, out, err):
        self.code, self.out, self.err = code, out, err


@pytest.fixture
def lra(capsys, monkeypatch, tmp_path):
    """Call `lra ARGS...` in-process with results and runs under tmp_path."""
    monkeypatch.chdir(tmp_path)

    def run(*args):
        code = 0
        try:
            main(list(args))
        except SystemExit as exit_:
            code = exit_.code
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def triton_device(monkeypatch):
    """The device Triton kernels run on here (CUDA, else the CPU under the interpreter), with
    LRA_KERNELS=triton."""
    pytest.importorskip("triton", reason="Triton is installed on Linux x86_64 only")
    monkeypatch.setenv("LRA_KERNELS", "triton")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture
def emulated_dots():
    """Triton's interpreter computing each float32 tl.dot at its input_precision (TF32 rounding
    emulated, `helpers.honoured_dot_precision`) instead of always in float32."""
    with honoured_dot_precision():
        yield


def run_steps(module, u):
    """The recurrent view of a layer or backbone over u (B, L, H): `step` from its
    `default_state`, one position at a time, the outputs stacked to (B, L, H)."""
    state, ys = module.default_state(u.shape[0]), []
    for t in range(u.shape[1]):
        y_t, state = module.step(u[:, t], state)
        ys.append(y_t)
    return torch.stack(ys, 1)


def result_files(root):
    return sorted(Path(root).glob("**/*.json"))


def load_results(root):
    return [json.loads(p.read_text()) for p in result_files(root)]


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A fresh folder on sys.path, and a registry that rescans entry points."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setitem(registry._ENTRIES, "model", dict(registry.entries("model")))
    monkeypatch.setitem(registry._loaded, "model", False)
    return folder
