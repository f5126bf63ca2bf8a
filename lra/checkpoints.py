"""Checkpoints written atomically: a kill or a full disk mid-write never leaves a torn `last.ckpt`.

Lightning's own writer stages the file in the system's temp folder and moves it, which is a copy
(not a rename) when that folder is on another file system. This one writes next to the target,
flushes, and renames, the way result files are written (`lra.results.write_atomic`).
"""
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from lra.results import write_atomic


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint, path, storage_options=None):
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        write_atomic(path, lambda f: torch.save(checkpoint, f), mode="wb")
