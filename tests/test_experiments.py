"""Every published recipe under conf/experiment composes, names itself, builds and runs.

No data and no training: each experiment is composed the way `lra train experiment=<m>/<t>`
composes it, its model is built with the recipe's options and run forward on a short input.
Mamba and LightNet publish no LRA recipe; theirs are sized to S4's parameter count per task,
which is checked here.
"""
import math
from functools import cache

import pytest
import torch

from lra import config, recipes, registry
from lra.plugins import config_options

MODELS = ("transformer", "flash", "s4", "s4d", "mamba", "lightnet")
TASKS = ("listops", "text", "retrieval", "image", "pathfinder", "pathx", "scifar", "sc10", "sc35")
GRID_TASKS = {"image": [32, 32], "pathfinder": [32, 32], "pathx": [128, 128], "scifar": [32, 32]}
MATCHED = ("mamba", "lightnet")  # sized to S4's parameter count on each task
TOLERANCE = recipes.PARAMETER_TOLERANCE  # the stated rule: within 10% of S4
# "<model>/<task>" for every YAML file under the packaged conf/experiment folder
NAMES = [name for name, source in config_options("experiment").items() if source == "built-in"]


@pytest.fixture(scope="module")
def composed():
    """name -> the config of `lra train experiment=<name>`, composed once per name."""
    return cache(lambda name: config.compose([f"experiment={name}"]))


@pytest.fixture(scope="module")
def parameter_count(composed):
    """name -> the parameters of the experiment's backbone."""
    def count(name):
        cfg = composed(name)
        model = registry.model(cfg.model.name)(**config.options(cfg.model))
        return sum(p.numel() for p in model.parameters())

    return cache(count)


def test_every_model_task_pair_has_a_recipe():
    missing = [f"{m}/{t}" for m in MODELS for t in TASKS if f"{m}/{t}" not in NAMES]
    assert not missing, f"no conf/experiment/<model>/<task>.yaml for: {', '.join(missing)}"


@pytest.mark.parametrize("name", NAMES)
def test_experiment_composes_and_names_itself(composed, name):
    cfg = composed(name)
    model, task = name.split("/")
    assert cfg.recipe == name
    assert cfg.model.name == model
    assert cfg.task.name == task
    assert cfg.trainer.accelerator == "gpu"
    assert cfg.trainer.max_epochs >= 1
    assert cfg.task.batch_size >= 1
    assert cfg.optim.lr > 0 and cfg.optim.weight_decay >= 0 and 0 <= cfg.optim.warmup_ratio < 1
    if "n_heads" in cfg.model:
        assert cfg.model.d_model % cfg.model.n_heads == 0
    if model in ("s4", "s4d"):
        assert cfg.model.d_state % 2 == 0
    if model == "lightnet" and task in GRID_TASKS:
        assert list(cfg.model.grid) == GRID_TASKS[task]


@pytest.mark.parametrize("name", NAMES)
def test_experiment_model_builds_and_runs(composed, name):
    cfg = composed(name)
    kwargs = config.options(cfg.model)
    grid = kwargs.get("grid")
    if grid is not None:
        # same number of axes and head width as the recipe, a 4 x 4 image instead of the task's
        kwargs["grid"] = [4] * len(grid)
    length = 16 if grid is None else math.prod(kwargs["grid"])
    torch.manual_seed(0)
    model = registry.model(cfg.model.name)(**kwargs).eval()
    x = torch.randn(1, length, cfg.model.d_model)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("model", MATCHED)
def test_matched_recipes_have_s4s_parameter_count(parameter_count, model, task):
    ours, s4 = parameter_count(f"{model}/{task}"), parameter_count(f"s4/{task}")
    assert abs(ours - s4) <= TOLERANCE * s4, (
        f"{model}/{task} has {ours:,} parameters, S4's recipe {s4:,}: "
        f"more than {TOLERANCE:.0%} apart")
