"""Protections that once had no test of their own (issue 19): each test here fails when its
protection is removed, which tests/mutants/catalogue.yaml checks by removing it (`make mutants`).

1. the test split is evaluated on the best-validation checkpoint, not the last epoch's weights;
2. S4D is discretised by zero-order hold, dB = (exp(dt A) - 1) / A, not by Euler (dB = dt);
3. the training order depends on the epoch (a new shuffle every epoch, the same one on resume);
4. a run that evaluated part of its test set stays off the leaderboard's averages;
5. a resume is refused when the optimiser options changed, not only the model's;
and beside them: resume=auto refuses a job another process is still running; a data fingerprint
reads every byte of the data; the seed reaches the initial weights.
"""
import os
from pathlib import Path

import pytest
import torch
from conftest import TINY, load_results
from helpers import loaded
from helpers import run_record as record
from helpers import write_run_file as write
from omegaconf import OmegaConf
from writers import write_aclimdb

from lra import results, train
from lra.errors import UserError
from lra.leaderboard import build
from lra.lit import Classifier
from lra.models.s4d import S4DLayer
from lra.resume import last_attempt
from lra.tasks.base import EpochShuffle
from lra.tasks.listops import ListOpsMini
from lra.tasks.text import Text


def test_the_test_split_is_evaluated_on_the_best_validation_checkpoint(lra, tmp_path,
                                                                      monkeypatch):
    """Validation is made to peak at epoch 0 of 2, so the best checkpoint and the last weights
    differ; the weights the test loop sees must be best.ckpt's."""
    on_test_epoch_end = Classifier.on_test_epoch_end
    tested = []

    def falling_val_acc(self):
        self.log("val_acc", 0.9 - 0.1 * self.current_epoch)

    def keep_tested_weights(self):
        tested.append({k: v.detach().clone() for k, v in self.state_dict().items()})
        on_test_epoch_end(self)

    monkeypatch.setattr(Classifier, "on_validation_epoch_end", falling_val_acc)
    monkeypatch.setattr(Classifier, "on_test_epoch_end", keep_tested_weights)
    result = lra("train", *TINY)
    assert result.code == 0, result.err
    [run] = load_results(tmp_path / "leaderboard" / "runs")
    assert run["metrics"]["best_epoch"] == 0 and run["metrics"]["epochs"] == 2
    folder = Path(run["run_dir"]) / "checkpoints"
    best, last = (torch.load(folder / name, weights_only=False)["state_dict"]
                  for name in ("best.ckpt", "last.ckpt"))
    [weights] = tested
    assert any(not torch.equal(best[k], last[k]) for k in best)  # the two candidates differ
    assert all(torch.equal(weights[k], best[k]) for k in best)


def test_s4d_is_discretised_by_zero_order_hold():
    """The kernel against its closed form from the parameters: with dt = exp(log_dt) and
    A = -exp(log_A_real) + i A_imag, K_l = 2 Re sum_n C_n (exp(dt A_n) - 1) / A_n exp(dt A_n l).
    Euler's dB = dt A / A = dt differs from ZOH's by O(dt^2 A), so dt is set large here."""
    torch.manual_seed(0)
    layer = S4DLayer(d_model=3, d_state=8, bidirectional=False).double()
    with torch.no_grad():
        layer.log_dt.fill_(0.0)  # dt = 1
    L = 12
    dt = layer.log_dt.exp().unsqueeze(-1)  # (H, 1)
    A = torch.complex(-layer.log_A_real.exp(), layer.A_imag)  # (H, N/2)
    C = torch.view_as_complex(layer.C)[0]  # (H, N/2)
    powers = torch.exp(dt.unsqueeze(-1) * A.unsqueeze(-1) * torch.arange(L))  # (H, N/2, L)
    zoh = (torch.exp(dt * A) - 1) / A
    expected = 2 * (C.unsqueeze(-1) * zoh.unsqueeze(-1) * powers).sum(1).real  # (H, L)
    with torch.no_grad():
        kernel = layer.kernel(L)[0]
    torch.testing.assert_close(kernel, expected, rtol=1e-9, atol=1e-12)
    # one recurrent step from the zero state with u = 1 leaves x = dB
    u = torch.ones(1, 3, dtype=torch.float64)
    with torch.no_grad():
        _, state = layer.ssm_step(u, layer.default_state(1))
    torch.testing.assert_close(state[0], zoh, rtol=1e-9, atol=1e-12)


def orders(loader, epochs):
    """The training targets in the order the loader serves them, per epoch, as Lightning drives
    it (set_epoch before each epoch)."""
    seen = []
    for epoch in epochs:
        loader.sampler.set_epoch(epoch)
        seen.append(torch.cat([batch["target"] for batch in loader]).tolist())
    return seen


def test_the_training_order_depends_on_the_epoch_and_repeats_on_resume():
    data = ListOpsMini(n_train=64, n_val=8, n_test=8, batch_size=8)
    data.setup()
    loader = data.train_dataloader()
    first, second, again = orders(loader, (0, 1, 0))
    assert first != second and first == again
    assert sorted(first) == sorted(second)  # the same examples, reordered
    n = 50
    by_epoch = [list(EpochShuffle(n, seed=3)) for _ in range(2)]
    shuffle = EpochShuffle(n, seed=3)
    shuffle.set_epoch(1)
    assert by_epoch[0] == by_epoch[1] != list(shuffle)
    assert sorted(shuffle) == list(range(n))


def test_a_partial_test_set_never_joins_the_average_of_full_ones(tmp_path):
    runs = tmp_path / "runs"
    full = {"recipe": "default", "pretraining": "scratch", "data_fingerprint": "ab",
            "full_test_set": True}
    write(runs, "full.json", record("s4d", "listops", 0, 0.60, protocol=full))
    write(runs, "debug.json", record("s4d", "listops", 1, 0.20,
                                     protocol={**full, "full_test_set": False}))
    board = build(runs)
    ours = board.long.query("kind == 'ours' and task == 'listops'")
    assert list(ours.n) == [1] and ours["mean"].iloc[0] == pytest.approx(60.0)
    assert "60.0 (n=1)" in board.markdown and "40.0" not in board.markdown
    assert "1 debug runs (partial test set)" in board.markdown


@pytest.mark.parametrize("key, value", [("lr", 1.5e-3), ("weight_decay", 0.5),
                                        ("betas", [0.8, 0.9])])
def test_resume_refuses_a_checkpoint_made_with_other_optimiser_options(lra, tmp_path, key,
                                                                      value):
    assert lra("train", *TINY).code == 0
    [run] = load_results(tmp_path / "leaderboard" / "runs")
    path = Path(run["run_dir"]) / "config.yaml"
    config = OmegaConf.load(path)
    assert config.optim[key] != value
    config.optim[key] = value
    OmegaConf.save(config, path)
    result = lra("train", f"resume={run['run_dir']}")
    assert result.code == 2
    assert "other optim options" in result.err and f"{key}=" in result.err


def test_resume_auto_refuses_a_job_that_is_still_running(tmp_path):
    """A record of this job marked running by a live process (this one): resume=auto refuses
    it, naming the pid; once the process is gone the attempt is returned to be continued."""
    config = {"task": {"name": "listops_mini"}, "model": {"name": "s4d"}, "seed": 0,
              "resume": "auto", "results_dir": str(tmp_path / "runs")}
    record = {**results.new_record("r1", config, {}, "cpu", None), "run_dir": str(tmp_path)}
    results.write_json_atomic(results.result_path(tmp_path / "runs", record), record)
    with pytest.raises(UserError, match=f"running right now \\(pid {os.getpid()}"):
        last_attempt(OmegaConf.create(config), "train")
    record["pid"] = 2**22 + 1  # above Linux's pid_max default: no such process
    results.write_json_atomic(results.result_path(tmp_path / "runs", record), record)
    assert last_attempt(OmegaConf.create(config), "train")["run_id"] == "r1"


def test_the_text_fingerprint_reads_every_byte_of_every_review(tmp_path):
    """An edit that keeps a review's length and label still makes other data: another
    fingerprint, so its runs get their own leaderboard cell."""
    folder = write_aclimdb(tmp_path)
    before = loaded(Text, tmp_path).fingerprint
    review = next((folder / "test" / "pos").iterdir())
    body = review.read_bytes()
    review.write_bytes(bytes([body[0] ^ 1]) + body[1:])  # one bit of one byte
    assert loaded(Text, tmp_path).fingerprint != before


def test_runs_with_other_seeds_start_from_other_weights(lra, tmp_path, monkeypatch):
    """The run's seed reaches the weights' initialisation (not only the training order): two
    seeds build two different classifiers (test_cli checks that one seed repeats)."""
    built = []

    def build_classifier(config, data):
        classifier = build(config, data)
        built.append({k: v.detach().clone() for k, v in classifier.state_dict().items()})
        return classifier

    build = train.build_classifier
    monkeypatch.setattr(train, "build_classifier", build_classifier)
    for seed in (1, 2, 1):
        assert lra("train", *TINY, f"seed={seed}").code == 0
    one, two, again = built
    assert all(torch.equal(one[k], again[k]) for k in one)
    assert any(not torch.equal(one[k], two[k]) for k in one)
