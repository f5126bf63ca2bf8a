"""Result records: one JSON file per run, written atomically at start, finish and failure.

The record is the unit of science here: it names the protocol and the data fingerprint,
so two rows are only compared when they were measured the same way. Its path is
`<results_dir>/<task>/<model>/<run_id>.json`, so runs from many machines merge in git
without conflicts. `Record` lists every field; `problem` says whether a file read back is
usable, from those declarations.
"""
import functools
import hashlib
import json
import math
import os
import platform
import secrets
import socket
import subprocess
import tempfile
import warnings
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import NoneType, UnionType
from typing import NotRequired, TypedDict, get_args, get_origin, get_type_hints, is_typeddict

SCHEMA = 1  # bump when a field changes meaning or type; readers refuse a newer one
_PACKAGES = ("lra-harness", "torch", "lightning", "hydra-core", "numpy", "pandas", "triton")


class Git(TypedDict):
    sha: str | None  # None outside a git checkout
    dirty: bool | None  # uncommitted changes to tracked files


class Protocol(TypedDict, total=False):
    """How a run was measured; runs share a leaderboard cell only where these agree."""

    # train runs (lra.train.train_protocol; the data module adds data_fingerprint and splits)
    recipe: str  # the `recipe` config key: "default", or the experiment's name
    recipe_kind: str  # "paper", or "budget" when the run stopped at limits of its own
    budget: dict  # those limits: max_epochs, max_steps, max_time
    pretraining: str  # "scratch" or "self-pretrained"
    data_fingerprint: str | None  # None until the data is read
    splits: dict  # the data module's own protocol: split sizes, seeds
    selection: str  # which checkpoint the test split was evaluated on
    full_test_set: bool  # False for debug runs (capped evaluation): never leaderboard rows
    pretrained_from: str  # fine-tuned runs: the pretrain run's id
    pretrain_device_hours: float | None  # ... and its device-hours
    # pretrain runs (lra.pretrain.pretrain_protocol)
    objective: str  # "masked" or "next"
    mask_ratio: float | None  # masked: the share of positions hidden
    loss: str | None  # "cross_entropy" (tokens) or "mse" (continuous inputs)
    heldout_share: float
    splits_read: list[str]
    labels_read: bool
    documents: dict  # held-out and training documents (lra.pretrain.PretrainData.protocol)


class Metrics(TypedDict, total=False):
    """What a completed run measured ({} before)."""

    # train runs: the test split once, on the checkpoint best on validation
    test_acc: float  # a fraction in [0, 1]: the leaderboard's number
    test_loss: float
    test_examples: int
    val_acc: float | None  # the selected checkpoint's
    best_epoch: int | None  # the selected checkpoint's epoch
    epochs: int
    train_loss: float | None
    majority_rate: float  # the test split's most common class
    history: list[dict]  # per epoch; train: val_acc, val_loss, train_loss; pretrain: heldout_loss
    # pretrain runs: the held-out documents' loss
    objective: str
    loss: str
    initial_heldout_loss: float
    heldout_loss: float


class Record(TypedDict):
    """A run's result file, `<results_dir>/<task>/<model>/<run_id>.json` (DESIGN.md §3)."""

    schema: int  # SCHEMA of the harness that wrote it
    kind: str  # "train" (leaderboard rows) or "pretrain" (read, never rows)
    run_id: str  # unique across machines: time, task, model, seed and a random suffix
    model: str
    task: str
    seed: int
    status: str  # running, then completed, failed, diverged or interrupted
    metrics: Metrics
    protocol: Protocol
    config: dict  # the resolved config
    config_hash: str
    git: Git
    versions: dict  # package -> version
    device: str
    params: int | None  # the whole classifier's, on completion
    throughput_tokens_per_s: float | None  # training tokens (padding not counted) per second
    peak_memory_mb: float | None
    wall_time_s: float | None
    device_hours: float | None  # wall time x devices
    job_key: str  # the config's hash but JOB_LABELS: the job that resume=auto looks for
    host: str
    pid: int
    started_at: str  # ISO 8601, UTC; kept when a run resumes
    heartbeat_at: NotRequired[str]  # refreshed while it runs (HEARTBEAT_S): see `stale`
    attempts: NotRequired[list[dict]]  # each start of the run: started_at, ended_at, status, ...
    ended_at: str | None
    error: str | None  # why it failed, diverged or was interrupted
    run_dir: str | None  # its run folder: config, checkpoints, logs
    tags: list[str]  # `lra train tags=[...]`; `lra leaderboard --tag`
    divergences: NotRequired[list[str]]  # one message per divergence retried from scratch
    backbone_params: NotRequired[int]  # completed runs: the backbone's alone (size budget, ⚑)
    checkpoint: NotRequired[str]  # pretrain runs: the best checkpoint (absolute), for init_from
    result_path: NotRequired[str]  # this file; in records returned in memory, never on disk
    kernels: NotRequired[dict]  # family -> {path: triton|reference, reason} (lra.kernels.dispatch)


# --- reading back: what a usable record is ------------------------------------------------

IDENTITY = ("run_id", "model", "task", "seed", "status")  # what makes a train record a row
_declared = functools.cache(get_type_hints)  # a TypedDict's {field: type}
_NOUNS = {str: ("a string", "strings"), int: ("an integer", "integers"),
          float: ("a number", "numbers"), bool: ("true or false", "booleans"),
          dict: ("an object", "objects")}


def problem(record) -> str | None:
    """Why a record read from a file cannot be used, or None.

    Reading is lenient where writing is not: files of older versions lack the fields added
    since, and hand-made ones carry only what the leaderboard reads. So a record is usable
    when it is a JSON object of a schema this harness reads, every field it has is null or of
    its declared type, a train record has its IDENTITY (other kinds: a run_id), and a
    completed train record has its test accuracy, a fraction.
    """
    if not isinstance(record, dict):
        return "not a JSON object"
    schema = record.get("schema", SCHEMA)
    if not isinstance(schema, int) or schema > SCHEMA:
        return (f"schema {record.get('schema')!r} is newer than this harness reads ({SCHEMA}); "
                "upgrade lra-harness")
    train = record.get("kind", "train") == "train"
    mistyped = _mistyped(record, Record, IDENTITY if train else ("run_id",))
    if mistyped or not train or record["status"] != "completed":
        return mistyped
    acc = (record.get("metrics") or {}).get("test_acc")
    if not (_fits(acc, float) and 0 <= acc <= 1):
        return "'metrics.test_acc' missing or not a fraction in [0, 1]"
    return None


def _mistyped(fields: dict, declared, needed=(), prefix="") -> str | None:
    """The first of `fields` (needed: present) that is not of its type in the TypedDict
    `declared`, as a problem; nested TypedDicts are checked field by field."""
    for name, kind in _declared(declared).items():
        value, where = fields.get(name), f"'{prefix}{name}'"
        if name in needed and not _fits(value, kind):
            return f"{where} missing or not {_noun(kind)}"
        if value is None:
            continue
        if is_typeddict(kind) and isinstance(value, dict):
            inner = _mistyped(value, kind, prefix=f"{prefix}{name}.")
            if inner:
                return inner
        elif not _fits(value, kind):
            return f"{where} is not {_noun(kind)}"
    return None


def _fits(value, kind) -> bool:
    """Whether a value read from JSON is of a declared type; a float is any finite number."""
    if get_origin(kind) is UnionType:
        return any(_fits(value, k) for k in get_args(kind))
    if get_origin(kind) is list:
        return isinstance(value, list) and all(_fits(v, get_args(kind)[0]) for v in value)
    if kind is float:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, dict if is_typeddict(kind) else kind)


def _noun(kind, plural=False) -> str:
    """'a string', 'a list of objects': a declared type as a problem names it."""
    if get_origin(kind) is UnionType:
        return _noun(next(k for k in get_args(kind) if k is not NoneType), plural)
    if get_origin(kind) is list:
        return "a list of " + _noun(get_args(kind)[0], plural=True)
    return _NOUNS[dict if is_typeddict(kind) else kind][plural]


def load_runs(runs_dir) -> tuple[list[dict], list[tuple[Path, str]]]:
    """All usable records under runs_dir (any kind, any status) and the skipped files, each
    with its problem; a run_id read twice is skipped the second time."""
    runs, skipped, seen = [], [], {}
    for path in sorted(Path(runs_dir).glob("**/*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            why = problem(record)
        except (OSError, ValueError, RecursionError) as e:
            why = f"unreadable JSON ({e})"
        if why is None and record["run_id"] in seen:
            why = f"duplicate run_id, already read from {seen[record['run_id']]}"
        if why:
            warnings.warn(f"leaderboard: skipping {path}: {why}", stacklevel=2)
            skipped.append((path, why))
            continue
        seen[record["run_id"]] = path
        runs.append(record)
    return runs, skipped


# --- writing ----------------------------------------------------------------------------------

def write_atomic(path, write, mode="w"):
    """Write a file through `write(f)` so readers see the old file or the new one, never a
    torn one.

    The new content goes to a temporary file in the same folder, is flushed to disk, then
    renamed over `path`. A failed write (a full disk, say) leaves the previous file as it was
    and says so.
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


# --- a new record -------------------------------------------------------------------------------

def new_record(run_id, config, protocol, device, params, kind="train", run_dir=None) -> Record:
    """The record written when a run starts (`status: running`)."""
    return Record(
        schema=SCHEMA, kind=kind, run_id=run_id, model=config["model"]["name"],
        task=config["task"]["name"], seed=config["seed"], status="running", metrics={},
        protocol=protocol, config=config, config_hash=config_hash(config), git=git_state(),
        versions=versions(), device=device, params=params, throughput_tokens_per_s=None,
        peak_memory_mb=None, wall_time_s=None, device_hours=None, job_key=job_key(config),
        host=socket.gethostname(), pid=os.getpid(), started_at=now(), ended_at=None, error=None,
        run_dir=run_dir, tags=[str(tag) for tag in config.get("tags") or []])


def now():
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_id(task, model, seed):
    """Unique even for jobs started in the same second on different machines."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return f"{stamp}-{task}-{model}-s{seed}-{secrets.token_hex(2)}"


def config_hash(config):
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


JOB_LABELS = ("resume", "budget", "provenance")  # config keys that do not make another job


def job_key(config):
    """What makes two runs the same job: the whole resolved config but the `resume` switch and
    the labels derived from it (`budget`, decided from the config and the overrides; a recipe's
    `provenance`), which add nothing, so jobs started before a label existed keep their key."""
    return config_hash({k: v for k, v in config.items() if k not in JOB_LABELS})


def git_state() -> Git:
    """The harness's git revision and whether its tree had uncommitted changes."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, capture_output=True, text=True, timeout=5,
                               check=True).stdout
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


# --- finding records ----------------------------------------------------------------------------

def result_path(results_dir, record):
    return Path(results_dir) / record["task"] / record["model"] / f"{record['run_id']}.json"


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


HEARTBEAT_S = 60  # a running job refreshes its record's heartbeat_at at most this often
STALE_AFTER_S = 30 * 60  # a run on another host without a heartbeat for this long is gone


def seconds_since(stamp, now=None):
    """Seconds from the ISO 8601 time `stamp` to `now` (default: now)."""
    now = now or datetime.now(timezone.utc)
    return (now - datetime.fromisoformat(stamp)).total_seconds()


def stale(record, now=None) -> bool:
    """Whether `record` says `running` but its process is gone: on this host, its pid is dead;
    on another, its heartbeat (or, without one, its start) is older than STALE_AFTER_S."""
    if record.get("status") != "running":
        return False
    if record.get("host") == socket.gethostname():
        return not process_alive(record)
    beat = record.get("heartbeat_at") or record.get("started_at")
    try:
        return seconds_since(beat, now) > STALE_AFTER_S
    except (TypeError, ValueError):  # no time, or not one: nothing says it still runs
        return True


def running_now(record) -> bool:
    """Whether the process writing `record` may still run: `running`, and not `stale`."""
    return record.get("status") == "running" and not stale(record)


def attempts_so_far(record) -> list[dict]:
    """The attempts of the run `record` describes, each closed: one left `running` (its process
    killed) becomes `stale`, ended at its last heartbeat. Records written before attempts were
    kept count as one attempt."""
    attempts = [dict(a) for a in record.get("attempts") or [new_attempt(record)]]
    last = attempts[-1]
    if last["status"] == "running":
        last.update(status="stale", ended_at=record.get("heartbeat_at") or last["started_at"])
        last["wall_time_s"] = max(0.0, seconds_since(last["started_at"],
                                                     datetime.fromisoformat(last["ended_at"])))
    return attempts


def new_attempt(record) -> dict:
    """One attempt, as `record` describes its latest."""
    return {key: record.get(key) for key in
            ("started_at", "ended_at", "status", "error", "pid", "host", "wall_time_s")}


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
        if (isinstance(record, dict) and record.get("job_key") == key
                and record.get("kind", "train") == kind):
            found.append((str(record.get("started_at")), str(path), record))
    if not found:
        return None
    _, path, record = max(found)
    return {**record, "result_path": path}
