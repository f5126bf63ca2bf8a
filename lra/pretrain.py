"""`lra pretrain`: self-pretraining on the task's own training inputs, then fine-tuning from it.

Amos, Berant & Gupta, "Never Train from Scratch: Fair Comparison of Long-Sequence Models
Requires Data-Driven Priors", ICLR 2024: a denoising objective on the training split's
inputs alone (no labels, no other data) before the classification run closes most of the
gap between Transformers and state space models on the Long-Range Arena.

    lra pretrain model=s4d task=listops          # a checkpoint and a "kind": "pretrain" result
    lra train model=s4d task=listops init_from=<its run folder or result file>
    lra sweep pretrain_finetune model=s4d,transformer task=listops seed=0,1,2   # both, per job

The model is the classifier's encoder and backbone with a per-position head in place of the
pooled one (encoder -> backbone -> head), so any registered backbone pretrains unchanged.
Over the real positions t of a sequence x (mask `m` of hidden positions, |m| = round(r L)):

    masked (bidirectional models):
        loss = mean_{t in m} l(head(backbone(x with x_t -> [MASK], t in m))_t, x_t)
    next (model.bidirectional=false):
        loss = mean_{t < L} l(head(backbone(x))_t, x_{t+1})

where [MASK] is a learned vector put in place of the encoded input, and l is the
cross-entropy for token inputs or the squared error for continuous ones (speech; images
encoded as reals). A seeded `pretrain.heldout` share of the training examples is held out
to measure the loss (the same masks each time); the val and test splits are never read.
Retrieval's two documents are pretrained on as separate sequences. docs/pretraining.md
gives the ratios and how fine-tuned runs show on the leaderboard. Fine-tuning from a pretrain
run (`init_from`) belongs to the train stage: lra.train.init_from.
"""
import copy
import itertools
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import Dataset

from lra import train
from lra.errors import UserError
from lra.lit import Classifier
from lra.tasks.base import TaskData, pad

# Share of positions masked, by task: the study's choices (image-like inputs are redundant
# enough to hide half; text as in BERT; ListOps' tokens carry more each). Speech: our choice.
MASK_RATIOS = {"image": 0.5, "scifar": 0.5, "pathfinder": 0.5, "pathx": 0.5, "sc10": 0.5,
               "sc35": 0.5, "text": 0.15, "retrieval": 0.15, "listops": 0.1, "listops_mini": 0.1}
DEFAULT_MASK_RATIO = 0.15  # a task not listed (a plugin's)
STAGES = ("train", "pretrain", "both")


def objective(config):
    """("masked", ratio) or ("next", None) for this model and task, as `pretrain.objective` asks."""
    options, model = config["pretrain"], config["model"]
    choice, bidirectional = options["objective"], model.get("bidirectional")
    if choice not in ("auto", "masked", "next"):
        raise UserError(f"pretrain.objective={choice!r} is not known; use auto, masked or next.")
    if choice == "auto":
        choice = "next" if bidirectional is False else "masked"
    if choice == "next":
        if bidirectional:
            raise UserError(f"pretrain.objective=next needs a causal model, but model "
                            f"{model['name']!r} is bidirectional: each position would see the "
                            "token it must predict. Add model.bidirectional=false, or use "
                            "pretrain.objective=masked.")
        return "next", None
    ratio = options["mask_ratio"]
    ratio = MASK_RATIOS.get(config["task"]["name"], DEFAULT_MASK_RATIO) if ratio is None else ratio
    if not 0 < ratio < 1:
        raise UserError(f"pretrain.mask_ratio must be in (0, 1), got {ratio}.")
    return "masked", ratio


# --- data: the training split's documents, without labels ------------------------------------

class Documents(Dataset):
    """The input sequences of some examples of a split, labels left out; each document of a
    two-document example (Retrieval) is a sequence of its own."""

    def __init__(self, examples, indices, keys):
        self.examples = examples
        self.items = [(i, key) for i in indices for key in keys]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, j):
        i, key = self.items[j]
        return self.examples[i][key]


def collate_documents(documents):
    inputs, mask, lengths = pad(documents)
    return {"inputs": inputs, "mask": mask, "lengths": lengths}


class PretrainData(TaskData):
    """A task's training split as documents to pretrain on: a seeded `heldout` share of its
    examples measures the loss (the "val" loader here), the rest trains. The task's own val
    and test splits are left untouched."""

    collate_fn = staticmethod(collate_documents)

    def __init__(self, task, heldout):
        super().__init__(task.data_dir, task.seed, task.batch_size, task.num_workers)
        for key in ("name", "seq_len", "input_kind", "vocab_size", "d_input", "num_classes"):
            setattr(self, key, getattr(task, key))
        examples = task.splits["train"]
        n = len(examples)
        n_heldout = max(1, round(heldout * n))
        if not 0 < heldout < 1 or n_heldout >= n:
            raise UserError(f"pretrain.heldout={heldout} leaves no training examples of the {n} in "
                            f"{task.name}'s training split; use a share in (0, 1), e.g. 0.05.")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(task.seed)).tolist()
        keys = ("inputs", "inputs2") if task.dual else ("inputs",)
        self.splits = {"train": Documents(examples, order[n_heldout:], keys),
                       "val": Documents(examples, order[:n_heldout], keys)}
        self.protocol = {"heldout_examples": n_heldout, "train_examples": n - n_heldout,
                         "documents_per_example": len(keys), "heldout_seed": task.seed}


# --- the model: encoder -> backbone -> a per-position head -------------------------------------

class Pretrainer(Classifier):
    """The classifier's encoder and backbone (same names, so their weights carry over to
    fine-tuning) under a head that predicts each position's input: `vocab_size` logits for
    tokens, `d_input` values for continuous inputs.

    `history` holds the held-out loss before training (epoch None) and at each validation, with
    the training loss of that epoch (numbered from 0, as Lightning does); it travels in the
    checkpoints, so a resumed run keeps it.
    """

    def __init__(self, model: dict, task: dict, optim: dict, objective: str = "masked",
                 mask_ratio: float = 0.15):
        super().__init__(model, task, optim)
        masked = objective == "masked"
        self.mask_embedding = nn.Parameter(0.02 * torch.randn(model["d_model"])) if masked else None
        self.history = []
        self._heldout_rng = None

    def make_head(self, task, d_model):
        out = task["vocab_size"] if task["input_kind"] == "tokens" else task["d_input"]
        return nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(), nn.Linear(d_model, out))

    def forward(self, inputs, mask, hidden=None):
        """Per-position predictions (B, L, vocab_size or d_input); `hidden` (B, L) marks the
        inputs replaced by [MASK]."""
        x = self.encoder(inputs)  # (B, L, D)
        if hidden is not None:
            x = torch.where(hidden.unsqueeze(-1), self.mask_embedding.to(x.dtype), x)
        x = x * mask.unsqueeze(-1)  # zero at padding
        return self.head(self.backbone(x, mask=mask))

    def hide(self, mask, generator=None):
        """round(ratio * length) random real positions of each row, at least one: (B, L) bool."""
        keys = torch.rand(mask.shape, generator=generator, device=mask.device)
        keys = keys.masked_fill(~mask, 2.0)
        rank = keys.argsort(-1).argsort(-1)  # (B, L) places in a random order, padding last
        count = (self.hparams.mask_ratio * mask.sum(-1)).round().clamp(min=1)  # (B,)
        return rank < count.unsqueeze(-1)

    def _step(self, batch, split):
        inputs, mask = batch["inputs"], batch["mask"]
        if self.hparams.objective == "next":
            predicted = self(inputs, mask)[:, :-1]  # position t predicts x_{t+1}
            target, scored = inputs[:, 1:], mask[:, 1:]
        else:
            scored = self.hide(mask, self._heldout_rng if split == "val" else None)
            predicted, target = self(inputs, mask, scored), inputs
        # (n, out), and (n,) or (n, d_input)
        predicted, target = predicted[scored].float(), target[scored]
        if self.hparams.task["input_kind"] == "tokens":
            loss = F.cross_entropy(predicted, target)
        else:
            loss = F.mse_loss(predicted, target)
        totals = self._counts.setdefault(split, [0, 0.0])
        totals[0] += len(target)
        totals[1] += loss.item() * len(target)
        return loss

    def _mean_loss(self, split, keep=False):
        n, loss_sum = (self._counts.get if keep else self._counts.pop)(split, (0, 0.0))
        return loss_sum / n if n else None

    def _log_epoch(self, split):
        loss = self._mean_loss(split)
        if loss is None:
            return
        if split == "val":  # the held-out training examples; the checkpoint keeps the lowest
            self.log("heldout_loss", loss, prog_bar=True)
            self.history.append({"epoch": self.current_epoch, "step": self.global_step,
                                 "train_loss": self._mean_loss("train", keep=True),
                                 "heldout_loss": loss})
        else:
            self.log(f"{split}_loss", loss)

    def on_validation_epoch_start(self):
        # the same masks every time
        self._heldout_rng = torch.Generator(device=self.device).manual_seed(0)

    def on_train_start(self):
        """Measure the held-out loss before the first step (a resumed run has it in its history)."""
        if self.history:
            return
        loader = self.trainer.datamodule.val_dataloader()
        limit = self.trainer.limit_val_batches  # as Lightning reads it: batches, or a share
        batches = limit if isinstance(limit, int) else int(limit * len(loader))
        self.eval()
        self.on_validation_epoch_start()
        with torch.no_grad(), self.trainer.precision_plugin.forward_context():
            for batch in itertools.islice(loader, batches):
                self._step(self.transfer_batch_to_device(batch, self.device, 0), "val")
        self.train()
        self.history.append({"epoch": None, "step": 0, "train_loss": None,
                             "heldout_loss": self._mean_loss("val")})

    def on_save_checkpoint(self, checkpoint):
        checkpoint["pretrain_history"] = self.history

    def on_load_checkpoint(self, checkpoint):
        self.history = checkpoint.get("pretrain_history", [])


# --- the pretrain stage of `train.run` ---------------------------------------------------------

def pretrain_protocol(config):
    kind, ratio = objective(config)
    return {"objective": kind, "mask_ratio": ratio, "loss": None,
            "heldout_share": config["pretrain"]["heldout"], "splits_read": ["train"],
            "labels_read": False, "data_fingerprint": None}


def pretrain_and_measure(config, data, run_dir, last_ckpt, record):
    """Pretrain on the training split's documents; keep the checkpoint with the lowest held-out
    loss."""
    kind, ratio = objective(config)
    documents = PretrainData(data, config["pretrain"]["heldout"])
    record["protocol"].update(loss="cross_entropy" if data.input_kind == "tokens" else "mse",
                              documents=documents.protocol)

    def build(config, data):
        return train.build_classifier(config, data, Pretrainer, objective=kind, mask_ratio=ratio)

    trainer, checkpoint, module = train.fit_with_retries(
        config, documents, run_dir, last_ckpt, record, build=build, monitor=("heldout_loss", "min"))
    best = checkpoint.best_model_path or str(Path(run_dir) / "checkpoints" / "last.ckpt")
    record["checkpoint"] = str(Path(best).resolve())
    record["backbone_params"] = sum(p.numel() for p in module.backbone.parameters())
    last = module.history[-1]
    return module, {
        "objective": kind, "loss": record["protocol"]["loss"], "history": module.history,
        "initial_heldout_loss": module.history[0]["heldout_loss"],
        "heldout_loss": float(checkpoint.best_model_score) if checkpoint.best_model_path
        else last["heldout_loss"],
        "best_epoch": train.best_epoch(best), "epochs": trainer.current_epoch,
        "train_loss": last["train_loss"],
    }


PRETRAIN = train.Stage("pretrain", pretrain_protocol, pretrain_and_measure)


def pretrain_config(cfg):
    """The config of a pretrain run: stage=pretrain, with pretrain.epochs and pretrain.lr in
    effect."""
    cfg = copy.deepcopy(cfg)
    cfg.stage = "pretrain"
    if cfg.pretrain.epochs is not None:
        cfg.trainer.max_epochs = cfg.pretrain.epochs
    if cfg.pretrain.lr is not None:
        cfg.optim.lr = cfg.pretrain.lr
    return cfg


def run_stage(cfg, run_dir):
    """The job of `lra train` and `lra pretrain`, as `stage` says: train, pretrain, or both
    (pretrain in <run_dir>/pretrain, then fine-tune from it in <run_dir>/finetune). A resumed
    run folder continues whichever stage it holds."""
    stage = cfg.stage
    if cfg.resume not in (None, "auto"):
        stage = OmegaConf.load(Path(cfg.resume) / "config.yaml").get("stage", "train")
    if stage not in STAGES:
        raise UserError(f"stage={stage!r} is not known; use {', '.join(STAGES)}.")
    if stage == "train":
        return train.run(cfg, run_dir)
    if stage == "pretrain":
        return train.run(pretrain_config(cfg), run_dir, PRETRAIN)
    pretrained = train.run(pretrain_config(cfg), Path(run_dir) / "pretrain", PRETRAIN)
    report(pretrained)
    finetune = copy.deepcopy(cfg)
    finetune.stage, finetune.init_from = "train", pretrained["result_path"]
    return train.run(finetune, Path(run_dir) / "finetune")


def report(record):
    m = record["metrics"]
    print(f"\n{record['model']} pretrained on {record['task']} (seed {record['seed']}, "
          f"{m['objective']} objective): held-out {m['loss']} {m['initial_heldout_loss']:.4g} "
          f"before training, {m['heldout_loss']:.4g} at epoch {m['best_epoch']} of "
          f"{m['epochs']}; {record['wall_time_s']:.0f} s")
    print(f"result file: {record['result_path']}")
    print("fine-tune from it with the same model and task options: "
          f"lra train init_from={record['run_dir']}")
