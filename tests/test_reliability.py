"""Faults a long sweep meets: SIGKILL, pre-emption mid-sweep, a torn checkpoint write, a full
disk."""
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY, load_results
from lightning.pytorch.callbacks import Callback

from lra import results, train
from lra.errors import Diverged

EPOCHS = [*TINY, "trainer.max_epochs=4", "trainer.limit_eval_batches=null"]


def _wait_for(path, process, timeout=120):
    deadline = time.monotonic() + timeout
    while not path.is_file():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_sigkill_mid_epoch_then_resume_ends_like_an_uninterrupted_run(lra, tmp_path):
    """The one fault no handler sees: the job dies at once, wherever it was."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    job = subprocess.Popen([sys.executable, "-m", "lra.cli", "train", *EPOCHS, "runs_dir=killed",
                            "hydra.run.dir=killed/run"], cwd=tmp_path, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / "killed" / "run"
    _wait_for(run_dir / "checkpoints" / "last.ckpt", job)  # epoch 0 is done; epoch 1 is under way
    metrics = run_dir / "metrics.csv"
    while not metrics.is_file() or "\n0," not in metrics.read_text():  # epoch 0's rows written
        assert job.poll() is None, job.stderr.read()
        time.sleep(0.02)
    job.send_signal(signal.SIGKILL)
    assert job.wait(timeout=60) == -signal.SIGKILL
    [killed] = load_results(tmp_path / "leaderboard" / "runs")
    assert killed["status"] == "running"  # nothing ran to mark it: that is what SIGKILL means

    # resume=auto is what `lra sweep --resume` adds: the dead process's `running` record goes on
    assert lra("train", *EPOCHS, "runs_dir=killed", "resume=auto").code == 0
    assert lra("train", *EPOCHS, "runs_dir=straight").code == 0
    records = load_results(tmp_path / "leaderboard" / "runs")
    assert len(records) == 2  # the killed run's own file was completed, not a new one started
    resumed = next(r for r in records if r["run_id"] == killed["run_id"])
    straight = next(r for r in records if r["run_id"] != killed["run_id"])
    assert resumed["status"] == straight["status"] == "completed"
    for key in ("test_acc", "test_loss", "val_acc", "best_epoch", "epochs"):
        assert resumed["metrics"][key] == straight["metrics"][key], key
    # Every epoch is in the history and in metrics.csv, the ones before the kill included.
    assert resumed["metrics"]["history"] == straight["metrics"]["history"]
    epochs = {row.split(",")[0] for row in (run_dir / "metrics.csv").read_text().splitlines()[1:]}
    assert {"0", "1", "2", "3"} <= epochs
    assert [a["status"] for a in resumed["attempts"]] == ["stale", "completed"]


class CrashOrStop(Callback):
    """Seed 1 crashes inside epoch 1; seed 2 gets SIGTERM there (a pre-empted sweep stops)."""

    def __init__(self, seed):
        self.seed = seed

    def on_train_batch_end(self, trainer, *args):
        if trainer.current_epoch == 1 and self.seed == 1:
            raise RuntimeError("simulated crash in seed 1")
        if trainer.current_epoch == 1 and self.seed == 2:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sweep_resume_skips_done_continues_stopped_and_reruns_failed(lra, tmp_path, monkeypatch):
    build = train.build_trainer

    def faulty_trainer(cfg, run_dir, checkpoint):
        trainer = build(cfg, run_dir, checkpoint)
        trainer.callbacks.append(CrashOrStop(cfg["seed"]))
        return trainer

    monkeypatch.setattr(train, "build_trainer", faulty_trainer)
    sweep = ["smoke", "model=s4d", *EPOCHS, "seed=0,1,2,3"]
    # the SIGTERM of seed 2 ends the sweep, as SLURM means it to
    assert lra("sweep", *sweep).code == 143
    first = {r["seed"]: r for r in load_results(tmp_path / "leaderboard" / "runs")}
    assert {s: r["status"] for s, r in first.items()} == {
        0: "completed", 1: "failed", 2: "interrupted"}
    done_file = Path(results.result_path("leaderboard/runs", first[0]))
    done_text = done_file.read_text()

    monkeypatch.setattr(train, "build_trainer", build)
    again = lra("sweep", "--resume", *sweep)
    assert again.code == 0, again.err
    assert "already completed, skipped" in again.err and done_file.read_text() == done_text
    final = load_results(tmp_path / "leaderboard" / "runs")
    completed = {r["seed"]: r for r in final if r["status"] == "completed"}
    assert sorted(completed) == [0, 1, 2, 3]
    assert completed[2]["run_id"] == first[2]["run_id"]  # continued from its checkpoint
    assert completed[1]["run_id"] != first[1]["run_id"]  # a failed job starts again
    assert sorted(r["status"] for r in final) == ["completed"] * 4 + ["failed"]


def test_a_job_still_running_is_not_resumed_twice(lra, tmp_path):
    config = {"task": {"name": "listops_mini"}, "model": {"name": "s4d"}, "seed": 0, "resume": None}
    record = {**results.new_record("r1", config, {}, "cpu", None), "run_dir": str(tmp_path)}
    results.write_json_atomic(results.result_path(tmp_path / "runs", record), record)
    assert results.latest_attempt(tmp_path / "runs", {**config, "resume": "auto"})["run_id"] == "r1"
    assert results.process_alive(record)  # this very process
    record["pid"] = 2**22 + 1  # above Linux's pid_max default: no such process
    assert not results.process_alive(record)


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_one(tmp_path, monkeypatch):
    from lra.checkpoints import AtomicCheckpointIO

    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)

    def dies_midway(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # what a signal arriving mid-write looks like in Python

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(lra, tmp_path, monkeypatch):
    real_save = torch.save
    saves = []

    def disk_fills(obj, f, *args, **kwargs):
        saves.append(obj.get("epoch"))
        if obj.get("epoch") == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_fills)
    result = lra("train", *TINY, "trainer.max_epochs=3")
    monkeypatch.undo()
    assert result.code != 0
    [record] = load_results(tmp_path / "leaderboard" / "runs")
    assert record["status"] == "failed"
    assert "No space left on device" in record["error"]
    assert "the previous version is intact" in record["error"]
    last = Path(record["run_dir"]) / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0
    saved = json.loads((Path(record["run_dir"]) / "run.json").read_text())
    assert saved["run_id"] == record["run_id"]


@pytest.mark.parametrize("error, status, reason", [
    (RuntimeError("boom"), "failed", "RuntimeError: boom"),
    (Diverged("the training loss became nan"), "diverged", "the training loss became nan"),
    (train.Stopped("stopped by SIGTERM at epoch 1", 143), "interrupted",
     "stopped by SIGTERM at epoch 1")])
def test_recording_writes_how_and_why_a_run_stopped(tmp_path, error, status, reason):
    path, record = tmp_path / "run.json", {"status": "running", "config": {}}
    expected = SystemExit if isinstance(error, train.Stopped) else type(error)
    with pytest.raises(expected) as raised:
        with train.recording(record, path, time.perf_counter()):
            assert json.loads(path.read_text())["status"] == "running"  # written on entering
            raise error
    saved = json.loads(path.read_text())
    assert (saved["status"], saved["error"]) == (status, reason) and saved["wall_time_s"] >= 0
    if expected is SystemExit:
        assert raised.value.code == 143  # the signal's exit status
    else:
        assert raised.value is error
