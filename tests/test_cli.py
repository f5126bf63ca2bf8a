"""The `lra` command in-process: listing, training, results, resume and bad input."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY, load_results, result_files
from lightning.pytorch.callbacks import Callback

from lra import registry, train


def test_list_shows_models_tasks_and_experiments(lra):
    result = lra("list")
    assert result.code == 0
    for name in ("s4d", "transformer", "listops_mini", "listops", "s4d/listops"):
        assert name in result.out
    assert "built-in" in result.out


@pytest.mark.parametrize("args, expected", [
    (["model=nope"], "unknown model 'nope'; available: "),
    (["task=nope"], "unknown task 'nope'; available: "),
    (["experiment=nope/listops"], "unknown experiment 'nope/listops'; available: flash/image, "),
    (["trainer=nope"], "unknown trainer 'nope'; available: cpu, ddp, debug, gpu"),
    (["optim.lr=abc"], "optim.lr must be a finite number > 0 (default 0.003), got 'abc'"),
    (["model.d_model=-4"], "model.d_model must be a whole number >= 1 (default 64), got -4"),
    (["seed=-1"], "seed must be a whole number >= 0 (default 0), got -1"),
    (["model.dropout=1.5"],
     "model.dropout must be a finite number in [0, 1) (default 0.0), got 1.5"),
    (["no_such_key=1"], "bad override"),
    (["model=transformer", "model.n_heads=3", "model.d_model=16"], "not divisible"),
    (["task=listops", "data_dir=missing_folder"], "lra data generate listops"),
    (["resume=not_a_run"], "cannot resume 'not_a_run': it is not a run folder"),
    (["model=transformer", "model.positions=learned", "model.max_len=20"],
     "task 'listops_mini' has sequences up to 99 long but model 'transformer' supports 20"),
    (["model=transformer", "model.positions=learned", "model.max_len=99", "model.pooling=cls"],
     "sequences up to 100 long with its CLS token but model 'transformer' supports 99"),
    pytest.param(["trainer=gpu"], "no CUDA device is visible", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="a CUDA device is visible here")),
])
def test_bad_input_is_one_paragraph_with_exit_status_2(lra, args, expected):
    result = lra("train", *TINY[:1], *args)
    assert result.code == 2, result.err
    assert expected in result.err
    assert "Traceback" not in result.err
    assert result.err.startswith("lra: error: ")


def test_unknown_command_lists_the_commands(lra):
    result = lra("trian")
    assert result.code == 2
    assert "available: train, sweep, list, leaderboard, data, bench, doctor" in result.err


def test_debug_run_writes_a_completed_result(lra, tmp_path):
    result = lra("train", *TINY, "seed=3", "optim.lr=3e-3")
    assert result.code == 0, result.err
    [record] = load_results(tmp_path / "leaderboard" / "runs")
    assert record["status"] == "completed"
    assert (record["model"], record["task"], record["seed"]) == ("s4d", "listops_mini", 3)
    assert record["config"]["optim"]["lr"] == 3e-3
    assert 0.0 <= record["metrics"]["test_acc"] <= 1.0
    assert record["protocol"]["data_fingerprint"]
    assert record["protocol"]["full_test_set"] is False  # trainer=debug caps eval batches
    assert record["params"] > 0 and record["throughput_tokens_per_s"] > 0
    assert "test accuracy" in result.out and "majority class" in result.out


def test_every_test_example_counts_and_a_seed_repeats(lra, tmp_path):
    args = [*TINY, "trainer.limit_eval_batches=null", "task.n_test=77", "seed=5"]
    assert lra("train", *args).code == 0
    assert lra("train", *args).code == 0
    first, second = load_results(tmp_path / "leaderboard" / "runs")
    assert first["metrics"]["test_examples"] == 77  # 77 = 2 batches of 32 + 13
    assert first["protocol"]["full_test_set"] is True
    assert first["run_id"] != second["run_id"]
    for key in ("test_acc", "test_loss", "val_acc"):
        assert first["metrics"][key] == second["metrics"][key]


def test_a_failed_run_leaves_a_failed_record(lra, tmp_path):
    folder = tmp_path / "data" / "listops"
    folder.mkdir(parents=True)
    for split in ("train", "val", "test"):
        (folder / f"basic_{split}.tsv").write_text("Source\tTarget\n( [MAX 2 3 ] )\t3\nbroken\n")
    result = lra("train", "trainer=debug", "task=listops", "data_dir=data")
    assert result.code == 2
    assert "basic_" in result.err and ":3" in result.err
    [record] = load_results(tmp_path / "leaderboard" / "runs")
    assert record["status"] == "failed"
    assert "basic_" in record["error"]


class CrashAtEpoch(Exception):
    pass


def test_resume_after_a_crash_ends_like_an_uninterrupted_run(lra, tmp_path, monkeypatch):
    args = [*TINY, "trainer.max_epochs=3", "trainer.limit_eval_batches=null"]
    assert lra("train", *args, "runs_dir=run_straight").code == 0

    build = train.build_trainer

    def crashing_trainer(cfg, run_dir, checkpoint):
        trainer = build(cfg, run_dir, checkpoint)
        original = trainer.fit_loop.on_advance_start

        def advance_start():
            if trainer.current_epoch == 2:
                raise CrashAtEpoch("simulated crash at the start of epoch 2")
            original()

        trainer.fit_loop.on_advance_start = advance_start
        return trainer

    monkeypatch.setattr(train, "build_trainer", crashing_trainer)
    crash = lra("train", *args, "runs_dir=run_crashed")
    assert crash.code == 1 and "simulated crash" in crash.err
    monkeypatch.setattr(train, "build_trainer", build)
    [run_dir] = [p.parent for p in (tmp_path / "run_crashed").glob("**/run.json")]
    crashed = [r for r in load_results(tmp_path / "leaderboard" / "runs")
               if r["run_dir"] == str(run_dir)]
    assert crashed[0]["status"] == "failed"

    result = lra("train", f"resume={run_dir}")
    assert result.code == 0, result.err
    records = load_results(tmp_path / "leaderboard" / "runs")
    assert len(records) == 2  # the resumed run rewrote its own file, not a new one
    resumed = next(r for r in records if "run_crashed" in r["run_dir"])
    straight = next(r for r in records if "run_straight" in r["run_dir"])
    assert resumed["status"] == "completed" and resumed["metrics"]["epochs"] == 3
    for key in ("test_acc", "test_loss", "val_acc", "best_epoch"):
        assert resumed["metrics"][key] == straight["metrics"][key]
    best = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=False)
    assert best["epoch"] == resumed["metrics"]["best_epoch"]
    # The last weights match too, so the epoch after the crash saw the same batches in order.
    last = [torch.load(Path(r["run_dir"]) / "checkpoints" / "last.ckpt", weights_only=False)
            for r in (resumed, straight)]
    assert last[0]["epoch"] == last[1]["epoch"] == 2
    for name, tensor in last[0]["state_dict"].items():
        assert torch.equal(tensor, last[1]["state_dict"][name]), name


def test_leaderboard_command_renders_our_runs_beside_published(lra, tmp_path):
    assert lra("train", *TINY, "trainer.limit_eval_batches=null").code == 0
    published = tmp_path / "leaderboard" / "published.csv"
    published.write_text((Path(__file__).parents[1] / "lra" / "published.csv").read_text())
    result = lra("leaderboard")
    assert result.code == 0, result.err
    text = (tmp_path / "leaderboard" / "LEADERBOARD.md").read_text()
    assert "| s4d" in text and "listops_mini" in text and "S4D-LegS" in text
    assert (tmp_path / "leaderboard" / "leaderboard.csv").is_file()


def test_leaderboard_without_published_numbers_says_where_they_are(lra):
    result = lra("leaderboard", "--published", "nowhere.csv")
    assert result.code == 2 and "nowhere.csv" in result.err


def test_data_generate_writes_the_released_format(lra, tmp_path):
    result = lra("data", "generate", "listops", "--data-dir", "d", "--n-train", "20",
                 "--n-val", "5", "--n-test", "5", "--workers", "1")
    assert result.code == 0, result.err
    lines = (tmp_path / "d" / "listops" / "basic_train.tsv").read_text().splitlines()
    assert lines[0] == "Source\tTarget" and len(lines) == 21
    assert "lra data prepare listops --data-dir d" in result.out and "task=listops" in result.out


def test_the_transformer_trains_with_overrides_from_the_command_line(lra, tmp_path):
    result = lra("train", "model=transformer", "task=listops_mini", "seed=3", "optim.lr=3e-3",
                 "trainer=debug", "model.d_model=16", "model.n_layers=1", "task.n_train=128")
    assert result.code == 0, result.err
    [record] = load_results(tmp_path / "leaderboard" / "runs")
    assert (record["model"], record["seed"], record["status"]) == ("transformer", 3, "completed")
    assert record["config"]["model"]["n_heads"] == 4 and record["config"]["optim"]["lr"] == 3e-3


def test_sigterm_saves_a_checkpoint_marks_interrupted_and_resumes(lra, tmp_path, monkeypatch):
    """What SLURM sends before pre-emption: the run keeps its work and says how to go on."""
    build = train.build_trainer

    class SendSigterm(Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.current_epoch == 1 and trainer.global_step == 4:
                os.kill(os.getpid(), signal.SIGTERM)

    def trainer_with_sigterm(cfg, run_dir, checkpoint):
        trainer = build(cfg, run_dir, checkpoint)
        trainer.callbacks.append(SendSigterm())
        return trainer

    monkeypatch.setattr(train, "build_trainer", trainer_with_sigterm)
    result = lra("train", *TINY, "trainer.max_epochs=3")
    assert result.code == 143
    [record] = load_results(tmp_path / "leaderboard" / "runs")
    assert record["status"] == "interrupted" and "SIGTERM at epoch 1" in record["error"]
    assert f"resume={record['run_dir']}" in result.err
    saved = torch.load(Path(record["run_dir"]) / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == 4  # where the signal came (mid-epoch), not the last epoch's end

    monkeypatch.setattr(train, "build_trainer", build)
    assert lra("train", f"resume={record['run_dir']}").code == 0
    [record] = load_results(tmp_path / "leaderboard" / "runs")
    assert record["status"] == "completed" and record["metrics"]["epochs"] == 3

    # It went on from the batch after the signal: the weights end as an uninterrupted run's do.
    assert lra("train", *TINY, "trainer.max_epochs=3", "runs_dir=straight").code == 0
    straight = next(r for r in load_results(tmp_path / "leaderboard" / "runs")
                    if "straight" in r["run_dir"])
    last = [torch.load(Path(r["run_dir"]) / "checkpoints" / "last.ckpt", weights_only=False)
            for r in (record, straight)]
    assert last[0]["global_step"] == last[1]["global_step"]
    for name, tensor in last[0]["state_dict"].items():
        assert torch.equal(tensor, last[1]["state_dict"][name]), name


@pytest.mark.parametrize("name", sorted(registry.entries("model")))
def test_every_registered_model_trains_through_the_harness(lra, tmp_path, name):
    result = lra("train", f"model={name}", "trainer=debug", "model.d_model=16", "model.n_layers=1",
                 "task.n_train=96", "task.n_test=40", "trainer.max_epochs=1")
    assert result.code == 0, result.err
    [record] = load_results(tmp_path / "leaderboard" / "runs")
    assert (record["model"], record["status"]) == (name, "completed")
    assert record["metrics"]["test_loss"] > 0 and record["params"] > 0


@pytest.fixture
def nan_above_lr(monkeypatch):
    """Make the training loss NaN from step 2 on whenever the learning rate exceeds 1e-3."""
    from lra.lit import Classifier

    step = Classifier._step

    def poisoned(self, batch, split):
        loss = step(self, batch, split)
        if split == "train" and self.global_step >= 2 and self.hparams.optim["lr"] > 1e-3:
            return loss * float("nan")
        return loss

    monkeypatch.setattr(Classifier, "_step", poisoned)


def test_a_diverged_run_stops_and_says_where(lra, tmp_path, nan_above_lr):
    result = lra("train", *TINY, "optim.lr=3e-3")
    assert result.code == 2
    assert "the training loss became nan at step 2" in result.err and "learning rate" in result.err
    [record] = load_results(tmp_path / "leaderboard" / "runs")
    assert record["status"] == "diverged" and "step 2" in record["error"]


def test_divergence_retries_with_a_lower_learning_rate(lra, tmp_path, nan_above_lr):
    result = lra("train", *TINY, "optim.lr=3e-3", "optim.divergence_retries=1",
                 "optim.divergence_lr_factor=0.1")
    assert result.code == 0, result.err
    assert "retrying from scratch with optim.lr=0.0003" in result.err
    [record] = load_results(tmp_path / "leaderboard" / "runs")
    assert record["status"] == "completed" and len(record["divergences"]) == 1
    assert record["config"]["optim"]["lr"] == pytest.approx(3e-4)


def finished_run(lra, tmp_path):
    assert lra("train", *TINY).code == 0
    [record] = load_results(tmp_path / "leaderboard" / "runs")
    return Path(record["run_dir"])


def test_resume_refuses_a_truncated_checkpoint(lra, tmp_path):
    run_dir = finished_run(lra, tmp_path)
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    result = lra("train", f"resume={run_dir}")
    assert result.code == 2
    assert "the checkpoint is unreadable" in result.err and str(last) in result.err


def test_resume_refuses_a_checkpoint_made_with_other_options(lra, tmp_path):
    run_dir = finished_run(lra, tmp_path)
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("d_model: 16", "d_model: 32"))
    result = lra("train", f"resume={run_dir}")
    assert result.code == 2
    assert "other model options (d_model=16 there, 32 here)" in result.err


def test_doctor_lists_every_unusable_result_file(lra, tmp_path):
    runs = tmp_path / "leaderboard" / "runs" / "listops" / "s4d"
    runs.mkdir(parents=True)
    (runs / "truncated.json").write_text('{"run_id": "a", "mod')
    (runs / "newer.json").write_text('{"schema": 99, "run_id": "b"}')
    (runs / "wrong_type.json").write_text('{"run_id": 3}')
    result = lra("doctor")
    assert result.code == 1
    for name, why in (("truncated", "unreadable JSON"), ("newer", "schema 99 is newer"),
                      ("wrong_type", "'run_id' missing or not a string")):
        assert any(name in line and why in line for line in result.out.splitlines()), name
    assert "0 usable result files, 3 unusable" in result.out


def test_a_sweep_runs_every_job_and_a_failing_one_spares_the_others(lra, tmp_path):
    result = lra("train", "-m", "model=s4d,transformer", "model.d_model=18", "trainer=debug",
                 "model.n_layers=1", "task.n_train=64", "task.n_test=32", "seed=0,1")
    assert result.code == 0, result.err
    records = load_results(tmp_path / "leaderboard" / "runs")
    outcome = sorted((r["model"], r["seed"], r["status"]) for r in records)
    assert outcome == [("s4d", 0, "completed"), ("s4d", 1, "completed"),
                       ("transformer", 0, "failed"), ("transformer", 1, "failed")]
    assert result.err.count("d_model=18 is not divisible by n_heads=4") == 2
    assert len({r["run_dir"] for r in records}) == 4  # one run folder per job


def test_generated_pathfinder_trains_end_to_end(lra, tmp_path):
    made = lra("data", "generate", "pathfinder", "--data-dir", "d", "--n-images", "40",
               "--workers", "1")
    assert made.code == 0, made.err
    assert "task=pathfinder" in made.out
    result = lra("train", "task=pathfinder", "data_dir=d", "trainer=debug", "model.d_model=16",
                 "model.n_layers=1", "trainer.limit_eval_batches=null")
    assert result.code == 0, result.err
    [record] = load_results(tmp_path / "leaderboard" / "runs")
    assert record["status"] == "completed" and record["metrics"]["test_examples"] == 4  # 10% of 40
    assert record["protocol"]["splits"]["sizes"] == {"train": 32, "val": 4, "test": 4}


def test_the_smoke_sweep_trains_every_registered_model(lra, tmp_path):
    result = lra("sweep", "smoke", "model.d_model=16", "model.n_layers=1", "task.n_train=64",
                 "task.n_test=32", "trainer.max_epochs=1")
    assert result.code == 0, result.err
    records = load_results(tmp_path / "leaderboard" / "runs")
    assert sorted(r["model"] for r in records) == sorted(registry.entries("model"))
    assert {r["status"] for r in records} == {"completed"}


def test_sweep_without_a_name_lists_the_presets(lra):
    result = lra("sweep")
    assert result.code == 2
    for preset in ("smoke", "lra_all", "s4d", "pretrain_finetune"):
        assert preset in result.err.partition("available: ")[2]


def test_the_protocol_says_whether_a_run_kept_its_recipe_or_set_a_budget(lra, tmp_path):
    assert lra("train", *TINY, "trainer.max_time=00:00:05:00").code == 0
    [record] = load_results(tmp_path / "leaderboard" / "runs")
    protocol = record["protocol"]
    assert protocol["recipe_kind"] == "budget"
    # trainer=debug's epochs, our time
    assert protocol["budget"] == {"max_epochs": 2, "max_time": "00:00:05:00"}


def test_an_experiment_at_its_own_limits_is_the_paper_recipe():
    from lra.train import budget, recipe_limits

    paper = recipe_limits("s4d/listops")
    assert paper["max_epochs"] == 40
    assert budget({"recipe": "s4d/listops", "trainer": dict(paper)}) == {}
    assert budget({"recipe": "s4d/listops", "trainer": {**paper, "max_epochs": 3}}) == {
        "max_epochs": 3}


def limits(max_epochs=40, max_time=None):
    return {"recipe": "s4d/listops",
            "trainer": {"max_epochs": max_epochs, "max_steps": -1, "max_time": max_time}}


def test_the_budget_is_decided_from_the_overrides_hydra_recorded(monkeypatch):
    def no_composing(recipe):
        raise AssertionError("the recipe was composed although no override set a limit")

    recipe = "experiment=s4d/listops"
    with monkeypatch.context() as patch:
        patch.setattr(train, "recipe_limits", no_composing)
        assert train.budget(limits(), [recipe, "seed=1", "model.d_model=64"]) == {}
    assert train.budget(limits(), [recipe, "trainer.max_epochs=40"]) == {}  # the recipe's value
    assert train.budget(limits(), [recipe, "trainer=cpu"]) == {}  # a group, the recipe's limits
    assert train.budget(limits(3), [recipe, "trainer.max_epochs=3"]) == {"max_epochs": 3}
    assert train.budget(limits(3), [recipe, "trainer=debug"]) == {"max_epochs": 3}
    timed = limits(max_time="00:00:10:00")
    assert train.budget(timed, [recipe, "+trainer.max_time=00:00:10:00"]) == {
        "max_time": "00:00:10:00"}
    # A recipe that is no experiment has no limits of its own: every limit is the run's.
    assert train.budget({**limits(), "recipe": "default"}, []) == {"max_epochs": 40}


TINY_RECIPE = ["experiment=s4d/listops", "task=listops_mini", "trainer=debug", "model.d_model=16",
               "model.n_layers=1", "model.d_state=4", "task.n_train=64", "task.n_test=32"]


def test_a_resumed_run_keeps_the_label_it_started_with(lra, tmp_path):
    assert lra("train", *TINY_RECIPE, "trainer.max_epochs=1").code == 0
    [record] = load_results(tmp_path / "leaderboard" / "runs")
    assert record["protocol"]["recipe"] == "s4d/listops"
    assert record["protocol"]["budget"] == {"max_epochs": 1}
    assert record["config"]["budget"] == {"max_epochs": 1}  # saved in the run folder's config.yaml
    [path] = result_files(tmp_path / "leaderboard" / "runs")
    # as if it had been stopped: a completed run is not resumed over
    path.write_text(json.dumps({**record, "status": "interrupted"}))
    assert lra("train", f"resume={record['run_dir']}").code == 0
    [resumed] = load_results(tmp_path / "leaderboard" / "runs")
    assert resumed["protocol"]["recipe_kind"] == "budget"
    assert resumed["protocol"]["budget"] == {"max_epochs": 1}


@pytest.mark.parametrize("args", [["--help"], ["list"]])
def test_help_and_list_import_neither_torch_nor_lightning(args):
    code = (f"import sys, lra.cli\ntry:\n    lra.cli.main({args!r})\nexcept SystemExit:\n    pass\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'lightning', "
            "'hydra'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "[]"


def test_the_table_of_built_ins_names_what_their_decorators_register():
    import lra.models  # noqa: F401  (importing each package registers its built-ins)
    import lra.tasks  # noqa: F401

    for kind, table in registry.BUILT_IN.items():
        built_in = {name: e for name, e in registry.entries(kind).items() if e.source == "built-in"}
        assert sorted(built_in) == sorted(table)
        for name, entry in built_in.items():
            assert entry.load().__module__ == table[name], name


def test_usage_dispatch_and_the_unknown_command_error_read_one_table(lra):
    from lra.cli import COMMANDS

    usage = lra("--help")
    assert usage.code == 0
    for name in COMMANDS:
        assert f"lra {name}" in usage.out
    assert f"available: {', '.join(COMMANDS)}." in lra("nope").err
