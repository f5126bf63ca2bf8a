"""Resume never destroys a run: no second writer, no rewrite of a completed run, one config per
run, every attempt's history kept; stale `running` records; input errors leave nothing."""
import csv
import json
import os
import signal
import socket
from pathlib import Path

import pytest
from conftest import TINY, load_results, result_files
from lightning.pytorch.callbacks import Callback

from lra import results, train

EPOCHS = [*TINY, "trainer.max_epochs=3", "trainer.limit_eval_batches=null"]


def only_record(tmp_path):
    [path] = result_files(tmp_path / "leaderboard" / "runs")
    return path, json.loads(path.read_text())


def set_status(path, **fields):
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, **fields}))
    return record


def metrics_epochs(run_dir, column):
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return sorted({int(row["epoch"]) for row in csv.DictReader(f) if row.get(column)})


def test_a_run_whose_process_is_alive_is_not_resumed(lra, tmp_path):
    assert lra("train", *TINY).code == 0
    path, record = only_record(tmp_path)
    set_status(path, status="running", pid=os.getpid(), host=socket.gethostname())
    before = path.read_text()
    result = lra("train", f"resume={record['run_dir']}")
    assert result.code == 2
    assert f"running right now (pid {os.getpid()}" in result.err and record["run_dir"] in result.err
    assert path.read_text() == before


def test_a_completed_run_is_not_resumed_over(lra, tmp_path):
    assert lra("train", *TINY).code == 0
    path, record = only_record(tmp_path)
    before = path.read_text()
    result = lra("train", f"resume={record['run_dir']}")
    assert result.code == 2
    assert "is completed" in result.err and "start a new run" in result.err
    assert path.read_text() == before  # history, tokens/s and wall time as they were


def test_overrides_that_differ_from_the_saved_config_are_refused_and_listed(lra, tmp_path):
    assert lra("train", *TINY).code == 0
    path, record = only_record(tmp_path)
    set_status(path, status="interrupted")
    before = path.read_text()
    result = lra("train", f"resume={record['run_dir']}", "model.d_model=32", "optim.lr=0.1")
    assert result.code == 2
    assert "model.d_model: 16 in the run, 32 given" in result.err
    assert "optim.lr: 0.003 in the run, 0.1 given" in result.err
    result = lra("train", f"resume={record['run_dir']}", "model=transformer")
    assert result.code == 2 and "model.name: 's4d' in the run, 'transformer' given" in result.err
    assert path.read_text() == before
    # The same values as the run's are no change: the run goes on.
    assert lra("train", f"resume={record['run_dir']}", "model.d_model=16", "seed=0").code == 0
    assert json.loads(path.read_text())["status"] == "completed"


class SendSigterm(Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.current_epoch == 1 and trainer.global_step == 4:
            os.kill(os.getpid(), signal.SIGTERM)


def test_every_epoch_before_and_after_a_sigterm_is_kept(lra, tmp_path, monkeypatch):
    build = train.build_trainer

    def trainer_with_sigterm(cfg, run_dir, checkpoint):
        trainer = build(cfg, run_dir, checkpoint)
        trainer.callbacks.append(SendSigterm())
        return trainer

    monkeypatch.setattr(train, "build_trainer", trainer_with_sigterm)
    assert lra("train", *EPOCHS).code == 143
    path, stopped = only_record(tmp_path)
    assert metrics_epochs(stopped["run_dir"], "val_acc") == [0]  # merged when it stopped
    monkeypatch.setattr(train, "build_trainer", build)
    assert lra("train", f"resume={stopped['run_dir']}").code == 0
    _, record = only_record(tmp_path)
    history = record["metrics"]["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert all(h["val_acc"] is not None and h["train_loss"] is not None for h in history)
    assert metrics_epochs(record["run_dir"], "val_acc") == [0, 1, 2]
    assert metrics_epochs(record["run_dir"], "train_loss") == [0, 1, 2]
    assert not (Path(record["run_dir"]) / "metrics-earlier.csv").exists()
    first, second = record["attempts"]
    assert (first["status"], second["status"]) == ("interrupted", "completed")
    assert "SIGTERM" in first["error"] and second["pid"] == os.getpid()
    assert record["wall_time_s"] == pytest.approx(first["wall_time_s"] + second["wall_time_s"])
    assert record["started_at"] == stopped["started_at"] == first["started_at"]

    # The history of an uninterrupted run is the same, epoch for epoch (the training loss of
    # the epoch cut in two counts only the batches after the resume: left out here).
    assert lra("train", *EPOCHS, "runs_dir=straight").code == 0
    straight = next(r for r in load_results(tmp_path / "leaderboard" / "runs")
                    if "straight" in r["run_dir"])["metrics"]["history"]
    assert [(h["val_acc"], h["val_loss"]) for h in straight] == [
        (h["val_acc"], h["val_loss"]) for h in history]
    assert [straight[e]["train_loss"] for e in (0, 2)] == [history[e]["train_loss"] for e in (0, 2)]


def test_stale_is_a_dead_pid_here_or_an_old_heartbeat_elsewhere():
    here = {"status": "running", "host": socket.gethostname(), "pid": os.getpid(),
            "started_at": results.now(), "heartbeat_at": results.now()}
    assert not results.stale(here) and results.running_now(here)
    assert results.stale({**here, "pid": 2**22 + 1})  # above Linux's pid_max default
    assert not results.stale({**here, "pid": 2**22 + 1, "status": "interrupted"})
    elsewhere = {**here, "host": "another-host"}
    assert not results.stale(elsewhere)  # its heartbeat is fresh
    old = "2020-01-01T00:00:00+00:00"
    assert results.stale({**elsewhere, "heartbeat_at": old})
    assert results.stale({**elsewhere, "heartbeat_at": None, "started_at": old})


def test_the_heartbeat_refreshes_the_record(tmp_path, monkeypatch):
    path, record = tmp_path / "r.json", {"status": "running", "heartbeat_at": "earlier"}
    beat = train.Heartbeat(record, path)
    monkeypatch.setattr(results, "HEARTBEAT_S", 0)

    class Trainer:
        is_global_zero = True

    beat.on_train_batch_end(Trainer())
    saved = json.loads(path.read_text())
    assert saved["heartbeat_at"] != "earlier" and results.seconds_since(saved["heartbeat_at"]) < 60


def test_doctor_lists_stale_runs(lra, tmp_path):
    assert lra("train", *TINY).code == 0
    path, record = only_record(tmp_path)
    set_status(path, status="running", pid=2**22 + 1, host=socket.gethostname())
    result = lra("doctor")
    assert result.code == 1
    assert f"{record['run_dir']}: stale" in result.out and "1 stale runs" in result.out
    assert f"lra train resume={record['run_dir']}" in result.out


@pytest.mark.parametrize("args, expected", [
    (["model=transformer", "model.d_model=16", "model.n_heads=3"], "rejected its options"),
    (["model=transformer", "model.positions=learned", "model.max_len=20"], "supports 20"),
    (["task=listops", "data_dir=nowhere"], "nowhere"),
])
def test_an_input_error_before_training_leaves_nothing(lra, tmp_path, args, expected):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "someone_elses.txt").write_text("kept")
    result = lra("train", "trainer=debug", *args)
    assert result.code == 2 and expected in result.err
    assert result_files(tmp_path / "leaderboard" / "runs") == []
    assert [p.name for p in (tmp_path / "runs").rglob("*")] == ["someone_elses.txt"]
