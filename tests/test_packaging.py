"""A plain `pip install .` ships every config folder (setuptools needs each one listed)."""
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_every_config_folder_is_a_listed_package():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = set(pyproject["tool"]["setuptools"]["packages"])
    folders = [p for p in (ROOT / "conf").rglob("*") if p.is_dir() and any(p.glob("*.yaml"))]
    for folder in [ROOT / "conf", *folders]:
        name = ".".join(["lra", *folder.relative_to(ROOT).parts])
        assert name in packages, f"add {name!r} to [tool.setuptools] packages in pyproject.toml"
