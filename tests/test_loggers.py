"""logger=wandb: one offline W&B run per job, tagged, summarised and finished; CSV stays the
default."""
from pathlib import Path

from conftest import TINY, load_results


def test_the_default_logger_is_a_local_csv(lra, tmp_path):
    assert lra("train", *TINY).code == 0
    [record] = load_results(tmp_path / "leaderboard" / "runs")
    assert (Path(record["run_dir"]) / "metrics.csv").is_file()
    assert not (tmp_path / "wandb").exists()


def test_wandb_offline_logs_each_sweep_job_as_its_own_finished_run(lra, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    result = lra("train", "-m", *TINY, "logger=wandb", "seed=0,1")
    assert result.code == 0, result.err
    records = load_results(tmp_path / "leaderboard" / "runs")
    assert len(records) == 2
    for record in records:
        [folder] = (tmp_path / "wandb").glob(f"offline-run-*-{record['run_id']}")
        logged = next(folder.glob("*.wandb")).read_bytes()
        for text in ("model:s4d", "task:listops_mini", "best/test_acc", "best/val_acc",
                     "completed"):
            assert text.encode() in logged, text
        sweep = Path(record["run_dir"]).parent.name
        assert sweep.encode() in logged  # the group: the sweep's folder
        log = (folder / "logs" / "debug.log").read_text()
        assert f"finishing run lra/{record['run_id']}" in log
    assert (Path(records[0]["run_dir"]) / "metrics.csv").is_file()  # CSV beside W&B
