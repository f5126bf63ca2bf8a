"""Every published recipe against its reference config (conf/references.yaml, lra.recipes).

Each recipe is composed as `lra train experiment=<model>/<task>` composes it; every key its
reference traces must equal the reference's value or be declared a deviation, with a reason, in
the recipe's `provenance` block, and its status must say which (paper / deviates / untuned).
"""
from functools import cache

import pytest
from omegaconf import OmegaConf

from lra import config, recipes
from lra.plugins import config_options

NAMES = [name for name, source in config_options("experiment").items() if source == "built-in"]
LRA_TASKS = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")


@cache
def composed(name):
    return config.compose([f"experiment={name}"])


@pytest.mark.parametrize("name", NAMES)
def test_recipe_matches_its_reference_or_declares_why_not(name):
    found = recipes.problems(composed(name))
    assert not found, f"{name}: " + "; ".join(found)


@pytest.mark.parametrize("name", NAMES)
def test_every_lra_recipe_of_a_published_model_is_traced(name):
    model, task = name.split("/")
    prov = composed(name).provenance
    if task in LRA_TASKS:
        assert prov.reference, f"{name} names no reference"
        assert len(recipes.traced(composed(name))) >= 8
    if model in ("mamba", "lightnet") and task in LRA_TASKS:
        assert prov.rule == recipes.RULE and prov.status == "untuned"


def test_every_reference_entry_names_its_source_file_and_commit():
    data = recipes.references()
    for name, entry in data["references"].items():
        source = data["sources"][entry["source"]]
        assert source["repo"] and len(entry.get("commit", source["commit"])) == 40, name
        assert entry["file"], name
        for key, (_value, their_key) in entry["keys"].items():
            assert their_key, f"{name}: {key} names no reference key"


def test_a_drifted_recipe_is_caught():
    """Changing one traced value without declaring it is reported, and so is a stale
    deviation (declared, but the value is the reference's)."""
    cfg = composed("s4/listops").copy()
    assert not recipes.problems(cfg)
    OmegaConf.update(cfg, "optim.weight_decay", 0.1)
    assert any("optim.weight_decay" in p for p in recipes.problems(cfg))
    cfg = composed("s4/listops").copy()
    OmegaConf.set_struct(cfg, False)
    cfg.provenance.deviations["model.d_state"] = "why"
    found = recipes.problems(cfg)
    assert any("equals the reference" in p for p in found)


def test_issue_examples_now_match_their_references():
    """The examples of issue 15: S4D's Path-X step range and lr, S4's dt at the global lr."""
    pathx = composed("s4d/pathx")
    assert pathx.model.dt_min == 1e-4 and pathx.optim.lr == 5e-4
    listops = composed("s4/listops")
    assert listops.model.lr_dt is None and listops.trainer.gradient_clip_val is None
    assert listops.trainer.precision == "32-true"
    assert composed("s4d/listops").model.d_state == 64
