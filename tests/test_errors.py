"""Every fault ends in one paragraph: exit 2 for what the user typed, 1 for the environment (a
folder that cannot be written, a full disk, an unreadable file, a missing API key), 130 for
Ctrl+C, 141 for a closed pipe; a traceback only with --debug (docs/errors.md lists each row)."""
import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY, load_results
from helpers import PUBLISHED

from lra import checks


def one_paragraph(result, code):
    """Exit status `code`, and the last line of standard error is the whole explanation."""
    assert result.code == code, result.err
    last = result.err.splitlines()[-1]
    assert last.startswith("lra: error: ") or last.startswith("lra: interrupted"), result.err
    assert "Traceback" not in result.err and "Error executing job" not in result.err


@pytest.mark.parametrize("key", ["results_dir", "runs_dir"])
def test_a_results_or_runs_dir_that_is_a_file_is_a_fault_of_the_environment(lra, tmp_path, key):
    (tmp_path / "taken").write_text("a file, not a folder")
    result = lra("train", *TINY, f"{key}=taken/inner")
    one_paragraph(result, 1)
    assert f"{key}={tmp_path / 'taken' / 'inner'} cannot be a folder" in result.err
    assert not (tmp_path / "runs").exists()  # no run folder left behind


@pytest.mark.parametrize("key", ["results_dir", "runs_dir"])
def test_a_read_only_results_or_runs_dir_is_a_fault_of_the_environment(lra, tmp_path, key,
                                                                       monkeypatch):
    (tmp_path / "ro").mkdir()
    real_access = os.access
    monkeypatch.setattr(checks.os, "access",  # root ignores permissions: a read-only mount
                        lambda path, mode: Path(path).name != "ro" and real_access(path, mode))
    result = lra("train", *TINY, f"{key}=ro/out")
    one_paragraph(result, 1)
    assert f"{key}={tmp_path / 'ro' / 'out'} cannot be written: {tmp_path / 'ro'}" in result.err


def test_a_folder_that_fails_to_be_made_later_is_one_paragraph_naming_it(lra, tmp_path,
                                                                          monkeypatch):
    """What the early check cannot see (a mount that turns read-only mid-run): the OSError."""
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if "runs" in self.parts:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    result = lra("train", *TINY)
    one_paragraph(result, 1)
    assert "Read-only file system: " in result.err and "The file system refused" in result.err


def test_leaderboard_out_that_is_a_file_is_one_paragraph(lra, tmp_path):
    (tmp_path / "out").write_text("a file")
    result = lra("leaderboard", "--runs", "runs", "--published", str(PUBLISHED), "--out", "out")
    one_paragraph(result, 1)
    assert str(Path("out")) in result.err


def test_debug_shows_the_traceback_of_a_fault(lra, tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(OSError):
        from lra.cli import main

        main(["--debug", "leaderboard", "--published", str(PUBLISHED), "--out", "out"])


def test_a_full_disk_while_checkpointing_is_one_paragraph_and_keeps_the_previous(lra, tmp_path,
                                                                                 monkeypatch):
    real_save = torch.save

    def disk_fills(obj, f, *args, **kwargs):
        if obj.get("epoch") == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_fills)
    result = lra("train", *TINY, "trainer.max_epochs=3")
    monkeypatch.undo()
    one_paragraph(result, 1)
    assert ".ckpt (No space left on device); the previous version is intact" in result.err
    [record] = load_results(tmp_path / "leaderboard" / "runs")
    assert record["status"] == "failed"


def test_an_unreadable_data_file_is_one_paragraph_naming_it(lra, tmp_path, monkeypatch):
    from lra.tasks import listops

    assert lra("data", "generate", "listops", "--n-train", "40", "--n-val", "8", "--n-test", "8",
               "--workers", "1", "--data-dir", "data").code == 0

    def unreadable(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(listops, "open", unreadable, raising=False)
    result = lra("train", *TINY[:1], "task=listops", "data_dir=data")
    one_paragraph(result, 1)
    assert "Permission denied: " in result.err and "basic_" in result.err


def test_logger_wandb_without_an_api_key_is_one_paragraph(lra, tmp_path, monkeypatch):
    for name in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    result = lra("train", *TINY, "logger=wandb")
    one_paragraph(result, 1)
    assert "logger=wandb needs a Weights & Biases API key" in result.err
    assert "WANDB_MODE=offline" in result.err and not (tmp_path / "runs").exists()


def test_a_misspelt_lra_kernels_is_refused_before_the_run(lra, tmp_path, monkeypatch):
    monkeypatch.setenv("LRA_KERNELS", "tirton")
    result = lra("train", *TINY)
    one_paragraph(result, 2)
    assert "LRA_KERNELS='tirton' is not known; set it to reference or triton" in result.err
    assert not (tmp_path / "runs").exists()


def test_a_recipes_task_keys_on_another_task_are_named_before_anything_runs(lra, tmp_path):
    result = lra("train", "experiment=s4d/text", "task=listops_mini", "trainer=debug")
    one_paragraph(result, 2)
    assert "task listops_mini has no option min_char_count, tokens; its options are" in result.err
    assert "~task.<key>" in result.err
    assert not any((tmp_path / "runs").rglob("*"))  # no run folder left behind
    assert not any((tmp_path / "leaderboard").rglob("*.json"))  # and no result file


@pytest.mark.parametrize("override, expected", [
    ("trainer.max_epochs=1.5", "trainer.max_epochs must be a whole number >= 1"),
    ("trainer.precision=bogus", "trainer.precision must be one of '32-true'"),
    ("trainer.max_time=garbage", 'trainer.max_time must be a duration "DD:HH:MM:SS"'),
    ("optim.lr=nan", "optim.lr must be a finite number > 0 (default 0.003), got nan"),
    ("model.bidirectional=maybe", "model.bidirectional must be true or false (default true)"),
    ("trainer.float32_matmul=tf32", "trainer.float32_matmul must be one of 'highest'"),
])
def test_a_value_of_the_wrong_type_is_one_paragraph(lra, override, expected):
    result = lra("train", *TINY, override)
    one_paragraph(result, 2)
    assert expected in result.err


@pytest.mark.parametrize("args, expected", [
    (["listops", "--n-train", "-5"], "every split needs at least one example"),
    (["listops", "--n-val", "0"], "every split needs at least one example"),
    (["pathfinder", "--n", "5"], "needs at least 10 images"),
    (["pathfinder", "--workers", "0"], "--workers 0 must be at least 1"),
])
def test_data_generate_with_too_few_examples_is_one_paragraph(lra, tmp_path, args, expected):
    result = lra("data", "generate", *args, "--data-dir", "data")
    one_paragraph(result, 2)
    assert expected in result.err and not (tmp_path / "data").exists()


def test_data_generate_into_an_unwritable_folder_is_one_paragraph(lra, tmp_path):
    (tmp_path / "taken").write_text("a file")
    result = lra("data", "generate", "listops", "--n-train", "4", "--n-val", "2", "--n-test", "2",
                 "--workers", "1", "--data-dir", "taken/data")
    one_paragraph(result, 1)
    assert "taken" in result.err


def test_ctrl_c_during_generation_is_one_line_with_status_130(lra, monkeypatch):
    from lra.generators import listops

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(listops, "prepare_listops", interrupted)
    result = lra("data", "generate", "listops", "--workers", "1")
    one_paragraph(result, 130)
    assert "lra: interrupted (Ctrl+C); files are written whole or not at all" in result.err


def test_list_into_a_closed_pipe_ends_quietly():
    """`lra list | head -1`: the reader is gone before the output is written."""
    read, write = os.pipe()
    os.close(read)
    code = subprocess.run([sys.executable, "-m", "lra", "list"], stdout=write,
                          stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(write)
    assert code.returncode == 141 and code.stderr == "", code.stderr


def test_bench_layers_threads_0_is_refused(lra):
    result = lra("bench", "layers", "--threads", "0")
    one_paragraph(result, 2)
    assert "--threads 0 must be at least 1" in result.err


def test_a_bench_worker_that_dies_gives_an_error_row_not_a_hang():
    """torch.set_num_threads(0) kills the worker before it reports: the parent must notice."""
    code = ("from lra.bench.layers import measure\n"
            "print(measure('matmul', dict(threads=0, device='cpu', repeats=1)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "'error': 'its process ended with exit code 1 before reporting'" in out.stdout


@pytest.mark.slow
def test_a_real_ctrl_c_to_the_process_group_leaves_one_line_and_no_partial_file(tmp_path):
    """SIGINT to the whole foreground group, as a terminal sends it: the pool's workers ignore
    it, the parent prints one line, and no temporary or partial file is left."""
    command = [sys.executable, "-m", "lra", "data", "generate", "listops", "--workers", "2",
               "--data-dir", str(tmp_path)]
    # as a terminal's foreground job: SIGINT at its default even where these tests were started
    # in the background, which a shell without job control starts with SIGINT ignored
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, bufsize=0,
                               start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = ""
    while seen.count("samples/s]") < 3:  # the pool is running and has drawn samples
        seen += process.stderr.read(1)
    os.killpg(process.pid, signal.SIGINT)
    err = seen + process.communicate(timeout=120)[1]
    assert process.returncode == 130
    assert "Traceback" not in err and err.rstrip().endswith("(ListOps).")
    assert list((tmp_path / "listops").iterdir()) == []
