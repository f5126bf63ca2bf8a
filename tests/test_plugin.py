"""A third-party model, installed as a distribution with two entry points, works untouched."""
from conftest import load_results
from helpers import TOY_MODEL, write_plugin


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
