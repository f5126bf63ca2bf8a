"""Result records: one JSON file per run, written atomically at start, finish and failure.

The record is the unit of science here: it names the protocol and the data fingerprint,
so two rows are only compared when they were measured the same way. Its path is
`<results_dir>/<task>/<model>/<run_id>.json`, so runs from many machines merge in git
without conflicts.
"""
import hashlib
import json
import os
import platform
import secrets
import socket
import subprocess
import tempfile
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

SCHEMA = 1
_PACKAGES = ("lra-harness", "torch", "lightning", "hydra-core", "numpy", "pandas", "triton")


def write_atomic(path, write, mode="w"):
    """Write a file through `write(f)` so readers see the old file or the new one, never a torn one.

    The new content goes to a temporary file in the same folder, is flushed to disk, then renamed
    over `path`. A failed write (a full disk, say) leaves the previous file as it was and says so.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are shared
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        kept = "the previous version is intact" if path.exists() else "nothing was written"
        raise OSError(err.errno, f"could not write {path} ({err.strerror or err}); {kept}") from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path, obj):
    """Write `obj` as JSON atomically (see `write_atomic`)."""
    write_atomic(path, lambda f: json.dump(obj, f, indent=2, default=str))


def now():
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_id(task, model, seed):
    """Unique even for jobs started in the same second on different machines."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return f"{stamp}-{task}-{model}-s{seed}-{secrets.token_hex(2)}"


def config_hash(config):
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def git_state():
    """The harness's git revision and whether its tree had uncommitted changes."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}
    return {"sha": sha, "dirty": bool(dirty.strip())}


def versions():
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def new_record(run_id, config, protocol, device, params):
    """The record written when a run starts (`status: running`)."""
    return {
        "schema": SCHEMA,
        "kind": "train",
        "run_id": run_id,
        "model": config["model"]["name"],
        "task": config["task"]["name"],
        "seed": config["seed"],
        "status": "running",
        "metrics": {},
        "protocol": protocol,
        "config": config,
        "config_hash": config_hash(config),
        "git": git_state(),
        "versions": versions(),
        "device": device,
        "params": params,
        "throughput_tokens_per_s": None,
        "peak_memory_mb": None,
        "wall_time_s": None,
        "device_hours": None,
        "job_key": job_key(config),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": now(),
        "ended_at": None,
        "error": None,
    }


def result_path(results_dir, record):
    return Path(results_dir) / record["task"] / record["model"] / f"{record['run_id']}.json"


def job_key(config):
    """What makes two runs the same job: the whole resolved config but the `resume` switch."""
    return config_hash({k: v for k, v in config.items() if k != "resume"})


def process_alive(record):
    """Whether the process that wrote `record` still runs (judged on the same host only)."""
    if record.get("host") != socket.gethostname() or not record.get("pid"):
        return False
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def latest_attempt(results_dir, config, kind="train"):
    """The newest readable record of the same job under results_dir, or None."""
    key = job_key(config)
    folder = Path(results_dir) / config["task"]["name"] / config["model"]["name"]
    found = []
    for path in folder.glob("*.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # `lra doctor` names unreadable files
        if isinstance(record, dict) and record.get("job_key") == key and record.get("kind", "train") == kind:
            found.append((str(record.get("started_at")), str(path), record))
    if not found:
        return None
    _, path, record = max(found)
    return {**record, "result_path": path}
