"""Make a scratch copy of the repository the `lra` that Python imports (tests/mutants/run.py).

The editable install maps `lra`, `lra.models`, `lra.kernels` and `lra.conf` to the main tree's
lra/, models/, kernels/ and conf/ through a finder on sys.meta_path. The mutant runner puts this
folder first on PYTHONPATH, so Python runs this file at start-up, after the install's .pth files:
the finder below goes first on sys.meta_path and resolves every `lra...` name in the copy that
holds this file (two folders up), for pytest and for every process the tests start.
"""
import sys
from importlib.machinery import PathFinder
from importlib.util import spec_from_file_location
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"lra": ROOT / "lra", "lra.models": ROOT / "models", "lra.kernels": ROOT / "kernels",
           "lra.conf": ROOT / "conf"}


class CopyFinder:
    """`lra` and its mapped packages from their folders in the copy; every module below them
    from its parent package's __path__ (already in the copy)."""

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname in FOLDERS:
            folder = FOLDERS[fullname]
            return spec_from_file_location(fullname, folder / "__init__.py",
                                           submodule_search_locations=[str(folder)])
        parent = fullname.rpartition(".")[0]
        if parent == "lra" or parent.startswith("lra."):
            return PathFinder.find_spec(fullname, path=list(sys.modules[parent].__path__))
        return None


sys.meta_path.insert(0, CopyFinder)
