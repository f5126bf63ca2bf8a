"""Where a run starts: a new run folder, or one to continue (`resume=<folder>`, or `resume=auto`:
this job's last attempt, found by its result record).

A run folder holds the resolved config (`config.yaml`), the run's identity (`run.json`: run id,
results_dir) and `checkpoints/last.ckpt`; continuing one takes all three from it, and refuses a
checkpoint that is unreadable or was made with other model or optimizer options.
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


def last_attempt(cfg, kind):
    """For resume=auto: the newest record of this job under results_dir, or None; refused while
    the process writing it still runs."""
    config = OmegaConf.to_container(cfg, resolve=True)
    earlier = results.latest_attempt(cfg.results_dir, config, kind)
    if earlier and earlier["status"] == "running" and results.process_alive(earlier):
        raise UserError(f"this job is running right now (pid {earlier['pid']}, "
                        f"{earlier['run_dir']}); resume it once that process has ended.")
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
    return _resume(resume) if resume else _start(cfg, Path(run_dir))


def _start(cfg, run_dir) -> Opened:
    """A new run: save the resolved config and the run's identity in its folder."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config = OmegaConf.to_container(cfg, resolve=True)
    run_id = results.new_run_id(config["task"]["name"], config["model"]["name"], config["seed"])
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(config))
    (run_dir / "run.json").write_text(json.dumps({"run_id": run_id,
                                                  "results_dir": config["results_dir"]}))
    return Opened(run_dir, config, run_id, None)


def _resume(run_dir) -> Opened:
    """An interrupted run: its saved config, its identity and its last checkpoint."""
    run_dir = Path(run_dir)
    identity = json.loads((run_dir / "run.json").read_text())
    config = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
    config["results_dir"] = identity["results_dir"]
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return Opened(run_dir, config, identity["run_id"], None)
    check_checkpoint(last, config)
    return Opened(run_dir, config, identity["run_id"], last)


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
