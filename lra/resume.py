"""Where a run starts: a new run folder, or one to continue (`resume=<folder>`, or `resume=auto`:
this job's last attempt, found by its result record).

A run folder holds the resolved config (`config.yaml`), the run's identity (`run.json`: run id,
results_dir) and `checkpoints/last.ckpt`; continuing one takes all three from it. Continuing is
refused (lra.train's docstring has the rules) while the run's process still runs, when its
checkpoint is unreadable or was made with other model or optimizer options, when an override
given with it differs from the run's saved config, and when the run is completed.
"""
import json
from pathlib import Path
from typing import NamedTuple

import torch
from omegaconf import OmegaConf

from lra import results
from lra.errors import UserError


class Opened(NamedTuple):
    """A run about to start: its folder, resolved config, run id, and the checkpoint to go on
    from (None: from scratch)."""

    run_dir: Path
    config: dict
    run_id: str
    last_ckpt: Path | None
    earlier: dict | None  # a resumed run's record as it was ({} if it has none); None: a new run


def refuse_if_running(record):
    """Refuse to continue a run whose process may still be writing it (`results.running_now`)."""
    if record and results.running_now(record):
        raise UserError(f"this job is running right now (pid {record['pid']} on {record['host']}, "
                        f"{record['run_dir']}); resume it once that process has ended (a run on "
                        f"another host counts as ended {results.STALE_AFTER_S // 60} minutes after "
                        "its last heartbeat).")


def last_attempt(cfg, kind):
    """For resume=auto: the newest record of this job under results_dir, or None; refused while
    the process writing it still runs."""
    config = OmegaConf.to_container(cfg, resolve=True)
    earlier = results.latest_attempt(cfg.results_dir, config, kind)
    refuse_if_running(earlier)
    return earlier


def open_run(cfg, run_dir, earlier=None) -> Opened:
    """The folder `resume` names, continued; with resume=auto, the `earlier` attempt's folder if
    it can go on (it was running or interrupted; a failed or diverged one starts anew); else a
    new run in `run_dir`."""
    resume = cfg.resume
    if resume == "auto":
        resumable = earlier and earlier["status"] in ("running", "interrupted")
        folder = Path(earlier["run_dir"]) if resumable else None
        resume = folder if folder and (folder / "run.json").is_file() else None
    if not resume:
        return _start(cfg, Path(run_dir))
    return _resume(resume, cfg if cfg.resume != "auto" else None)


def _start(cfg, run_dir) -> Opened:
    """A new run: save the resolved config and the run's identity in its folder."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config = OmegaConf.to_container(cfg, resolve=True)
    run_id = results.new_run_id(config["task"]["name"], config["model"]["name"], config["seed"])
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(config))
    (run_dir / "run.json").write_text(json.dumps({"run_id": run_id,
                                                  "results_dir": config["results_dir"]}))
    return Opened(run_dir, config, run_id, None, None)


def _resume(run_dir, cfg) -> Opened:
    """A run to continue: its saved config, its identity, its record and its last checkpoint,
    once it is known that no process runs it, the checkpoint fits, the overrides agree with the
    saved config (`cfg`: the config they composed; None with resume=auto), and the run is not
    completed."""
    run_dir = Path(run_dir)
    identity = json.loads((run_dir / "run.json").read_text())
    config = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
    config["results_dir"] = identity["results_dir"]
    earlier = saved_record(config, identity["run_id"]) or {}
    refuse_if_running(earlier)
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        check_checkpoint(last, config)
    if cfg is not None:  # resume=auto found the run by its job key: the same config
        check_overrides(run_dir, config, cfg)
    if earlier.get("status") == "completed":
        raise UserError(f"cannot resume {run_dir}: run {identity['run_id']} is completed "
                        f"({earlier['result_path']}); resuming would rewrite its record. A "
                        "completed run stays as it is: to train longer or otherwise, start a new "
                        "run (the same overrides, more epochs, no resume=).")
    return Opened(run_dir, config, identity["run_id"], last if last.is_file() else None, earlier)


def saved_record(config, run_id):
    """The result record of run `run_id` as it is on disk (with its `result_path`), or None."""
    path = results.result_path(config["results_dir"], {
        "task": config["task"]["name"], "model": config["model"]["name"], "run_id": run_id})
    try:
        return {**json.loads(path.read_text()), "result_path": str(path)}
    except (OSError, ValueError):
        return None


UNCOMPARED = ("resume", "budget", "hydra")  # keys an override given with resume= may set freely


def check_overrides(run_dir, config, cfg):
    """Refuse overrides given with `resume=` that change the run's saved `config`.

    An override `a.b=v` is compared at a.b; a config group (`model=transformer`) over the whole
    group; a group that patches the root (`experiment=...`) over the whole config. Only the keys
    of UNCOMPARED are left out: a run goes on with the config it started with.
    """
    given = OmegaConf.to_container(cfg, resolve=True)
    differ = []
    for key in overridden_keys():
        if key.split(".")[0] in UNCOMPARED:
            continue
        path = key.split(".") if key.split(".")[0] in given else []  # [] = the whole config
        differ += differences(_at(config, path), _at(given, path), path)
    if differ:
        raise UserError(f"cannot resume {run_dir} with overrides that differ from its saved config "
                        f"({'; '.join(sorted(set(differ)))}). A run goes on with the config it "
                        "started with: resume it without them, or start a new run with them.")


def overridden_keys():
    """The keys the overrides of this Hydra job set (none outside one)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    keys = (text.partition("=")[0].lstrip("+~") for text in HydraConfig.get().overrides.task)
    return [key.split("@")[0] for key in keys]


def _at(tree, path):
    for part in path:
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def differences(saved, given, path) -> list[str]:
    """`key: <saved> in the run, <given> given` for each leaf where `given` differs."""
    if isinstance(saved, dict) and isinstance(given, dict):
        return [line for k in saved.keys() | given.keys()
                if not (not path and k in UNCOMPARED)
                for line in differences(saved.get(k), given.get(k), [*path, k])]
    if saved == given:
        return []
    return [f"{'.'.join(path)}: {saved!r} in the run, {given!r} given"]


def discard(run_dir, runs_dir):
    """Remove what a new run that never trained left in `run_dir` (its saved config and identity,
    Lightning's and Hydra's files), then each folder, up to `runs_dir`, that this left empty:
    files that were there before the run stay."""
    from hydra.core.hydra_config import HydraConfig

    run_dir = Path(run_dir)
    files = ["config.yaml", "run.json", "metrics.csv", "hparams.yaml",
             *(f".hydra/{name}.yaml" for name in ("config", "hydra", "overrides"))]
    if HydraConfig.initialized():
        files.append(f"{HydraConfig.get().job.name}.log")
    for name in files:
        (run_dir / name).unlink(missing_ok=True)
    for folder in (run_dir / "checkpoints", run_dir / ".hydra"):
        _remove_if_empty(folder)
    root, folder = Path(runs_dir).resolve(), run_dir.resolve()
    while root in folder.parents and _remove_if_empty(folder):
        folder = folder.parent


def _remove_if_empty(folder) -> bool:
    try:
        folder.rmdir()
    except OSError:  # not empty, or not there
        return False
    return True


def check_checkpoint(path, config):
    """Refuse a checkpoint that cannot be read (weights only) or was made with other options."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)["hyper_parameters"]
    except Exception as err:  # truncated, not a checkpoint, or holding more than weights
        raise UserError(f"cannot resume from {path}: the checkpoint is unreadable "
                        f"({type(err).__name__}: {err}). A crash or a full disk may have cut it "
                        "short; delete it to restart this run from scratch.") from err
    for part in ("model", "optim"):
        differ = sorted(k for k in set(saved[part]) | set(config[part])
                        if saved[part].get(k) != config[part].get(k))
        if differ:
            pairs = ", ".join(f"{k}={saved[part].get(k)!r} there, {config[part].get(k)!r} here"
                              for k in differ)
            raise UserError(f"cannot resume from {path}: it was trained with other {part} "
                            f"options ({pairs}). Resume with the config the run started with, "
                            "or start a new run.")
