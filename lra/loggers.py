"""Where a run's metrics go: Lightning's CSV log in the run folder always, Weights & Biases on
request.

    lra train logger=wandb                     # project lra, tags model:<m> task:<t>
    WANDB_MODE=offline lra sweep smoke logger=wandb && wandb sync wandb/offline-run-*

Each run is one W&B run whose id is the run id, so `lra train resume=...` continues it; a sweep's
jobs share a group (the sweep's folder). Every job finishes its W&B run when it ends, whatever the
outcome, so the next job of a sweep in the same process starts a run of its own.
"""
import json
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger


def build(config, run_dir):
    """The loggers of a run: CSV, plus W&B when config `logger.name` is wandb."""
    run_dir = Path(run_dir)
    loggers = [CSVLogger(run_dir, name="", version="")]
    options = config.get("logger") or {"name": "csv"}
    if options["name"] == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        run_id = json.loads((run_dir / "run.json").read_text())["run_id"]
        group = options["group"] or (run_dir.parent.name if "multirun" in run_dir.parts else None)
        tags = [f"model:{config['model']['name']}", f"task:{config['task']['name']}",
                *options["tags"]]
        loggers.append(WandbLogger(project=options["project"], entity=options["entity"],
                                   group=group, name=run_dir.name, id=run_id, resume="allow",
                                   tags=tags, mode=options["mode"], config=config))
    return loggers


def finish(record):
    """End the run's W&B run, if it has one, with its outcome and best-validation summaries."""
    options = record["config"].get("logger") or {"name": "csv"}
    if options["name"] != "wandb":
        return
    import wandb

    if wandb.run is not None:
        metrics = record.get("metrics") or {}
        summary = {f"best/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}
        wandb.run.summary.update({**summary, "status": record["status"]})
        wandb.finish(exit_code=0 if record["status"] == "completed" else 1)
