"""`lra data download`: each task's archive from its official source (sources.json beside this
file), resumed after a drop, checked, and only the folders the asked tasks need unpacked, each
placed whole.

An archive is fetched to `<data root>/.downloads/<file>.part` (HTTP Range requests continue it),
checked against the manifest's size and checksums, then renamed to `<file>`, which is kept so that
another task from the same archive needs no second download. One streaming pass over the tar
writes each needed part into `.<folder>.partial-<pid>` beside its final place; its contents are
counted against the manifest, a marker `.lra-download.json` (which records whether it was
verified) is written into it, and it is renamed into place. A part whose marker is there is done.
"""
import fnmatch
import hashlib
import json
import os
import shutil
import socket
import tarfile
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from http.client import HTTPException
from pathlib import Path, PurePosixPath

from lra.errors import UserError

MANIFEST = Path(__file__).with_name("sources.json")
MARKER = ".lra-download.json"
RETRIES = 5          # failed attempts in a row, per URL, before the next URL is tried
BACKOFF = 1.0        # seconds before retry k is BACKOFF * 2**k, at most 60
TIMEOUT = 60         # seconds a connection may stay silent
CHUNK = 1 << 20


def load_manifest(path=None):
    """The source manifest: `path`, else $LRA_SOURCES, else the one shipped with lra."""
    path = Path(path or os.environ.get("LRA_SOURCES") or MANIFEST)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read the source manifest {path}: {err}") from err


def task_parts(manifest, tasks):
    """{part name: part} of the asked tasks ('all' for every task), in manifest order."""
    known = manifest["tasks"]
    names = list(known) if "all" in tasks else tasks
    unknown = [t for t in names if t not in known]
    if unknown:
        raise UserError(f"no download source for {', '.join(unknown)}; tasks with one: "
                        f"{', '.join(known)} (or all)")
    wanted = {p for t in names for p in known[t]}
    return {name: part for name, part in manifest["parts"].items() if name in wanted}


# --- a part on disk --------------------------------------------------------------------------

def placed(root, part):
    """The folder where `part` was placed (holding its marker), or None."""
    base = Path(root) / part["into"]
    if not part["folder"]:
        return base if (base / MARKER).is_file() else None
    for depth in range(4):
        pattern = "/".join(["*"] * depth + [part["folder"], MARKER])
        found = sorted(base.glob(pattern))
        if found:
            return found[0].parent
    return None


def marker(path):
    """The marker of the placed folder holding `path` (a file or folder), or None: what the data
    fingerprint reads to tell verified data from data placed with --no-verify."""
    for folder in [Path(path), *Path(path).parents]:
        if (folder / MARKER).is_file():
            return json.loads((folder / MARKER).read_text())
    return None


def count_expected(folder, expect):
    """[(glob, expected, found)] of every expectation that the folder does not meet."""
    wrong = []
    for pattern, want in expect.items():
        found = sum(1 for p in folder.glob(pattern) if p.is_file())
        ok = found >= int(want[2:]) if isinstance(want, str) else found == want
        if not ok:
            wrong.append((pattern, want, found))
    return wrong


def place(tmp, final, note):
    """Write the marker (`note`, the file count and the time) into the finished folder `tmp` and
    rename it to `final`."""
    note = {**note, "files": sum(1 for p in tmp.rglob("*") if p.is_file()),
            "placed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    (tmp / MARKER).write_text(json.dumps(note, indent=1) + "\n")
    if final.exists():
        raise UserError(f"{final} exists but was not placed by lra data download; move it away "
                        "(or delete it) and run the download again")
    tmp.rename(final)


# --- fetching ----------------------------------------------------------------------------------

def human(n):
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def digests(path, archive):
    """{algorithm: hex digest} of the file for the checksums the manifest gives."""
    algorithms = [a for a in ("sha256", "md5") if archive.get(a)]
    hashes = {a: hashlib.new(a) for a in algorithms}
    if hashes:
        with open(path, "rb") as f:
            while block := f.read(CHUNK * 8):
                for h in hashes.values():
                    h.update(block)
    return {a: h.hexdigest() for a, h in hashes.items()}


def check_archive(path, archive, origin):
    """Raise UserError (and remove the file, which is corrupt) when its size or a checksum is not
    the manifest's."""
    size, wrong = path.stat().st_size, []
    if archive.get("size") and size != archive["size"]:
        wrong.append(f"size {size:,} bytes, expected {archive['size']:,}")
    else:
        for algorithm, actual in digests(path, archive).items():
            if actual != archive[algorithm]:
                wrong.append(f"{algorithm} {actual}, expected {archive[algorithm]} "
                             f"({archive.get('checksum_source')})")
    if wrong:
        path.unlink()
        raise UserError(f"{archive['file']} from {origin} is corrupt: {'; '.join(wrong)}. It was "
                        "deleted; run the download again (or fetch it from another --mirror).")


def urls(archive, mirror):
    if mirror:
        return [f"{mirror.rstrip('/')}/{archive['file']}"]
    return list(archive["urls"]) + list(archive.get("mirrors", []))


def transfer(url, part, expected, progress):
    """One request for the rest of `part` (a Range request when some is there); returns the total
    size the server announced (or None). Raises on an HTTP error or a dropped connection."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "lra-harness (lra data download)"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=TIMEOUT)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have and have == expected:  # nothing left to send
            return expected
        raise
    with response:
        length = response.headers.get("Content-Length")
        if response.status == 206:
            total = response.headers.get("Content-Range", "").rpartition("/")[2]
            total = int(total) if total.isdigit() else None
        else:  # the server sent the whole file: start over
            have, total = 0, int(length) if length else None
        mode = "ab" if have else "wb"
        from tqdm import tqdm

        with open(part, mode) as f, tqdm(total=total or expected, initial=have, unit="B",
                                         unit_scale=True, unit_divisor=1024, desc=part.stem,
                                         disable=not progress, leave=False) as bar:
            while block := response.read(CHUNK):
                f.write(block)
                bar.update(len(block))
    return total


def fetch(archive, folder, mirror=None, progress=True):
    """The verified archive in `folder`, downloaded (or continued) if not there yet."""
    final = folder / archive["file"]
    if final.exists():
        return final
    part = folder / (archive["file"] + ".part")
    expected, errors = archive.get("size"), []
    for url in urls(archive, mirror):
        failures = 0
        while failures < RETRIES:
            before = part.stat().st_size if part.exists() else 0
            try:
                total = transfer(url, part, expected, progress)
            except urllib.error.HTTPError as err:
                errors.append(f"{url}: HTTP {err.code} {err.reason}")
                if err.code < 500:
                    break  # not there: the next URL
            except (urllib.error.URLError, HTTPException, OSError, socket.timeout) as err:
                errors.append(f"{url}: {getattr(err, 'reason', err)}")
            else:
                expected = expected or total
                size = part.stat().st_size
                if expected is None or size == expected:
                    part.rename(final)
                    check_archive(final, archive, url)
                    return final
                if size > expected:
                    part.unlink()
                    raise UserError(f"{url} sent {size:,} bytes for {archive['file']}, expected "
                                    f"{expected:,}; the partial file was deleted, try another "
                                    "--mirror")
                errors.append(f"{url}: connection closed at {size:,} of {expected:,} bytes")
            now = part.stat().st_size if part.exists() else 0
            failures = 0 if now > before else failures + 1
            if failures < RETRIES:
                time.sleep(min(BACKOFF * 2 ** failures, 60))
    kept = (f"; the {part.stat().st_size:,} bytes fetched are kept in {part} and the next run "
            "continues from there" if part.exists() else "")
    raise UserError(f"could not download {archive['file']}: {'; '.join(errors[-3:])}{kept}. "
                    "Check the connection, or pass --mirror URL (or LRA_MIRROR) to fetch "
                    f"URL/{archive['file']}, or --from FILE for a copy fetched elsewhere.")


# --- unpacking ---------------------------------------------------------------------------------

def locate(name, part):
    """(final folder relative to the data root, path inside it) of a member of `part`, or None."""
    parts = PurePosixPath(name).parts
    if ".." in parts or name.startswith("/"):
        return None
    if not part["folder"]:
        prefix, inside = (), parts
    elif part["folder"] in parts:
        k = parts.index(part["folder"])
        prefix, inside = parts[: k + 1], parts[k + 1:]
    else:
        return None
    rest = "/".join(inside)
    if inside and not any(fnmatch.fnmatchcase(rest, g) for g in part["include"]):
        return None
    return PurePosixPath(part["into"], *prefix), rest


def unpack(source, parts, root, verify=True, origin=None):
    """Unpack the members of `parts` ({name: part}) from the archive file `source` in one
    streaming pass; each part's folder appears whole (checked unless verify is False) or not at
    all. Returns {part name: final folder}."""
    root, building, finals = Path(root), {}, {}
    try:
        with tarfile.open(source, "r|*") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                for pname, part in parts.items():
                    where = locate(name, part)
                    if where is None or not (member.isfile() or member.isdir()):
                        continue
                    final = root / where[0]
                    if pname not in building:
                        finals[pname] = final
                        building[pname] = final.parent / f".{final.name}.partial-{os.getpid()}"
                        shutil.rmtree(building[pname], ignore_errors=True)
                        building[pname].mkdir(parents=True)
                    target = building[pname] / where[1]
                    if member.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(member) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst, CHUNK)
        missing = [p for p in parts if p not in building]
        if missing:
            names = ", ".join(parts[p]["folder"] or p for p in missing)
            raise UserError(f"{source} holds no {names} folder: is it the right archive?")
        for pname, tmp in building.items():
            wrong = count_expected(tmp, parts[pname]["expect"]) if verify else []
            if wrong:
                counts = "; ".join(f"{g}: {n} files, expected {want}" for g, want, n in wrong)
                raise UserError(f"{source} unpacked to an incomplete {finals[pname].name}: "
                                f"{counts}. Nothing was placed; delete the archive and download "
                                "it again.")
        for pname, tmp in building.items():
            place(tmp, finals[pname], {"part": pname, "archive": Path(source).name,
                                       "origin": origin or str(source), "verified": verify})
    except (tarfile.TarError, EOFError, OSError) as err:
        raise UserError(f"cannot unpack {source}: {err}. If it is a download, delete it and "
                        "download again.") from err
    finally:
        for tmp in building.values():
            shutil.rmtree(tmp, ignore_errors=True)
    return finals


# --- the command -------------------------------------------------------------------------------

def check_space(root, need):
    """Raise UserError when the file system of `root` has less than `need` bytes free."""
    existing = next(p for p in [Path(root).resolve(), *Path(root).resolve().parents] if p.exists())
    free = shutil.disk_usage(existing).free
    if free < need:
        raise UserError(f"not enough space under {existing}: the download needs about "
                        f"{human(need)} (archive and unpacked folders), {human(free)} is free. "
                        "Free some space or choose another --data-dir.")


def download(tasks, root, manifest=None, mirror=None, archive_file=None, verify=True,
             progress=True, say=print):
    """Place the data of `tasks` under `root`; returns {part name: folder}. `archive_file` (--from)
    is an archive fetched elsewhere; `mirror` replaces the manifest's URLs by mirror/<file>."""
    manifest = manifest or load_manifest()
    mirror = mirror or os.environ.get("LRA_MIRROR")
    root = Path(root)
    parts = task_parts(manifest, tasks)
    done = {n: f for n, p in parts.items() if (f := placed(root, p))}
    for name, folder in done.items():
        note = json.loads((folder / MARKER).read_text())
        state = "" if note["verified"] else " (placed with --no-verify)"
        say(f"{name}: already in {folder}{state}, nothing to do")
    todo = {n: p for n, p in parts.items() if n not in done}
    by_archive = {}
    for name, part in todo.items():
        by_archive.setdefault(part["archive"], {})[name] = part
    if archive_file and len(by_archive) > 1:
        raise UserError(f"--from gives one archive, but these tasks need {len(by_archive)}: "
                        f"{', '.join(manifest['archives'][a]['file'] for a in by_archive)}; "
                        "download them one archive at a time")
    store = root / ".downloads"
    need = 0
    for key, group in by_archive.items():
        archive = manifest["archives"][key]
        path = store / archive["file"]
        if not archive_file and not path.exists():
            partial = store / (archive["file"] + ".part")
            have = partial.stat().st_size if partial.exists() else 0
            need += (archive.get("size") or archive.get("approx_size") or 0) - have
        need += sum(p["unpacked_size"] for p in group.values())
    if by_archive:
        check_space(root, need)
    placed_now = {}
    for key, group in by_archive.items():
        archive = manifest["archives"][key]
        if archive_file:
            source, origin = Path(archive_file), str(archive_file)
            if not source.is_file():
                raise UserError(f"--from {source}: no such file")
            if verify:
                check_copy(source, archive)
        else:
            store.mkdir(parents=True, exist_ok=True)
            source = store / archive["file"]
            origin = urls(archive, mirror)[0]
            unchecked = {**archive, "sha256": None, "md5": None}  # the size is still checked
            fetch(archive if verify else unchecked, store, mirror=mirror, progress=progress)
        say(f"unpacking {', '.join(group)} from {source.name}")
        placed_now.update(unpack(source, group, root, verify=verify, origin=origin))
        if not verify:
            say(f"warning: {', '.join(group)} placed without verification (recorded in "
                f"{MARKER})")
    for name, folder in placed_now.items():
        say(f"{name}: placed in {folder}")
    return {**done, **placed_now}


def check_copy(source, archive):
    """Check an archive fetched elsewhere without deleting it when it does not match."""
    size, wrong = source.stat().st_size, []
    if archive.get("size") and size != archive["size"]:
        wrong.append(f"size {size:,} bytes, expected {archive['size']:,}")
    else:
        wrong += [f"{a} {d}, expected {archive[a]}" for a, d in digests(source, archive).items()
                  if d != archive[a]]
    if wrong:
        raise UserError(f"--from {source} is not {archive['file']} as published: "
                        f"{'; '.join(wrong)}. Fetch it again, or pass --no-verify to use it "
                        "anyway (recorded in the data's marker).")
