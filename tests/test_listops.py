"""ListOps: operator semantics, the released string format, the generator, the loader and
batches."""
import itertools
import re

import numpy as np
import pytest
import torch
from helpers import assert_eval_loaders_keep_every_example, loaded, task_from_yaml
from writers import write_listops_release

from lra.generators.listops import TreeSpec, prepare_listops, samples
from lra.tasks.base import DataError
from lra.tasks.listops import EOS, VOCAB, ListOps, ListOpsMini, evaluate, tokenize

SMALL = TreeSpec(max_depth=4, min_args=2, max_args=5, min_length=10, max_length=100)


def ids(text):
    return [VOCAB.index(t) for t in text.split()]


# A plain recursive reader and writer of the original's binary nesting, to check the generator's
# vectorised output against: MAX(2, 9) is `( ( ( [MAX 2 ) 9 ) ] )`.
def render(tree):
    if isinstance(tree, int):
        return str(tree)
    op, args = tree
    text = f"( {op} {render(args[0])} )"
    for arg in args[1:]:
        text = f"( {text} {render(arg)} )"
    return f"( {text} ] )"


def parse(words):
    if words[0].isdigit():
        return int(words.pop(0))
    opened = 0
    while words[0] == "(":
        opened += 1
        words.pop(0)
    op, args = words.pop(0), []
    for _ in range(opened - 1):
        args.append(parse(words))
        assert words.pop(0) == ")"
    assert words[:2] == ["]", ")"]
    del words[:2]
    return op, args


@pytest.mark.parametrize("text, value", [
    ("[MIN 4 1 7 ]", 1),
    ("[MAX 4 1 7 ]", 7),
    ("[MED 3 1 2 ]", 2),
    ("[MED 1 2 3 4 ]", 2),  # int(median) of an even count: int(2.5)
    ("[MED 0 9 ]", 4),
    ("[SM 7 8 9 ]", 4),  # 24 mod 10
    ("[MIN 4 [MAX 2 9 ] 5 ]", 4),
    ("[SM [MED 1 2 3 4 ] [MAX 9 1 ] [MIN 3 [SM 5 5 ] ] ]", 1),  # 2 + 9 + 0
])
def test_operators(text, value):
    assert evaluate(ids(text)) == value


def test_tokenize_published_line():
    line = b"( ( ( [MAX 2 ) ( ( ( [SM 7 ) 8 ) ] ) ) ] )"
    assert tokenize(line).tolist() == ids("[MAX 2 [SM 7 8 ] ]") == [2, 8, 4, 13, 14, 5, 5]
    assert render(parse(line.decode().split())) == line.decode()
    assert evaluate(tokenize(line)) == 5


@pytest.mark.parametrize("spec", [SMALL, TreeSpec()], ids=["small", "lra"])
def test_generated_lines_round_trip(spec):
    for line in itertools.islice(samples(spec, seed=1), 150):
        source, target = line.decode().split("\t")
        assert render(parse(source.split())) == source  # the original's exact nesting
        tokens = tokenize(source.encode())
        assert spec.min_length < len(tokens) < spec.max_length
        assert evaluate(tokens) == int(target)


def test_prepare_is_seeded_unique_and_atomic(tmp_path):
    kwargs = dict(n_train=300, n_val=60, n_test=60, min_length=20, max_length=200, progress=False)
    settings = [("a", 3, 1), ("b", 3, 1), ("c", 3, 2), ("d", 4, 1)]
    runs = {name: prepare_listops(tmp_path / name, seed=seed, workers=workers, **kwargs)
            for name, seed, workers in settings}
    files = {name: [(out / f"basic_{s}.tsv").read_bytes() for s in ("train", "val", "test")]
             for name, out in runs.items()}
    assert files["a"] == files["b"] == files["c"]  # same seed, any number of workers
    assert files["a"] != files["d"]
    names = [f"basic_{s}.tsv" for s in ("test", "train", "val")]
    assert sorted(p.name for p in runs["a"].iterdir()) == names
    lines = [data.split(b"\r\n") for data in files["a"]]
    assert all(part[0] == b"Source\tTarget" and part[-1] == b"" for part in lines)
    sources = [[row.split(b"\t")[0] for row in part[1:-1]] for part in lines]
    assert [len(s) for s in sources] == [300, 60, 60]
    assert len(set(itertools.chain(*sources))) == 420  # distinct within and across splits
    assert all(20 < len(tokenize(s)) < 200 for s in itertools.chain(*sources))


@pytest.mark.parametrize("where", ["listops", "lra_release/lra_release/listops-1000"])
def test_loader_reads_the_released_format(tmp_path, where):
    folder = write_listops_release(tmp_path, where)
    data = ListOps(data_dir=str(tmp_path), seed=0)
    assert (data.num_classes, data.seq_len, data.vocab_size, data.input_kind, data.dual) == \
        (10, 2000, 16, "tokens", False)
    data.setup()
    train = data.splits["train"]
    assert train.inputs[0].tolist() == ids("[MAX 2 9 ]") and train.targets.tolist() == [9, 4, 1]
    assert [len(data.splits[s]) for s in ("train", "val", "test")] == [3, 1, 3]
    assert data.majority_rate == pytest.approx(2 / 3)
    assert data.protocol["files"]["train"] == str(folder / "basic_train.tsv")
    assert len(data.fingerprint) == 64
    splits = data.splits
    data.setup()
    assert data.splits is splits  # setup is idempotent

    val = folder / "basic_val.tsv"
    val.write_bytes(val.read_bytes().replace(b"\t1", b"\t2"))
    assert loaded(ListOps, tmp_path).fingerprint != data.fingerprint


def test_loader_truncates_at_max_len(tmp_path):
    write_listops_release(tmp_path)
    data = loaded(ListOps, tmp_path, max_len=3)
    assert [len(x) for x in data.splits["train"].inputs] == [3, 3, 3]


def test_eos_and_closing_brackets_follow_the_references(tmp_path):
    write_listops_release(tmp_path)
    plain = loaded(ListOps, tmp_path)
    eos = loaded(ListOps, tmp_path, append_eos=True)  # state-spaces/s4: append_eos True
    assert (plain.vocab_size, eos.vocab_size) == (16, 17)
    assert eos.splits["train"].inputs[0].tolist() == ids("[MAX 2 9 ]") + [EOS] == \
        [2, 8, 15, 5, 16]
    assert all(x[-1] == EOS and EOS not in x[:-1] for x in eos.splits["test"].inputs)
    cut = loaded(ListOps, tmp_path, append_eos=True, max_len=3)  # the EOS counts in max_len
    assert cut.splits["train"].inputs[0].tolist() == ids("[MAX 2") + [EOS]
    lra = loaded(ListOps, tmp_path, keep_closing_brackets=False)  # LRA's alphanumeric tokens
    assert lra.splits["train"].inputs[1].tolist() == ids("[SM 7 8 9") and lra.vocab_size == 16
    fingerprints = {d.fingerprint for d in (plain, eos, cut, lra)}
    assert len(fingerprints) == 4
    assert (eos.protocol["append_eos"], lra.protocol["keep_closing_brackets"]) == (True, False)
    assert eos.protocol["vocab_size"] == 17
    with pytest.raises(DataError, match="max_len=1 leaves no room"):
        ListOps(append_eos=True, max_len=1)


@pytest.mark.parametrize("row, why", [
    ("( ( ( [MAX 2 ) 9 ) ] )", "2 tab-separated columns"),
    ("( ( ( [MAX 2 ) 9 ) ] )\t9\t1", "2 tab-separated columns"),
    ("( ( ( [MAX 2 ) 12 ) ] )\t9", "unknown token '12'"),
    ("( ( ( [FOO 2 ) 9 ) ] )\t9", "unknown token '[FOO'"),
    ("( ( ( [MAX 2 ) 9 ) ] )\tnine", "not an integer in 0-9"),
    ("( ( ( [MAX 2 ) 9 ) ] )\t10", "not an integer in 0-9"),
])
def test_malformed_line_names_file_and_line(tmp_path, row, why):
    write_listops_release(tmp_path, train_rows=["( ( ( [MAX 2 ) 9 ) ] )\t9", row])
    with pytest.raises(DataError, match=f"basic_train.tsv:3: .*{re.escape(why)}"):
        ListOps(data_dir=str(tmp_path)).setup()


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as err:
        ListOps(data_dir=str(tmp_path / "nowhere")).setup()
    message = str(err.value)
    assert "basic_train.tsv" in message and str((tmp_path / "nowhere").resolve()) in message
    for part in ("lra data generate listops", "lra_release.gz", "LRA_DATA"):
        assert part in message


def mini(**kwargs):
    data = ListOpsMini(**{"n_train": 200, "n_val": 37, "n_test": 37, "batch_size": 8, **kwargs})
    data.setup()
    return data


def test_mini_is_generated_from_its_own_seed():
    a, b, c = mini(seed=0), mini(seed=1), mini(data_seed=1)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert a.protocol["source"] == "generated"
    assert a.protocol["sizes"] == {"train": 200, "val": 37, "test": 37}
    for split in ("train", "val", "test"):
        for x, y in zip(a.splits[split].inputs, a.splits[split].targets):
            assert evaluate(x) == y and 10 < len(x) < 100


def test_yaml_options_build_the_modules():
    for name, cls in (("listops", ListOps), ("listops_mini", ListOpsMini)):
        task_from_yaml(name, cls)


def test_eval_loaders_keep_every_example_in_order():
    data = mini()
    assert (len(data.splits["val"]), len(data.splits["test"])) == (37, 37)
    assert_eval_loaders_keep_every_example(data, 8)


def test_train_shuffle_is_repeatable():
    def order(seed):
        return [b["target"].tolist() for b in mini(seed=seed).train_dataloader()]

    assert order(0) == order(0) != order(1)
    assert sorted(itertools.chain(*order(0))) == sorted(mini().splits["train"].targets.tolist())


def test_batches_are_padded_and_masked():
    data = mini()
    batch = next(iter(data.test_dataloader()))
    inputs, mask, lengths = batch["inputs"], batch["mask"], batch["lengths"]
    assert inputs.dtype == torch.long and mask.dtype == torch.bool and lengths.dtype == torch.long
    assert inputs.shape == mask.shape == (8, int(lengths.max()))
    assert torch.equal(mask.sum(1), lengths)
    assert not inputs[~mask].any() and (inputs[mask] > 0).all()
    for row, n, x in zip(inputs, lengths, data.splits["test"].inputs[:8]):
        assert row[:n].tolist() == x.tolist()
    assert np.array_equal(batch["target"].numpy(), data.splits["test"].targets[:8])
