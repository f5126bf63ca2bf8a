"""The Arrow cache of prepared tasks: the same items as the raw loaders, built once per config and
files, and rebuilt, never used, when another version built it or it is damaged or incomplete."""
import hashlib
import json
import os
import pickle
import shutil
import socket
import subprocess

import numpy as np
import pytest
from conftest import TINY, load_results
from helpers import loaded
from writers import (
    write_aan_pairs,
    write_aclimdb,
    write_cifar_release,
    write_listops_release,
    write_pathfinder_release,
    write_speech_release,
)

from lra import download, train
from lra.tasks import cache
from lra.tasks.image import SCIFAR, Image
from lra.tasks.listops import ListOps
from lra.tasks.pathfinder import Pathfinder
from lra.tasks.speech import SC10, WORDS10
from lra.tasks.text import Retrieval, Text

SPLITS = ("train", "val", "test")


@pytest.fixture(autouse=True)
def no_cache_override(monkeypatch):
    monkeypatch.delenv("LRA_CACHE", raising=False)


@pytest.fixture
def builds(monkeypatch):
    """The names of the tasks whose cache was built, one entry per build."""
    built = []
    original = cache.build

    def counted(data, *args):
        built.append(data.name)
        return original(data, *args)

    monkeypatch.setattr(cache, "build", counted)
    return built


def prepared(root, cls=ListOps, **kwargs):
    data = cls(data_dir=str(root), **kwargs)
    cache.setup(data)
    return data


def keys(root, task="listops"):
    return sorted(p.name for p in (root / ".cache" / task).iterdir())


def assert_same_items(cached, raw):
    assert cached.fingerprint == raw.fingerprint and cached.majority_rate == raw.majority_rate
    # Pathfinder's protocol times its reading
    timed = ("cache_key", "read_seconds", "files_per_second")
    assert ({k: v for k, v in cached.protocol.items() if k not in timed}
            == {k: v for k, v in json.loads(json.dumps(raw.protocol)).items() if k not in timed})
    for split in SPLITS:
        a, b = cached.splits[split], raw.splits[split]
        assert len(a) == len(b) and type(a) is type(b)
        for i in range(len(b)):
            x, y = a[i], b[i]
            assert x.keys() == y.keys()
            for name in x:
                assert np.asarray(x[name]).dtype == np.asarray(y[name]).dtype, (split, i, name)
                assert np.array_equal(x[name], y[name]), (split, i, name)


TASKS = {  # name: (write the fixture under root, the module, its options)
    "listops": (write_listops_release, ListOps, {}),
    "text": (write_aclimdb, Text, {"val_fraction": 0.2}),
    "text chars eos": (write_aclimdb, Text, {"tokens": "chars", "min_char_count": 3,
                                             "append_eos": True}),
    "listops eos": (write_listops_release, ListOps, {"append_eos": True,
                                                     "keep_closing_brackets": False}),
    "retrieval": (write_aan_pairs, Retrieval, {"max_len": 40}),
    "retrieval eos": (write_aan_pairs, Retrieval, {"max_len": 40, "append_eos": True}),
    "image s4 stats": (write_cifar_release, Image, {"val_size": 10, "encoding": "real",
                                                    "stats": "s4_constants"}),
    "image tokens": (write_cifar_release, Image, {"val_size": 10}),
    "image real": (write_cifar_release, Image, {"val_size": 10, "encoding": "real"}),
    "scifar": (write_cifar_release, SCIFAR, {"val_size": 10}),
    "sc10": (lambda root: write_speech_release(root, words=WORDS10), SC10, {"read_threads": 2}),
    "pathfinder tokens": (write_pathfinder_release, Pathfinder, {}),
    "pathfinder continuous": (write_pathfinder_release, Pathfinder, {"encoding": "continuous"}),
}


@pytest.mark.parametrize("name", TASKS)
def test_items_from_the_cache_equal_items_from_the_raw_loader(tmp_path, name):
    write, cls, options = TASKS[name]
    write(tmp_path)
    cached = prepared(tmp_path, cls, **options)
    # memory-mapped
    assert all(isinstance(cached.splits[s].inputs, cache.ArrowRows) for s in SPLITS)
    raw = loaded(cls, tmp_path, **options)
    assert_same_items(cached, raw)
    again = prepared(tmp_path, cls, **options)  # read back from the cache, not built
    assert_same_items(again, raw)
    assert again.vocab_size == raw.vocab_size  # Text's character vocabulary: from the manifest


def test_second_prepare_is_a_no_op(lra, tmp_path, builds):
    write_listops_release(tmp_path / "d")
    first = lra("data", "prepare", "listops", "--data-dir", "d")
    assert first.code == 0, first.err
    assert "train 3, val 1, test 3 examples" in first.out and "built in" in first.out
    [key] = keys(tmp_path / "d")
    folder = tmp_path / "d" / ".cache" / "listops" / key
    stamps = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    second = lra("data", "prepare", "listops", "--data-dir", "d")
    assert second.code == 0 and "already prepared, nothing to do" in second.out
    assert builds == ["listops"]
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == stamps


def test_a_changed_config_or_changed_files_make_a_new_cache(lra, tmp_path, builds):
    folder = write_listops_release(tmp_path / "d")
    assert lra("data", "prepare", "listops", "--data-dir", "d").code == 0
    result = lra("data", "prepare", "listops", "task.max_len=3", "--data-dir", "d")
    assert result.code == 0, result.err
    assert len(keys(tmp_path / "d")) == 2
    short = prepared(tmp_path / "d", max_len=3)
    assert max(len(x) for x in short.splits["train"].inputs) == 3
    # options that only batch: the same cache
    prepared(tmp_path / "d", max_len=3, batch_size=7, num_workers=0)
    assert builds == ["listops", "listops"]

    with open(folder / "basic_test.tsv", "a") as f:
        f.write("( ( ( [MIN 4 ) 6 ) ] )\t4\r\n")
    assert len(prepared(tmp_path / "d").splits["test"]) == 4
    assert len(keys(tmp_path / "d")) == 3 and builds == ["listops"] * 3


def test_data_placed_without_verification_carries_that_in_its_fingerprint(tmp_path, builds):
    """`lra data download --no-verify` leaves a marker in the folder it places; the cache key and
    the fingerprint every run records then differ from those of the same, verified files."""
    folder = write_listops_release(tmp_path)
    verified = prepared(tmp_path).fingerprint
    (folder / download.MARKER).write_text(json.dumps({"verified": False}))
    unverified = prepared(tmp_path).fingerprint
    assert unverified == f"unverified-{verified}" and len(keys(tmp_path)) == 2
    (folder / download.MARKER).write_text(json.dumps({"verified": True}))
    assert prepared(tmp_path).fingerprint == verified and builds == ["listops"] * 2


def test_a_cache_of_another_version_is_rebuilt_with_a_warning(tmp_path, builds, monkeypatch):
    write_listops_release(tmp_path)
    prepared(tmp_path)
    [key] = keys(tmp_path)
    manifest = tmp_path / ".cache" / "listops" / key / "manifest.json"
    old = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**old, "cache_version": 0, "lra_version": "0.0.1"}))
    why = r"built by another version \(cache version 0, lra 0.0.1"
    with pytest.warns(cache.CacheWarning, match=why):
        data = prepared(tmp_path)
    assert builds == ["listops", "listops"] and keys(tmp_path) == [key]
    assert json.loads(manifest.read_text())["cache_version"] == cache.CACHE_VERSION
    assert len(data.splits["train"]) == 3

    # new tokeniser code: a new key
    monkeypatch.setattr(cache, "CACHE_VERSION", cache.CACHE_VERSION + 1)
    prepared(tmp_path)
    assert len(keys(tmp_path)) == 2 and builds == ["listops"] * 3


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def _zero(path):
    path.write_bytes(bytes(path.stat().st_size))


@pytest.mark.parametrize("damage, why", [
    (lambda folder: (folder / "manifest.json").unlink(),
     "no manifest.json, so its build never finished"),
    (lambda folder: shutil.rmtree(folder / "val"), "val/data-00000-of-00001.arrow is missing"),
    (lambda folder: _truncate(folder / "train" / "data-00000-of-00001.arrow"), "bytes, not the"),
    (lambda folder: _zero(folder / "test" / "data-00000-of-00001.arrow"),
     "test/data-00000-of-00001.arrow has the size it was written with but not its content"),
    (lambda folder: (folder / "manifest.json").write_text("{\"cache_ver"),
     "manifest.json is unreadable"),
], ids=["manifest missing", "split deleted", "truncated arrow file", "zeroed arrow file",
        "torn manifest"])
def test_a_damaged_cache_is_rebuilt_never_used(tmp_path, builds, damage, why):
    write_listops_release(tmp_path)
    prepared(tmp_path)
    [key] = keys(tmp_path)
    damage(tmp_path / ".cache" / "listops" / key)
    with pytest.warns(cache.CacheWarning, match=why):
        data = prepared(tmp_path)
    assert builds == ["listops", "listops"] and keys(tmp_path) == [key]  # no leftovers beside it
    assert_same_items(data, loaded(ListOps, tmp_path))


TEST_LABELS = np.array([9, 9, 0], np.int64)  # write_listops_release's test split
ARROW = "data-00000-of-00001.arrow"


def _garbage(path):
    path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))


def _relabel(path):
    """The test labels 9 9 0 rewritten in place as 0 9 9: same size, still a valid Arrow file."""
    content = path.read_bytes()
    assert content.count(TEST_LABELS.tobytes()) == 1
    path.write_bytes(content.replace(TEST_LABELS.tobytes(), TEST_LABELS[::-1].tobytes()))


@pytest.mark.parametrize("damage", [_garbage, _relabel], ids=["same-size garbage",
                                                              "same-size altered labels"])
def test_same_size_changes_to_a_cached_file_are_caught_by_its_checksum(tmp_path, builds, damage):
    import datasets

    write_listops_release(tmp_path)
    prepared(tmp_path)
    [key] = keys(tmp_path)
    split = tmp_path / ".cache" / "listops" / key / "test"
    size = (split / ARROW).stat().st_size
    damage(split / ARROW)
    assert (split / ARROW).stat().st_size == size
    if damage is _relabel:  # a change only a checksum sees: the file still opens, labels swapped
        targets = datasets.load_from_disk(str(split)).data.table.column("target").to_numpy()
        assert targets.tolist() == [0, 9, 9]
    with pytest.warns(cache.CacheWarning, match="test/data-00000-of-00001.arrow has the size it "
                                                "was written with but not its content"):
        data = prepared(tmp_path)
    assert builds == ["listops", "listops"]
    raw = loaded(ListOps, tmp_path)
    assert data.splits["test"].targets.tolist() == TEST_LABELS.tolist()
    assert data.fingerprint == raw.fingerprint
    assert_same_items(data, raw)


def test_the_manifest_records_size_and_checksum_of_every_file(tmp_path):
    write_listops_release(tmp_path)
    data = prepared(tmp_path)
    folder = tmp_path / ".cache" / "listops" / data.protocol["cache_key"]
    manifest = json.loads((folder / "manifest.json").read_text())
    for split in SPLITS:
        files = manifest["splits"][split]["files"]
        on_disk = sorted(p.name for p in (folder / split).iterdir())
        assert sorted(files) == on_disk and ARROW in files
        for name, entry in files.items():
            content = (folder / split / name).read_bytes()
            assert entry["bytes"] == len(content)
            assert entry["blake2b"] == hashlib.blake2b(content, digest_size=32).hexdigest()


def test_checksum_streams_blocks_and_equals_the_one_shot_digest(tmp_path):
    path = tmp_path / "blob"
    content = np.random.default_rng(1).bytes(3 * cache.BLOCK + 12345)  # several blocks and a tail
    path.write_bytes(content)
    assert cache.checksum(path) == hashlib.blake2b(content, digest_size=32).hexdigest()
    path.write_bytes(content[:-1] + bytes([content[-1] ^ 1]))  # one bit of the last byte
    assert cache.checksum(path) != hashlib.blake2b(content, digest_size=32).hexdigest()


def test_verify_reports_ok_then_a_mismatch_and_rebuilds_nothing(lra, tmp_path, builds):
    write_listops_release(tmp_path / "d")
    missing = lra("data", "verify", "listops", "--data-dir", "d")
    assert missing.code == 1 and "no cache for these files and options" in missing.out
    assert builds == []
    assert lra("data", "prepare", "listops", "--data-dir", "d").code == 0
    good = lra("data", "verify", "listops", "--data-dir", "d")
    assert good.code == 0, good.err
    assert "OK: every file matches its checksum" in good.out
    assert f"  test/{ARROW}: " in good.out and "  train: 3 rows, opens ok" in good.out
    [key] = keys(tmp_path / "d")
    split = tmp_path / "d" / ".cache" / "listops" / key / "test"
    _relabel(split / ARROW)
    bad = lra("data", "verify", "listops", "--data-dir", "d")
    assert bad.code == 1
    assert (f"MISMATCH test/{ARROW} has the size it was written with but not its content"
            in bad.out)
    assert "  train: 3 rows, opens ok" in bad.out and "1 problem(s) found" in bad.out
    assert builds == ["listops"]  # verify only looks
    with pytest.warns(cache.CacheWarning, match="checksum mismatch"):
        assert lra("data", "prepare", "listops", "--data-dir", "d").code == 0
    assert builds == ["listops", "listops"]
    assert lra("data", "verify", "listops", "--data-dir", "d").code == 0


def test_verify_of_a_generated_task_says_there_is_no_cache(lra):
    result = lra("data", "verify", "listops_mini")
    assert result.code == 2 and "generated in memory" in result.err


def test_a_build_cut_short_leaves_nothing_under_the_final_name_nor_behind(
        tmp_path, monkeypatch, builds):
    write_listops_release(tmp_path)
    original = cache._save_split

    def crash_on_test(split, folder):
        if folder.name == "test":
            raise KeyboardInterrupt
        return original(split, folder)

    monkeypatch.setattr(cache, "_save_split", crash_on_test)
    with pytest.raises(KeyboardInterrupt):
        prepared(tmp_path)
    assert keys(tmp_path) == []

    # A build killed outright leaves its temporary folder: the next build on this machine removes
    # those of ended processes and keeps those of running ones.
    ended = subprocess.Popen(["true"])
    ended.wait()
    parent = tmp_path / ".cache" / "listops"
    for pid in (ended.pid, os.getpid()):
        (parent / f".building-0123-{socket.gethostname()}-{pid}-ab12" / "train").mkdir(parents=True)
    monkeypatch.setattr(cache, "_save_split", original)
    assert len(prepared(tmp_path).splits["test"]) == 3
    assert sorted(p.name for p in parent.iterdir() if p.name.startswith(".")) == [
        f".building-0123-{socket.gethostname()}-{os.getpid()}-ab12"]


def test_racing_builders_keep_one_cache(tmp_path):
    write_listops_release(tmp_path)
    data = prepared(tmp_path)
    [key] = keys(tmp_path)
    folder = tmp_path / ".cache" / "listops" / key
    sources = cache.source_summary(tmp_path.resolve(), data.sources())
    winner = folder.stat().st_ino
    cache.build(data, folder, key, sources)  # a rival finishing second: its copy is discarded
    assert keys(tmp_path) == [key] and folder.stat().st_ino == winner

    # a rival finishing where an unusable cache stands replaces it
    (folder / "manifest.json").unlink()
    cache.build(data, folder, key, sources)
    assert keys(tmp_path) == [key] and folder.stat().st_ino != winner
    cache.open_cache(folder, key)


def test_lra_cache_moves_the_cache_off_the_data_root(tmp_path, monkeypatch):
    write_listops_release(tmp_path / "d")
    monkeypatch.setenv("LRA_CACHE", str(tmp_path / "elsewhere"))
    data = prepared(tmp_path / "d")
    manifests = (tmp_path / "elsewhere").glob("listops/*/manifest.json")
    assert [p.parent.name for p in manifests] == [data.protocol["cache_key"]]
    assert not (tmp_path / "d" / ".cache").exists()


def test_rows_reopen_when_pickled_for_a_spawned_worker(tmp_path):
    write_listops_release(tmp_path)
    rows = prepared(tmp_path).splits["train"].inputs
    copy = pickle.loads(pickle.dumps(rows))
    assert len(pickle.dumps(rows)) < 500  # the folder, not the data
    assert [x.tolist() for x in copy] == [x.tolist() for x in rows]


def test_deleting_the_cache_mid_run_does_not_stop_it_and_the_next_run_rebuilds(
        lra, tmp_path, monkeypatch, builds):
    write_listops_release(tmp_path / "d")
    original = cache.setup

    def setup_then_delete(data):
        original(data)
        # the files stay readable through their memory maps
        shutil.rmtree(tmp_path / "d" / ".cache")

    monkeypatch.setattr(cache, "setup", setup_then_delete)
    result = lra("train", *TINY[:4], "task=listops", "data_dir=d", "task.batch_size=2")
    assert result.code == 0, result.err
    [record] = load_results(tmp_path / "leaderboard" / "runs")
    assert record["status"] == "completed" and record["metrics"]["test_examples"] == 3
    raw = loaded(ListOps, tmp_path / "d")
    assert record["protocol"]["data_fingerprint"] == raw.fingerprint
    assert not (tmp_path / "d" / ".cache").exists()

    monkeypatch.setattr(cache, "setup", original)
    cfg = {"task": {"name": "listops"}, "data_dir": str(tmp_path / "d"), "seed": 0}
    data = train.build_data(cfg)
    assert builds == ["listops", "listops"] and len(keys(tmp_path / "d")) == 1
    assert data.fingerprint == raw.fingerprint


def test_info_prints_sizes_lengths_label_balance_and_sources(lra, tmp_path):
    folder = write_listops_release(tmp_path / "d")
    result = lra("data", "info", "listops", "--data-dir", "d")
    assert result.code == 0, result.err
    rows = [line.split() for line in result.out.splitlines()]
    # train: [MAX 2 9 ] [SM 7 8 9 ] [MIN 3 1 ] -> lengths 4 5 4, labels 9 4 1; val: 4, label 1;
    # test: three of length 4, labels 9 9 0
    assert ["train", "3", "4", "4.3", "4.0", "5", "1", "(33.3%)"] in rows
    assert ["val", "1", "4", "4.0", "4.0", "4", "1", "(100.0%)"] in rows
    assert ["test", "3", "4", "4.0", "4.0", "4", "9", "(66.7%)"] in rows
    assert ["9", "1", "(33.3%)", "0", "(0.0%)", "2", "(66.7%)"] in rows
    assert ["0", "0", "(0.0%)", "0", "(0.0%)", "1", "(33.3%)"] in rows
    size = sum((folder / f"basic_{s}.tsv").stat().st_size for s in SPLITS)
    assert f"from 3 files ({size / 1e6:.1f} MB) under {folder.resolve()}" in result.out
    assert f"fingerprint {loaded(ListOps, tmp_path / 'd').fingerprint}" in result.out


def test_prepare_and_info_of_a_generated_task(lra):
    result = lra("data", "prepare", "listops_mini")
    assert result.code == 0
    assert "generated in memory" in result.out and "nothing to prepare" in result.out
    sizes = ["task.n_train=50", "task.n_val=20", "task.n_test=30"]
    result = lra("data", "info", "listops_mini", *sizes)
    assert result.code == 0, result.err
    rows = [line.split() for line in result.out.splitlines()]
    assert [row[:2] for row in rows if row[:1] in (["train"], ["val"], ["test"])] == [
        ["train", "50"], ["val", "20"], ["test", "30"]]


@pytest.mark.parametrize("task, generator", [("listops", "listops"), ("pathfinder", "pathfinder"),
                                             ("pathx", "pathx")])
def test_prepare_without_data_names_the_generator(lra, task, generator):
    result = lra("data", "prepare", task, "--data-dir", "empty")
    assert result.code == 2 and "Traceback" not in result.err
    assert f"lra data generate {generator}" in result.err and "lra_release.gz" in result.err


def test_prepare_refuses_unknown_tasks_and_options(lra):
    assert "unknown task 'nope'; available: " in lra("data", "prepare", "nope").err
    result = lra("data", "prepare", "listops", "task.nope=1")
    assert result.code == 2 and "bad override" in result.err
