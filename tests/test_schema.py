"""The typed config schema (lra/schema.py): every shipped config fits it, and a value of the wrong
type, out of range or not among the choices is refused naming the key, the value, what is
expected and the default."""
import textwrap

import pytest
from conftest import TINY
from helpers import write_plugin

from lra import checks, config, schema
from lra.errors import UserError
from lra.plugins import config_options


@pytest.mark.parametrize("override, expected", [
    ("model.bidirectional=maybe", "model.bidirectional must be true or false (default true), "
                                  "got 'maybe'."),
    ("trainer.precision=bogus", "trainer.precision must be one of '32-true', "),
    ("trainer.max_epochs=1.5", "trainer.max_epochs must be a whole number >= 1, or null "
                               "(default 2), got 1.5."),
    ("trainer.max_time=garbage", 'trainer.max_time must be a duration "DD:HH:MM:SS", or null '
                                 "(default null), got 'garbage'."),
    ("optim.lr=nan", "optim.lr must be a finite number > 0 (default 0.003), got nan."),
    ("optim.lr=inf", "optim.lr must be a finite number > 0 (default 0.003), got inf."),
    ("optim.lr=0", "optim.lr must be a finite number > 0 (default 0.003), got 0."),
    ("model.norm=rms", "model.norm must be one of 'layer', 'batch' (default 'layer'), got 'rms'."),
    ("model.dropout=-0.1", "model.dropout must be a finite number in [0, 1) (default 0.0)"),
    ("model.d_state=true", "model.d_state must be a whole number >= 1 (default 64), got true."),
    ("task.batch_size=0", "task.batch_size must be a whole number >= 1 (default 64), got 0."),
    ("trainer.devices=0", "trainer.devices must be one of 'auto', -1 or a whole number >= 1"),
    ("trainer.limit_train_batches=1.5", "trainer.limit_train_batches must be a whole number >= 1 "
                                        "or a finite number in (0, 1], or null"),
    ("stage=finetune", "stage must be one of 'train', 'pretrain', 'both' (default 'train')"),
    ("pretrain.mask_ratio=1", "pretrain.mask_ratio must be a finite number in (0, 1), or null"),
    ("optim.betas=[0.9,1.5]", "optim.betas must be a list of (a finite number in [0, 1))"),
    ("model.pooling=max", "model.pooling must be one of 'mean', 'last', 'cls' (default 'mean'), "
                          "got 'max'."),
    ("model.n_ssm=0", "model.n_ssm must be a whole number >= 1, or null (default null), got 0."),
    ("model.tie_dropout=2", "model.tie_dropout must be true or false (default false), got 2."),
])
def test_a_value_outside_its_type_is_refused_naming_key_value_type_and_default(lra, override,
                                                                               expected):
    result = lra("train", "trainer=debug", override)
    assert result.code == 2, result.err
    assert result.err.startswith("lra: error: ") and expected in result.err
    assert "Traceback" not in result.err


def test_an_input_error_leaves_no_run_folder_and_no_result(lra, tmp_path):
    result = lra("train", "trainer=debug", "model.bidirectional=maybe")
    assert result.code == 2
    assert not (tmp_path / "runs").exists() and not (tmp_path / "leaderboard").exists()


@pytest.mark.parametrize("override", [
    "trainer.max_time=00:00:10:00", "trainer.precision=32", "trainer.devices=auto",
    "trainer.limit_train_batches=0.5", "optim.lr=1", "model.d_ff=null",
    "trainer.deterministic=warn"])
def test_values_of_the_declared_types_pass(override):
    overrides = [override] if not override.startswith("model.d_ff") else ["model=transformer",
                                                                          override]
    cfg = config.compose(overrides)
    checks.check_config(cfg, config.compose(checks.group_choices(overrides)))


@pytest.mark.parametrize("group", ["experiment", "model", "task", "trainer"])
def test_every_shipped_config_fits_the_schema(group):
    for name in config_options(group):
        overrides = [f"{group}={name}"]
        cfg = config.compose(overrides)
        assert schema.problems(config.plain(cfg), config.plain(cfg)) == [], name


def test_every_built_in_model_and_task_has_a_declared_schema():
    assert sorted(schema.MODELS) == sorted(config_options("model"))
    assert sorted(schema.TASKS) == sorted(config_options("task"))


def test_every_key_of_a_built_in_yaml_is_declared():
    """A key added to a YAML without its type would fall back to its default's type: say so."""
    for group, table in (("model", schema.MODELS), ("task", schema.TASKS)):
        for name, declared in table.items():
            cfg = config.plain(config.compose([f"{group}={name}"]))
            assert set(cfg[group]) <= set(schema.hints_of(declared)), (group, name)
    cfg = config.plain(config.compose([]))
    for group in ("trainer", "optim", "pretrain"):
        assert set(cfg[group]) <= set(schema.hints_of(schema.GROUPS[group])), group


def test_a_key_no_schema_declares_keeps_the_type_of_its_default():
    found = schema.problems({"logger": {"tags": "x", "project": 3}},
                            {"logger": {"tags": [], "project": "lra"}})
    assert found == ["logger.tags must be a list, or null (default []), got 'x'."]


def test_a_plugin_model_is_typed_by_its_constructor_annotations(lra, site):
    write_plugin(site, "lra-typed", "lra_typed", "typed", textwrap.dedent("""
        from typing import Literal
        import torch.nn as nn

        class Toy(nn.Module):
            def __init__(self, d_model: int = 16, n_layers=1, dropout=0.0,
                         gate: Literal["on", "off"] = "on", scale=1.0):
                super().__init__()
                self.proj = nn.Linear(d_model, d_model)

            def forward(self, x, mask=None):
                return self.proj(x)
    """))
    yaml = site / "lra_typed" / "conf" / "model" / "typed.yaml"
    yaml.write_text(yaml.read_text() + "gate: 'on'\nscale: 1.0\n")
    for override, expected in (("model.gate=maybe", "model.gate must be one of 'on', 'off' "
                                                    "(default 'on'), got 'maybe'."),
                               ("model.scale=big", "model.scale must be a finite number, or null "
                                                   "(default 1.0), got 'big'."),
                               ("model.d_model=2.5", "model.d_model must be a whole number "
                                                     "(default 16), got 2.5.")):
        result = lra("train", *TINY[:1], "model=typed", override)
        assert result.code == 2 and expected in result.err, result.err


def test_the_schema_module_imports_neither_torch_nor_hydra():
    import subprocess
    import sys

    code = ("import sys, lra.schema\nprint(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'lightning', 'hydra'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_check_config_raises_one_user_error_listing_every_problem():
    overrides = ["trainer.max_epochs=1.5", "optim.lr=nan"]
    with pytest.raises(UserError) as raised:
        checks.check_config(config.compose(overrides), config.compose([]))
    assert "trainer.max_epochs" in str(raised.value) and "optim.lr" in str(raised.value)


def test_s4s_v4_options_are_typed_and_s4d_does_not_declare_them():
    """dt_transform, lr_C, b_clip and dropout_site: S4's (models/s4.py) alone; S4D's schema keeps
    S4's shared options only."""
    defaults = config.plain(config.compose(["model=s4"]))
    cfg = config.plain(config.compose(["model=s4", "model.dt_transform=relu", "model.lr_C=0",
                                       "model.b_clip=-2", "model.dropout_site=pre"]))
    assert schema.problems(cfg, defaults) == [
        "model.dt_transform must be one of 'exp', 'softplus' (default 'exp'), got 'relu'.",
        "model.lr_C must be a finite number > 0, or null (default null), got 0.",
        "model.b_clip must be a finite number > 0, or null (default null), got -2.",
        "model.dropout_site must be one of 'post', 'both' (default 'post'), got 'pre'."]
    good = config.plain(config.compose(["model=s4", "model.dt_transform=softplus",
                                        "model.lr_C=1e-3", "model.b_clip=2.0",
                                        "model.dropout_site=both"]))
    assert schema.problems(good, defaults) == []
    s4d = schema.hints_of(schema.MODELS["s4d"])
    assert {"lr_dt", "n_ssm", "tie_dropout"} <= set(s4d)
    assert not {"dt_transform", "lr_C", "b_clip", "dropout_site"} & set(s4d)
