"""Self-pretraining (`lra pretrain`, lra/pretrain.py) and fine-tuning from it
(`lra train init_from=...`, lra/train.py)."""
import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TINY, load_results
from helpers import TOY_MODEL, write_plugin
from lightning.pytorch.callbacks import Callback
from writers import write_cifar_release as cifar_release

from lra import train
from lra.pretrain import PretrainData, Pretrainer
from lra.results import Record, problem
from lra.tasks.base import SequenceDataset
from lra.tasks.listops import ListOpsMini

# for models without a state size (transformer)
NO_STATE = [a for a in TINY if not a.startswith("model.d_state")]
TOKENS = {"input_kind": "tokens", "vocab_size": 16, "d_input": None, "num_classes": 10,
          "dual": False}
OPTIM = {"lr": 1e-3, "weight_decay": 0.0, "betas": [0.9, 0.999], "warmup_ratio": 0.1}
DECLARED = Record.__required_keys__ | Record.__optional_keys__


def records(tmp_path, kind=None):
    found = load_results(tmp_path / "leaderboard" / "runs")
    return [r for r in found if kind is None or r["kind"] == kind]


def pretrained(lra, tmp_path, *args):
    result = lra("pretrain", *TINY, *args)
    assert result.code == 0, result.err
    [record] = records(tmp_path, "pretrain")
    return record


def test_the_masked_loss_falls_well_below_its_start_and_the_unigram_loss(lra, tmp_path):
    """About 475 steps of a tiny bidirectional S4D on mini-ListOps, masking 10% of the tokens."""
    sizes = ["task.n_train=1600", "task.n_val=10", "task.n_test=10", "task.batch_size=16"]
    result = lra("pretrain", "trainer=cpu", "trainer.progress=false", "trainer.max_epochs=5",
                 "model.d_model=32", "model.n_layers=2", "model.d_state=16", "optim.lr=1e-2",
                 *sizes)
    assert result.code == 0, result.err
    [record] = records(tmp_path)
    assert (record["kind"], record["status"]) == ("pretrain", "completed")
    assert problem(record) is None and set(record) <= DECLARED
    assert record["protocol"]["objective"] == "masked" and record["protocol"]["mask_ratio"] == 0.1
    assert record["device_hours"] > 0 and Path(record["checkpoint"]).is_file()
    history = record["metrics"]["history"]
    assert [h["epoch"] for h in history] == [None, 0, 1, 2, 3, 4]  # before training, each epoch
    initial, final = history[0]["heldout_loss"], history[-1]["heldout_loss"]
    assert final < 0.8 * initial

    data = ListOpsMini(n_train=1600, n_val=10, n_test=10)
    data.setup()
    tokens = np.concatenate([data.splits["train"][i]["inputs"] for i in range(1600)])
    p = np.bincount(tokens) / len(tokens)
    # the loss of always predicting the token frequencies
    unigram = -(p[p > 0] * np.log(p[p > 0])).sum()
    assert final < unigram < initial
    assert "lra train init_from=" in result.out


def add_callback(monkeypatch, callback):
    """Every trainer built from now on runs `callback` too."""
    build = train.build_trainer

    def with_callback(cfg, run_dir, checkpoint):
        trainer = build(cfg, run_dir, checkpoint)
        trainer.callbacks.append(callback)
        return trainer

    monkeypatch.setattr(train, "build_trainer", with_callback)


class WeightsAtStart(Callback):
    """Copies the module's weights when training starts, before the first step."""

    def __init__(self):
        self.taken = []

    def on_train_start(self, trainer, module):
        self.taken.append({k: v.detach().clone() for k, v in module.state_dict().items()})


@pytest.fixture
def weights_at_start(monkeypatch):
    callback = WeightsAtStart()
    add_callback(monkeypatch, callback)
    return callback.taken


def test_fine_tuning_starts_from_the_pretrained_encoder_and_backbone_with_a_fresh_head(
        lra, tmp_path, weights_at_start):
    pre = pretrained(lra, tmp_path)
    saved = torch.load(pre["checkpoint"], weights_only=True)["state_dict"]
    weights_at_start.clear()  # the pretraining run's own
    assert lra("train", *TINY, f"init_from={pre['run_dir']}").code == 0
    assert lra("train", *TINY).code == 0  # from scratch, same seed
    finetuned, scratch = weights_at_start

    parts = [k for k in saved if k.startswith(("encoder.", "backbone."))]
    assert parts and set(parts) == {k for k in finetuned if not k.startswith("head.")}
    for name in parts:
        assert torch.equal(finetuned[name], saved[name]), name
    assert any(not torch.equal(scratch[name], saved[name]) for name in parts)
    heads = [k for k in finetuned if k.startswith("head.")]
    # initialised as from scratch
    assert heads and all(torch.equal(finetuned[k], scratch[k]) for k in heads)
    # classes, not the pretraining head's vocabulary
    assert finetuned["head.2.weight"].shape[0] == 10

    tuned = next(r for r in records(tmp_path, "train") if r["config"]["init_from"])
    assert tuned["status"] == "completed"
    assert tuned["protocol"]["pretraining"] == "self-pretrained"
    assert tuned["protocol"]["pretrained_from"] == pre["run_id"]
    assert tuned["protocol"]["pretrain_device_hours"] == pre["device_hours"] > 0


def test_a_plugin_backbone_pretrains_and_fine_tunes_with_no_extra_code(
        lra, site, tmp_path):  # noqa: F811
    write_plugin(site, "lra-toy", "lra_toy", "toy", TOY_MODEL)
    result = lra("pretrain", "model=toy", "trainer=debug", "task.n_train=128", "task.n_test=50")
    assert result.code == 0, result.err
    [pre] = records(tmp_path, "pretrain")
    assert (pre["model"], pre["status"], pre["protocol"]["objective"]) == (
        "toy", "completed", "masked")
    assert all(np.isfinite(h["heldout_loss"]) for h in pre["metrics"]["history"])
    result_file = (tmp_path / "leaderboard" / "runs" / "listops_mini" / "toy"
                   / f"{pre['run_id']}.json")
    tuned = lra("train", "model=toy", "trainer=debug", "task.n_train=128", "task.n_test=50",
                f"init_from={result_file}")
    assert tuned.code == 0, tuned.err
    [record] = records(tmp_path, "train")
    assert record["protocol"]["pretrained_from"] == pre["run_id"]


class Untouchable(torch.utils.data.Dataset):
    """A split that must not be read: taking any example fails the test."""

    def __init__(self, split):
        self.split, self.targets = split, np.zeros(1, dtype=np.int64)

    def __len__(self):
        return 1000

    def __getitem__(self, i):
        raise AssertionError(f"pretraining read the {self.split} split")


def test_pretraining_reads_neither_val_nor_test_nor_any_label(lra, tmp_path, monkeypatch):
    args = ["trainer.max_epochs=2", "runs_dir=r"]
    assert lra("pretrain", *TINY, *args, "results_dir=plain").code == 0
    build = train.build_data

    def guarded(cfg):
        data = build(cfg)
        data.splits["val"], data.splits["test"] = Untouchable("val"), Untouchable("test")
        labels = data.splits["train"].targets
        data.splits["train"].targets = (labels + 1) % 10
        return data

    monkeypatch.setattr(train, "build_data", guarded)
    result = lra("pretrain", *TINY, *args, "results_dir=guarded")
    assert result.code == 0, result.err
    weights = [torch.load(r["checkpoint"], weights_only=True)["state_dict"]
               for r in (*load_results(tmp_path / "plain"), *load_results(tmp_path / "guarded"))]
    assert weights[0].keys() == weights[1].keys()
    for name, tensor in weights[0].items():
        # other labels, the same pretrained model
        assert torch.equal(tensor, weights[1][name]), name


def test_a_two_document_task_pretrains_on_each_document_held_out_by_example():
    examples = SequenceDataset([np.full(5, i) for i in range(20)], np.zeros(20),
                               [np.full(3, 100 + i) for i in range(20)])
    task = SimpleNamespace(data_dir="d", seed=0, batch_size=4, num_workers=0, name="pairs",
                           seq_len=5, input_kind="tokens", vocab_size=200, d_input=None,
                           num_classes=2, dual=True, splits={"train": examples})
    documents = PretrainData(task, heldout=0.25)
    train_docs, heldout_docs = documents.splits["train"], documents.splits["val"]
    assert (len(train_docs), len(heldout_docs)) == (30, 10)
    firsts = lambda docs: {int(docs[j][0]) % 100 for j in range(len(docs))}  # noqa: E731
    # both documents of an example on one side
    assert firsts(train_docs).isdisjoint(firsts(heldout_docs))
    batch = next(iter(documents.val_dataloader()))
    assert set(batch) == {"inputs", "mask", "lengths"} and not documents.dual


def test_masking_hides_the_ratio_of_real_positions_and_at_least_one():
    module = Pretrainer({"name": "s4d", "d_model": 8, "n_layers": 1, "d_state": 4}, TOKENS, OPTIM,
                        objective="masked", mask_ratio=0.25)
    mask = torch.arange(40) < torch.tensor([[40], [20], [2]])  # (3, 40)
    hidden = module.hide(mask)
    assert hidden.sum(-1).tolist() == [10, 5, 1] and not (hidden & ~mask).any()


def test_the_next_token_objective_scores_position_t_on_the_token_after_it():
    """Causal model: the last input is no one's context, so it gets no gradient; the first does."""
    model = {"name": "transformer", "d_model": 8, "n_layers": 1, "n_heads": 2,
             "bidirectional": False}
    module = Pretrainer(model, TOKENS, OPTIM, objective="next", mask_ratio=None)
    assert module.mask_embedding is None
    encoded = []
    module.encoder.register_forward_hook(lambda m, i, out: encoded.append(out) or out.retain_grad())
    inputs = torch.randint(1, 16, (2, 12))
    loss = module._step({"inputs": inputs, "mask": torch.ones(2, 12, dtype=torch.bool)}, "train")
    loss.backward()
    grad = encoded[0].grad  # (2, 12, 8)
    assert grad[:, -1].abs().sum() == 0 and grad[:, 0].abs().sum() > 0


def test_a_causal_model_pretrains_next_token_and_a_bidirectional_one_refuses_it(lra, tmp_path):
    result = lra("pretrain", *NO_STATE, "model=transformer", "model.bidirectional=false")
    assert result.code == 0, result.err
    [record] = records(tmp_path)
    assert (record["protocol"]["objective"], record["protocol"]["mask_ratio"]) == ("next", None)
    assert record["config"]["model"]["bidirectional"] is False

    refused = lra("pretrain", *NO_STATE, "model=transformer", "pretrain.objective=next")
    assert refused.code == 2 and "needs a causal model" in refused.err
    assert "Traceback" not in refused.err


def test_continuous_inputs_are_reconstructed_with_a_squared_error(lra, tmp_path):
    cifar_release(tmp_path / "d")
    task = ["task=image", "data_dir=d", "task.encoding=real", "task.val_size=10",
            "task.batch_size=8"]
    model = ["model.d_model=16", "model.n_layers=1", "model.d_state=8"]
    result = lra("pretrain", "trainer=debug", *model, *task)
    assert result.code == 0, result.err
    [pre] = records(tmp_path)
    assert (pre["protocol"]["loss"], pre["protocol"]["mask_ratio"]) == ("mse", 0.5)
    state = torch.load(pre["checkpoint"], weights_only=True)["state_dict"]
    assert state["head.2.weight"].shape == (1, 16)  # predicts the one real value per position
    losses = [h["heldout_loss"] for h in pre["metrics"]["history"]]
    assert len(losses) == 3 and all(np.isfinite(losses)) and min(losses) > 0
    tuned = lra("train", "trainer=debug", *model, *task, f"init_from={pre['run_dir']}")
    assert tuned.code == 0, tuned.err


def test_a_mismatched_init_from_names_both_values_in_one_paragraph(lra, tmp_path):
    pre = pretrained(lra, tmp_path)
    result_file = next((tmp_path / "leaderboard" / "runs").glob("**/*.json"))
    cifar_release(tmp_path / "d")
    image = [*TINY[:4], "task=image", "data_dir=d", "task.val_size=10"]
    cases = [([*TINY, "model.d_model=32"], "d_model=16 there, 32 here"),
             (image, "pretrained on task 'listops_mini', this run is on 'image'"),
             (image, "vocab_size=16 there, 257 here")]
    for args, expected in cases:
        result = lra("train", f"init_from={result_file}", *args)
        assert result.code == 2, result.err
        # one paragraph, after any progress lines (preparing the data)
        error = result.err.splitlines()[-1]
        assert error.startswith("lra: error: ") and expected in error
        assert "Traceback" not in result.err
    result = lra("train", *NO_STATE, f"init_from={result_file}", "model=transformer")
    assert result.code == 2 and "name='s4d' there, 'transformer' here" in result.err
    assert "cannot fine-tune from pretrain run " + pre["run_id"] in lra(
        "train", *TINY, f"init_from={result_file}", "model.d_model=32").err

    assert lra("train", *TINY).code == 0
    scratch = next(r for r in records(tmp_path, "train") if r["status"] == "completed")
    result = lra("train", *TINY, f"init_from={scratch['run_dir']}")
    assert result.code == 2 and "is a train run, not a pretrain run" in result.err


def test_the_pretrain_finetune_sweep_runs_both_stages_per_job(lra, tmp_path):
    result = lra("sweep", "pretrain_finetune", "model=s4d", "seed=0", *TINY)
    assert result.code == 0, result.err
    [pre] = records(tmp_path, "pretrain")
    [tuned] = records(tmp_path, "train")
    assert pre["status"] == tuned["status"] == "completed"
    assert tuned["protocol"]["pretrained_from"] == pre["run_id"]
    assert Path(pre["run_dir"]).name == "pretrain" and Path(tuned["run_dir"]).name == "finetune"
    assert json.loads((Path(pre["run_dir"]) / "run.json").read_text())["run_id"] == pre["run_id"]


class SigtermMidEpoch(Callback):
    """What SLURM sends before pre-emption, in the middle of the second epoch."""

    armed = True

    def on_train_batch_end(self, trainer, *args):
        if self.armed and trainer.current_epoch == 1 and trainer.global_step == 4:
            os.kill(os.getpid(), signal.SIGTERM)


def test_an_interrupted_pretraining_resumes_with_its_loss_curve(lra, tmp_path, monkeypatch):
    sigterm = SigtermMidEpoch()
    add_callback(monkeypatch, sigterm)
    result = lra("pretrain", *TINY, "trainer.max_epochs=3")
    assert result.code == 143
    [record] = records(tmp_path)
    assert record["status"] == "interrupted" and f"resume={record['run_dir']}" in result.err

    sigterm.armed = False
    assert lra("pretrain", f"resume={record['run_dir']}").code == 0
    [record] = records(tmp_path)
    assert (record["kind"], record["status"]) == ("pretrain", "completed")
    assert [h["epoch"] for h in record["metrics"]["history"]] == [None, 0, 1, 2]
