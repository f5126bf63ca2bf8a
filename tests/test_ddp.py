"""trainer=ddp: two CPU processes (gloo) train as one process with their combined batch does."""
from pathlib import Path

import pytest
import torch
from conftest import load_results

from lra.tasks.base import EpochShuffle, Shard

RUN = ["trainer.max_epochs=2", "trainer.progress=false", "model.d_model=16", "model.n_layers=1",
       "model.d_state=8", "task.n_train=128", "task.n_val=50", "task.n_test=75"]


def test_two_processes_split_each_global_batch_and_every_eval_example_once():
    one = list(EpochShuffle(10, seed=3))
    parts = [list(EpochShuffle(10, seed=3, rank=r, world=2)) for r in (0, 1)]
    assert [len(p) for p in parts] == [5, 5]
    for step in range(0, 10, 4):  # global batches of 4 = 2 processes x batch 2
        assert sorted(parts[0][step // 2: step // 2 + 2] + parts[1][step // 2: step // 2 + 2]) == \
            sorted(one[step: step + 4])
    uneven = [list(EpochShuffle(7, seed=3, rank=r, world=2)) for r in (0, 1)]
    assert len(uneven[0]) == len(uneven[1]) == 4 and set(uneven[0] + uneven[1]) == set(range(7))
    shards = [list(Shard(7, r, 3)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(7))  # no padding, no drop


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_matches_one_process(lra, tmp_path):
    ddp = lra("train", *RUN, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
              "trainer.precision=32-true", "task.batch_size=16", "runs_dir=ddp")
    assert ddp.code == 0, ddp.err
    single = lra("train", *RUN, "task.batch_size=32", "runs_dir=single")
    assert single.code == 0, single.err
    records = {Path(r["run_dir"]).parts[-3]: r
               for r in load_results(tmp_path / "leaderboard" / "runs")}
    ddp, single = records["ddp"], records["single"]
    assert ddp["metrics"]["test_examples"] == single["metrics"]["test_examples"] == 75
    for key in ("test_acc", "val_acc", "best_epoch"):
        assert ddp["metrics"][key] == single["metrics"][key], key
    assert ddp["metrics"]["test_loss"] == pytest.approx(single["metrics"]["test_loss"], rel=1e-4)
    # counted in the workers, reported by the main process
    assert ddp["throughput_tokens_per_s"] > 0
    weights = [torch.load(Path(r["run_dir"]) / "checkpoints" / "last.ckpt",
                          weights_only=True)["state_dict"] for r in (ddp, single)]
    for name, tensor in weights[0].items():
        # sums in another order
        torch.testing.assert_close(tensor, weights[1][name], rtol=1e-4, atol=1e-4)
