"""Pathfinder and Path-X: are the two dots in a picture of dashed curves on the same curve?

Linsley et al. (2018) drew the images; the Long-Range Arena (Tay et al., ICLR 2021) reads them
pixel by pixel: 32 x 32 = 1,024 steps (Pathfinder) and 128 x 128 = 16,384 (Path-X).
The release lays out each resolution and difficulty as

    pathfinder32/curv_contour_length_14/imgs/<b>/sample_<i>.png
    pathfinder32/curv_contour_length_14/metadata/<b>.npy

where, despite the extension, a metadata file is text, one line per image of 11
space-separated fields: folder (`imgs/<b>`), file name, index, label, then the drawing
parameters. The original generator wrote the same table with `np.save`; both are read.
Make the files (or unpack lra_release.gz), then train:

    lra data generate pathfinder    # our generator, lra.generators.pathfinder (pathx: 128 px)
    lra data prepare pathfinder     # decode the PNGs once into the cache (else `lra train` does)
    lra train task=pathfinder

docs/tasks.md describes the format, the split and the generator.
"""
import hashlib
import io
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lra.registry import register_task
from lra.tasks.base import DataError, SequenceDataset, TaskData, progress

DIFFICULTIES = {"hard": "curv_contour_length_14", "medium": "curv_contour_length_9",
                "easy": "curv_baseline"}
ENCODINGS = {"tokens": "pixel p -> token p + 1 (0 is padding), vocab 257",
             "continuous": "pixel p -> (p / 255 - 0.5) / 0.5, one channel",
             # state-spaces/s4 V4's `center: False`
             "continuous_unit": "pixel p -> p / 255, one channel"}
NPY_MAGIC = b"\x93NUMPY"


# --- finding and reading the files ---------------------------------------------------------

def find_leaf(root, resolution, difficulty, max_depth=3):
    """The shallowest `root/**/pathfinder<res>/<difficulty>` with a `metadata` folder (first by
    name on a tie), at most `max_depth` folders down, searched level by level; or None.
    `root` may also be the `pathfinder<res>` folder itself."""
    root = Path(root)
    direct = root / difficulty
    if root.name == f"pathfinder{resolution}" and (direct / "metadata").is_dir():
        return direct
    for depth in range(max_depth + 1):
        pattern = "/".join(["*"] * depth + [f"pathfinder{resolution}", difficulty, "metadata"])
        found = sorted(p.parent for p in root.glob(pattern) if p.is_dir())
        if found:
            return found[0]
    return None


def read_metadata(path):
    """(folder, file name, label) rows of one metadata file, text or np.save'd; its bytes too."""
    data = path.read_bytes()
    if data.startswith(NPY_MAGIC):
        table = np.load(io.BytesIO(data), allow_pickle=False)
        rows = [[str(field) for field in row] for row in np.atleast_2d(table)]
    else:
        rows = [line.split() for line in data.decode().splitlines() if line.strip()]
    out = []
    for lineno, fields in enumerate(rows, 1):
        if len(fields) < 4 or fields[3] not in ("0", "1"):
            raise DataError(f"{path}:{lineno}: expected at least 4 space-separated fields "
                            f"(folder, file, index, label 0 or 1), found "
                            f"{' '.join(fields)[:80]!r}")
        out.append((fields[0], fields[1], int(fields[3])))
    return out, data


def _decode(path, resolution):
    """(pixels (res * res,) uint8 or None if empty or unreadable, sha256 of the file, why)."""
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            pixels = np.asarray(image.convert("L"))
    except (OSError, ValueError) as err:  # missing, empty, truncated, not an image
        return None, b"", f"{type(err).__name__}: {err}"
    if pixels.shape != (resolution, resolution):
        raise DataError(f"{path}: a {pixels.shape[1]}x{pixels.shape[0]} image; "
                        f"pathfinder{resolution} images are {resolution}x{resolution}")
    return pixels.reshape(-1), hashlib.sha256(data).digest(), None


def split_indices(n, split_seed):
    """Train, val, test index arrays (80/10/10) of n examples: torch's `random_split` order for
    `split_seed`, so the same file list splits as the state-spaces/s4 loader splits it."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed)).numpy()
    n_val = n_test = int(0.1 * n)
    n_train = n - n_val - n_test
    return order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]


class ImageDataset(SequenceDataset):
    """Images held as one uint8 array (N, L); an example is encoded when it is taken."""

    def __init__(self, pixels, targets, encoding):
        super().__init__(pixels, targets)
        self.encoding = encoding

    def __getitem__(self, i):
        p = self.inputs[i]
        if self.encoding == "tokens":
            x = p.astype(np.int16) + 1  # (L,)
        else:
            x = p.astype(np.float32)[:, None] / 255  # (L, 1) in [0, 1]
            if self.encoding == "continuous":
                x = (x - 0.5) / 0.5  # in [-1, 1]
        return {"inputs": x, "target": self.targets[i]}

    def options(self):
        return {"encoding": self.encoding}


def _missing(root, resolution, difficulty):
    generator = "pathx" if resolution == 128 else "pathfinder"
    return (f"Pathfinder data not found: no pathfinder{resolution}/{difficulty}/metadata/ folder "
            f"up to 3 folders deep under the data root {root}. Expected layout: "
            f"pathfinder{resolution}/{difficulty}/imgs/<b>/sample_<i>.png and metadata/<b>.npy "
            "(text, one line per image: folder file index label ...). Generate it with "
            f"`lra data generate {generator}` (writes {root / 'pathfinder'}), or download "
            "lra_release.gz from the google-research/long-range-arena repository "
            "(https://storage.googleapis.com/long-range-arena/lra_release.gz), unpack it under the "
            "data root, and point LRA_DATA or data_dir= at that root.")


# --- the data modules ----------------------------------------------------------------------

@register_task("pathfinder")
class Pathfinder(TaskData):
    """The release's Pathfinder images at one resolution and difficulty, split 80/10/10."""

    name = "pathfinder"
    num_classes = 2
    data_options = ("resolution", "difficulty", "encoding", "split_seed")

    def __init__(self, data_dir="data", seed=0, batch_size=32, num_workers=0, resolution=32,
                 difficulty="hard", encoding="tokens", split_seed=42, read_threads=4):
        super().__init__(data_dir, seed, batch_size, num_workers)
        if difficulty not in DIFFICULTIES:
            raise ValueError(f"unknown difficulty {difficulty!r}; "
                             f"choose one of {', '.join(DIFFICULTIES)}")
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}; choose one of {', '.join(ENCODINGS)}")
        self.resolution, self.difficulty, self.encoding = int(resolution), difficulty, encoding
        self.split_seed, self.read_threads = int(split_seed), int(read_threads)
        self.seq_len = self.resolution ** 2
        if encoding == "tokens":
            self.input_kind, self.vocab_size = "tokens", 257
        else:
            self.input_kind, self.d_input = "continuous", 1

    def _leaf(self):
        """The difficulty folder and its metadata files in numeric order."""
        root = Path(self.data_dir).resolve()
        leaf = find_leaf(root, self.resolution, DIFFICULTIES[self.difficulty])
        if leaf is None:
            raise DataError(_missing(root, self.resolution, DIFFICULTIES[self.difficulty]))
        return leaf, sorted((leaf / "metadata").glob("*.npy"), key=lambda p: (len(p.stem), p.stem))

    def sources(self):
        """The metadata files and every file under imgs/ (listed, not opened)."""
        leaf, metas = self._leaf()
        images = sorted(os.path.join(folder, name)
                        for folder, _, names in os.walk(leaf / "imgs") for name in names)
        return [str(meta) for meta in metas] + images

    def load(self):
        root = Path(self.data_dir).resolve()
        folder = DIFFICULTIES[self.difficulty]
        leaf, metas = self._leaf()
        recipe = (f"pathfinder-v1: {ENCODINGS[self.encoding]}; resolution={self.resolution}; "
                  f"80/10/10 torch.randperm split_seed={self.split_seed}\n")
        digest = hashlib.sha256(recipe.encode())
        paths, labels = [], []
        for meta in metas:
            rows, data = read_metadata(meta)
            digest.update(data)
            paths += [leaf / sub / name for sub, name, _ in rows]
            labels += [label for _, _, label in rows]
        if not paths:
            raise DataError(f"{leaf / 'metadata'} lists no images. "
                            + _missing(root, self.resolution, folder))

        start = time.perf_counter()
        pixels = np.zeros((len(paths), self.seq_len), np.uint8)
        keep = np.ones(len(paths), bool)
        skipped = []
        with ThreadPoolExecutor(self.read_threads) as pool:
            decoded = pool.map(_decode, paths, [self.resolution] * len(paths), chunksize=256)
            for i, (image, sha, why) in enumerate(progress(decoded, len(paths), "decoding images")):
                if image is None:
                    keep[i] = False
                    skipped.append(str(paths[i]))
                    warnings.warn(f"skipping {paths[i]}: {why}", stacklevel=2)
                else:
                    pixels[i] = image
                digest.update(sha)
        seconds = time.perf_counter() - start
        pixels, labels = pixels[keep], np.asarray(labels, np.int64)[keep]

        parts = split_indices(len(labels), self.split_seed)
        splits = {split: ImageDataset(pixels[idx], labels[idx], self.encoding)
                  for split, idx in zip(("train", "val", "test"), parts)}
        self.fingerprint = digest.hexdigest()
        self.protocol = {"source": "files", "folder": str(leaf), "metadata_files": len(metas),
                         "images": len(paths), "skipped": len(skipped),
                         "skipped_files": skipped[:20],
                         "resolution": self.resolution, "difficulty": self.difficulty,
                         "tokenization": ENCODINGS[self.encoding],
                         "split": "80/10/10 torch.randperm",
                         "split_seed": self.split_seed, "shuffle_seed": self.seed,
                         "read_seconds": round(seconds, 2),
                         "files_per_second": round(len(paths) / max(seconds, 1e-9)),
                         "sizes": {split: len(ds) for split, ds in splits.items()}}
        return splits


@register_task("pathx")
class PathX(Pathfinder):
    """Path-X: the 128 x 128 Pathfinder images, 16,384 steps."""

    name = "pathx"

    def __init__(self, data_dir="data", seed=0, batch_size=32, num_workers=0, resolution=128,
                 difficulty="hard", encoding="tokens", split_seed=42, read_threads=4):
        super().__init__(data_dir, seed, batch_size, num_workers, resolution, difficulty, encoding,
                         split_seed, read_threads)
