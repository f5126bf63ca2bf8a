"""A third-party model, installed as a distribution with two entry points, works untouched."""
import textwrap

import pytest
from conftest import load_results

from lra import registry

TOY_MODEL = '''
from torch import nn


class Toy(nn.Module):
    """A position-wise MLP: the smallest backbone that honours the contract."""

    def __init__(self, d_model=16, n_layers=1, dropout=0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(), nn.Dropout(dropout))

    def forward(self, x, mask=None):
        return x + self.net(x)
'''


def write_plugin(site, dist, package, model_name, model_source):
    """Lay out an installed distribution: code, a config folder and its entry points."""
    (site / package / "conf" / "model").mkdir(parents=True)
    (site / package / "__init__.py").write_text("")
    (site / package / "model.py").write_text(model_source)
    (site / package / "conf" / "__init__.py").write_text("")
    (site / package / "conf" / "model" / f"{model_name}.yaml").write_text(
        f"name: {model_name}\nd_model: 16\nn_layers: 1\ndropout: 0.0\n")
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(f"""\
        [lra.models]
        {model_name} = {package}.model:Toy

        [lra.configs]
        {package} = {package}.conf
        """))


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A fresh folder on sys.path, and a registry that rescans entry points."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setitem(registry._ENTRIES, "model", dict(registry.entries("model")))
    monkeypatch.setitem(registry._loaded, "model", False)
    return folder


def test_a_plugin_model_is_listed_and_trains(lra, site, tmp_path):
    write_plugin(site, "lra-toy", "lra_toy", "toy", TOY_MODEL)
    listing = lra("list")
    assert listing.code == 0
    lines = listing.out.splitlines()
    assert any(line.split()[:3] == ["toy", "plugin", "lra-toy"] for line in lines)

    result = lra("train", "model=toy", "trainer=debug", "task.n_train=128", "task.n_test=50")
    assert result.code == 0, result.err
    [record] = load_results(tmp_path / "leaderboard" / "runs")
    assert (record["model"], record["status"]) == ("toy", "completed")
    assert record["params"] > 0


def test_a_broken_plugin_is_named_and_the_others_still_work(lra, site):
    write_plugin(site, "lra-broken", "lra_broken", "broken", "raise ImportError('no gpu lib')\n")
    listing = lra("list")
    assert listing.code == 0
    assert "s4d" in listing.out and "transformer" in listing.out
    assert "BROKEN" in listing.out and "lra-broken" in listing.out

    result = lra("train", "model=broken", "trainer=debug")
    assert result.code == 2
    assert "plugin lra-broken failed to load 'broken'" in result.err and "no gpu lib" in result.err
