"""CIFAR-10 read as pixel sequences: LRA "Image" (grayscale) and sequential CIFAR (three channels).

Krizhevsky, "Learning Multiple Layers of Features from Tiny Images" (2009); the Image task of
the Long-Range Arena (Tay et al., ICLR 2021); sequential CIFAR as in the S4 paper (Gu et al.,
ICLR 2022). Each 32x32 image becomes its 1024 pixels in row-major order; the class is one of 10.

    tar xzf cifar-10-python.tar.gz -C $LRA_DATA      # -> $LRA_DATA/cifar-10-batches-py/
    lra train task=image                             # grayscale, pixel tokens (vocab 257)
    lra train task=image task.encoding=real          # grayscale, standardised reals
    lra train task=scifar                            # RGB, standardised per channel

Both read the python pickles `data_batch_1..5` and `test_batch`, carve a seeded validation
split from the 50,000 training images and test on all 10,000 test images. docs/tasks.md
describes the format, the grayscale conversion and what is recorded.
"""
import hashlib
import json
import pickle
from pathlib import Path

import numpy as np

from lra.registry import register_task
from lra.tasks.base import DataError, SequenceDataset, Standardized, TaskData, find_file

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SIDE = 32

# tf.image.rgb_to_grayscale, as LRA applied it to uint8 images (Rec. 601 luma weights)
GRAY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)
# state-spaces/s4's fixed CIFAR-10 normalisation (src/dataloaders/basic.py CIFAR10, the same at
# 62a14bb and b5dae46) in levels 0-255: Normalize(122.6 / 255, 61.0 / 255) on grayscale and
# Normalize((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)) on RGB, after ToTensor (/ 255)
S4_CONSTANTS = {1: ([122.6], [61.0]),
                3: ([0.4914 * 255, 0.4822 * 255, 0.4465 * 255], [0.247 * 255, 0.243 * 255,
                                                                 0.261 * 255])}
STATS = ("train_split", "s4_constants")
# weight * level / 255 in float32 for every level: (3, 256), one row per channel
_GRAY_TERMS = GRAY_WEIGHTS[:, None] * (np.arange(256, dtype=np.float32) * np.float32(1 / 255))


# --- pixels -------------------------------------------------------------------------------

def grayscale(rgb):
    """uint8 (N, 3, L) RGB planes -> uint8 (N, L) gray, as `tf.image.rgb_to_grayscale` computes it.

    TensorFlow converts uint8 to float32 in [0, 1] (times 1/255), takes the weighted sum in
    float32 and converts back by multiplying with 255.5 and casting, which truncates:
    gray = trunc(255.5 * sum_c w_c * p_c / 255). White (255, 255, 255) stays 255.
    The three float32 products come from 256-entry tables (same arithmetic, 5x faster). Only
    about 200 of the 16.7M colours lie within one float32 ulp of a level boundary, so a
    different summation order (TF's matmul) could move at most those by one level.
    """
    gray = _GRAY_TERMS[0][rgb[:, 0]]  # (N, L) float32
    gray += _GRAY_TERMS[1][rgb[:, 1]]
    gray += _GRAY_TERMS[2][rgb[:, 2]]
    gray *= np.float32(255.5)
    return gray.astype(np.uint8)


def channel_stats(pixels, chunk=512):
    """Mean and standard deviation per channel of uint8 pixels (N, L) or (N, L, C), exact.

    From a 256-bin histogram per channel, counted `chunk` images at a time, so no float copy
    of the data set is made.
    """
    channels = 1 if pixels.ndim == 2 else pixels.shape[-1]
    offsets = 256 * np.arange(channels)  # channel c counts in bins 256c .. 256c + 255
    counts = np.zeros(256 * channels, dtype=np.int64)
    for start in range(0, len(pixels), chunk):
        block = pixels[start:start + chunk].reshape(-1, channels)  # (chunk * L, C)
        counts += np.bincount((block + offsets).ravel(), minlength=256 * channels)
    counts = counts.reshape(channels, 256)  # (C, 256)
    values, n = np.arange(256.0), counts.sum(1)
    mean = counts @ values / n
    std = np.sqrt((counts * (values - mean[:, None]) ** 2).sum(1) / n)
    return mean, std


# --- reading the files --------------------------------------------------------------------

def read_batch(path, digest):
    """RGB planes uint8 (N, 3, 1024) and labels int64 (N,) of one CIFAR-10 python pickle.

    The file is a pickled dict (written by Python 2) with bytes keys: b"data", uint8
    (N, 3072), each row the 1024 red, then green, then blue values of a 32x32 image in
    row-major order; b"labels", N integers 0-9. Its bytes go to `digest`.
    """
    raw = Path(path).read_bytes()
    digest.update(raw)
    try:
        batch = pickle.loads(raw, encoding="bytes")
        data, labels = batch[b"data"], np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as err:  # a truncated or foreign file fails in many ways
        raise DataError(f"{path}: not a CIFAR-10 python batch (a pickled dict with b'data' and "
                        f"b'labels'): {type(err).__name__}: {err}") from None
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == 3 * SIDE * SIDE and labels.shape == (len(data),)):
        raise DataError(f"{path}: expected b'data' uint8 (N, 3072) and N b'labels', found "
                        f"{getattr(data, 'dtype', type(data).__name__)} {np.shape(data)} "
                        f"and {labels.size} labels")
    if len(labels) and not 0 <= labels.min() <= labels.max() < len(CLASSES):
        raise DataError(f"{path}: labels must be 0-9, found {labels.min()}..{labels.max()}")
    return data.reshape(len(data), 3, SIDE * SIDE), labels


def carve(n, val_size, split_seed):
    """Indices (train, val) of a seeded random split of range(n), each sorted."""
    if not 0 < val_size < n:
        raise DataError(f"val_size={val_size} must be between 1 and {n - 1}, the training "
                        f"images found less one")
    order = np.random.default_rng(split_seed).permutation(n)
    return np.sort(order[val_size:]), np.sort(order[:val_size])


def _missing(root):
    return (f"CIFAR-10 data not found: no {TRAIN_FILES[0]} (with data_batch_2..5 and "
            f"{TEST_FILE} beside it, the folder cifar-10-batches-py/ of the python version) up "
            f"to 3 folders deep under the data root {root}. Download the CIFAR-10 python version "
            "(cifar-10-python.tar.gz, 163 MB) from the University of Toronto page "
            "https://www.cs.toronto.edu/~kriz/cifar.html, unpack it under the data root "
            f"(tar xzf cifar-10-python.tar.gz -C {root}), or point LRA_DATA or data_dir= at the "
            "folder that holds cifar-10-batches-py/.")


# --- the data modules ---------------------------------------------------------------------

class CIFAR(TaskData):
    """CIFAR-10 from the python pickles; subclasses choose the pixels and how they are encoded."""

    num_classes = len(CLASSES)
    seq_len = SIDE * SIDE
    data_options = ("val_size", "split_seed", "stats")

    def __init__(self, data_dir="data", seed=0, batch_size=50, num_workers=0, val_size=5000,
                 split_seed=42, stats="train_split"):
        super().__init__(data_dir, seed, batch_size, num_workers)
        if stats not in STATS:
            raise DataError(f"{self.name}: stats must be 'train_split' (the mean and std of the "
                            f"training images) or 's4_constants' (state-spaces/s4's), not "
                            f"{stats!r}")
        self.val_size = int(val_size)
        self.split_seed = int(split_seed)
        self.stats = stats

    def standardized(self, parts, channels):
        """({split: Standardized}, the encoding's description) with mean and std per `stats`."""
        if self.stats == "train_split":
            mean, std = channel_stats(parts["train"][0])
            source = "train split, " + ("gray levels 0-255" if channels == 1 else "levels 0-255")
        else:
            mean, std = map(np.array, S4_CONSTANTS[channels])
            source = ("state-spaces/s4's constants (src/dataloaders/basic.py CIFAR10), "
                      "levels 0-255")
        splits = {split: Standardized(x, y, mean, std) for split, (x, y) in parts.items()}
        return splits, {"kind": "real", "mean": mean.tolist(), "std": std.tolist(),
                        "stats_from": source}

    def pixels(self, rgb):
        """uint8 (N, 3, 1024) RGB planes -> the uint8 pixels this task keeps."""
        raise NotImplementedError

    def encode(self, parts):
        """{split: (pixels, targets)} -> ({split: SequenceDataset}, a description of the
        encoding)."""
        raise NotImplementedError

    def tokenization(self):
        """What, besides the files, decides the examples (it goes into the fingerprint)."""
        raise NotImplementedError

    def sources(self):
        """The five training batches and the test batch beside the shallowest `data_batch_1`."""
        root = Path(self.data_dir).resolve()
        first = find_file(root, TRAIN_FILES[0])
        if first is None:
            raise DataError(_missing(root))
        paths = [first.with_name(name) for name in (*TRAIN_FILES, TEST_FILE)]
        for path in paths:
            if not path.is_file():
                raise DataError(f"found {first} but no {path.name} beside it. " + _missing(root))
        return paths

    def load(self):
        paths = self.sources()
        recipe = {"tokenization": self.tokenization(), "val_size": self.val_size,
                  "split_seed": self.split_seed}
        digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode())
        batches = [read_batch(path, digest) for path in paths]
        train_x = np.concatenate([self.pixels(rgb) for rgb, _ in batches[:-1]])
        train_y = np.concatenate([labels for _, labels in batches[:-1]])
        train, val = carve(len(train_y), self.val_size, self.split_seed)
        test_rgb, test_y = batches[-1]
        parts = {"train": (train_x[train], train_y[train]), "val": (train_x[val], train_y[val]),
                 "test": (self.pixels(test_rgb), test_y)}
        splits, encoding = self.encode(parts)
        self.fingerprint = digest.hexdigest()
        self.protocol = {"source": "files", "files": [str(p) for p in paths], **recipe,
                         "encoding": encoding, "classes": list(CLASSES),
                         "split": f"val: {self.val_size} of the {len(train_y)} training images "
                                  f"drawn with split_seed; test: all of {TEST_FILE}",
                         "shuffle_seed": self.seed,
                         "sizes": {split: len(ds) for split, ds in splits.items()}}
        return splits


@register_task("image")
class Image(CIFAR):
    """LRA Image: grayscale CIFAR-10, 1024 pixels, as pixel tokens or standardised reals."""

    name = "image"
    data_options = ("val_size", "split_seed", "stats", "encoding")

    def __init__(self, data_dir="data", seed=0, batch_size=50, num_workers=0, val_size=5000,
                 split_seed=42, encoding="tokens", stats="train_split"):
        super().__init__(data_dir, seed, batch_size, num_workers, val_size, split_seed, stats)
        if encoding not in ("tokens", "real"):
            raise DataError(f"image: encoding must be 'tokens' or 'real', not {encoding!r}")
        self.encoding = encoding
        if encoding == "tokens":
            self.input_kind, self.vocab_size = "tokens", 257
        else:
            self.input_kind, self.d_input = "continuous", 1

    def tokenization(self):
        gray = "gray = trunc(255.5 * (0.2989 r + 0.587 g + 0.114 b) / 255) in float32"
        if self.encoding == "tokens":
            return f"image-v1: {gray}; token = gray + 1 (0 is padding)"
        if self.stats == "s4_constants":
            return f"image-v1: {gray}; (gray - 122.6) / 61.0, state-spaces/s4's constants"
        return f"image-v1: {gray}; (gray - mean) / std, mean and std of the train split"

    def pixels(self, rgb):
        return grayscale(rgb)

    def encode(self, parts):
        if self.encoding == "tokens":
            splits = {split: SequenceDataset(x.astype(np.int16) + 1, y)
                      for split, (x, y) in parts.items()}
            return splits, {"kind": "tokens", "token": "gray + 1", "vocab_size": self.vocab_size}
        return self.standardized(parts, channels=1)


@register_task("scifar")
class SCIFAR(CIFAR):
    """Sequential CIFAR: the 1024 pixels of each image as RGB triples, standardised per channel."""

    name = "scifar"
    input_kind = "continuous"
    d_input = 3

    def tokenization(self):
        if self.stats == "s4_constants":
            return ("scifar-v1: pixel (r, g, b), (x - mean_c) / std_c, state-spaces/s4's constants "
                    "255 (0.4914, 0.4822, 0.4465), 255 (0.247, 0.243, 0.261)")
        return ("scifar-v1: pixel (r, g, b), (x - mean_c) / std_c, "
                "per-channel stats of the train split")

    def pixels(self, rgb):
        return np.ascontiguousarray(rgb.transpose(0, 2, 1))  # (N, 1024, 3)

    def encode(self, parts):
        splits, encoding = self.standardized(parts, channels=3)
        return splits, {**encoding, "channels": ["r", "g", "b"]}
