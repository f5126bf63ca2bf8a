"""Pathfinder / Path-X: the release layout (both metadata formats) and splits (the generator:
test_pathfinder_generator.py)."""
import numpy as np
import pytest
import torch
from helpers import loaded, task_from_yaml
from writers import write_pathfinder_release

from lra.tasks.base import DataError
from lra.tasks.pathfinder import Pathfinder, PathX, split_indices


@pytest.mark.parametrize("binary", [(), (1,)], ids=["text", "np.save"])
def test_loader_reads_the_release_layout(tmp_path, binary):
    leaf = write_pathfinder_release(tmp_path, binary=binary)
    data = loaded(Pathfinder, tmp_path)
    assert (data.num_classes, data.seq_len, data.vocab_size, data.input_kind, data.dual) == \
        (2, 1024, 257, "tokens", False)
    sizes = {s: len(data.splits[s]) for s in ("train", "val", "test")}
    assert sizes == {"train": 16, "val": 2, "test": 2} == data.protocol["sizes"]
    seen = []
    for split in ("train", "val", "test"):
        ds = data.splits[split]
        for i in range(len(ds)):
            x = ds[i]["inputs"]
            k = int(x[0]) - 1  # pixel + 1
            assert x.shape == (1024,) and x[-1] == 256 and x[1:-1].max() == 1
            assert ds[i]["target"] == k % 2
            seen.append(k)
    assert sorted(seen) == list(range(20))  # every image once, splits disjoint
    assert data.protocol["folder"] == str(leaf) and data.protocol["skipped"] == 0
    assert len(data.fingerprint) == 64
    again = loaded(Pathfinder, tmp_path)
    assert again.fingerprint == data.fingerprint
    assert np.array_equal(again.splits["test"].inputs, data.splits["test"].inputs)  # same split


def test_both_metadata_formats_read_alike(tmp_path):
    write_pathfinder_release(tmp_path / "a")
    write_pathfinder_release(tmp_path / "b", binary=(0, 1))
    a, b = loaded(Pathfinder, tmp_path / "a"), loaded(Pathfinder, tmp_path / "b")
    for split in ("train", "val", "test"):
        assert np.array_equal(a.splits[split].inputs, b.splits[split].inputs)
        assert np.array_equal(a.splits[split].targets, b.splits[split].targets)


def test_empty_image_is_skipped_with_a_warning(tmp_path):
    write_pathfinder_release(tmp_path, empty={(1, 3)})
    with pytest.warns(UserWarning, match=r"skipping .*imgs/1/sample_3\.png"):
        data = loaded(Pathfinder, tmp_path)
    assert data.protocol["skipped"] == 1 and data.protocol["images"] == 20
    assert sum(len(data.splits[s]) for s in ("train", "val", "test")) == 19


def test_split_is_seeded_and_matches_random_split():
    train, val, test = split_indices(1000, 42)
    assert (len(train), len(val), len(test)) == (800, 100, 100)
    assert len(np.unique(np.concatenate([train, val, test]))) == 1000
    generator = torch.Generator().manual_seed(42)
    parts = torch.utils.data.random_split(range(1000), [800, 100, 100], generator=generator)
    assert [list(p.indices) for p in parts] == [train.tolist(), val.tolist(), test.tolist()]
    assert not np.array_equal(split_indices(1000, 43)[2], test)


def test_continuous_encoding_and_batches(tmp_path):
    write_pathfinder_release(tmp_path)
    data = loaded(Pathfinder, tmp_path, encoding="continuous", batch_size=4)
    assert (data.input_kind, data.d_input) == ("continuous", 1)
    batches = list(data.test_dataloader())
    assert sum(len(b["target"]) for b in batches) == 2  # no drop_last
    x = batches[0]["inputs"]
    assert x.dtype == torch.float32 and x.shape == (2, 1024, 1)
    assert x[:, -1, 0].tolist() == [1.0, 1.0] and x[:, 1, 0].tolist() == [-1.0, -1.0]
    assert batches[0]["mask"].all()


def test_continuous_unit_encoding_keeps_pixels_in_0_1_and_names_itself(tmp_path):
    """V4's `center: False`: p / 255, the centred encoding's (x + 1) / 2; the data fingerprint
    and protocol tell the two apart."""
    write_pathfinder_release(tmp_path)
    unit = loaded(Pathfinder, tmp_path, encoding="continuous_unit")
    centred = loaded(Pathfinder, tmp_path, encoding="continuous")
    assert unit.input_kind == "continuous" and unit.d_input == 1
    x, y = unit.splits["test"][0]["inputs"], centred.splits["test"][0]["inputs"]
    np.testing.assert_allclose(x, (y + 1) / 2, atol=1e-7)
    assert x.min() == 0.0 and x.max() == 1.0
    assert unit.fingerprint != centred.fingerprint
    assert unit.protocol["tokenization"] == "pixel p -> p / 255, one channel"


def test_pathx_reads_128px(tmp_path):
    write_pathfinder_release(tmp_path, n_batches=1, per_batch=10, resolution=128,
                             where="lra_release")
    data = loaded(PathX, tmp_path)
    assert data.seq_len == 16384 and data.splits["train"][0]["inputs"].shape == (16384,)
    with pytest.raises(DataError, match="pathfinder32 images are 32x32"):
        (tmp_path / "lra_release/pathfinder128").rename(tmp_path / "lra_release/pathfinder32")
        loaded(Pathfinder, tmp_path)


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as err:
        loaded(Pathfinder, tmp_path / "nowhere")
    message = str(err.value)
    for part in (str((tmp_path / "nowhere").resolve()), "pathfinder32/curv_contour_length_14",
                 "lra data generate pathfinder", "lra_release.gz", "metadata/<b>.npy"):
        assert part in message


def test_yaml_options_build_the_modules():
    for name, cls in (("pathfinder", Pathfinder), ("pathx", PathX)):
        data = task_from_yaml(name, cls)
        assert data.seq_len == {"pathfinder": 1024, "pathx": 16384}[name]
