"""Prepared tasks kept as Arrow datasets (Hugging Face `datasets`) that training memory-maps.

    lra data prepare listops      # read and tokenise the raw files once, save the splits
    lra data info listops         # sizes, lengths, label balance and where the files came from
    lra train task=listops        # uses the cache (and builds it on first use)

A task's raw files are read by its own `load()`, the one parser of each format; the splits it
returns are saved under

    <cache root>/<task>/<key>/{train,val,test}/   datasets' save_to_disk (Arrow files)
    <cache root>/<task>/<key>/manifest.json       written last: key, versions, rows, the size
                                                  and checksum of every file, fingerprint,
                                                  protocol, statistics, sources

with the cache root `$LRA_CACHE` or `<data_dir>/.cache`, and

    key = sha256(task name, the task's data_options, CACHE_VERSION,
                 sha256 of (path, size, mtime) of every raw file)[:16]

so another config, other files or another version of the code land in another folder. A
cache is used only when its manifest matches the key and version, every file of every split
has the size and the content checksum recorded when it was written (BLAKE2b over 1 MiB
blocks, streamed: about a second per GB, see `checksum`), and every split opens with the
recorded rows; anything else (a build cut short, a deleted split, a truncated file, same-size
garbage or altered labels, another version's cache) is rebuilt with a warning saying why. So
the data fingerprint a run records (sha256 of the raw bytes the loader read, and how it
tokenised them) always describes the content it trained on; files that `lra data download
--no-verify` placed give it the prefix `unverified-`. `lra data verify TASK` checks
every file and reports what it found without rebuilding. A build is
written into a temporary folder and renamed into place, so a crash never leaves a half cache
under the final name (the temporary folder of a killed build is removed by the next build on
that machine); when two builders race, the first rename wins and the other discards its copy.
A running job keeps reading its memory-mapped files even if the folder is deleted meanwhile.
"""
import hashlib
import json
import os
import secrets
import shutil
import socket
import sys
import time
import warnings
from hashlib import sha256
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from lra import download
from lra.errors import UserError
from lra.results import now, process_alive, write_json_atomic
from lra.tasks.base import DataError, SequenceDataset, majority_rate

CACHE_VERSION = 2  # bump when a loader's output changes for the same files and options
SPLITS = ("train", "val", "test")
QUIET_BELOW = 10_000  # rows: smaller sets are saved without datasets' progress bar
BLOCK = 1 << 20  # bytes read at a time by `checksum`


class CacheWarning(UserWarning):
    """A cache found unusable and rebuilt; the message says why."""


class Unusable(Exception):
    """Why a cache folder cannot be used."""


# --- where a cache lives ---------------------------------------------------------------------

def cache_root(data):
    return Path(os.environ.get("LRA_CACHE") or Path(data.data_dir).resolve() / ".cache")


def source_summary(data_root, files):
    """Where the raw files are and their signature: sha256 of (path, size, mtime) of each, in
    order."""
    digest, total, prefix = sha256(), 0, os.path.join(data_root, "")
    for path in map(os.fspath, files):
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            raise DataError(f"{path} vanished while the data was being listed; is it being "
                            "written?") from None
        digest.update(f"{path.removeprefix(prefix)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        total += stat.st_size
    parents = {os.path.dirname(os.fspath(p)) for p in files}
    folder = os.path.commonpath(sorted(parents)) if parents else str(data_root)
    verified = not any(unverified(parent) for parent in parents)
    if not verified:
        digest.update(b"placed by lra data download --no-verify\n")
    return {"folder": folder, "files": len(files), "bytes": total, "signature": digest.hexdigest(),
            "verified": verified}


def unverified(folder):
    """Whether `lra data download --no-verify` placed `folder` (its marker says so)."""
    note = download.marker(folder)
    return bool(note) and note.get("verified") is False


def fingerprint_of(data, sources):
    """The data fingerprint a run records: the loader's, marked when the files were placed
    without their checksums checked (`lra data download --no-verify`)."""
    return data.fingerprint if sources.get("verified", True) else f"unverified-{data.fingerprint}"


def checksum(path):
    """BLAKE2b (32-byte digest) of a file's content, read in 1 MiB blocks (constant memory)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=32)).hexdigest()


def file_entries(folder):
    """{name: {"bytes", "blake2b"}} of every file of a saved split."""
    return {p.name: {"bytes": p.stat().st_size, "blake2b": checksum(p)}
            for p in sorted(folder.iterdir()) if p.is_file()}


def cache_key(data, signature):
    """16 hex digits naming the prepared splits of `data` from files with this signature."""
    options = {name: getattr(data, name) for name in data.data_options}
    text = json.dumps({"task": data.name, "options": options, "sources": signature,
                       "cache_version": CACHE_VERSION}, sort_keys=True, default=str)
    return sha256(text.encode()).hexdigest()[:16]


# --- reading a cache ---------------------------------------------------------------------------

class ArrowRows:
    """One list column of a memory-mapped Arrow table as numpy views: `rows[i]` is (L_i, *shape).

    Nothing is copied: each row is a slice of the mapped file. Pickling (for spawned loader
    workers) reopens the folder instead of copying the data.
    """

    def __init__(self, table, name, shape, folder):
        self.name, self.shape, self.folder = name, tuple(shape), str(folder)
        chunks = table.column(name).chunks
        self.values = [chunk.values.to_numpy(zero_copy_only=True) for chunk in chunks]
        self.offsets = [chunk.offsets.to_numpy() for chunk in chunks]
        self.starts = np.cumsum([0] + [len(chunk) for chunk in chunks])  # first row of each chunk

    def __len__(self):
        return int(self.starts[-1])

    def __getitem__(self, i):
        if not -len(self) <= i < len(self):
            raise IndexError(f"row {i} of {len(self)}")
        i %= len(self)
        c = int(np.searchsorted(self.starts, i, side="right")) - 1
        j = i - self.starts[c]
        row = self.values[c][self.offsets[c][j]:self.offsets[c][j + 1]]
        return row.reshape(-1, *self.shape) if self.shape else row

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __reduce__(self):
        return _reopen, (self.folder, self.name, self.shape)


def _reopen(folder, name, shape):
    import datasets

    return ArrowRows(datasets.load_from_disk(folder).data.table, name, shape, folder)


def _dataset_class(name):
    classes, stack = {}, [SequenceDataset]
    while stack:
        cls = stack.pop()
        classes[cls.__name__] = cls
        stack += cls.__subclasses__()
    if name not in classes:
        raise Unusable(f"it holds a {name}, which this version of lra does not define")
    return classes[name]


def check_file(folder, name, want):
    """Raise Unusable unless `folder/name` has the size and checksum `want` recorded."""
    path = folder / name
    try:
        found = path.stat().st_size
    except FileNotFoundError:
        raise Unusable(f"{folder.name}/{name} is missing") from None
    if found != want["bytes"]:
        raise Unusable(f"{folder.name}/{name} is {found} bytes, not the {want['bytes']} it was "
                       "written with")
    if checksum(path) != want["blake2b"]:
        raise Unusable(f"{folder.name}/{name} has the size it was written with but not its "
                       "content (checksum mismatch)")


def open_split(folder, meta, checked=False):
    """The split saved in `folder` as the dataset class it was built from, its files checked
    first unless `checked`; raises Unusable."""
    import datasets

    for name, want in ({} if checked else meta["files"]).items():
        check_file(folder, name, want)
    try:
        table = datasets.load_from_disk(str(folder)).data.table
    except Exception as err:  # a damaged file fails inside pyarrow or datasets in many ways
        raise Unusable(f"split {folder.name} cannot be opened ({type(err).__name__}: {err})") \
            from None
    if table.num_rows != meta["rows"]:
        raise Unusable(f"split {folder.name} has {table.num_rows} rows, not {meta['rows']}")
    columns = {name: ArrowRows(table, name, shape, folder)
               for name, shape in meta["shapes"].items()}
    split = _dataset_class(meta["dataset"])(columns["inputs"], table.column("target").to_numpy(),
                                            **meta["options"])
    split.inputs2 = columns.get("inputs2")
    return split


def read_manifest(folder, key):
    """The manifest of the cache for `key` in `folder`; raises Unusable saying why it is not
    one."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except FileNotFoundError:
        raise Unusable("it has no manifest.json, so its build never finished") from None
    except (OSError, ValueError) as err:
        raise Unusable(f"its manifest.json is unreadable ({err})") from None
    if manifest.get("cache_version") != CACHE_VERSION:
        raise Unusable("it was built by another version (cache version "
                       f"{manifest.get('cache_version')}, lra {manifest.get('lra_version')}; "
                       f"this is cache version {CACHE_VERSION})")
    if manifest.get("key") != key or sorted(manifest.get("splits", ())) != sorted(SPLITS):
        raise Unusable(f"its manifest describes key {manifest.get('key')}, not {key}")
    return manifest


def open_cache(folder, key):
    """(manifest, splits) of the complete cache for `key` in `folder`; raises Unusable saying why
    not."""
    manifest = read_manifest(folder, key)
    return manifest, {split: open_split(folder / split, manifest["splits"][split])
                      for split in SPLITS}


# --- building one --------------------------------------------------------------------------------

def _column(arrays):
    """A large_list Arrow column of arrays (L_i, *shape), flattened row by row, and the shape."""
    import pyarrow as pa

    shape = tuple(arrays[0].shape[1:])
    width = int(np.prod(shape, dtype=np.int64))
    offsets = np.zeros(len(arrays) + 1, np.int64)
    np.cumsum([len(a) * width for a in arrays], out=offsets[1:])
    values = (arrays.reshape(-1) if isinstance(arrays, np.ndarray)
              else np.concatenate([a.reshape(-1) for a in arrays]))
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values)), list(shape)


def describe(split):
    """Rows, length statistics and label counts of one split (lengths of both documents if dual)."""
    stats = {"rows": len(split), "labels": np.bincount(split.targets).tolist()}
    for name in ("inputs", "inputs2"):
        rows = getattr(split, name)
        if rows is not None:
            lengths = np.fromiter((len(x) for x in rows), np.int64, len(split))
            stats["lengths" if name == "inputs" else "lengths2"] = {
                "min": int(lengths.min()), "mean": float(lengths.mean()),
                "median": float(np.median(lengths)), "max": int(lengths.max())}
    return stats


def _save_split(split, folder):
    """Save one split with datasets; its entry for the manifest."""
    import datasets
    import pyarrow as pa

    columns, shapes = {}, {}
    for name in ("inputs", "inputs2"):
        if getattr(split, name) is not None:
            columns[name], shapes[name] = _column(getattr(split, name))
    columns["target"] = pa.array(split.targets, pa.int64())
    table = datasets.table.InMemoryTable(pa.table(columns))
    quiet = len(split) < QUIET_BELOW and not datasets.are_progress_bars_disabled()
    if quiet:
        datasets.disable_progress_bars()
    try:
        datasets.Dataset(table).save_to_disk(str(folder))
    finally:
        if quiet:
            datasets.enable_progress_bars()
    return {"dataset": type(split).__name__, "options": split.options(), "shapes": shapes,
            "files": file_entries(folder),
            **describe(split)}


def _lra_version():
    try:
        return version("lra-harness")
    except PackageNotFoundError:
        return None


def _discard(folder):
    """Remove a folder by first renaming it aside, so no reader ever sees it half deleted."""
    aside = folder.with_name(f".discard-{folder.name}-{secrets.token_hex(4)}")
    try:
        os.rename(folder, aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def _publish(building, folder, key):
    """Rename the finished `building` folder to `folder`; if another builder got there first
    with a usable cache, keep theirs and discard ours."""
    for _ in range(3):
        try:
            os.rename(building, folder)
            return
        except OSError:  # the name is taken: by a finished rival, or by an unusable cache
            try:
                open_cache(folder, key)
            except Unusable:
                _discard(folder)
                continue
            shutil.rmtree(building, ignore_errors=True)
            return
    raise OSError(f"could not move the new cache {building} to {folder}: the name stays taken")


def _clear_abandoned(parent):
    """Remove build folders left behind by processes of this machine that have ended (killed
    mid-build)."""
    host = socket.gethostname()
    for path in parent.glob(f".building-*-{host}-*"):
        pid = path.name.rsplit("-", 2)[1]  # .building-<key>-<host>-<pid>-<random>
        if pid.isdigit() and not process_alive({"host": host, "pid": int(pid)}):
            shutil.rmtree(path, ignore_errors=True)


def build(data, folder, key, sources):
    """Read `data`'s raw files with its own loader and save the splits as the cache `folder`."""
    print(f"lra: preparing {data.name}: reading {sources['files']} files "
          f"({sources['bytes'] / 1e6:.1f} MB) into {folder}", file=sys.stderr)
    started = time.perf_counter()
    splits = data.load()
    _clear_abandoned(folder.parent)
    building = folder.with_name(f".building-{key}-{socket.gethostname()}-{os.getpid()}-"
                                f"{secrets.token_hex(4)}")
    try:
        entries = {split: _save_split(splits[split], building / split) for split in SPLITS}
        write_json_atomic(building / "manifest.json", {
            "cache_version": CACHE_VERSION, "key": key, "task": data.name,
            "options": {name: getattr(data, name) for name in data.data_options},
            "lra_version": _lra_version(), "built_at": now(),
            "build_seconds": round(time.perf_counter() - started, 2),
            "fingerprint": fingerprint_of(data, sources), "protocol": data.protocol,
            "sources": sources,
            "splits": entries})
        _publish(building, folder, key)
    finally:
        shutil.rmtree(building, ignore_errors=True)


def prepare(data, files=None):
    """(folder, manifest, splits, built) of `data`'s cache, built first if missing or unusable.

    `files` are `data.sources()` when already listed. Raises UserError for a task that reads
    no files (it is generated at setup).
    """
    files = data.sources() if files is None else files
    if files is None:
        raise UserError(f"task {data.name!r} is generated in memory when a run starts; it reads no "
                        "files, so there is nothing to prepare or cache")
    sources = source_summary(Path(data.data_dir).resolve(), files)
    key = cache_key(data, sources["signature"])
    folder = cache_root(data) / data.name / key
    if folder.exists():
        try:
            return folder, *open_cache(folder, key), False
        except Unusable as why:
            warnings.warn(f"data cache {folder} is not used: {why}; rebuilding it", CacheWarning,
                          stacklevel=2)
            _discard(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot make the data cache folder {folder.parent} ({err.strerror}); "
                        "point LRA_CACHE at a writable folder") from err
    if not os.access(folder.parent, os.W_OK):
        raise UserError(f"cannot write the data cache under {folder.parent}; point LRA_CACHE at a "
                        "writable folder")
    build(data, folder, key, sources)
    return folder, *open_cache(folder, key), True


def setup(data):
    """Set `data` up from its cache (building it first if needed), or in memory for a generated
    task."""
    if data.splits is not None:
        return
    files = data.sources()
    if files is None:
        data.setup()
        return
    folder, manifest, splits, _ = prepare(data, files)
    data.splits = splits
    data.fingerprint = manifest["fingerprint"]
    data.protocol = {**manifest["protocol"], "cache_key": manifest["key"]}
    data.restore(data.protocol)
    data.majority_rate = majority_rate(splits["test"].targets)


def verify(data):
    """(ok, report) of `lra data verify`: every file of `data`'s cache against the size and
    checksum its manifest recorded, then every split opened with its rows. Rebuilds nothing."""
    files = data.sources()
    if files is None:
        raise UserError(f"task {data.name!r} is generated in memory when a run starts; it has no "
                        "cache to verify")
    key = cache_key(data, source_summary(Path(data.data_dir).resolve(), files)["signature"])
    folder = cache_root(data) / data.name / key
    if not folder.exists():
        return False, (f"{data.name}: no cache for these files and options at {folder}; "
                       f"`lra data prepare {data.name}` builds it")
    try:
        manifest = read_manifest(folder, key)
    except Unusable as why:
        return False, f"{data.name}: the cache {folder} is not usable: {why}"
    lines, bad, total, started = [f"{data.name}: cache {folder}"], 0, 0, time.perf_counter()
    for split in SPLITS:
        meta, fine = manifest["splits"][split], True
        for name, want in meta["files"].items():
            try:
                check_file(folder / split, name, want)
                lines.append(f"  {split}/{name}: {want['bytes']:,} bytes, checksum ok")
                total += want["bytes"]
            except Unusable as why:
                lines.append(f"  MISMATCH {why}")
                bad, fine = bad + 1, False
        if fine:
            try:
                opened = open_split(folder / split, meta, checked=True)
                lines.append(f"  {split}: {len(opened):,} rows, opens ok")
            except Unusable as why:
                lines.append(f"  MISMATCH {why}")
                bad += 1
    seconds = time.perf_counter() - started
    if bad:
        lines.append(f"{bad} problem(s) found: the next `lra train task={data.name}` or "
                     f"`lra data prepare {data.name}` rebuilds this cache")
    else:
        lines.append(f"OK: every file matches its checksum ({total / 1e6:,.1f} MB checked in "
                     f"{seconds:.1f} s); fingerprint {manifest['fingerprint']}")
    return not bad, "\n".join(lines)


# --- describing one ------------------------------------------------------------------------------

def _table(rows):
    """Rows of cells as aligned text: the first column to the left, the others to the right."""
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) if c == 0 else cell.rjust(w)
                      for c, (cell, w) in enumerate(zip(row, widths)))
            for row in rows]


def info(data):
    """What `lra data info` prints: where the data came from, then per split its size, lengths and
    majority class, then the count and share of every class in every split."""
    files = data.sources()
    if files is None:
        data.setup()
        stats = {split: describe(ds) for split, ds in data.splits.items()}
        lines = [f"{data.name}: generated in memory when a run starts (not cached)"]
    else:
        folder, manifest, _, _ = prepare(data, files)
        stats, src = manifest["splits"], manifest["sources"]
        lines = [f"{data.name}: prepared cache {folder}",
                 f"  built {manifest['built_at']} in {manifest['build_seconds']:.1f} s by lra "
                 f"{manifest['lra_version']} (cache version {manifest['cache_version']})",
                 f"  from {src['files']:,} files ({src['bytes'] / 1e6:,.1f} MB) under "
                 f"{src['folder']}"]
        data.fingerprint, data.protocol = manifest["fingerprint"], manifest["protocol"]
    lines += [f"  source {data.protocol['source']}, fingerprint {data.fingerprint}", ""]

    rows = [["split", "examples", "min length", "mean", "median", "max", "majority class"]]
    for split, s in stats.items():
        counts = np.array(s["labels"])
        top = int(counts.argmax())
        for name, label in (("lengths", split), ("lengths2", f"{split} (2nd document)")):
            if name in s:
                n = s[name]
                rows.append([label, f"{s['rows']:,}", str(n["min"]), f"{n['mean']:.1f}",
                             f"{n['median']:.1f}", str(n["max"]),
                             f"{top} ({100 * counts[top] / s['rows']:.1f}%)"])
    lines += _table(rows) + [""]

    rows = [["class", *stats]]
    for label in range(data.num_classes):
        rows.append([str(label)] + [
            f"{c:,} ({100 * c / s['rows']:.1f}%)" for s in stats.values()
            for c in [s["labels"][label] if label < len(s["labels"]) else 0]])
    return "\n".join(lines + _table(rows))
