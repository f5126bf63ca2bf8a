"""Every published recipe against its reference config (conf/references.yaml, lra.recipes).

Each recipe is composed as `lra train experiment=<model>/<task>` composes it; every key its
reference traces must equal the reference's value or be declared a deviation, with a reason, in
the recipe's `provenance` block, and its status must say which (paper / deviates / untuned).
"""
from functools import cache
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lra import config, recipes
from lra.lit import Classifier
from lra.plugins import config_options

NAMES = [name for name, source in config_options("experiment").items() if source == "built-in"]
LRA_TASKS = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")


@cache
def composed(name):
    return config.compose([f"experiment={name}"])


def test_the_tables_of_docs_recipes_md_are_the_recipes_as_they_are():
    doc = (Path(__file__).parents[1] / "docs" / "recipes.md").read_text()
    assert recipes.generated_part(doc) == recipes.tables(composed), \
        "docs/recipes.md's tables are stale: run `make docs` (python -m lra.recipes)"


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


def test_reference_decoders_dropout_and_tied_ssms_are_now_the_recipes_own():
    """Former deviations, now traced: S4's n_ssm and tied dropout, S4D's last-position decoder
    on Pathfinder, LRA's CLS token."""
    image = composed("s4/image").model
    assert image.n_ssm == 1 and image.tie_dropout is True
    assert composed("s4d/image").model.n_ssm == 2
    assert composed("s4d/pathfinder").model.pooling == "last"
    for name in ("transformer/listops", "flash/text", "transformer/retrieval", "flash/image"):
        assert composed(name).model.pooling == "cls", name
    assert composed("s4d/listops").model.pooling == "mean"
    assert composed("s4d/listops").model.n_ssm is None


def test_lra_transformer_recipes_use_the_harness_options_of_issue_15():
    """The LRA configs' rsqrt schedule (Retrieval's 8000 warmup steps outlast its 5000), their
    attention dropout and qkv width, Flax Adam's betas, eps and decay, fp32 and LRA's clipping
    are real config keys now, and the image tasks follow ee6649e's transformer_base.py."""
    for model in ("transformer", "flash"):
        listops = composed(f"{model}/listops")
        assert listops.optim.schedule == "rsqrt" and listops.optim.lr == 0.05
        assert listops.optim.warmup_steps == 1000 and listops.optim.decay == "all"
        retrieval = composed(f"{model}/retrieval")
        assert retrieval.optim.warmup_steps == 8000 > retrieval.trainer.max_steps == 5000
        image = composed(f"{model}/image").model
        assert (image.d_model, image.n_heads, image.qkv_dim, image.d_ff) == (128, 8, 64, 128)
        assert (image.dropout, image.attention_dropout) == (0.3, 0.2)
        path = composed(f"{model}/pathfinder").model
        assert (path.d_model, path.n_layers, path.qkv_dim, path.d_ff) == (32, 4, 16, 32)
        for task in LRA_TASKS:
            cfg = composed(f"{model}/{task}")
            assert cfg.trainer.precision == "32-true" and list(cfg.optim.betas) == [0.9, 0.98]
            assert cfg.trainer.gradient_clip_val == (1.0 if task == "pathx" else None)
            keys = {key for key, *_ in recipes.traced(cfg)}
            assert {"model.qkv_dim", "model.attention_dropout", "optim.schedule"} <= keys


@pytest.mark.parametrize("name, length", [("s4/image", 16), ("s4d/image", 16),
                                          ("s4d/pathfinder", 16), ("transformer/image", 1024),
                                          ("flash/retrieval", 16), ("transformer/pathfinder", 16),
                                          ("flash/listops", 16)])
def test_recipes_with_the_new_options_build_and_train_a_step(name, length):
    """The classifier each recipe builds (full width) takes a training step: the CLS token fits
    the learned positions of a 1024-pixel image, tied SSMs and tied dropout train."""
    cfg = composed(name)
    dual = cfg.task.name == "retrieval"
    task = {"input_kind": "tokens", "vocab_size": 16, "d_input": None, "num_classes": 2,
            "dual": dual}
    torch.manual_seed(0)
    model = Classifier(OmegaConf.to_container(cfg.model), task,
                       OmegaConf.to_container(cfg.optim)).train()
    mask = torch.arange(length) < torch.tensor([[length], [length - 3]])
    data = {"inputs": torch.randint(1, 16, (2, length)) * mask, "mask": mask,
            "target": torch.tensor([0, 1])}
    if dual:
        data.update(inputs2=data["inputs"].flip(0), mask2=mask.flip(0))
    loss = torch.nn.functional.cross_entropy(model(data), data["target"])
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in model.parameters() if p.requires_grad)


S4D_PAPER = "b5dae46bf91171f8e640c5e41690820811c8a789"


@pytest.mark.parametrize("task", LRA_TASKS + ("scifar", "sc35"))
def test_s4d_recipes_are_traced_at_the_s4d_papers_commit(task):
    """Every S4D reference is state-spaces/s4@b5dae46 itself and traces the layer the paper's
    `model/layer=s4d` runs built (S4D-LegS: bilinear, trained LegS B, tied dropout) and the
    defaults the experiment inherits; the recipe follows, and its optimiser groups give B and
    A their lr without decay."""
    from lra.lit import param_groups
    entry = recipes.references()["references"][f"s4d/{task}"]
    assert entry.get("commit", recipes.references()["sources"]["s4d_paper"]["commit"]) == S4D_PAPER
    for key in ("model.disc", "model.B_init", "model.lr_B", "model.tie_dropout",
                "trainer.gradient_clip_val", "trainer.precision", "model.pooling"):
        assert key in entry["keys"], key
    cfg = composed(f"s4d/{task}")
    # Text's only deviation is the protocol: b5dae46 validates on the test set (val_split 0.0)
    assert set(cfg.provenance.deviations or {}) <= {"task.protocol"} and not recipes.problems(cfg)
    assert (cfg.model.disc, cfg.model.B_init, cfg.model.tie_dropout) == ("bilinear", "legs", True)
    model = Classifier(OmegaConf.to_container(cfg.model),
                       {"input_kind": "tokens", "vocab_size": 8, "d_input": None,
                        "num_classes": 2, "dual": False}, OmegaConf.to_container(cfg.optim))
    groups = param_groups(model, cfg.optim.weight_decay)
    named = {id(p): n for n, p in model.named_parameters()}
    group_of = {named[id(p)].rsplit(".", 1)[-1]: g for g in groups for p in g["params"]}
    for name in ("B", "log_A_real", "A_imag"):
        assert group_of[name]["lr"] == cfg.model.lr_B == cfg.model.lr, name
        assert group_of[name]["weight_decay"] == 0.0, name
    assert group_of["log_dt"]["weight_decay"] == 0.0
    assert group_of["log_dt"].get("lr", cfg.optim.lr) == (cfg.model.lr_dt or cfg.optim.lr)


def test_a_drifted_s4d_discretisation_is_caught():
    cfg = composed("s4d/listops").copy()
    OmegaConf.update(cfg, "model.disc", "zoh")
    assert any("model.disc" in p for p in recipes.problems(cfg))


S4_TRACED = ("listops", "text", "retrieval", "image", "pathfinder", "pathx", "scifar", "sc35")


@pytest.mark.parametrize("task", S4_TRACED)
def test_s4_recipes_carry_v4s_layer_defaults(task):
    """What every V4 S4 experiment inherits (configs/model/layer/s4.yaml, configs/model/s4.yaml,
    hippo.nplr, FFTConv + S4Block) is traced and set: softplus dt, Im B clipped at 2, dropout
    before and after the GELU, tied dropout, C at the global lr, and V4's decoder: one Linear
    (SequenceDecoder), on Retrieval the NLI head, and C trained as C~ = C (I - dA^L) for the
    dataset's l_max. Nothing deviates."""
    cfg = composed(f"s4/{task}")
    keys = {key: (ours, theirs) for key, ours, theirs, _ in recipes.traced(cfg)}
    for key, value in (("model.dt_transform", "softplus"), ("model.b_clip", 2.0),
                       ("model.dropout_site", "both"), ("model.tie_dropout", True),
                       ("model.lr_C", None)):
        assert keys[key] == (value, value), (task, key)
    head = None if task == "retrieval" else []
    assert keys["model.head_hidden"] == (head, head)
    assert keys["model.C_tilde"] == (True, True)
    expected = ({"task.protocol"} if task == "text" else set())
    if task in ("listops", "text", "retrieval"):  # V4's data pipelines append an EOS token
        assert keys["task.append_eos"] == (True, True)
    if task in ("image", "scifar"):  # and normalise CIFAR with fixed constants
        assert keys["task.stats"] == ("s4_constants", "s4_constants")
    if task in ("pathfinder", "pathx"):  # V4's `center: False`
        assert keys["task.encoding"] == ("continuous_unit", "continuous_unit")
    assert keys["model.max_len"][0] == keys["model.max_len"][1] >= composed(f"s4/{task}").task.get(
        "max_len", 0)
    assert set(cfg.provenance.deviations) == expected
    assert cfg.provenance.status == ("deviates" if expected else "paper")
    assert cfg.provenance.reference == f"s4/{task}"


def test_sequential_tasks_follow_v4s_cifar_and_speech_configs():
    """sCIFAR <- configs/experiment/cifar/s4-cifar.yaml, SC35 <- sc/s4-sc.yaml (35 classes);
    SC10 has no V4 config and stays untuned; Mamba and LightNet follow the s4-matched rule."""
    scifar, sc35, sc10 = (composed(f"s4/{t}") for t in ("scifar", "sc35", "sc10"))
    assert scifar.model.n_ssm == 2 and scifar.model.norm == "layer"
    assert (scifar.optim.warmup_steps, scifar.optim.total_steps) == (900, 180000)
    assert sc35.model.d_model == 128 and sc35.model.n_ssm == 2 and sc35.model.prenorm
    assert sc10.provenance.status == "untuned" and sc10.provenance.reference is None
    assert OmegaConf.to_container(sc10.model) == OmegaConf.to_container(sc35.model)
    for model in ("mamba", "lightnet"):
        for task in ("scifar", "sc35", "sc10"):
            prov = composed(f"{model}/{task}").provenance
            assert prov.rule == recipes.RULE and prov.status == "untuned", (model, task)
            assert prov.reference == (None if task == "sc10" else f"s4/{task}")
        assert len(recipes.traced(composed(f"{model}/sc35"))) >= 7
