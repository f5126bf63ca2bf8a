"""Where a run's metrics go: Lightning's CSV log in the run folder always, Weights & Biases on
request.

    lra train logger=wandb                     # project lra, tags model:<m> task:<t>
    WANDB_MODE=offline lra sweep smoke logger=wandb && wandb sync wandb/offline-run-*

Each run is one W&B run whose id is the run id, so `lra train resume=...` continues it; a sweep's
jobs share a group (the sweep's folder). Every job finishes its W&B run when it ends, whatever the
outcome, so the next job of a sweep in the same process starts a run of its own.

The run folder's `metrics.csv` holds every attempt's rows. Lightning's CSV logger starts the file
anew each time a run resumes, so `set_aside` moves the rows logged before the checkpoint it goes
on from to `metrics-earlier.csv` first, and `merge_earlier` puts them back in front when the
attempt ends; rows logged after that checkpoint (work done again) are dropped. A run killed
before it could merge keeps both files, and its next attempt merges them.
"""
import csv
import io
import json
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger

from lra.results import write_atomic

EARLIER = "metrics-earlier.csv"


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


def read_rows(path) -> list[dict]:
    if not Path(path).is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path, rows):
    """Write `rows` (dicts) as CSV atomically, the columns in order of first appearance."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, lambda f: f.write(text.getvalue()))


def set_aside(run_dir, from_step):
    """Before an attempt: keep the rows logged so far (an earlier attempt's set-aside rows and
    its metrics.csv) whose step is before `from_step`, the checkpoint's global step (0 or None:
    from scratch, none), in metrics-earlier.csv."""
    run_dir = Path(run_dir)
    rows = [*read_rows(run_dir / EARLIER), *read_rows(run_dir / "metrics.csv")]
    unique = list({tuple(sorted((k, v) for k, v in row.items() if v)): row
                   for row in rows}.values())  # rows set aside twice count once
    kept = [row for row in unique if from_step and int(float(row["step"])) < from_step]
    if kept:
        write_rows(run_dir / EARLIER, kept)
    else:
        (run_dir / EARLIER).unlink(missing_ok=True)
    (run_dir / "metrics.csv").unlink(missing_ok=True)


def merge_earlier(run_dir):
    """After an attempt: metrics.csv becomes the rows set aside, then this attempt's."""
    run_dir = Path(run_dir)
    if (run_dir / EARLIER).is_file():
        write_rows(run_dir / "metrics.csv",
                   [*read_rows(run_dir / EARLIER), *read_rows(run_dir / "metrics.csv")])
        (run_dir / EARLIER).unlink()
