"""`lra train`: one (model, task, seed) run, from a resolved config to a result file.

    lra train                                               # S4D on generated mini-ListOps, CPU
    lra train model=transformer task=listops seed=3 optim.lr=3e-3
    lra train resume=runs/2026-11-23/10-30-00-123456-listops_mini-s4d-s0

The run folder holds the resolved config, `run.json` (run id, result path), Lightning's
`metrics.csv` and `checkpoints/{best,last}.ckpt`. The checkpoint is chosen on validation
accuracy; the test split is evaluated once, on that checkpoint, every example counted.
`run` does one stage between opening a run's record and completing it: TRAIN (declared
here, with fine-tuning from a pretrain run, `init_from`) or lra.pretrain.PRETRAIN.

Resuming (`resume=<run folder>`, or `resume=auto`: this job's last attempt) never destroys a run:

- no second writer: a run whose process may still be running is refused, naming its pid, host
  and folder (`results.running_now`: on this host its pid is alive; on another, its heartbeat,
  refreshed at most every `results.HEARTBEAT_S` while it trains, is younger than
  `results.STALE_AFTER_S`). A `running` record past that is `stale`, and `lra doctor` lists it.
- a completed run is never resumed over: `resume=<folder>` refuses it (the record stays as it
  is; to train longer, start a new run); `resume=auto` skips it.
- one config per run: an override given with `resume=<folder>` must equal the run's saved value;
  every one that differs is refused, listed (`model.d_model: 16 in the run, 32 given`). None is
  safe to change: more epochs or steps would also change the learning-rate schedule
  (lra.lit.warmup_cosine decays to 0 at the planned last step), so a longer run is a new run.
- every attempt kept: the record's `attempts` lists each start (pid, host, times, outcome; one
  killed outright shows as `stale`, ended at its last heartbeat), `wall_time_s` and
  `device_hours` add them up, and `metrics.csv` and the record's `history` hold the epochs of
  every attempt (lra.loggers.set_aside and merge_earlier).

Bad input found before training starts (model options, a sequence too long for the model, data
that is not there, pretraining options) ends the command and leaves nothing: a new run's folder
and result file are removed (`lra.resume.discard`: only what the run made), and a resumed run's
result file is put back as it was. In a sweep, which goes on to its next job, such a job keeps its
`failed` record, so that the sweep says later which jobs failed. A fault met later (a malformed
data line, a crash) leaves a `failed` record.
"""
import csv
import inspect
import json
import logging
import platform
import resource
import shutil
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

import lra.config
from lra import loggers, registry, results
from lra.checkpoints import AtomicCheckpointIO
from lra.errors import Diverged, UserError
from lra.kernels.dispatch import ran as kernels_ran
from lra.lit import Classifier
from lra.plugins import config_options
from lra.resume import discard, last_attempt, open_run

SELECTION = "checkpoint with the best val_acc; the test split evaluated once on it"


def quiet_lightning():
    """Keep the console to the progress bar and our own lines: Lightning's info chatter and
    its warnings about our deliberate choices (short debug epochs, the run folder, a mid-epoch
    resume, which the task's data module handles through its state_dict, epoch metrics that the
    classifier sums over processes itself) go."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in (".*LeafSpec.*", ".*smaller than the logging interval.*",
                    ".*exists and is not empty.*", ".*does not have many workers.*",
                    ".*your dataloader is not resumable.*", ".*sync_dist=True.*"):
        warnings.filterwarnings("ignore", message=message)


class InputError(UserError):
    """Bad input found before training started: the run leaves nothing behind (`run`)."""


@contextmanager
def input_checks():
    """A UserError raised in the block (a divergence aside) becomes an InputError."""
    try:
        yield
    except InputError:
        raise
    except UserError as err:
        if isinstance(err, Diverged):
            raise
        raise InputError(str(err)) from err


def check_task_options(name, task_cls, options):
    """Refuse, naming them and the task's own, options the task does not take: e.g. a recipe's
    task keys (experiment=...) on another task (task=...)."""
    parameters = inspect.signature(task_cls).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        known = sorted(set(parameters) - {"data_dir", "seed"})
        raise InputError(f"task {name} has no option {', '.join(unknown)}; its options are "
                         f"{', '.join(known)}. A recipe (experiment=<model>/<task>) sets the "
                         "task keys of the task it was written for: with another task=, drop "
                         "them with ~task.<key>.")


def build_data(cfg):
    """The task's data module, set up so its shape is known: memory-mapped from its Arrow cache
    (built on first use), or generated in memory for a task that reads no files. Options the task
    refuses and files that are not there are input errors; a malformed file is not."""
    from lra.tasks import cache

    task_cls = registry.task(cfg["task"]["name"])
    options = lra.config.options(cfg["task"])
    check_task_options(cfg["task"]["name"], task_cls, options)
    with input_checks():
        data = task_cls(data_dir=cfg["data_dir"], seed=cfg["seed"], **options)
        files = data.sources()
    data.sources = lambda: files  # listed once (Pathfinder's are many)
    try:
        cache.setup(data)
    finally:
        del data.sources  # the method again; the module stays picklable for spawned workers
    return data


def task_shape(data):
    return {key: getattr(data, key) for key in
            ("input_kind", "vocab_size", "d_input", "num_classes", "dual")}


def build_classifier(cfg, data, cls=Classifier, **options):
    """The classifier (or a subclass `cls` taking `options`) around the configured backbone; a
    backbone with a `max_len` attribute (the longest input it supports) must cover the task's
    sequences."""
    name = cfg["model"]["name"]
    try:
        classifier = cls(model=dict(cfg["model"]), task=task_shape(data), optim=dict(cfg["optim"]),
                         **options)
    except (TypeError, ValueError) as err:
        raise InputError(f"model {name!r} rejected its options: {err}. Its options and defaults "
                        f"are in conf/model/{name}.yaml (see `lra list`).") from err
    max_len = getattr(classifier.backbone, "max_len", None)
    cls_token = cfg["model"].get("pooling") == "cls"  # one more position, before the sequence
    longest = data.seq_len + cls_token
    if max_len is not None and longest > max_len:
        with_cls = " with its CLS token" if cls_token else ""
        raise InputError(f"task {data.name!r} has sequences up to {longest} long{with_cls} but "
                        f"model {name!r} supports {max_len} (model.max_len); raise "
                        f"model.max_len to at least {longest}.")
    return classifier


def device_name(accelerator):
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def peak_memory_mb(accelerator):
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def check_device(accelerator):
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
        raise UserError(f"trainer.accelerator={accelerator} but no CUDA device is visible (torch "
                        f"{torch.__version__}, a {build}). Use trainer=cpu here, or on a GPU "
                        "machine install a CUDA build of torch (README: Installing on a GPU "
                        "machine).")


class Float32Matmul(Callback):
    """torch.set_float32_matmul_precision(`precision`) in every process that trains, ddp_spawn's
    workers too: "high" lets float32 matmuls, and our kernels' float32 dots, round to TF32."""

    def __init__(self, precision):
        self.precision = precision

    def setup(self, trainer, pl_module, stage):
        torch.set_float32_matmul_precision(self.precision)


def build_trainer(cfg, run_dir, checkpoint):
    t = cfg["trainer"]
    check_device(t["accelerator"])
    latest = ModelCheckpoint(dirpath=checkpoint.dirpath, filename="last", monitor=None,
                             enable_version_counter=False)  # every epoch, for resume
    callbacks = [checkpoint, latest, Float32Matmul(t.get("float32_matmul", "highest"))]
    if t["progress"]:
        callbacks.append(TQDMProgressBar(refresh_rate=10))
    eval_limit = 1.0 if t["limit_eval_batches"] is None else t["limit_eval_batches"]
    train_limit = 1.0 if t["limit_train_batches"] is None else t["limit_train_batches"]
    return L.Trainer(
        accelerator=t["accelerator"], devices=t["devices"], precision=t["precision"],
        strategy=t.get("strategy", "auto"),
        use_distributed_sampler=False,  # the task's loaders shard
        max_epochs=t["max_epochs"], max_steps=t["max_steps"], max_time=t.get("max_time"),
        gradient_clip_val=t["gradient_clip_val"], limit_train_batches=train_limit,
        limit_val_batches=eval_limit, limit_test_batches=eval_limit,
        val_check_interval=t["val_check_interval"], deterministic=t["deterministic"],
        num_sanity_val_steps=0, enable_progress_bar=t["progress"], enable_model_summary=False,
        log_every_n_steps=10, callbacks=callbacks, default_root_dir=run_dir,
        logger=loggers.build(cfg, run_dir), plugins=[AtomicCheckpointIO()],
    )


def best_epoch(path):
    if not path:
        return None
    return torch.load(path, map_location="cpu", weights_only=True)["epoch"]


def best_score(path, monitor):
    """The `monitor` value that made `path` the best checkpoint, read from the checkpoint itself
    (the main process's callback never sees it when workers are spawned, as with trainer=ddp)."""
    if not path:
        return None
    states = torch.load(path, map_location="cpu", weights_only=True)["callbacks"].values()
    return next(float(state["best_model_score"]) for state in states
                if state.get("monitor") == monitor)


def epoch_history(metrics_csv):
    """Per epoch, the last val_acc / val_loss and the train_loss Lightning's CSVLogger wrote."""
    epochs = {}
    if Path(metrics_csv).is_file():
        with open(metrics_csv, newline="") as f:
            for row in csv.DictReader(f):
                seen = {k: float(row[k]) for k in ("val_acc", "val_loss", "train_loss")
                        if row.get(k)}
                if seen and row.get("epoch"):
                    epochs.setdefault(int(float(row["epoch"])), {}).update(seen)
    empty = {"val_acc": None, "val_loss": None, "train_loss": None}
    return [{"epoch": e, **empty, **epochs[e]} for e in sorted(epochs)]


class Heartbeat(Callback):
    """Refresh the record's `heartbeat_at` at most every results.HEARTBEAT_S while training or
    validating, from the first process only: how a run on another host is known to be alive."""

    def __init__(self, record, path):
        self.record, self.path, self.last = record, path, time.monotonic()

    def beat(self, trainer):
        if trainer.is_global_zero and time.monotonic() - self.last >= results.HEARTBEAT_S:
            self.last = time.monotonic()
            self.record["heartbeat_at"] = results.now()
            results.write_json_atomic(self.path, self.record)

    def on_train_batch_end(self, trainer, *args):
        self.beat(trainer)

    def on_validation_batch_end(self, trainer, *args):
        self.beat(trainer)


def fit(config, data, run_dir, last_ckpt, build=None, monitor=("val_acc", "max"), callbacks=()):
    """Build a module from `config` (`build_classifier` unless `build` is given) and fit it,
    keeping the checkpoint best on `monitor` (metric, mode); a Ctrl+C or SIGTERM saves
    `last.ckpt` first. The rows metrics.csv holds from before `last_ckpt` are kept
    (lra.loggers.set_aside)."""
    with input_checks():
        classifier = (build or build_classifier)(config, data)
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best",
                                 monitor=monitor[0], mode=monitor[1],
                                 enable_version_counter=False)
    from_step = (torch.load(last_ckpt, map_location="cpu", weights_only=True)["global_step"]
                 if last_ckpt else None)
    loggers.set_aside(run_dir, from_step)
    trainer = build_trainer(config, run_dir, checkpoint)
    trainer.callbacks.extend(callbacks)
    try:
        trainer.fit(classifier, datamodule=data, ckpt_path=last_ckpt)
        if "tokens_seen" in trainer.callback_metrics:  # counted in spawned workers (trainer=ddp)
            classifier.real_tokens = int(trainer.callback_metrics["tokens_seen"])
            classifier.train_seconds = float(trainer.callback_metrics["train_seconds"])
    except SystemExit as stop:  # SIGTERM (SLURM pre-emption) or Ctrl+C, as Lightning reports them
        trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt")
        how = "SIGTERM" if isinstance(stop, SIGTERMException) else "Ctrl+C"
        raise Stopped(f"stopped by {how} at epoch {trainer.current_epoch}; continue with "
                      f"`lra train resume={run_dir}`", 143 if how == "SIGTERM" else 130) from None
    return trainer, checkpoint, classifier


class Stopped(Exception):
    """A run stopped by a signal, its checkpoint saved; `code` is the exit status to end
    with."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


def fit_with_retries(config, data, run_dir, last_ckpt, record, **how):
    """`fit` (`how`: its `build` and `monitor`), and after a divergence start again with a lower
    learning rate, as configured."""
    optim = config["optim"]
    heartbeat = Heartbeat(record, results.result_path(config["results_dir"], record))
    for attempt in range(optim["divergence_retries"] + 1):
        try:
            return fit(config, data, run_dir, last_ckpt, **how, callbacks=[heartbeat])
        except Diverged as err:
            record.setdefault("divergences", []).append(str(err))
            if attempt == optim["divergence_retries"]:
                raise
            optim["lr"] *= optim["divergence_lr_factor"]  # the record and the saved config follow
            record["config_hash"] = results.config_hash(config)
            (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(config))
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
            last_ckpt = None
            L.seed_everything(config["seed"], workers=True, verbose=False)
            print(f"lra: {err}; retrying from scratch with optim.lr={optim['lr']:.3g}",
                  file=sys.stderr)


LIMITS = ("max_epochs", "max_steps", "max_time")


def recipe_limits(recipe):
    """The training limits (max_epochs, max_steps, max_time) of the experiment named `recipe`, or
    None when no experiment has that name (our `default`, or a recipe named by hand)."""
    if recipe not in config_options("experiment"):
        return None
    trainer = lra.config.compose([f"experiment={recipe}"]).trainer
    return {k: trainer.get(k) for k in LIMITS}


def limits_overridden(overrides):
    """The limits a job's overrides set: `trainer.<limit>=...`, or all of them for `trainer=...`."""
    keys = {text.partition("=")[0].lstrip("+") for text in overrides if "=" in text}
    return [k for k in LIMITS if "trainer" in keys or f"trainer.{k}" in keys]


def budget(config, overrides=None):
    """The training limits a run set for itself, {} when it ran its recipe to the recipe's limits.

    With `overrides` (the job's, as Hydra recorded them, a sweep preset's parameters included) only
    the limits they set can be the run's own, and the recipe is composed only to compare those;
    without them every limit is compared. A recipe that is no experiment has no limits to keep.
    """
    limits = {k: config["trainer"].get(k) for k in LIMITS}
    limits = {k: v for k, v in limits.items() if v not in (None, -1)}
    if config["recipe"] not in config_options("experiment"):
        return limits
    if overrides is not None:
        limits = {k: v for k, v in limits.items() if k in limits_overridden(overrides)}
    paper = recipe_limits(config["recipe"]) if limits else None
    return {k: v for k, v in limits.items() if paper[k] != v}


def train_protocol(config):
    """The record's protocol; `budget` is the one decided when the job started (saved with its
    config, so a resumed run keeps it), else compared against the recipe here."""
    limits = config["budget"] if "budget" in config else budget(config)
    full_test_set = config["trainer"]["limit_eval_batches"] is None
    return {"recipe": config["recipe"], "recipe_kind": "budget" if limits else "paper",
            "budget": limits, "pretraining": config["pretraining"], "data_fingerprint": None,
            "selection": SELECTION, "full_test_set": full_test_set}


def train_and_test(config, data, run_dir, last_ckpt, record):
    """Fit a classifier (from a pretrain run's encoder and backbone with `init_from`), select on
    validation, test once; return the classifier and the record's metrics."""
    build = init_from(config, data, record["protocol"]) if config.get("init_from") else None
    trainer, checkpoint, classifier = fit_with_retries(config, data, run_dir, last_ckpt, record,
                                                       build=build)
    best = checkpoint.best_model_path or None
    trainer.test(classifier, datamodule=data, ckpt_path=best, verbose=False)
    record["backbone_params"] = sum(p.numel() for p in classifier.backbone.parameters())
    seen = trainer.callback_metrics
    loggers.merge_earlier(run_dir)  # every attempt's rows, for the history
    return classifier, {
        "test_acc": float(seen["test_acc"]), "test_loss": float(seen["test_loss"]),
        "test_examples": int(seen["test_examples"]),
        "val_acc": best_score(best, "val_acc"),
        "best_epoch": best_epoch(best), "epochs": trainer.current_epoch,
        "train_loss": float(seen["train_loss"]) if "train_loss" in seen else None,
        "majority_rate": data.majority_rate,
        "history": epoch_history(Path(run_dir) / "metrics.csv"),
    }


# --- fine-tuning: `lra train init_from=<a pretrain run>` ---------------------------------------

def pretrained_record(init_from):
    """The result record of the completed pretrain run `init_from` names (its run folder or
    result file)."""
    path = Path(init_from)
    if (path / "run.json").is_file():
        identity = json.loads((path / "run.json").read_text())
        saved = OmegaConf.load(path / "config.yaml")
        path = results.result_path(identity["results_dir"], {
            "task": saved.task.name, "model": saved.model.name, "run_id": identity["run_id"]})
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"init_from={init_from!r} is neither a run folder of `lra pretrain` nor a "
                        f"readable result file ({type(err).__name__}: {err}); pass the run folder "
                        "`lra pretrain` printed, or its result file under "
                        "<results_dir>/<task>/<model>/.") from None
    if record.get("kind") != "pretrain":
        raise UserError(f"init_from={init_from!r} is a {record.get('kind', 'train')} run, not a "
                        "pretrain run; make one with `lra pretrain` and the same model and task.")
    if record.get("status") != "completed":
        raise UserError(f"init_from={init_from!r}: pretrain run {record['run_id']} is "
                        f"{record.get('status')}, not completed; finish it first with "
                        f"`lra train resume={record['run_dir']}`.")
    return record


def mismatches(saved, config, data):
    """How the pretrained model (its checkpoint's hyperparameters and `task_name`) differs from
    this run's."""
    found = []
    if saved["task_name"] != config["task"]["name"]:
        found.append(f"it was pretrained on task {saved['task_name']!r}, this run is on "
                     f"{config['task']['name']!r}")
    there, here, shape = saved["model"], config["model"], task_shape(data)
    pairs = {k: (there.get(k), here.get(k)) for k in there.keys() | here.keys() if k != "dropout"}
    pairs.update({k: (saved["task"][k], shape[k]) for k in ("input_kind", "vocab_size", "d_input")})
    differ = sorted(k for k, (a, b) in pairs.items() if a != b)
    if differ:
        found.append("its model or inputs differ (" + ", ".join(
            f"{k}={pairs[k][0]!r} there, {pairs[k][1]!r} here" for k in differ) + ")")
    return found


def init_from(config, data, protocol):
    """Check that the pretrain run `config["init_from"]` fits this run and note it in
    `protocol`; return the `build` for `fit`: the classifier with the pretrained encoder and
    backbone loaded (strictly) and a freshly initialised head."""
    with input_checks():
        record = pretrained_record(config["init_from"])
    checkpoint = torch.load(record["checkpoint"], map_location="cpu", weights_only=True)
    saved = {**checkpoint["hyper_parameters"], "task_name": record["task"]}
    found = mismatches(saved, config, data)
    if found:
        raise InputError(f"cannot fine-tune from pretrain run {record['run_id']} "
                        f"(init_from={config['init_from']}): {'; '.join(found)}. Fine-tune with "
                        f"the model and task it was pretrained with (its config: "
                        f"{record['run_dir']}/config.yaml), or pretrain again with these.")
    protocol.update(pretraining="self-pretrained", pretrained_from=record["run_id"],
                    pretrain_device_hours=record["device_hours"])
    weights = checkpoint["state_dict"]

    def build(config, data):
        classifier = build_classifier(config, data)
        for part in ("encoder", "backbone"):
            prefix = f"{part}."
            getattr(classifier, part).load_state_dict(
                {k.removeprefix(prefix): v for k, v in weights.items() if k.startswith(prefix)})
        return classifier

    return build


@dataclass(frozen=True)
class Stage:
    """What `run` does between opening a run's record and completing it: TRAIN, or
    lra.pretrain.PRETRAIN."""

    kind: str  # the record's "kind"
    protocol: Callable  # config -> the record's protocol (the data's fingerprint and splits join)
    work: Callable  # (config, data, run_dir, last_ckpt, record) -> (fitted module, its metrics)


TRAIN = Stage("train", train_protocol, train_and_test)


# --- a run: where it starts (lra.resume), its record, and the stage in between -----------------

@contextmanager
def recording(record, path, started, undo=None):
    """Write `record` to `path`, then run the block; if it stops, write how and why:
    `interrupted` by a signal (then exit with the signal's status), `diverged`, or `failed`
    (any other exception, raised again). An InputError calls `undo` instead (when given), which
    takes back what the run wrote, and is raised again."""
    results.write_json_atomic(path, record)
    try:
        yield
    except BaseException as err:
        if isinstance(err, InputError) and undo:
            undo()
            raise
        status, reason = _outcome(err)
        _finish(record, path, started, status=status, error=reason)
        if isinstance(err, Stopped):
            print(f"\nlra: {err}", file=sys.stderr)
            raise SystemExit(err.code) from None
        raise


def _outcome(err) -> tuple[str, str]:
    """The status and reason of a run that `err` stopped."""
    if isinstance(err, Stopped):
        return "interrupted", str(err)
    if isinstance(err, Diverged):
        return "diverged", str(err)
    return "failed", f"{type(err).__name__}: {err}"


def _finish(record, path, started, **fields):
    """Close this attempt (the last of `attempts`) and the record: its wall time is every
    attempt's; metrics.csv gets the rows of the earlier ones back."""
    ended, wall = results.now(), time.perf_counter() - started
    if record.get("attempts"):
        record["attempts"][-1].update(ended_at=ended, status=fields["status"],
                                      error=fields.get("error"), wall_time_s=wall)
        wall = sum(attempt["wall_time_s"] or 0.0 for attempt in record["attempts"])
    # kernels: what each kernel family ran, and why
    record.update(ended_at=ended, wall_time_s=wall, kernels=kernels_ran(), **fields)
    if record.get("run_dir"):
        loggers.merge_earlier(record["run_dir"])
    results.write_json_atomic(path, record)
    loggers.finish(record)


def this_attempt(record) -> dict:
    return {**results.new_attempt(record), "status": "running"}


def undoing(opened, path, runs_dir):
    """What `recording` calls on an input error: a new run's folder and result file go; a
    resumed run's result file is put back as it was. None in a sweep, which goes on to its next
    job: there the `failed` record says later which jobs to fix (`lra sweep --resume`)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return None

    def undo():
        if opened.earlier is None:
            discard(opened.run_dir, runs_dir)
        if opened.earlier:
            results.write_json_atomic(path, {k: v for k, v in opened.earlier.items()
                                             if k != "result_path"})
        else:
            path.unlink(missing_ok=True)
    return undo


def run(cfg: DictConfig, run_dir, stage=TRAIN) -> dict:
    """Run one stage (by default: train, select on validation, test once); return the final
    result record.

    The result file is written when the run starts, again once the data is read, while it
    trains (the heartbeat), and on completion or failure (`failed`, `diverged` or
    `interrupted`, with the reason); bad input found before training leaves none.
    """
    started = time.perf_counter()
    quiet_lightning()
    earlier = last_attempt(cfg, stage.kind) if cfg.resume == "auto" else None
    if earlier and earlier["status"] == "completed":
        print(f"lra: already completed, skipped: {earlier['result_path']}", file=sys.stderr)
        return earlier
    opened = open_run(cfg, run_dir, earlier)
    run_dir, config, run_id, last_ckpt = opened.run_dir, opened.config, opened.run_id, \
        opened.last_ckpt
    trainer_cfg = config["trainer"]
    path = results.result_path(config["results_dir"], {
        "task": config["task"]["name"], "model": config["model"]["name"], "run_id": run_id})
    undo = undoing(opened, path, config["runs_dir"])
    try:
        with input_checks():
            protocol = stage.protocol(config)
    except InputError:
        if undo:
            undo()
        raise
    record = results.new_record(run_id, config, protocol, device_name(trainer_cfg["accelerator"]),
                                params=None, kind=stage.kind, run_dir=str(run_dir))
    record.update(heartbeat_at=record["started_at"], attempts=[this_attempt(record)])
    if opened.earlier:
        record["started_at"] = opened.earlier["started_at"]
        record["attempts"] = [*results.attempts_so_far(opened.earlier), *record["attempts"]]
    with recording(record, path, started, undo):
        if trainer_cfg["num_threads"]:
            torch.set_num_threads(trainer_cfg["num_threads"])
        L.seed_everything(config["seed"], workers=True, verbose=False)
        data = build_data(config)
        protocol.update(data_fingerprint=data.fingerprint, splits=data.protocol)
        results.write_json_atomic(path, record)
        classifier, metrics = stage.work(config, data, run_dir, last_ckpt, record)
    record["metrics"] = metrics
    devices = trainer_cfg["devices"] if isinstance(trainer_cfg["devices"], int) else 1
    _finish(record, path, started, status="completed",
            params=sum(p.numel() for p in classifier.parameters()),
            throughput_tokens_per_s=classifier.real_tokens / max(classifier.train_seconds, 1e-9),
            peak_memory_mb=peak_memory_mb(trainer_cfg["accelerator"]))
    record["device_hours"] = record["wall_time_s"] / 3600 * devices  # every attempt's
    results.write_json_atomic(path, record)
    record["result_path"] = str(path)
    return record
