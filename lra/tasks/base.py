"""What every task shares: the data-module contract, padding, loaders and finding files.

A task is a LightningDataModule built from keyword arguments (`data_dir`, `seed`,
`batch_size`, `num_workers` and its own options from `conf/task/<name>.yaml`). Its shape
is known after `__init__`; `setup()` reads or generates the data once and sets

    fingerprint    sha256 of what was read (or generated) and how it was tokenised; from a
                   cache only after every cached file matched its checksum, so it
                   always describes the content a run trains on
    protocol       split sizes, seeds and sources, for the result record
    majority_rate  share of the test split in its most common class

A task that reads files lists them in `sources()` and names in `data_options` the attributes
that, besides the files, decide its examples; lra.tasks.cache then keeps its prepared splits
as Arrow files that training memory-maps. A generated task (`listops_mini`) lists none and is
built in memory each time.

Batches are dicts of tensors, padded with 0 to the longest example in the batch:

    inputs  (B, L) long for tokens, (B, L, d_input) float for continuous inputs
    mask    (B, L) bool, True at real positions
    lengths (B,) long
    target  (B,) long
    inputs2, mask2, lengths2   the second document of a dual task (Retrieval)
"""
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from lra.errors import UserError


class DataError(UserError):
    """Data missing or malformed; the message says what, where, and how to fix it."""


def find_file(root, name, max_depth=3):
    """The shallowest `root/**/name` at most `max_depth` folders down (first by name), or None.

    Searched level by level, so a large data root (Pathfinder's images) is not walked whole.
    """
    root = Path(root)
    for depth in range(max_depth + 1):
        found = sorted(p for p in root.glob("/".join(["*"] * depth + [name])) if p.is_file())
        if found:
            return found[0]
    return None


def split_files(root, names, missing):
    """{split: path} of the files `names` ({split: file name}) beside the shallowest train file
    under root; a DataError says `missing` when the train file is absent, and names any sibling
    that is."""
    train = find_file(root, names["train"])
    if train is None:
        raise DataError(missing)
    files = {split: train.with_name(name) for split, name in names.items()}
    for path in files.values():
        if not path.is_file():
            raise DataError(f"found {train} but no {path.name} beside it. " + missing)
    return files


def progress(iterable, total, what):
    """`iterable` with a progress bar (on a terminal, for 10,000 items or more)."""
    return tqdm(iterable, total=total, desc=what, unit=" files", leave=False,
                disable=None if total >= 10_000 else True)


class SequenceDataset(Dataset):
    """Examples held as numpy arrays: `inputs[i]` (L,) or (L, d), `targets[i]`, and `inputs2[i]`
    if dual.

    `inputs` may be anything indexed that way: a list of arrays, one 2-d array, or the
    memory-mapped Arrow column of a cache. `options()` gives the keyword arguments, besides
    inputs and targets, that rebuild the dataset around other storage.
    """

    def __init__(self, inputs, targets, inputs2=None):
        self.inputs, self.inputs2 = inputs, inputs2
        self.targets = np.asarray(targets, dtype=np.int64)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        example = {"inputs": self.inputs[i], "target": self.targets[i]}
        if self.inputs2 is not None:
            example["inputs2"] = self.inputs2[i]
        return example

    def options(self):
        return {}


class Standardized(SequenceDataset):
    """Raw integer samples held compactly (uint8 pixels, int16 PCM), standardised on the way out.

    `inputs[i]` is (L,) or (L, C) integers; an example's inputs are float32 (L, C),
    `(x - mean) / std` with one mean and std per channel.
    """

    def __init__(self, inputs, targets, mean, std):
        super().__init__(inputs, targets)
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    def __getitem__(self, i):
        x = self.inputs[i].astype(np.float32)
        x = x.reshape(len(x), -1)  # (L, C)
        return {"inputs": (x - self.mean) / self.std, "target": self.targets[i]}

    def options(self):
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}


def pad(seqs):
    """Pad arrays of shape (L_i, ...) with 0 to (B, max L_i, ...); integers become long, floats
    float32."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)  # (B,)
    width = int(lengths.max())
    out = np.zeros((len(seqs), width, *seqs[0].shape[1:]), dtype=seqs[0].dtype)  # (B, L, ...)
    for row, s in zip(out, seqs):
        row[:len(s)] = s
    x = torch.from_numpy(out)
    x = x.float() if x.is_floating_point() else x.long()
    mask = torch.arange(width) < lengths[:, None]  # (B, L)
    return x, mask, lengths


def collate(examples):
    """A list of examples -> one batch dict (see the module docstring)."""
    inputs, mask, lengths = pad([e["inputs"] for e in examples])
    batch = {"inputs": inputs, "mask": mask, "lengths": lengths,
             "target": torch.tensor([e["target"] for e in examples], dtype=torch.long)}
    if "inputs2" in examples[0]:
        batch["inputs2"], batch["mask2"], batch["lengths2"] = pad([e["inputs2"] for e in examples])
    return batch


class EpochShuffle(Sampler):
    """A permutation drawn from (seed, epoch), so a resumed run sees the batches it would have.

    Lightning calls `set_epoch` at the start of every training epoch. A run resumed from a
    checkpoint taken mid-epoch skips the `skip` examples it had already trained on in `skip_epoch`.
    With `world` processes (DDP) process `rank` takes every world-th example of the permutation
    (padded by wrapping to a multiple of world): each global batch of world x batch_size examples
    is the batch one process with that batch size would draw, split between the processes.
    """

    def __init__(self, n, seed, rank=0, world=1, skip_epoch=None, skip=0):
        self.n, self.seed, self.epoch = n, seed, 0
        self.rank, self.world = rank, world
        self.skip_epoch, self.skip = skip_epoch, skip

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return -(-self.n // self.world)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=generator).tolist()
        order += order[: len(self) * self.world - self.n]
        mine = order[self.rank :: self.world]
        return iter(mine[self.skip // self.world :] if self.epoch == self.skip_epoch else mine)


class Shard(Sampler):
    """Evaluation under DDP: process `rank` of `world` takes examples rank, rank + world, ...;
    nothing is padded or dropped, so every example is counted exactly once."""

    def __init__(self, n, rank, world):
        self.indices = range(rank, n, world)

    def __len__(self):
        return len(self.indices)

    def __iter__(self):
        return iter(self.indices)


def majority_rate(targets):
    """Fraction of `targets` in the most common class."""
    return float(np.bincount(targets).max() / len(targets))


class TaskData(L.LightningDataModule):
    """Base of every task. Subclasses set the shape attributes in `__init__` and implement
    `load()`."""

    name = None
    num_classes = None
    seq_len = None
    input_kind = "tokens"  # "tokens" (with vocab_size) or "continuous" (with d_input)
    vocab_size = None
    d_input = None
    dual = False
    resume_position = None  # {"epoch", "batches"} from a mid-epoch checkpoint (load_state_dict)
    collate_fn = staticmethod(collate)  # examples -> a padded batch
    data_options = ()  # attributes that, with the files, decide the examples (they key the cache)

    def __init__(self, data_dir="data", seed=0, batch_size=32, num_workers=0):
        super().__init__()
        self.data_dir = str(data_dir)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.splits = None  # {"train", "val", "test"} -> SequenceDataset, after setup()
        self.fingerprint = None
        self.protocol = None
        self.majority_rate = None

    def load(self):
        """Read or generate the data: return the three splits, set `fingerprint` and `protocol`."""
        raise NotImplementedError

    def sources(self):
        """The raw files `load()` reads (listed, not opened), or None for a generated task.

        Raises DataError, as `load()` would, when they are not there.
        """
        return None

    def restore(self, protocol):
        """After the splits came from a cache, set from its recorded `protocol` what `load()`
        would have set besides splits, fingerprint and protocol (Text's character vocab_size)."""

    def setup(self, stage=None):
        if self.splits is None:
            self.splits = self.load()
            self.majority_rate = majority_rate(self.splits["test"].targets)

    def _loader(self, split, shuffle):
        n = len(self.splits[split])
        rank, world = ((self.trainer.global_rank, self.trainer.world_size) if self.trainer
                       else (0, 1))
        sampler = (EpochShuffle(n, self.seed, rank, world) if shuffle
                   else Shard(n, rank, world) if world > 1 else None)
        return DataLoader(self.splits[split], batch_size=self.batch_size, sampler=sampler,
                          drop_last=False, collate_fn=self.collate_fn,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self):
        loader = self._loader("train", shuffle=True)
        if self.resume_position:
            loader.sampler.skip_epoch = self.resume_position["epoch"]
            loader.sampler.skip = (self.resume_position["batches"] * self.batch_size
                                   * loader.sampler.world)
        return loader

    def state_dict(self):
        """Saved in every checkpoint: how far into its epoch training was (batches completed)."""
        if self.trainer is None:
            return {}
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.completed
        return {"position": {"epoch": self.trainer.current_epoch, "batches": done}}

    def load_state_dict(self, state):
        self.resume_position = state.get("position")

    def val_dataloader(self):
        return self._loader("val", shuffle=False)

    def test_dataloader(self):
        return self._loader("test", shuffle=False)
