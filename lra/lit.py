"""The one classifier every backbone trains inside: encoder -> backbone -> pooling -> head.

    tokens (B, L) --embedding--> (B, L, D) --backbone--> (B, L, D) --pooling--> (B, D)
                  --head--> logits

`model.pooling` (a harness key, never passed to the backbone) picks the decoder:
    mean: the mean over the real positions (the S4 references' default)
    last: the output at each row's last real position (S4D's Pathfinder, `decoder.mode: last`)
    cls:  a learned token prepended to every row, mask True there; its output is classified
          (LRA's Transformer, `classifier_pool: CLS`)
Padding changes none of them: each reads real positions only.

The head is a small MLP over the pooled features, set by three more harness keys:
    head_hidden:   the hidden widths, [] for one Linear (the S4 references' decoder);
                   null: one hidden layer d_model wide
    head_act:      gelu | relu, after each hidden layer (LRA's heads use relu)
    dual_features: how a two-document task (Retrieval) joins its documents' features u and v,
                   both encoded by the same backbone: nli, [u, v, u*v, u-v] (the S4 references'
                   `nli: true`), or concat, [u, v] (LRA's `classifier_head_dual` without
                   `interaction`)
Accuracy is counted example by example over the whole split, so a last partial batch weighs
what it holds.
"""
import math
import time

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from lra import config, registry
from lra.errors import Diverged


def masked_mean(y, mask):
    """Mean over the real positions: y (B, L, D), mask (B, L) -> (B, D)."""
    weights = mask.unsqueeze(-1).to(y.dtype)  # (B, L, 1)
    return (y * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def last_real(y, mask):
    """The output at each row's last real position: y (B, L, D), mask (B, L) -> (B, D)."""
    positions = torch.arange(mask.shape[1], device=mask.device)  # (L,)
    last = (positions * mask).amax(1)  # (B,) the largest real index (0 for an empty row)
    return y[torch.arange(y.shape[0], device=y.device), last]


POOLINGS = ("mean", "last", "cls")
HEAD_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}
DUAL_FEATURES = {"nli": 4, "concat": 2}  # how many D-wide pieces the joined features hold
SCHEDULES = ("cosine", "rsqrt")


def warmup_cosine(step, total, warmup):
    """Learning-rate factor: linear warmup to 1, then cosine decay to 0 at `total`,

        factor(step) = (1 + cos(pi (step - warmup) / (total - warmup))) / 2

    and, as transformers' get_cosine_schedule_with_warmup (the S4 references' scheduler), past
    `total` the cosine turns back up."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_rsqrt(step, warmup):
    """Learning-rate factor of LRA's `constant * linear_warmup * rsqrt_decay`:

        factor(step) = min(1, step / warmup) / sqrt(max(step, warmup))

    so lr = optim.lr * factor rises linearly to optim.lr / sqrt(warmup) at `warmup`, then decays
    as 1 / sqrt(step). Step 0 gets 0, as in LRA (its optimiser's step count starts at 0). The
    total does not enter: a warmup longer than the run rises until the end."""
    return min(1.0, step / warmup) / math.sqrt(max(step, warmup))


def schedule_factor(opt, total):
    """The factor(step) that multiplies optim.lr: `optim.schedule` (cosine, the default, or
    rsqrt) over `optim.warmup_steps` steps of warmup, or warmup_ratio of the total if that is
    null. The cosine's total is `optim.total_steps` (the references' num_training_steps), or
    `total`, the run's steps, if that is null. Configs saved before these keys existed read as
    cosine with warmup_ratio over the run."""
    schedule = opt.get("schedule", "cosine")
    if schedule not in SCHEDULES:
        raise ValueError(f"optim.schedule={schedule!r} is not known; use one of "
                         f"{', '.join(SCHEDULES)}")
    total = opt.get("total_steps") or total
    warmup = opt.get("warmup_steps") or max(1, int(opt["warmup_ratio"] * total))
    if schedule == "rsqrt":
        return lambda step: warmup_rsqrt(step, warmup)
    return lambda step: warmup_cosine(step, total, warmup)


def optim_overrides(module):
    """{parameter name: its `_optim` settings}, to keep where the attributes would be lost: the
    processes that trainer=ddp spawns receive parameters without their Python attributes."""
    return {name: dict(p._optim) for name, p in module.named_parameters() if hasattr(p, "_optim")}


def param_groups(module, weight_decay, overrides=None, decay="matrices"):
    """AdamW groups: decay on weight matrices only (decay="all": on biases and norms too, as
    LRA's Flax Adam decays every parameter); parameters carrying `_optim` (or named in
    `overrides`, see `optim_overrides`) get their own."""
    overrides = {**optim_overrides(module), **(overrides or {})}
    decay_all = {"matrices": False, "all": True}[decay]
    decayed, no_decay, special = [], [], {}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        if name in overrides:
            key = tuple(sorted(overrides[name].items()))
            special.setdefault(key, []).append(param)
        elif param.ndim >= 2 or decay_all:
            decayed.append(param)
        else:
            no_decay.append(param)
    groups = [{"params": decayed, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    groups += [{"params": params, **dict(key)} for key, params in special.items()]
    return [g for g in groups if g["params"]]


class Classifier(L.LightningModule):
    """Sequence classifier around a registered backbone.

    `model` is the model config (`name` plus the backbone's keyword arguments), `task` the
    data module's shape (`input_kind`, `vocab_size` or `d_input`, `num_classes`, `dual`),
    `optim` the optimiser config. All three are plain dicts, saved in every checkpoint.
    """

    def __init__(self, model: dict, task: dict, optim: dict):
        super().__init__()
        self.save_hyperparameters()
        options = config.options(model)
        d_model = options["d_model"]
        if task["input_kind"] == "tokens":
            self.encoder = nn.Embedding(task["vocab_size"], d_model, padding_idx=0)
        else:
            self.encoder = nn.Linear(task["d_input"], d_model)
        self.backbone = registry.model(model["name"])(**options)
        self.pooling = model.get("pooling", "mean")
        if self.pooling not in POOLINGS:
            raise ValueError(f"model.pooling={self.pooling!r} is not known; use one of "
                             f"{', '.join(POOLINGS)}")
        # LRA's CLS token starts at zero; its position tells it apart
        self.cls = nn.Parameter(torch.zeros(d_model)) if self.pooling == "cls" else None
        self.dual_features = model.get("dual_features", "nli")
        self.head = self.make_head(task, d_model)
        self.optim_overrides = optim_overrides(self)
        self._counts = {}
        self.real_tokens = 0  # real (non-pad) training tokens seen, for throughput
        self.train_seconds = 0.0

    def make_head(self, task, d_model):
        """The head over the pooled features; a subclass that predicts something else replaces
        it."""
        model = self.hparams.model
        hidden = model.get("head_hidden")
        hidden = [d_model] if hidden is None else list(hidden)
        act = model.get("head_act", "gelu")
        dual = self.dual_features
        if act not in HEAD_ACTIVATIONS or dual not in DUAL_FEATURES:
            raise ValueError(f"model.head_act={act!r}, model.dual_features={dual!r}: use head_act "
                             f"{' | '.join(HEAD_ACTIVATIONS)}, dual_features "
                             f"{' | '.join(DUAL_FEATURES)}")
        widths = [DUAL_FEATURES[dual] * d_model if task["dual"] else d_model, *hidden]
        layers = []
        for d_in, d_out in zip(widths, widths[1:]):
            layers += [nn.Linear(d_in, d_out), HEAD_ACTIVATIONS[act]()]
        return nn.Sequential(*layers, nn.Linear(widths[-1], task["num_classes"]))

    def encode(self, inputs, mask):
        """(B, L) inputs and mask -> the pooled features (B, D)."""
        x = self.encoder(inputs) * mask.unsqueeze(-1)  # (B, L, D), zero at padding
        if self.pooling == "cls":
            cls = self.cls.to(x.dtype).expand(x.shape[0], 1, -1)  # (B, 1, D)
            x, mask = torch.cat([cls, x], 1), F.pad(mask, (1, 0), value=True)  # (B, 1 + L, .)
            return self.backbone(x, mask=mask)[:, 0]
        y = self.backbone(x, mask=mask)  # (B, L, D)
        return last_real(y, mask) if self.pooling == "last" else masked_mean(y, mask)

    def forward(self, batch):
        u = self.encode(batch["inputs"], batch["mask"])
        if self.hparams.task["dual"]:
            v = self.encode(batch["inputs2"], batch["mask2"])
            nli = self.dual_features == "nli"
            u = torch.cat([u, v, u * v, u - v] if nli else [u, v], dim=-1)  # (B, 4D or 2D)
        return self.head(u)  # (B, classes)

    def _step(self, batch, split):
        logits = self(batch)
        loss = F.cross_entropy(logits, batch["target"])
        correct = (logits.argmax(-1) == batch["target"]).sum().item()
        n = batch["target"].numel()
        totals = self._counts.setdefault(split, [0, 0, 0.0])
        totals[0] += correct
        totals[1] += n
        totals[2] += loss.item() * n
        return loss

    def training_step(self, batch, batch_idx):
        self.real_tokens += int(batch["mask"].sum())
        if "mask2" in batch:
            self.real_tokens += int(batch["mask2"].sum())
        loss = self._step(batch, "train")
        if not torch.isfinite(loss):
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            raise Diverged(
                f"the training loss became {loss.item()} at step {self.global_step} (epoch "
                f"{self.current_epoch}, learning rate {lr:.3g}); lower optim.lr, or set "
                "optim.divergence_retries=N to start again with the learning rate scaled by "
                "optim.divergence_lr_factor")
        self.log("loss", loss, prog_bar=True, batch_size=batch["mask"].shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def _total(self, values):
        """`values` summed over the processes of a distributed run (as they are on one)."""
        local = torch.tensor(values, dtype=torch.float64, device=self.device)
        return self.trainer.strategy.reduce(local, reduce_op="sum").tolist()

    def _log_epoch(self, split):
        correct, n, loss_sum = self._total(self._counts.pop(split, (0, 0, 0.0)))
        if n:
            self.log(f"{split}_acc", correct / n, prog_bar=split != "train")
            self.log(f"{split}_loss", loss_sum / n)
            self.log(f"{split}_examples", float(n))

    def on_train_batch_start(self, batch, batch_idx):
        self._batch_started = time.perf_counter()

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.train_seconds += time.perf_counter() - self._batch_started

    def on_train_epoch_end(self):
        self._log_epoch("train")
        # logged so they reach the main process when workers are spawned (trainer=ddp)
        self.log("tokens_seen", self._total([float(self.real_tokens)])[0])
        self.log("train_seconds", self.train_seconds)

    def on_validation_epoch_end(self):
        self._log_epoch("val")

    def on_test_epoch_end(self):
        self._log_epoch("test")

    def configure_optimizers(self):
        opt = self.hparams.optim
        groups = param_groups(self, opt["weight_decay"], self.optim_overrides,
                              opt.get("decay", "matrices"))
        optimizer = torch.optim.AdamW(groups, lr=opt["lr"], betas=tuple(opt["betas"]),
                                      eps=opt.get("eps", 1e-8))
        total = int(self.trainer.estimated_stepping_batches)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_factor(opt, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
