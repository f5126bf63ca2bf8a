"""A plain `pip install .` ships every config folder (setuptools needs each one listed)."""
import os
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest
from conftest import TINY

ROOT = Path(__file__).parents[1]


def test_every_config_folder_is_a_listed_package():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = set(pyproject["tool"]["setuptools"]["packages"])
    folders = [p for p in (ROOT / "conf").rglob("*") if p.is_dir() and any(p.glob("*.yaml"))]
    for folder in [ROOT / "conf", *folders]:
        name = ".".join(["lra", *folder.relative_to(ROOT).parts])
        assert name in packages, f"add {name!r} to [tool.setuptools] packages in pyproject.toml"


@pytest.mark.slow
def test_the_wheel_in_a_fresh_virtualenv_ships_the_published_numbers(tmp_path):
    """Built, installed beside this venv's dependencies (not its editable lra), and run from an
    empty folder: `lra leaderboard` and a tiny `lra train` both show the published rows."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheels), str(ROOT)], check=True, capture_output=True)
    [wheel] = wheels.glob("lra_harness-*.whl")
    shipped = zipfile.ZipFile(wheel).namelist()
    assert "lra/published.csv" in shipped and "lra/conf/config.yaml" in shipped

    fresh = tmp_path / "fresh"
    venv.create(fresh, with_pip=False)
    [site] = (fresh / "lib").glob("python3*/site-packages")
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # no .pth run there
    subprocess.run([sys.executable, "-m", "pip", "--python", str(fresh / "bin" / "python"),
                    "install", "--no-deps", "-q", str(wheel)], check=True, capture_output=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LRA_DATA")}
    env.update(WANDB_MODE="disabled", OMP_NUM_THREADS="1")

    def lra(*args):
        done = subprocess.run([str(fresh / "bin" / "lra"), *args], cwd=empty, env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    where = subprocess.run([str(fresh / "bin" / "python"), "-c", "import lra; print(lra.__file__)"],
                           cwd=empty, env=env, capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(site)  # the wheel, not the editable install

    lra("leaderboard")
    board = (empty / "leaderboard" / "LEADERBOARD.md").read_text()
    published = [line for line in board.splitlines() if "| published: " in line]
    assert len(published) > 10 and any("S4D-LegS" in line for line in published)
    (empty / "leaderboard" / "LEADERBOARD.md").unlink()

    train = lra("train", *TINY)
    assert "leaderboard: s4d" in train.stdout
    board = (empty / "leaderboard" / "LEADERBOARD.md").read_text()
    assert "1 debug runs" in board  # re-rendered after the run, the published rows in it
    assert [line for line in board.splitlines() if "| published: " in line] == published
