"""Text (IMDb bytes) and Retrieval (AAN pairs): encodings, both IMDb layouts, splits, files,
batches."""
import re
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from helpers import assert_eval_loaders_keep_every_example, loaded, task_from_yaml
from writers import (
    AAN_PAIRS,
    IMDB_TEST,
    IMDB_TRAIN,
    aan_doc,
    write_aan_pairs,
    write_aclimdb,
    write_imdb_parquet,
)

from lra.errors import UserError
from lra.tasks.base import DataError, collate
from lra.tasks.text import Retrieval, Text, encode


def text(root, **options):
    return loaded(Text, root, **options)


def retrieval(root, **options):
    return loaded(Retrieval, root, **options)


def as_bytes(ds):
    return sorted((bytes((x - 1).astype(np.uint8)), int(y)) for x, y in zip(ds.inputs, ds.targets))


def test_encode_known_strings():
    hi, cafe, cut = encode([b"Hi!", "caf\u00e9".encode(), b"abcdef"], max_len=5)
    assert hi.tolist() == [73, 106, 34] and hi.dtype == np.uint8
    assert cafe.tolist() == [100, 98, 103, 196, 170]  # c a f, then U+00E9 as 0xC3 0xA9
    assert cut.tolist() == [98, 99, 100, 101, 102]
    # bytes, not characters
    assert encode(["caf\u00e9".encode()], max_len=4)[0].tolist() == [100, 98, 103, 196]
    tab, high = encode([b"\t", b"\x00\xff"], max_len=10)  # 0xFF cannot be uint8 + 1
    assert tab.tolist() == [10] and high.tolist() == [1, 256] and high.dtype == np.int16


# --- Text ----------------------------------------------------------------------------------

def test_both_imdb_layouts_give_the_same_examples(tmp_path):
    write_aclimdb(tmp_path / "a" / "lra_release" / "lra_release")
    write_imdb_parquet(tmp_path / "b" / "imdb", shards=2)
    folder, parquet = text(tmp_path / "a"), text(tmp_path / "b")
    assert (folder.num_classes, folder.seq_len, folder.vocab_size, folder.input_kind,
            folder.dual) == (2, 4096, 257, "tokens", False)
    assert (folder.protocol["source"], parquet.protocol["source"]) == ("aclImdb", "parquet")
    assert folder.protocol["files"] == str(tmp_path / "a/lra_release/lra_release/aclImdb")
    assert len(parquet.protocol["files"]["train"]) == 2
    for split in ("train", "val", "test"):
        a, b = folder.splits[split], parquet.splits[split]
        assert a.targets.tolist() == b.targets.tolist()
        assert all(np.array_equal(x, y) for x, y in zip(a.inputs, b.inputs))
    assert folder.fingerprint == parquet.fingerprint  # same examples, same recipe
    # Test is sorted by (label, bytes): negatives first.
    test = folder.splits["test"]
    assert test.targets.tolist() == [0, 0, 0, 1, 1]
    assert test.inputs[0].tolist() == [b + 1 for b in b"Awful. Just awful."]
    assert as_bytes(test) == sorted((r.encode(), y) for r, y, _ in IMDB_TEST)
    assert folder.majority_rate == pytest.approx(3 / 5)


def test_heldout_split_is_disjoint_seeded_and_recorded(tmp_path):
    write_aclimdb(tmp_path)
    data = text(tmp_path)
    train, val = data.splits["train"], data.splits["val"]
    assert [len(data.splits[s]) for s in ("train", "val", "test")] == [18, 2, 5]
    reviews = sorted((r.encode(), y) for r, y, _ in IMDB_TRAIN)
    assert sorted(as_bytes(train) + as_bytes(val)) == reviews
    assert not set(as_bytes(train)) & set(as_bytes(val))
    assert data.protocol["validation"] == "heldout" and data.protocol["split_seed"] == 0
    assert data.protocol["val_fraction"] == 0.1
    assert data.protocol["sizes"] == {"train": 18, "val": 2, "test": 5}

    # the run's seed orders only
    assert as_bytes(text(tmp_path, seed=5).splits["val"]) == as_bytes(val)
    others = [as_bytes(text(tmp_path, split_seed=s).splits["val"]) for s in (1, 2, 3)]
    assert any(v != as_bytes(val) for v in others)
    other = text(tmp_path, split_seed=1)
    assert other.fingerprint != data.fingerprint and other.protocol["split_seed"] == 1
    assert len(text(tmp_path, val_fraction=0.25).splits["val"]) == 5


def test_published_protocol_validates_on_test(tmp_path):
    write_aclimdb(tmp_path)
    data = text(tmp_path, protocol="published")
    assert data.splits["val"] is data.splits["test"]
    assert [len(data.splits[s]) for s in ("train", "val", "test")] == [20, 5, 5]
    assert data.protocol["validation"] == "published"
    assert data.fingerprint != text(tmp_path).fingerprint
    assert data.fingerprint == text(tmp_path, protocol="published", split_seed=3).fingerprint
    assert "split_seed" not in data.protocol
    with pytest.raises(UserError, match="heldout .* or published"):
        Text(protocol="test")


def test_text_truncates_at_max_len(tmp_path):
    write_aclimdb(tmp_path)
    data = text(tmp_path, max_len=6)
    assert max(len(x) for x in data.splits["train"].inputs) == 6 and data.seq_len == 6
    assert sorted(len(x) for x in data.splits["test"].inputs) == [3, 6, 6, 6, 6]


def test_eos_ends_every_document_and_counts_in_max_len(tmp_path):
    write_aclimdb(tmp_path)
    write_aan_pairs(tmp_path)
    for data in (text(tmp_path, append_eos=True, max_len=6),
                 retrieval(tmp_path, append_eos=True, max_len=6)):
        recorded = data.protocol.get("vocabulary", data.protocol)["vocab_size"]
        assert data.vocab_size == 258 == recorded
        for split in ("train", "val", "test"):
            ds = data.splits[split]
            for x in [*ds.inputs, *(ds.inputs2 if ds.inputs2 is not None else [])]:
                assert x[-1] == 257 and 257 not in x[:-1].tolist() and 2 <= len(x) <= 6
    plain, eos = text(tmp_path), text(tmp_path, append_eos=True)
    assert [x.tolist() for x in eos.splits["test"].inputs] == \
        [x.tolist() + [257] for x in plain.splits["test"].inputs]
    assert eos.fingerprint != plain.fingerprint
    with pytest.raises(UserError, match="max_len=1 leaves no room"):
        Retrieval(append_eos=True, max_len=1)


def test_character_vocabulary_is_counted_on_train(tmp_path):
    write_aclimdb(tmp_path)
    data = text(tmp_path, tokens="chars", min_char_count=15, append_eos=True,
                protocol="published")
    counts = Counter("".join(review for review, _, _ in IMDB_TRAIN))
    kept = sorted((c for c in counts if counts[c] >= 15), key=lambda c: (-counts[c], c))
    vocabulary = data.protocol["vocabulary"]
    assert vocabulary == {"vocab_size": 3 + len(kept), "first_char_id": 3, "chars": "".join(kept)}
    assert data.vocab_size == 3 + len(kept) and "\u00e9" in kept  # 'e' acute: 20 times
    ids = {c: 3 + i for i, c in enumerate(kept)}
    for x, y in zip(data.splits["test"].inputs, data.splits["test"].targets):
        review = next(r for r, label, _ in IMDB_TEST
                      if [ids.get(c, 1) for c in r] + [2] == x.tolist() and label == y)
        assert "\u2014" not in review or 1 in x.tolist()  # an em dash only in test: <unk>
    assert x.dtype == np.uint8

    heldout = text(tmp_path, tokens="chars", val_fraction=0.5)  # counted on the half trained on
    seen = set(heldout.protocol["vocabulary"]["chars"])
    first = heldout.protocol["vocabulary"]["first_char_id"]
    trained = ["".join(heldout.protocol["vocabulary"]["chars"][i - first] for i in x)
               for x in heldout.splits["train"].inputs]
    assert set("".join(trained)) == seen and set(trained) < {r for r, _, _ in IMDB_TRAIN}
    assert len({data.fingerprint, heldout.fingerprint, text(tmp_path).fingerprint}) == 3
    with pytest.raises(DataError, match="no character is seen 9999 times"):
        text(tmp_path, tokens="chars", min_char_count=9999)
    with pytest.raises(UserError, match="bytes .* or chars"):
        Text(tokens="words")


def test_text_fingerprint_follows_the_files(tmp_path):
    folder = write_aclimdb(tmp_path)
    before = text(tmp_path).fingerprint
    assert text(tmp_path).fingerprint == before
    (folder / "test" / "pos" / "0_10.txt").write_bytes(b"Loved it!!")
    assert text(tmp_path).fingerprint != before


def test_text_rejects_malformed_files(tmp_path):
    folder = write_aclimdb(tmp_path / "a")
    (folder / "train" / "neg" / "3_2.txt").write_bytes(b"caf\xe9")  # Latin-1, not UTF-8
    latin = folder / "train" / "neg" / "3_2.txt"
    with pytest.raises(DataError, match=re.escape(str(latin)) + ": not UTF-8"):
        text(tmp_path / "a")

    plain = tmp_path / "b" / "plain_text"
    plain.mkdir(parents=True)
    shard = plain / "train-00000-of-00001.parquet"
    pq.write_table(pa.table({"review": ["x"], "label": [0]}), shard)
    why = r"train-00000-of-00001.parquet: columns \[.review., .label.\], not text and label"
    with pytest.raises(DataError, match=why):
        text(tmp_path / "b")
    pq.write_table(pa.table({"text": ["x"], "label": [-1]}), shard)
    with pytest.raises(DataError, match=r"label 0 or 1; found labels \[-1\]"):
        text(tmp_path / "b")


def test_text_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as err:
        text(tmp_path / "nowhere")
    message = str(err.value)
    assert str((tmp_path / "nowhere").resolve()) in message
    for part in ("aclImdb/train/pos/*.txt", "plain_text/train-*.parquet", "<id>_<rating>.txt",
                 "aclImdb_v1.tar.gz", "stanfordnlp/imdb", "LRA_DATA"):
        assert part in message


# --- Retrieval -----------------------------------------------------------------------------

def test_retrieval_reads_the_released_format(tmp_path):
    folder = write_aan_pairs(tmp_path)
    data = retrieval(tmp_path)
    assert (data.num_classes, data.seq_len, data.vocab_size, data.dual) == (2, 4000, 257, True)
    train = data.splits["train"]
    assert train.targets.tolist() == [1, 0, 1, 0]
    document = aan_doc("Parsing with CCG.\nWe cite Smith.").encode()
    assert train.inputs[1].tolist() == [b + 1 for b in document]
    assert train.inputs2[1].tolist() == [b + 1 for b in b"b'Penn Treebank'"]
    assert [len(data.splits[s]) for s in ("train", "val", "test")] == [4, 3, 3]
    assert data.protocol["files"]["val"] == str(folder / "new_aan_pairs.eval.tsv")
    assert data.majority_rate == pytest.approx(2 / 3)
    assert [len(x) for x in retrieval(tmp_path, max_len=5).splits["val"].inputs] == [5, 5, 5]


def test_dual_batch_through_collate(tmp_path):
    write_aan_pairs(tmp_path)
    data = retrieval(tmp_path)
    examples = [data.splits["train"][i] for i in range(4)]
    batch = collate(examples)
    for key in ("inputs", "mask", "lengths", "inputs2", "mask2", "lengths2", "target"):
        assert key in batch
    longest = max(len(e["inputs"]) for e in examples)
    assert batch["inputs"].shape == batch["mask"].shape == (4, longest)
    assert batch["inputs2"].shape == (4, max(len(e["inputs2"]) for e in examples))
    assert batch["inputs2"].dtype == torch.long and batch["mask2"].dtype == torch.bool
    assert torch.equal(batch["mask2"].sum(1), batch["lengths2"])
    assert not batch["inputs2"][~batch["mask2"]].any()
    seconds = ("Smith 2004", "Penn Treebank", "BLEU: a method", "x")
    assert batch["lengths2"].tolist() == [len(aan_doc(t).encode()) for t in seconds]
    assert batch["target"].tolist() == [1, 0, 1, 0]


@pytest.mark.parametrize("line, why", [
    ("1.0\tA\tB\t" + aan_doc("ab"),
     "expected 5 tab-separated columns (label, id1, id2, text1, text2), found 4"),
    ("1.0\tA\tB\tb'a'\tb'b'\tb'c'", "found 6"),
    ("2\tA\tB\tb'a'\tb'b'", "label '2' is not 0 or 1"),
    ("yes\tA\tB\tb'a'\tb'b'", "label 'yes' is not 0 or 1"),
    ("0.0\tA\tB\t\tb'b'", "empty document in column 4"),
    ("0.0\tA\tB\tb'a'\t", "empty document in column 5"),
])
def test_malformed_retrieval_line_names_file_and_line(tmp_path, line, why):
    write_aan_pairs(tmp_path, train=[AAN_PAIRS["train"][0], line])
    with pytest.raises(DataError, match=f"new_aan_pairs.train.tsv:2: .*{re.escape(why)}"):
        retrieval(tmp_path)


def test_retrieval_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as err:
        retrieval(tmp_path / "nowhere")
    message = str(err.value)
    assert str((tmp_path / "nowhere").resolve()) in message
    for part in ("new_aan_pairs.train.tsv", "label<TAB>id1<TAB>id2<TAB>text1<TAB>text2",
                 "lra_release.gz", "tsv_data", "LRA_DATA"):
        assert part in message
    folder = write_aan_pairs(tmp_path / "some")
    (folder / "new_aan_pairs.eval.tsv").unlink()
    with pytest.raises(DataError, match="but no new_aan_pairs.eval.tsv beside it"):
        retrieval(tmp_path / "some")


def test_retrieval_fingerprint_follows_the_files(tmp_path):
    folder = write_aan_pairs(tmp_path)
    before = retrieval(tmp_path).fingerprint
    assert retrieval(tmp_path).fingerprint == before and len(before) == 64
    assert retrieval(tmp_path, max_len=100).fingerprint != before
    path = folder / "new_aan_pairs.test.tsv"
    path.write_bytes(path.read_bytes().replace(b"1.0\tE", b"1\tE"))
    assert retrieval(tmp_path).fingerprint != before


# --- both ----------------------------------------------------------------------------------

def test_eval_loaders_keep_every_example(tmp_path):
    write_aclimdb(tmp_path)
    write_aan_pairs(tmp_path)
    for data in (text(tmp_path, batch_size=2), text(tmp_path, batch_size=2, protocol="published"),
                 retrieval(tmp_path, batch_size=2)):
        assert_eval_loaders_keep_every_example(data, 2)  # text's 5 test reviews: a partial batch


def test_yaml_options_build_the_modules():
    for name, cls in (("text", Text), ("retrieval", Retrieval)):
        task_from_yaml(name, cls)
