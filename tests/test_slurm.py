"""hydra/launcher=slurm: each sweep job becomes one sbatch submission with our GPU, time and
partition.

No cluster here: submitit builds its real submission file, then the jobs run in this process
instead of going to `sbatch` (the part of submitit that talks to SLURM is all that is replaced).
"""
import os

import pytest
from conftest import TINY, load_results

submitit = pytest.importorskip("submitit", reason="pip install 'lra-harness[slurm]'")


class RanHere:
    def __init__(self, value):
        self.value = value

    def results(self):
        return [self.value]


@pytest.fixture
def sbatch(monkeypatch, tmp_path_factory):
    """Capture each submission file submitit writes, and run its job in this process."""
    submitted = []
    bin_dir = tmp_path_factory.mktemp("bin")
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit only looks for it
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    # submitit's switch: jobs see its debug job environment
    monkeypatch.setenv("_TEST_CLUSTER_", "debug")
    monkeypatch.setenv("SUBMITIT_DEBUG_JOB_ID", "0")

    def map_array(executor, fn, *iterables):
        submitted.append(executor._executor._make_submission_file_text(
            "python -m submitit.core._submit", "0"))
        return [RanHere(fn(*args)) for args in zip(*iterables)]

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", map_array)
    return submitted


@pytest.mark.filterwarnings("ignore:The `srun` command is available")
def test_a_slurm_sweep_submits_gpu_jobs_with_time_and_partition(lra, tmp_path, sbatch):
    result = lra("train", "-m", "hydra/launcher=slurm", "hydra.launcher.partition=gpu-long",
                 "hydra.launcher.timeout_min=90", *TINY, "seed=0,1")
    assert result.code == 0, result.err
    [script] = sbatch
    for line in ("#SBATCH --gpus-per-node=1", "#SBATCH --time=90", "#SBATCH --partition=gpu-long",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=64GB",
                 "#SBATCH --signal=USR2@120"):
        assert line in script, line
    records = load_results(tmp_path / "leaderboard" / "runs")
    assert sorted((r["seed"], r["status"]) for r in records) == [(0, "completed"), (1, "completed")]
    assert len({r["run_dir"] for r in records}) == 2
