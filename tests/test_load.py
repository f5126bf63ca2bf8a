"""Load: a sweep of 50 tiny jobs, in one process and in a pool of two, loses no result."""
import pandas as pd
import pytest
from conftest import load_results

from lra import leaderboard

JOB = ["trainer=debug", "trainer.limit_eval_batches=null", "model.d_model=8", "model.n_layers=1",
       "model.d_state=4", "task.n_train=64", "task.n_val=16", "task.n_test=16",
       "task.batch_size=16"]
LAUNCHERS = {"basic": [], "process pool": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_fifty_jobs_leave_fifty_complete_result_files(lra, tmp_path, launcher):
    runs = tmp_path / "results"  # absolute: pool workers do not share the test's working folder
    result = lra("train", "-m", *JOB, *LAUNCHERS[launcher], "seed=range(0,50)",
                 f"results_dir={runs}", f"runs_dir={tmp_path / 'runs'}")
    assert result.code == 0, result.err
    records = load_results(runs)
    assert len(records) == 50 and {r["status"] for r in records} == {"completed"}
    assert sorted(r["seed"] for r in records) == list(range(50))
    rendered = leaderboard.render(runs, tmp_path / "board")
    assert rendered.skipped == []
    table = pd.read_csv(rendered.csv)
    ours = table[(table.kind == "ours") & (table.task == "listops_mini")]
    assert ours.n.sum() == 50
