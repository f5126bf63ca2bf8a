"""Result files: atomic writes under concurrency and a full disk."""
import errno
import json
import multiprocessing
import os
import warnings

import pytest

from lra import results
from lra.leaderboard import load_runs
from lra.results import Record, problem


def record(run_id, n):
    return {"schema": 1, "run_id": run_id, "model": "s4d", "task": "listops", "seed": 0,
            "status": "completed", "metrics": {"test_acc": 0.5}, "padding": "x" * n}


def write_many(folder, prefix, count):
    for i in range(count):
        for size in (10, 5000, 50):  # rewrite each file: start, middle, end of a run
            results.write_json_atomic(f"{folder}/{prefix}-{i}.json", record(f"{prefix}-{i}", size))


def test_readers_never_see_a_torn_file_while_two_sweeps_write(tmp_path):
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=write_many, args=(str(tmp_path), name, 150)) for name in "ab"]
    for writer in writers:
        writer.start()
    reads = during = 0
    while any(w.is_alive() for w in writers) or reads == 0:
        during += any(w.is_alive() for w in writers)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a skipped (torn) file would warn
            records, skipped = load_runs(tmp_path)
        assert skipped == []
        reads += 1
    for writer in writers:
        writer.join()
        assert writer.exitcode == 0
    records, skipped = load_runs(tmp_path)
    assert during > 0 and len(records) == 300 and skipped == []
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_full_disk_keeps_the_previous_file_and_says_so(tmp_path, monkeypatch):
    path = tmp_path / "run.json"
    results.write_json_atomic(path, {"status": "running"})

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="could not write .*run.json .*No space left on device"
                                      ".*previous version is intact"):
        results.write_json_atomic(path, {"status": "completed"})
    assert json.loads(path.read_text()) == {"status": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_a_new_record_has_every_field_declared_and_reads_back():
    config = {"task": {"name": "listops"}, "model": {"name": "s4d"}, "seed": 0, "tags": ["a"]}
    record = results.new_record("r1", config, {"recipe": "default"}, "cpu", None, run_dir="x")
    assert set(record) == Record.__required_keys__  # the rest only once they happen
    assert problem(record) is None and problem(json.loads(json.dumps(record))) is None


OLD = {"run_id": "r", "model": "s4d", "task": "listops", "seed": 0, "status": "completed",
       "metrics": {"test_acc": 0.5}}  # no schema, kind, tags, protocol... as early files


@pytest.mark.parametrize("change, why", [
    ({}, None),
    ({"tags": None, "params": None, "protocol": {"data_fingerprint": None}}, None),  # unknown
    ({"padding": "x"}, None),  # a field this version does not know: read, ignored
    ({"schema": 2}, "schema 2 is newer than this harness reads (1)"),
    ({"run_id": 3}, "'run_id' missing or not a string"),
    ({"seed": "0"}, "'seed' missing or not an integer"),
    ({"seed": True}, "'seed' missing or not an integer"),
    ({"kind": 1}, "'kind' is not a string"),
    ({"tags": ["a", 1]}, "'tags' is not a list of strings"),
    ({"params": "1K"}, "'params' is not an integer"),
    ({"device_hours": float("inf")}, "'device_hours' is not a number"),
    ({"protocol": {"recipe": 3}}, "'protocol.recipe' is not a string"),
    ({"protocol": {"pretrain_device_hours": "2"}},
     "'protocol.pretrain_device_hours' is not a number"),
    ({"git": {"sha": 1}}, "'git.sha' is not a string"),
    ({"metrics": {"test_acc": 1.5}}, "'metrics.test_acc' missing or not a fraction in [0, 1]"),
    ({"metrics": {"test_acc": 0.5, "history": [1]}}, "'metrics.history' is not a list of objects"),
])
def test_a_record_is_read_by_its_declaration(change, why):
    found = problem({**OLD, **change})
    assert found == why if why is None else found.startswith(why)


def test_other_kinds_need_only_a_run_id_and_running_runs_no_metrics():
    assert problem({"run_id": "p", "kind": "pretrain", "metrics": {"heldout_loss": 1.0}}) is None
    assert problem({**OLD, "status": "running", "metrics": {}}) is None
    assert problem([OLD]) == "not a JSON object"


def test_job_key_ignores_the_resume_switch_and_the_budget_label():
    """`lra sweep --resume` finds a job by its config: neither how it was asked to resume nor the
    labels derived from it (budget, provenance) make it another job; any other option does."""
    config = {"model": {"name": "s4d", "d_model": 16}, "task": {"name": "listops_mini"}, "seed": 0}
    key = results.job_key(config)
    labels = {"resume": "auto", "budget": {"max_epochs": 3}, "provenance": {"status": "paper"}}
    assert results.job_key({**config, **labels}) == key
    assert results.job_key({**config, "seed": 1}) != key
