"""CIFAR-10 tasks (image, scifar): the python-pickle format, grayscale, the split, encodings,
batches."""
import pickle
import re

import numpy as np
import pytest
import torch
from helpers import assert_eval_loaders_keep_every_example, loaded, task_from_yaml
from writers import write_cifar_batch, write_cifar_release

from lra.tasks.base import DataError
from lra.tasks.image import CLASSES, SCIFAR, Image, grayscale


def cifar(cls, root, **options):
    return loaded(cls, root, **{"val_size": 10, "batch_size": 8, **options})


def test_grayscale_of_known_pixels():
    # columns: black, white, red, green, blue, mid gray, (10, 200, 30)
    rgb = np.array([[[0, 255, 255, 0, 0, 128, 10],
                     [0, 255, 0, 255, 0, 128, 200],
                     [0, 255, 0, 0, 255, 128, 30]]], dtype=np.uint8)  # (1, 3, 7)
    # trunc(255.5 * sum(w * p) / 255): red 76.37, green 149.98, blue 29.13, (10, 200, 30) 124.05
    assert grayscale(rgb).tolist() == [[0, 255, 76, 149, 29, 128, 124]]


def test_grayscale_matches_tensorflow_arithmetic_in_double():
    rgb = np.random.default_rng(1).integers(0, 256, (50, 3, 1024), dtype=np.uint8)
    weights = [0.2989, 0.5870, 0.1140]
    exact = np.floor(255.5 * np.tensordot(weights, rgb / 255, axes=(0, 1)))  # (50, 1024)
    gray = grayscale(rgb)
    assert gray.dtype == np.uint8 and gray.shape == (50, 1024)
    assert np.abs(gray - exact).max() <= 1 and (gray == exact).mean() > 0.999


@pytest.mark.parametrize("where", ["cifar-10-batches-py", "downloads/cifar/cifar-10-batches-py"])
def test_image_reads_the_python_pickles(tmp_path, where):
    written = write_cifar_release(tmp_path, where)
    data = cifar(Image, tmp_path)
    assert (data.num_classes, data.seq_len, data.input_kind, data.vocab_size, data.dual) == \
        (10, 1024, "tokens", 257, False)
    assert [len(data.splits[s]) for s in ("train", "val", "test")] == [90, 10, 20]
    test_data, test_labels = written["test_batch"]
    test = data.splits["test"]
    gray = grayscale(test_data.reshape(-1, 3, 1024)).astype(np.int64)
    assert np.array_equal(test.inputs, gray + 1)
    assert test.targets.tolist() == test_labels.tolist()
    assert data.protocol["files"][-1] == str(tmp_path / where / "test_batch")
    assert data.protocol["classes"] == list(CLASSES) and data.protocol["split_seed"] == 42
    assert len(data.fingerprint) == 64 and data.majority_rate == pytest.approx(0.1)


def test_planes_are_red_green_blue_in_row_major_order(tmp_path):
    written = write_cifar_release(tmp_path)
    data, labels = written["test_batch"]
    data[0] = 0
    data[0, 1] = 255            # red at row 0, column 1
    data[0, 1024 + 32] = 255    # green at row 1, column 0
    data[0, 2048 + 1023] = 255  # blue at the last pixel
    write_cifar_batch(tmp_path / "cifar-10-batches-py" / "test_batch", data, labels, "test_batch")
    gray = cifar(Image, tmp_path).splits["test"].inputs[0] - 1
    assert (gray[1], gray[32], gray[1023]) == (76, 149, 29) and gray.sum() == 76 + 149 + 29
    rgb = cifar(SCIFAR, tmp_path).splits["test"].inputs[0]  # (1024, 3) raw levels
    assert rgb[1].tolist() == [255, 0, 0] and rgb[32].tolist() == [0, 255, 0]
    assert rgb[1023].tolist() == [0, 0, 255]


def test_split_is_seeded_disjoint_and_whole(tmp_path):
    written = write_cifar_release(tmp_path)
    train_images = np.concatenate([written[f"data_batch_{k}"][0] for k in range(1, 6)])
    gray = grayscale(train_images.reshape(-1, 3, 1024)).astype(np.int64) + 1
    a, b = cifar(Image, tmp_path), cifar(Image, tmp_path, seed=5)
    c = cifar(Image, tmp_path, split_seed=7)
    rows = {tuple(x) for x in gray}
    assert len(rows) == 100
    for data in (a, b, c):
        train = {tuple(x) for x in data.splits["train"].inputs}
        val = {tuple(x) for x in data.splits["val"].inputs}
        assert len(train) == 90 and len(val) == 10 and not train & val and train | val == rows
    # the run's seed orders training only
    assert np.array_equal(a.splits["val"].inputs, b.splits["val"].inputs)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert not np.array_equal(a.splits["val"].inputs, c.splits["val"].inputs)


def test_real_encoding_standardises_with_train_statistics(tmp_path):
    written = write_cifar_release(tmp_path)
    data = cifar(Image, tmp_path, encoding="real")
    assert (data.input_kind, data.d_input) == ("continuous", 1)
    train = data.splits["train"].inputs.astype(np.float64)
    mean, std = data.protocol["encoding"]["mean"], data.protocol["encoding"]["std"]
    assert mean == pytest.approx([train.mean()]) and std == pytest.approx([train.std()])
    x = data.splits["test"][0]["inputs"]
    raw = grayscale(written["test_batch"][0][:1].reshape(1, 3, 1024))[0]
    assert x.dtype == np.float32 and x.shape == (1024, 1)
    np.testing.assert_allclose(x[:, 0], (raw - mean[0]) / std[0], rtol=1e-5, atol=1e-5)

    test_data, labels = written["test_batch"]
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    write_cifar_batch(path, 255 - test_data, labels, "test_batch")
    changed = cifar(Image, tmp_path, encoding="real")
    assert changed.protocol["encoding"] == data.protocol["encoding"]  # test pixels play no part
    assert changed.fingerprint != data.fingerprint


def test_scifar_standardises_each_channel(tmp_path):
    write_cifar_release(tmp_path)
    data = cifar(SCIFAR, tmp_path)
    assert (data.input_kind, data.d_input, data.seq_len, data.num_classes) == \
        ("continuous", 3, 1024, 10)
    train = data.splits["train"].inputs.reshape(-1, 3).astype(np.float64)  # (90 * 1024, 3)
    assert data.protocol["encoding"]["mean"] == pytest.approx(train.mean(0).tolist())
    assert data.protocol["encoding"]["std"] == pytest.approx(train.std(0).tolist())
    batch = next(iter(data.train_dataloader()))
    x = batch["inputs"]
    assert x.dtype == torch.float32 and x.shape == (8, 1024, 3) and batch["mask"].all()
    everything = torch.cat([b["inputs"] for b in data.train_dataloader()]).reshape(-1, 3)
    assert everything.mean(0).abs().max() < 1e-4
    assert (everything.std(0) - 1).abs().max() < 1e-3


def test_s4_constants_replace_the_train_statistics(tmp_path):
    written = write_cifar_release(tmp_path)
    image = cifar(Image, tmp_path, encoding="real", stats="s4_constants")
    assert image.protocol["encoding"]["mean"] == [122.6] and \
        image.protocol["encoding"]["std"] == [61.0]
    raw = grayscale(written["test_batch"][0][:1].reshape(1, 3, 1024))[0]
    np.testing.assert_allclose(image.splits["test"][0]["inputs"][:, 0], (raw - 122.6) / 61.0,
                               rtol=1e-5, atol=1e-5)
    scifar = cifar(SCIFAR, tmp_path, stats="s4_constants")
    x = scifar.splits["test"][0]["inputs"]
    rgb = written["test_batch"][0][0].reshape(3, 1024).T  # (1024, 3)
    mean, std = np.array([0.4914, 0.4822, 0.4465]), np.array([0.247, 0.243, 0.261])
    np.testing.assert_allclose(x, (rgb / 255 - mean) / std, rtol=1e-5, atol=1e-5)
    assert scifar.fingerprint != cifar(SCIFAR, tmp_path).fingerprint
    assert image.fingerprint != cifar(Image, tmp_path, encoding="real").fingerprint
    with pytest.raises(DataError, match="stats must be 'train_split' .* or 's4_constants'"):
        SCIFAR(stats="test")


def test_eval_loaders_keep_every_example_in_order(tmp_path):
    write_cifar_release(tmp_path)
    data = cifar(Image, tmp_path)
    assert (len(data.splits["val"]), len(data.splits["test"])) == (10, 20)
    assert_eval_loaders_keep_every_example(data, 8)
    batch = next(iter(data.test_dataloader()))
    assert batch["inputs"].dtype == torch.long and batch["inputs"].shape == (8, 1024)
    assert batch["mask"].all() and (batch["inputs"] >= 1).all() and (batch["inputs"] <= 256).all()


def test_missing_data_says_what_where_and_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as err:
        Image(data_dir=str(tmp_path / "nowhere")).setup()
    message = str(err.value)
    for part in ("data_batch_1", "test_batch", "cifar-10-batches-py",
                 str((tmp_path / "nowhere").resolve()), "cifar-10-python.tar.gz",
                 "https://www.cs.toronto.edu/~kriz/cifar.html", "LRA_DATA"):
        assert part in message

    write_cifar_release(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match="no test_batch beside it"):
        SCIFAR(data_dir=str(tmp_path)).setup()


@pytest.mark.parametrize("content, why", [
    (b"not a pickle", "not a CIFAR-10 python batch"),
    (pickle.dumps({b"labels": [0]}), "not a CIFAR-10 python batch"),
    (pickle.dumps({b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}),
     "uint8 (N, 3072)"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}),
     "labels must be 0-9"),
])
def test_malformed_batch_names_the_file(tmp_path, content, why):
    write_cifar_release(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(content)
    with pytest.raises(DataError, match=f"data_batch_3: .*{re.escape(why)}"):
        Image(data_dir=str(tmp_path), val_size=10).setup()


def test_options_are_checked(tmp_path):
    with pytest.raises(DataError, match="encoding must be 'tokens' or 'real'"):
        Image(encoding="rgb")
    write_cifar_release(tmp_path)
    with pytest.raises(DataError, match="val_size=100 must be between 1 and 99"):
        Image(data_dir=str(tmp_path), val_size=100).setup()


def test_yaml_options_build_the_modules():
    for name, cls in (("image", Image), ("scifar", SCIFAR)):
        data = task_from_yaml(name, cls)
        assert (data.val_size, data.split_seed, data.seq_len) == (5000, 42, 1024)
