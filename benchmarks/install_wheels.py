"""Install, offline, each wheel in a folder whose distribution is missing here (or, for setuptools,
older than this project's build needs); what is installed already stays as it is.

    python benchmarks/install_wheels.py wheels [--dry-run]

The GPU machine has torch, triton and lightning but not hydra-core or datasets, and no network;
benchmarks/fetch_wheels.sh fills the folder beforehand.
"""
import argparse
import importlib.metadata as metadata
import subprocess
import sys
from pathlib import Path

# distribution: the major version below which it is replaced (pyproject's build)
NEWER = {"setuptools": 77}


def needed(wheel):
    name = wheel.name.split("-")[0]
    try:
        version = metadata.version(name)
    except metadata.PackageNotFoundError:
        return True
    return name in NEWER and int(version.split(".")[0]) < NEWER[name]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--dry-run", action="store_true", help="list what would be installed")
    args = parser.parse_args(argv)
    wheels = sorted(args.folder.glob("*.whl"))
    if not wheels:
        sys.exit(f"no wheels in {args.folder}/: run benchmarks/fetch_wheels.sh on a machine with "
                 "pip access, then carry the folder")
    missing = [w for w in wheels if needed(w)]
    print("from wheels/:", ", ".join(w.name.split("-")[0] for w in missing) or "nothing missing")
    if missing and not args.dry_run:
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
        subprocess.run([*pip, *map(str, missing)], check=True)


if __name__ == "__main__":
    main()
