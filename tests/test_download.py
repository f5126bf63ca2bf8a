"""`lra data download` against a loopback HTTP server serving small archives in the releases'
layouts (tests/writers.py), which can drop a connection mid-file, answer 404 or 500 and ignore
Range requests."""
import gzip
import hashlib
import io
import json
import pickle
import shutil
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from writers import (
    speech_clip,
    write_aan_pairs,
    write_aclimdb,
    write_cifar_release,
    write_imdb_parquet,
    write_listops_release,
    write_pathfinder_release,
    write_speech_release,
    write_wav,
)

from lra import download as dl
from lra.cli import main
from lra.errors import UserError
from lra.tasks.speech import WORDS10


def tar_of(folder, gz=True):
    """The bytes of a tar (gzipped) of everything under folder, names relative to it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    """{file name: bytes} of the four archives in miniature."""
    src = tmp_path_factory.mktemp("releases")
    lra = src / "lra"
    write_listops_release(lra)
    write_aan_pairs(lra)
    write_pathfinder_release(lra, resolution=32)
    write_pathfinder_release(lra, resolution=128, n_batches=1, per_batch=2)
    imdb = src / "imdb"
    write_aclimdb(imdb)
    (imdb / "aclImdb/train/unsup").mkdir()
    (imdb / "aclImdb/train/unsup/0_0.txt").write_text("not needed")
    cifar = src / "cifar"
    write_cifar_release(cifar)
    write_speech_release(src, where="speech", words=("yes", "no"))
    return {"lra_release.gz": tar_of(lra), "aclImdb_v1.tar.gz": tar_of(imdb),
            "cifar-10-python.tar.gz": tar_of(cifar),
            "speech_commands_v0.02.tar.gz": tar_of(src / "speech")}


def small_manifest(base, archives):
    """The shipped manifest with URLs on the test server, the archives' sizes and sha256, and
    the content counts of the miniatures."""
    manifest = json.loads(dl.MANIFEST.read_text())
    for archive in manifest["archives"].values():
        data = archives[archive["file"]]
        archive.update(urls=[f"{base}/official/{archive['file']}"], size=len(data),
                       sha256=hashlib.sha256(data).hexdigest(), md5=None)
    manifest["archives"]["lra_release"]["size"] = None  # as published: no size, no checksum
    manifest["archives"]["lra_release"]["sha256"] = None
    parts = manifest["parts"]
    parts["aclImdb"]["expect"] = {"train/neg/*.txt": 10, "train/pos/*.txt": 10,
                                  "test/neg/*.txt": 3, "test/pos/*.txt": 2}
    for res in ("pathfinder32", "pathfinder128"):  # the miniatures have only the hard images
        parts[res]["expect"] = {"curv_contour_length_14/metadata/*.npy": ">=1"}
    parts["speech_commands"]["expect"] = {"testing_list.txt": 1, "[!_]*/*.wav": 6}
    for part in parts.values():
        part["unpacked_size"] = 1000
    return manifest


class Server:
    """A file server on 127.0.0.1: `script` holds what the next requests do ('drop': send half
    the bytes and close; 'norange': ignore Range; an int: answer that status); `log` the
    (path, Range header) of each request."""

    def __init__(self, files):
        self.files, self.script, self.log = files, [], []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.log.append((self.path, self.headers.get("Range")))
                action = server.script.pop(0) if server.script else None
                data = server.files.get(self.path.rpartition("/")[2])
                if isinstance(action, int) or data is None:
                    self.send_error(action if isinstance(action, int) else 404)
                    return
                start = 0
                if self.headers.get("Range") and action != "norange":
                    start = int(self.headers["Range"][6:].rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                self.wfile.write(body[: len(body) // 2] if action == "drop" else body)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_port}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self):
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def server(archives, monkeypatch):
    monkeypatch.setattr(dl, "BACKOFF", 0.0)
    monkeypatch.setattr(dl, "TIMEOUT", 5)
    monkeypatch.delenv("LRA_MIRROR", raising=False)
    s = Server(archives)
    s.manifest = small_manifest(s.url, archives)
    yield s
    s.close()


def get(server, tasks, root, **kw):
    lines = []
    placed = dl.download(tasks, root, manifest=server.manifest, progress=False,
                         say=lines.append, **kw)
    return placed, lines


def leftovers(root):
    """Temporary unpack folders and partial files anywhere under root."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if ".partial-" in p.name or p.name.endswith(".part"))


def test_whole_download_places_only_the_needed_parts(server, tmp_path):
    placed, _ = get(server, ["listops", "pathx", "text"], tmp_path)
    listops = tmp_path / "lra_release/lra_release/listops-1000"
    assert placed["listops-1000"] == listops
    assert sorted(p.name for p in listops.iterdir()) == [
        ".lra-download.json", "basic_test.tsv", "basic_train.tsv", "basic_val.tsv"]
    assert (tmp_path / "lra_release/lra_release/pathfinder128").is_dir()
    assert not (tmp_path / "lra_release/lra_release/pathfinder32").exists()  # not asked for
    assert not (tmp_path / "lra_release/lra_release/tsv_data").exists()
    assert len(list((tmp_path / "aclImdb/train/pos").glob("*.txt"))) == 10
    assert not (tmp_path / "aclImdb/train/unsup").exists()  # not read by the loader
    note = dl.marker(listops / "basic_train.tsv")
    assert note["verified"] is True and note["part"] == "listops-1000" and note["files"] == 3
    assert leftovers(tmp_path) == []
    assert len(server.log) == 2  # one request per archive


def test_a_second_run_does_nothing(server, tmp_path):
    get(server, ["image", "sc10"], tmp_path)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    n = len(server.log)
    placed, lines = get(server, ["scifar", "sc35"], tmp_path)
    assert len(server.log) == n
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before
    assert placed["speech_commands"] == tmp_path / "speech_commands"
    assert (tmp_path / "speech_commands/yes").is_dir()
    assert all("nothing to do" in line for line in lines) and len(lines) == 2


def test_a_dropped_connection_resumes_with_a_range_request(server, tmp_path):
    server.script = ["drop"]
    get(server, ["text"], tmp_path)
    (first, r1), (second, r2) = server.log
    size = len(server.files["aclImdb_v1.tar.gz"])
    assert r1 is None and r2 == f"bytes={size // 2}-"
    assert (tmp_path / ".downloads/aclImdb_v1.tar.gz").read_bytes() == server.files[
        "aclImdb_v1.tar.gz"]
    assert (tmp_path / "aclImdb/test/neg").is_dir()


def test_a_server_ignoring_range_restarts_the_file(server, tmp_path):
    server.script = ["drop", "norange"]
    get(server, ["image"], tmp_path)
    assert server.log[1][1] is not None  # asked for the rest, got the whole file
    assert (tmp_path / ".downloads/cifar-10-python.tar.gz").read_bytes() == server.files[
        "cifar-10-python.tar.gz"]


def test_a_wrong_checksum_removes_the_file_and_says_both_values(server, tmp_path):
    server.manifest["archives"]["cifar10"]["sha256"] = "0" * 64
    with pytest.raises(UserError, match=r"sha256 [0-9a-f]{64}, expected 0{64}") as err:
        get(server, ["image"], tmp_path)
    assert "corrupt" in str(err.value)
    assert list((tmp_path / ".downloads").iterdir()) == []
    assert not (tmp_path / "cifar-10-batches-py").exists()


def test_500_is_retried_then_succeeds(server, tmp_path, monkeypatch):
    sleeps = []
    monkeypatch.setattr(dl.time, "sleep", sleeps.append)
    server.script = [500, 503]
    get(server, ["image"], tmp_path)
    assert len(server.log) == 3 and sleeps == [0.0, 0.0]
    assert (tmp_path / "cifar-10-batches-py/data_batch_5").is_file()


def test_500_forever_gives_up_after_the_bounded_retries(server, tmp_path):
    server.script = [500] * 20
    with pytest.raises(UserError, match="HTTP 500") as err:
        get(server, ["image"], tmp_path)
    assert len(server.log) == dl.RETRIES
    assert "--mirror" in str(err.value)


def test_404_tries_the_next_url_without_retrying(server, tmp_path):
    archive = server.manifest["archives"]["cifar10"]
    archive["urls"] = [f"{server.url}/gone/nothing-here", *archive["urls"]]
    server.files["nothing-here"] = None
    get(server, ["image"], tmp_path)
    assert [path for path, _ in server.log] == ["/gone/nothing-here",
                                                "/official/cifar-10-python.tar.gz"]


def test_a_short_file_is_kept_to_resume(server, tmp_path):
    server.script = ["drop"] + [500] * dl.RETRIES
    with pytest.raises(UserError, match="kept in .*part.*continues") as err:
        get(server, ["text"], tmp_path)
    part = tmp_path / ".downloads/aclImdb_v1.tar.gz.part"
    size = len(server.files["aclImdb_v1.tar.gz"])
    assert part.stat().st_size == size // 2
    assert "HTTP 500" in str(err.value) and len(server.log) == 1 + dl.RETRIES
    get(server, ["text"], tmp_path)  # the next run finishes it
    assert server.log[-1][1] == f"bytes={size // 2}-"
    assert (tmp_path / ".downloads/aclImdb_v1.tar.gz").read_bytes() == server.files[
        "aclImdb_v1.tar.gz"]


def test_a_full_disk_stops_before_anything_is_written(server, tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda p: usage._replace(free=10_000))
    with pytest.raises(UserError, match="not enough space.*needs about") as err:
        get(server, ["sc35"], tmp_path)
    assert "is free" in str(err.value)
    assert server.log == [] and list(tmp_path.iterdir()) == []


def test_ctrl_c_while_unpacking_places_nothing(server, tmp_path, monkeypatch):
    copies = []

    def interrupted(src, dst, length=0):
        copies.append(dst.name)
        if len(copies) == 3:
            raise KeyboardInterrupt
        dst.write(src.read())

    monkeypatch.setattr(dl.shutil, "copyfileobj", interrupted)
    with pytest.raises(KeyboardInterrupt):
        get(server, ["text"], tmp_path)
    assert not (tmp_path / "aclImdb").exists() and leftovers(tmp_path) == []
    assert (tmp_path / ".downloads/aclImdb_v1.tar.gz").is_file()  # kept for the next run
    monkeypatch.undo()
    monkeypatch.setattr(dl, "BACKOFF", 0.0)
    get(server, ["text"], tmp_path)
    assert len(server.log) == 1 and (tmp_path / "aclImdb/test/pos").is_dir()


def test_ctrl_c_while_fetching_keeps_the_partial_file(server, tmp_path, monkeypatch):
    real = open
    calls = []

    class Interrupting(io.FileIO):
        def write(self, block):
            calls.append(len(block))
            super().write(block[: len(block) // 3])
            raise KeyboardInterrupt

    def fake_open(path, mode="r", *args, **kw):
        return Interrupting(path, mode.replace("b", "")) if str(path).endswith(".part") else \
            real(path, mode, *args, **kw)

    monkeypatch.setattr(dl, "open", fake_open, raising=False)
    with pytest.raises(KeyboardInterrupt):
        get(server, ["image"], tmp_path)
    part = tmp_path / ".downloads/cifar-10-python.tar.gz.part"
    assert part.stat().st_size == calls[0] // 3 > 0
    assert not (tmp_path / "cifar-10-batches-py").exists()
    monkeypatch.undo()
    monkeypatch.setattr(dl, "BACKOFF", 0.0)
    get(server, ["image"], tmp_path)
    assert server.log[-1][1] == f"bytes={calls[0] // 3}-"
    assert (tmp_path / "cifar-10-batches-py/test_batch").is_file()


def test_mirror_fetches_url_slash_file_name(server, tmp_path, monkeypatch):
    monkeypatch.setenv("LRA_MIRROR", f"{server.url}/site-mirror/")
    get(server, ["retrieval"], tmp_path)
    assert server.log[0][0] == "/site-mirror/lra_release.gz"
    assert (tmp_path / "lra_release/lra_release/tsv_data/new_aan_pairs.eval.tsv").is_file()
    get(server, ["pathfinder"], tmp_path / "other", mirror=f"{server.url}/flag")
    assert server.log[1][0] == "/flag/lra_release.gz"


def test_from_file_unpacks_without_the_network(server, tmp_path, archives):
    copy = tmp_path / "elsewhere.tar.gz"
    copy.write_bytes(archives["speech_commands_v0.02.tar.gz"])
    get(server, ["sc10"], tmp_path / "data", archive_file=copy)
    assert server.log == []
    assert (tmp_path / "data/speech_commands/no").is_dir()
    assert copy.is_file()


def test_from_a_wrong_file_is_refused_and_kept(server, tmp_path):
    copy = tmp_path / "cifar.tar.gz"
    copy.write_bytes(b"not the archive")
    with pytest.raises(UserError, match="size 15 bytes, expected"):
        get(server, ["image"], tmp_path / "data", archive_file=copy)
    assert copy.is_file() and not (tmp_path / "data/cifar-10-batches-py").exists()


def test_no_verify_is_recorded_beside_the_data(server, tmp_path, archives):
    copy = tmp_path / "wrong-but-used.tar.gz"
    copy.write_bytes(gzip.compress(gzip.decompress(archives["cifar-10-python.tar.gz"])))
    placed, lines = get(server, ["image"], tmp_path / "data", archive_file=copy, verify=False)
    note = dl.marker(placed["cifar-10-batches-py"])
    assert note["verified"] is False
    assert any("without verification" in line for line in lines)
    _, lines = get(server, ["image"], tmp_path / "data")
    assert "--no-verify" in lines[0]


def test_missing_members_fail_with_counts_and_place_nothing(server, tmp_path):
    server.manifest["parts"]["aclImdb"]["expect"]["train/pos/*.txt"] = 12500
    with pytest.raises(UserError, match=r"train/pos/\*.txt: 10 files, expected 12500"):
        get(server, ["text"], tmp_path)
    assert not (tmp_path / "aclImdb").exists() and leftovers(tmp_path) == []


def test_unknown_task_names_the_known_ones(server, tmp_path):
    with pytest.raises(UserError, match="no download source for listops_mini.*sc35"):
        get(server, ["listops_mini"], tmp_path)


def test_the_command_ends_with_the_info_table(server, tmp_path, monkeypatch, capsys):
    manifest = tmp_path / "sources.json"
    manifest.write_text(json.dumps(server.manifest))
    monkeypatch.setenv("LRA_SOURCES", str(manifest))
    monkeypatch.setenv("LRA_CACHE", str(tmp_path / "cache"))
    main(["data", "download", "listops", "--data-dir", str(tmp_path / "data")])
    out = capsys.readouterr().out
    assert "listops-1000: placed in" in out
    assert "listops: prepared cache" in out and "train" in out and "test" in out


def test_the_shipped_manifest_covers_every_file_task():
    manifest = dl.load_manifest()
    assert set(manifest["tasks"]) == {"listops", "retrieval", "pathfinder", "pathx", "text",
                                      "image", "scifar", "sc10", "sc35"}
    for archive in manifest["archives"].values():
        assert archive["urls"] and all(u.endswith(archive["file"]) for u in archive["urls"])
        assert (archive["sha256"] is None) == (archive["checksum_source"] is None)
    assert all(p["archive"] in manifest["archives"] for p in manifest["parts"].values())
    assert Path(dl.MANIFEST).name == "sources.json"


# --- --source hf: a dataset written locally in the hub's parquet layout -----------------------

def hf_manifest(tmp_path):
    """The shipped manifest with the hub repositories replaced by local folders of parquet files
    (what load_dataset reads for a repo), holding the miniatures of tests/writers.py."""
    import datasets
    from PIL import Image

    from lra.tasks.image import CLASSES

    imdb = write_imdb_parquet(tmp_path / "hub" / "imdb")
    cifar = write_cifar_release(tmp_path / "toronto")
    features = datasets.Features({"img": datasets.Image(),
                                  "label": datasets.ClassLabel(names=list(CLASSES))})
    hub_cifar = tmp_path / "hub" / "cifar10"
    for split, names in (("train", [f"data_batch_{k}" for k in range(1, 6)]),
                         ("test", ["test_batch"])):
        rows = {"img": [], "label": []}
        for name in names:
            data, labels = cifar[name]
            rows["img"] += [Image.fromarray(x.reshape(3, 32, 32).transpose(1, 2, 0)) for x in data]
            rows["label"] += [int(y) for y in labels]
        datasets.Dataset.from_dict(rows, features=features).to_parquet(
            str(hub_cifar / f"{split}-00000-of-00001.parquet"))
    manifest = dl.load_manifest()
    manifest["hf"]["text"].update(repo=str(imdb), config=None, rows={"train": 20, "test": 5})
    manifest["hf"]["image"].update(repo=str(hub_cifar), config=None,
                                   rows={"train": 100, "test": 20})
    return manifest, cifar


def test_hf_source_writes_the_loaders_layouts(tmp_path):
    from helpers import loaded

    from lra.download.hf import download_hf
    from lra.tasks.image import SCIFAR
    from lra.tasks.text import Text

    manifest, cifar = hf_manifest(tmp_path)
    lines = []
    placed = download_hf(["text", "scifar"], tmp_path / "data", manifest, say=lines.append)
    assert placed == {"text": tmp_path / "data/imdb",
                      "image": tmp_path / "data/cifar-10-batches-py"}
    for name, (data, labels) in cifar.items():  # the release's pixels and labels, batch by batch
        with open(placed["image"] / name, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        assert np.array_equal(batch[b"data"], data) and batch[b"labels"] == labels.tolist()
    assert dl.marker(placed["image"])["origin"].startswith("hf:")
    assert (tmp_path / "data/.downloads/hf").is_dir()  # datasets' cache stays under the root
    write_aclimdb(tmp_path / "acl")
    hub, acl = loaded(Text, tmp_path / "data"), loaded(Text, tmp_path / "acl")
    assert hub.protocol["source"] == "parquet" and hub.fingerprint == acl.fingerprint
    image = loaded(SCIFAR, tmp_path / "data", val_size=10)
    assert len(image.splits["test"]) == 20
    again = []
    download_hf(["image"], tmp_path / "data", manifest, say=again.append)
    assert again == [f"image: already in {placed['image']}, nothing to do"]


def test_hf_source_checks_sizes_and_refuses_other_tasks(tmp_path):
    from lra.download.hf import download_hf

    manifest, _ = hf_manifest(tmp_path)
    manifest["hf"]["text"]["rows"]["train"] = 25000
    with pytest.raises(UserError, match="train 20 rows, expected 25,000"):
        download_hf(["text"], tmp_path / "data", manifest)
    assert [p.name for p in (tmp_path / "data").iterdir()] == [".downloads"]  # the hub's cache
    with pytest.raises(UserError, match="no copy of sc35; it has image, sc10, scifar, text. "
                                        "sc35: the hub's test split is .* test set"):
        download_hf(["text", "sc35"], tmp_path / "data", manifest)


def test_the_command_takes_the_hub_source(tmp_path, monkeypatch, capsys):
    manifest, _ = hf_manifest(tmp_path)
    (tmp_path / "sources.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("LRA_SOURCES", str(tmp_path / "sources.json"))
    monkeypatch.setenv("LRA_CACHE", str(tmp_path / "cache"))
    main(["data", "download", "text", "--source", "hf", "--data-dir", str(tmp_path / "data")])
    out = capsys.readouterr().out
    assert "text: placed in" in out and "text: prepared cache" in out and "source parquet" in out


# Speech Commands on the hub (google/speech_commands, v0.02): train and validation are the
# release's clips outside testing_list.txt (the _background_noise_ files as _silence_ rows); test
# is the separate 12-class test set: the ten words' testing_list.txt clips, other words' clips
# renamed into _unknown_ (label the word, is_unknown true) and one-second _silence_ cuts.
HUB_SPEECH_LABELS = [*"yes no up down left right on off stop go".split(), "backward",
                     "_unknown_", "_silence_"]


def hub_speech(tmp_path, words, swap=None):
    """write_speech_release's miniature (`words`) in the hub's layout, v0.02/<split>-*.parquet
    with the hub's columns, the clips named in `swap` holding its bytes instead; returns the hub
    folder and the release folder."""
    import datasets

    release = tmp_path / "release"
    write_speech_release(release, words=words)
    folder = release / "speech_commands"
    tests = set((folder / "testing_list.txt").read_text().split())
    valid = set((folder / "validation_list.txt").read_text().split())
    rows = {split: [] for split in ("train", "validation", "test")}
    for path in sorted(folder.glob("*/*.wav")):
        name = str(path.relative_to(folder))
        word, file = name.split("/")
        if word == "_background_noise_":
            rows["train"].append((path, name, "_silence_", None, 0))
            continue
        speaker, _, utterance = file[:-len(".wav")].split("_")
        split = "test" if name in tests else "validation" if name in valid else "train"
        rows[split].append((path, name, word, speaker, int(utterance)))
    cut = tmp_path / "cut.wav"  # a test-set _silence_ cut: no release file, so not written
    write_wav(cut, np.zeros(16000))
    rows["test"].append((cut, "_silence_/0.wav", "_silence_", None, 0))
    cell = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}
    features = datasets.Features({  # audio as stored (encoding it would need torchcodec)
        "audio": cell, "label": datasets.ClassLabel(names=HUB_SPEECH_LABELS),
        "is_unknown": datasets.Value("bool"), "speaker_id": datasets.Value("string"),
        "utterance_id": datasets.Value("int8")})
    hub = tmp_path / "hub" / "speech_commands"
    known = WORDS10 + ("_silence_",)
    for split, split_rows in rows.items():
        columns = {"audio": [{"bytes": (swap or {}).get(n) or p.read_bytes(), "path": n}
                             for p, n, *_ in split_rows],
                   "label": [w for _, _, w, _, _ in split_rows],
                   "is_unknown": [w not in known for _, _, w, _, _ in split_rows],
                   "speaker_id": [s for *_, s, _ in split_rows],
                   "utterance_id": [u for *_, u in split_rows]}
        table = datasets.Dataset.from_dict(columns, features=features)
        table.cast_column("audio", datasets.Audio(sampling_rate=16000)).to_parquet(
            str(hub / "v0.02" / f"{split}-00000-of-00001.parquet"))
    return hub, release


def speech_manifest(hub, archive):
    """The shipped manifest with the hub's speech_commands a local folder and the speech archive
    the bytes `archive`, with the miniature's sizes and counts."""
    manifest = dl.load_manifest()
    manifest["hf"]["speech"].update(repo=str(hub), config=None,
                                    rows={"train": 12, "validation": 11, "test": 12})
    manifest["archives"]["speech_commands"].update(
        size=len(archive), sha256=hashlib.sha256(archive).hexdigest(), md5=None)
    manifest["parts"]["speech_commands"].update(
        unpacked_size=1000, expect={"testing_list.txt": 1, "[!_]*/*.wav": 33})
    return manifest


def test_hf_source_gives_sc10_the_archives_examples(tmp_path):
    from helpers import loaded

    from lra.download.hf import download_hf
    from lra.tasks.speech import SC10

    hub, release = hub_speech(tmp_path, WORDS10 + ("backward",))
    archive = tmp_path / "speech_commands_v0.02.tar.gz"
    archive.write_bytes(tar_of(release / "speech_commands"))
    manifest = speech_manifest(hub, archive.read_bytes())
    lines = []
    placed = download_hf(["sc10"], tmp_path / "hf", manifest, say=lines.append)
    assert placed == {"speech": tmp_path / "hf/speech_commands_hf"}
    assert dl.marker(placed["speech"])["origin"] == f"hf:{hub}"
    dl.download(["sc10"], tmp_path / "tar", manifest=manifest, archive_file=archive,
                progress=False, say=lines.append)
    from_tar = tmp_path / "tar/speech_commands"
    hub_words = sorted(p.name for p in placed["speech"].iterdir() if p.is_dir())
    assert hub_words == ["_background_noise_", *WORDS10]  # backward and the test _silence_: no
    for path in placed["speech"].glob("*/*.wav"):  # the release's bytes, noise included
        assert path.read_bytes() == (from_tar / path.relative_to(placed["speech"])).read_bytes()

    hf_sc10 = loaded(SC10, tmp_path / "hf", batch_size=4, read_threads=2)
    tar_sc10 = loaded(SC10, tmp_path / "tar", batch_size=4, read_threads=2)
    for split in ("train", "val", "test"):
        a, b = hf_sc10.splits[split], tar_sc10.splits[split]
        assert len(a) == len(b) == 10
        for i in range(len(a)):
            assert a[i]["target"] == b[i]["target"]
            np.testing.assert_array_equal(a[i]["inputs"], b[i]["inputs"])
    short = WORDS10.index("yes")  # each word's training clip has 8000 samples, then zeros
    assert not hf_sc10.splits["train"][short]["inputs"][8000:].any()
    assert hf_sc10.splits["train"][short]["inputs"][:8000].any()
    assert hf_sc10.protocol["sizes"] == tar_sc10.protocol["sizes"]
    # The clips hash alike; the lists do not: the release's also name backward's clips.
    assert hf_sc10.fingerprint != tar_sc10.fingerprint
    for name in ("validation_list.txt", "testing_list.txt"):
        kept = [n for n in (from_tar / name).read_text().split() if n.split("/")[0] in WORDS10]
        (from_tar / name).write_text("".join(f"{n}\n" for n in sorted(kept)))
    assert loaded(SC10, tmp_path / "tar", read_threads=2).fingerprint == hf_sc10.fingerprint

    again = []
    download_hf(["sc10"], tmp_path / "hf", manifest, say=again.append)
    assert again == [f"speech: already in {placed['speech']}, nothing to do"]
    # The archive placed beside it is the copy the loader reads (the one SC35 needs).
    dl.download(["sc35"], tmp_path / "hf", manifest=manifest, archive_file=archive,
                progress=False, say=lines.append)
    both = loaded(SC10, tmp_path / "hf", read_threads=2)
    assert both.protocol["root"] == str(tmp_path / "hf/speech_commands")


def test_hf_speech_refuses_clips_the_loader_cannot_read(tmp_path):
    from lra.download.hf import download_hf

    stereo = tmp_path / "stereo.wav"
    write_wav(stereo, np.zeros(200), channels=2)
    hub, _ = hub_speech(tmp_path, WORDS10, swap={speech_clip("up", 1): stereo.read_bytes()})
    manifest = speech_manifest(hub, b"")
    manifest["hf"]["speech"]["rows"] = {"train": 11, "validation": 10, "test": 11}
    with pytest.raises(UserError, match=r"validation row 8 \(up/1b4c9b89_nohash_1.wav\): "
                                        "expected mono 16-bit PCM at 16000 Hz, found 2 chan"):
        download_hf(["sc10"], tmp_path / "data", manifest)
    assert [p.name for p in (tmp_path / "data").iterdir()] == [".downloads"]  # nothing placed


def test_the_command_takes_the_hub_speech_source(tmp_path, monkeypatch, capsys):
    hub, _ = hub_speech(tmp_path, WORDS10)
    manifest = speech_manifest(hub, b"")
    manifest["hf"]["speech"]["rows"] = {"train": 11, "validation": 10, "test": 11}
    (tmp_path / "sources.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("LRA_SOURCES", str(tmp_path / "sources.json"))
    monkeypatch.setenv("LRA_CACHE", str(tmp_path / "cache"))
    main(["data", "download", "sc10", "--source", "hf", "--data-dir", str(tmp_path / "data")])
    out = capsys.readouterr().out
    assert "speech: placed in" in out and "sc10: prepared cache" in out


def test_ctrl_c_in_the_command_says_how_to_continue(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(dl, "download", interrupted)
    with pytest.raises(SystemExit) as exit_:
        main(["data", "download", "listops", "--data-dir", str(tmp_path)])
    assert exit_.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "download interrupted" in err and "run the same command again to continue" in err
