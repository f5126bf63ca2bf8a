"""Pathfinder / Path-X: the release layout (both metadata formats) and splits (generator: test_pathfinder_generator.py)."""
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from lra import registry
from lra.tasks.base import DataError
from lra.tasks.pathfinder import Pathfinder, PathX, split_indices

CONF = Path(__file__).resolve().parents[1] / "conf" / "task"
HARD = "curv_contour_length_14"


def png(pixels):
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def fields(batch, index, label):
    # The release's 11 fields: folder, file, index, label, continuity, contour length,
    # distractor length, paddle length, paddle thickness, paddle margin, number of contrasts.
    return [f"imgs/{batch}", f"sample_{index}.png", str(index), str(label), "1.0", "14", "4", "2", "0.5", "1", "1"]


def release(root, n_batches=2, per_batch=10, resolution=32, binary=(), empty=(),
            where="lra_release/lra_release"):
    """A release tree with image b * per_batch + i holding pixel values (b * per_batch + i) % 251
    at pixel 0; metadata batch folders listed in `binary` written with np.save."""
    leaf = root / where / f"pathfinder{resolution}" / HARD
    (leaf / "metadata").mkdir(parents=True)
    for b in range(n_batches):
        (leaf / "imgs" / str(b)).mkdir(parents=True)
        rows = []
        for i in range(per_batch):
            k = b * per_batch + i
            pixels = np.zeros((resolution, resolution), np.uint8)
            pixels[0, 0], pixels[-1, -1] = k % 251, 255
            path = leaf / "imgs" / str(b) / f"sample_{i}.png"
            path.write_bytes(b"" if (b, i) in empty else png(pixels))
            rows.append(fields(b, i, k % 2))
        meta = leaf / "metadata" / f"{b}.npy"
        if b in binary:
            with open(meta, "wb") as f:  # as the original generator saved it
                np.save(f, np.array(rows))
        else:
            meta.write_text("".join(" ".join(r) + "\n" for r in rows))
    return leaf


def loaded(root, **kwargs):
    data = Pathfinder(data_dir=str(root), **kwargs)
    data.setup()
    return data


@pytest.mark.parametrize("binary", [(), (1,)], ids=["text", "np.save"])
def test_loader_reads_the_release_layout(tmp_path, binary):
    leaf = release(tmp_path, binary=binary)
    data = loaded(tmp_path)
    assert (data.num_classes, data.seq_len, data.vocab_size, data.input_kind, data.dual) == (2, 1024, 257, "tokens", False)
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
    again = loaded(tmp_path)
    assert again.fingerprint == data.fingerprint
    assert np.array_equal(again.splits["test"].inputs, data.splits["test"].inputs)  # same split


def test_both_metadata_formats_read_alike(tmp_path):
    release(tmp_path / "a")
    release(tmp_path / "b", binary=(0, 1))
    a, b = loaded(tmp_path / "a"), loaded(tmp_path / "b")
    for split in ("train", "val", "test"):
        assert np.array_equal(a.splits[split].inputs, b.splits[split].inputs)
        assert np.array_equal(a.splits[split].targets, b.splits[split].targets)


def test_empty_image_is_skipped_with_a_warning(tmp_path):
    release(tmp_path, empty={(1, 3)})
    with pytest.warns(UserWarning, match=r"skipping .*imgs/1/sample_3\.png"):
        data = loaded(tmp_path)
    assert data.protocol["skipped"] == 1 and data.protocol["images"] == 20
    assert sum(len(data.splits[s]) for s in ("train", "val", "test")) == 19


def test_split_is_seeded_and_matches_random_split():
    train, val, test = split_indices(1000, 42)
    assert (len(train), len(val), len(test)) == (800, 100, 100)
    assert len(np.unique(np.concatenate([train, val, test]))) == 1000
    parts = torch.utils.data.random_split(range(1000), [800, 100, 100], generator=torch.Generator().manual_seed(42))
    assert [list(p.indices) for p in parts] == [train.tolist(), val.tolist(), test.tolist()]
    assert not np.array_equal(split_indices(1000, 43)[2], test)


def test_continuous_encoding_and_batches(tmp_path):
    release(tmp_path)
    data = loaded(tmp_path, encoding="continuous", batch_size=4)
    assert (data.input_kind, data.d_input) == ("continuous", 1)
    batches = list(data.test_dataloader())
    assert sum(len(b["target"]) for b in batches) == 2  # no drop_last
    x = batches[0]["inputs"]
    assert x.dtype == torch.float32 and x.shape == (2, 1024, 1)
    assert x[:, -1, 0].tolist() == [1.0, 1.0] and x[:, 1, 0].tolist() == [-1.0, -1.0]
    assert batches[0]["mask"].all()


def test_pathx_reads_128px(tmp_path):
    release(tmp_path, n_batches=1, per_batch=10, resolution=128, where="lra_release")
    data = PathX(data_dir=str(tmp_path))
    data.setup()
    assert data.seq_len == 16384 and data.splits["train"][0]["inputs"].shape == (16384,)
    with pytest.raises(DataError, match="pathfinder32 images are 32x32"):
        (tmp_path / "lra_release" / "pathfinder128").rename(tmp_path / "lra_release" / "pathfinder32")
        loaded(tmp_path)


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as err:
        loaded(tmp_path / "nowhere")
    message = str(err.value)
    assert str((tmp_path / "nowhere").resolve()) in message and "pathfinder32/curv_contour_length_14" in message
    assert "lra data generate pathfinder" in message and "lra_release.gz" in message and "metadata/<b>.npy" in message


def test_yaml_options_build_the_modules():
    for name, cls in (("pathfinder", Pathfinder), ("pathx", PathX)):
        options = OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"))
        assert options.pop("name") == name and registry.task(name) is cls
        data = cls(data_dir="data", seed=0, **options)
        assert data.seq_len == {"pathfinder": 1024, "pathx": 16384}[name]
