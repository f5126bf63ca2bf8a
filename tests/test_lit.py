"""The classifier around every backbone: pooling, the dual-document head, optimiser groups."""
import math

import pytest
import torch

from lra import config
from lra.lit import Classifier, last_real, masked_mean, param_groups, schedule_factor, warmup_cosine

MODEL = {"name": "s4d", "d_model": 16, "n_layers": 1, "d_state": 8}
TOKENS = {"input_kind": "tokens", "vocab_size": 16, "d_input": None, "num_classes": 3,
          "dual": False}
OPTIM = {"lr": 1e-2, "weight_decay": 0.05, "betas": [0.9, 0.999], "warmup_ratio": 0.1}


def batch(lengths, prefix="", length=None):
    length = length or max(lengths)
    mask = torch.arange(length) < torch.tensor(lengths)[:, None]  # (B, L)
    inputs = torch.randint(1, 16, (len(lengths), length)) * mask
    return {f"inputs{prefix}": inputs, f"mask{prefix}": mask}


def test_masked_mean_ignores_padding():
    y = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    pooled = masked_mean(y, mask)
    torch.testing.assert_close(pooled[0], y[0, :3].mean(0))
    torch.testing.assert_close(pooled[1], y[1].mean(0))


def test_warmup_then_cosine_to_zero():
    total, warmup = 100, 10
    factors = [warmup_cosine(step, total, warmup) for step in range(total + 1)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:]))  # non-increasing after warmup
    assert factors[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert factors[total] == pytest.approx(0.0, abs=1e-12)


def test_ssm_parameters_get_their_own_group_without_decay():
    model = Classifier(MODEL, TOKENS, OPTIM)
    groups = param_groups(model, weight_decay=0.05)
    tagged = {id(p) for p in model.parameters() if hasattr(p, "_optim")}
    assert tagged
    [ssm] = [g for g in groups if any(id(p) in tagged for p in g["params"])]
    assert ssm["lr"] == 1e-3 and ssm["weight_decay"] == 0.0
    assert {id(p) for p in ssm["params"]} == tagged
    decayed = [g for g in groups if g["weight_decay"] == 0.05][0]["params"]
    assert all(p.ndim >= 2 for p in decayed)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_lr_none_keeps_the_global_lr_without_decay():
    """S4's `lr: {dt: null}`: dt gets a group of its own with no lr key, so AdamW gives it
    the global lr, and no weight decay."""
    model = Classifier({**MODEL, "lr_dt": None}, TOKENS, OPTIM)
    groups = param_groups(model, weight_decay=0.05)
    dts = {id(m.mixer.log_dt) for m in model.backbone.layers}
    [dt_group] = [g for g in groups if {id(p) for p in g["params"]} == dts]
    assert "lr" not in dt_group and dt_group["weight_decay"] == 0.0
    optimizer = torch.optim.AdamW(groups, lr=OPTIM["lr"])
    [dt_in_opt] = [g for g in optimizer.param_groups if g["params"][0] is dt_group["params"][0]]
    assert dt_in_opt["lr"] == OPTIM["lr"]


@pytest.mark.parametrize("name, ssm_names", [
    ("mamba", ("A_log", "D", "dt_proj.bias")),
    ("lightnet", ("decay_logit", "scale")),
])
def test_mamba_and_lightnet_state_space_parameters_are_not_decayed(name, ssm_names):
    options = {"name": name, "d_model": 16, "n_layers": 1, "ssm_lr": 1e-3}
    if name == "lightnet":
        options["positions"] = "both"
    model = Classifier(options, TOKENS, OPTIM)
    groups = param_groups(model, weight_decay=0.05)
    [ssm] = [g for g in groups if g.get("lr") == 1e-3]
    names = {n for n, p in model.named_parameters() if any(p is q for q in ssm["params"])}
    assert names and all(n.endswith(ssm_names) for n in names)
    assert {n.rsplit(".", 1)[-1] for n in names} >= {s.rsplit(".", 1)[-1] for s in ssm_names}
    assert ssm["weight_decay"] == 0.0


def test_dual_documents_share_one_backbone_and_classify_u_v_uv_u_minus_v():
    model = Classifier(MODEL, {**TOKENS, "dual": True}, OPTIM).eval()
    assert model.head[0].in_features == 4 * MODEL["d_model"]
    torch.manual_seed(0)
    pair = {**batch([7, 3]), **batch([5, 6], prefix="2")}
    logits = model(pair)
    assert logits.shape == (2, 3)
    u = model.encode(pair["inputs"], pair["mask"])
    v = model.encode(pair["inputs2"], pair["mask2"])
    expected = model.head(torch.cat([u, v, u * v, u - v], dim=-1))
    torch.testing.assert_close(logits, expected)
    swapped = model({"inputs": pair["inputs2"], "mask": pair["mask2"],
                     "inputs2": pair["inputs"], "mask2": pair["mask"]})
    assert not torch.allclose(logits, swapped)  # order matters through u - v


def test_lra_dual_head_classifies_u_v_through_two_relu_layers():
    """LRA's `classifier_head_dual` without `interaction`: [u, v] -> Dense(mlp) -> relu ->
    Dense(mlp / 2) -> relu -> Dense(classes)."""
    model_config = {**MODEL, "head_hidden": [12, 6], "head_act": "relu",
                    "dual_features": "concat"}
    model = Classifier(model_config, {**TOKENS, "dual": True}, OPTIM).eval()
    widths = [(m.in_features, m.out_features) for m in model.head if isinstance(m, torch.nn.Linear)]
    assert widths == [(2 * MODEL["d_model"], 12), (12, 6), (6, 3)]
    assert sum(isinstance(m, torch.nn.ReLU) for m in model.head) == 2
    pair = {**batch([7, 3]), **batch([5, 6], prefix="2")}
    u = model.encode(pair["inputs"], pair["mask"])
    v = model.encode(pair["inputs2"], pair["mask2"])
    torch.testing.assert_close(model(pair), model.head(torch.cat([u, v], dim=-1)))


def test_an_empty_head_hidden_is_one_linear_decoder_and_null_keeps_the_default_mlp():
    linear = Classifier({**MODEL, "head_hidden": []}, TOKENS, OPTIM)
    assert [type(m) for m in linear.head] == [torch.nn.Linear]  # the S4 references' decoder
    assert linear.head[0].in_features == MODEL["d_model"]
    default = Classifier(MODEL, TOKENS, OPTIM)
    assert [type(m) for m in default.head] == [torch.nn.Linear, torch.nn.GELU, torch.nn.Linear]
    assert default.head[0].out_features == MODEL["d_model"]
    assert {"head_hidden", "head_act", "dual_features"}.isdisjoint(
        config.options({**MODEL, "head_hidden": [], "head_act": "relu", "dual_features": "nli"}))


def test_an_unknown_head_activation_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"head_act gelu \| relu"):
        Classifier({**MODEL, "head_act": "tanh"}, TOKENS, OPTIM)


def test_continuous_inputs_use_a_linear_encoder():
    task = {**TOKENS, "input_kind": "continuous", "vocab_size": None, "d_input": 3}
    model = Classifier(MODEL, task, OPTIM)
    x = torch.randn(2, 11, 3)
    logits = model({"inputs": x, "mask": torch.ones(2, 11, dtype=torch.bool)})
    assert logits.shape == (2, 3)
    assert isinstance(model.encoder, torch.nn.Linear)


def test_last_real_reads_each_rows_last_real_position():
    y = torch.randn(3, 5, 2)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    pooled = last_real(y, mask)
    torch.testing.assert_close(pooled, torch.stack([y[0, 2], y[1, 4], y[2, 0]]))


TRANSFORMER = {"name": "transformer", "d_model": 16, "n_layers": 1, "n_heads": 2}


@pytest.mark.parametrize("model_config", [MODEL, {**MODEL, "pooling": "last"},
                                          {**MODEL, "pooling": "cls"},
                                          {**TRANSFORMER, "pooling": "cls"},
                                          {**TRANSFORMER, "pooling": "cls",
                                           "positions": "learned", "max_len": 16}])
def test_padding_does_not_change_the_logits_under_any_pooling(model_config):
    torch.manual_seed(0)
    model = Classifier(model_config, TOKENS, OPTIM).eval()
    torch.manual_seed(1)
    short = batch([6, 4])
    long = {"inputs": torch.nn.functional.pad(short["inputs"], (0, 9)),
            "mask": torch.nn.functional.pad(short["mask"], (0, 9))}
    torch.testing.assert_close(model(short), model(long), rtol=1e-5, atol=1e-6)


def test_last_pooling_classifies_the_last_real_output():
    """`last` equals the backbone's output at position length - 1 under the head, and differs
    from the masked mean."""
    torch.manual_seed(0)
    model = Classifier({**MODEL, "pooling": "last"}, TOKENS, OPTIM).eval()
    data = batch([7, 3])
    x = model.encoder(data["inputs"]) * data["mask"].unsqueeze(-1)
    y = model.backbone(x, mask=data["mask"])
    expected = model.head(torch.stack([y[0, 6], y[1, 2]]))
    torch.testing.assert_close(model(data), expected)
    assert not torch.allclose(model(data), model.head(masked_mean(y, data["mask"])))


def test_cls_pooling_prepends_a_learned_token_and_classifies_its_output():
    torch.manual_seed(0)
    model = Classifier({**TRANSFORMER, "pooling": "cls"}, TOKENS, OPTIM).eval()
    assert model.cls.shape == (16,) and not model.cls.any()  # LRA's zero init
    data = batch([5, 5])
    x = model.encoder(data["inputs"])
    x = torch.cat([model.cls.expand(2, 1, 16), x], 1)
    y = model.backbone(x, mask=torch.ones(2, 6, dtype=torch.bool))
    torch.testing.assert_close(model(data), model.head(y[:, 0]))
    loss = model(data).sum()
    loss.backward()
    assert model.cls.grad is not None and model.cls.grad.abs().sum() > 0  # it trains
    assert Classifier(TRANSFORMER, TOKENS, OPTIM).cls is None  # mean pooling adds nothing


def test_cls_pooling_on_two_documents():
    task = {**TOKENS, "dual": True}
    model = Classifier({**TRANSFORMER, "pooling": "cls"}, task, OPTIM).eval()
    data = {**batch([6, 3]), **batch([4, 5], prefix="2")}
    assert model(data).shape == (2, 3)


def test_pooling_is_the_harness_key_the_backbone_never_sees():
    assert "pooling" not in config.options({**MODEL, "pooling": "last"})
    with pytest.raises(ValueError, match="model.pooling='max' is not known; use one of mean"):
        Classifier({**MODEL, "pooling": "max"}, TOKENS, OPTIM)


def test_rsqrt_schedule_is_lras_linear_warmup_times_rsqrt_decay():
    """lr(step) = lr * min(1, step / warmup) / sqrt(max(step, warmup)), LRA's
    `constant * linear_warmup * rsqrt_decay`, whatever the total; a warmup longer than the
    run (Retrieval: 8000 of 5000 steps) still rises at the end."""
    opt = {**OPTIM, "schedule": "rsqrt", "warmup_steps": 1000}
    factor = schedule_factor(opt, total=5000)
    assert factor(0) == 0.0
    assert factor(500) == pytest.approx(0.5 / math.sqrt(1000))
    assert factor(1000) == pytest.approx(1 / math.sqrt(1000))  # the peak: 0.05 -> 1.58e-3
    assert factor(4000) == pytest.approx(1 / math.sqrt(4000))
    assert schedule_factor(opt, total=10)(4000) == factor(4000)  # the total does not enter
    long = schedule_factor({**opt, "warmup_steps": 8000}, total=5000)
    assert long(4999) < long(5000) == pytest.approx(5000 / 8000 / math.sqrt(8000))


def test_cosine_stays_the_default_and_warmup_steps_override_the_ratio():
    total = 100
    legacy = schedule_factor(OPTIM, total)  # a config saved before the schedule keys existed
    assert [legacy(s) for s in range(total)] == [warmup_cosine(s, total, 10) for s in range(total)]
    stepped = schedule_factor({**OPTIM, "schedule": "cosine", "warmup_steps": 20}, total)
    assert [stepped(s) for s in range(total)] == [warmup_cosine(s, total, 20)
                                                 for s in range(total)]
    assert config.compose([]).optim.schedule == "cosine"
    with pytest.raises(ValueError, match="optim.schedule='linear' is not known"):
        schedule_factor({**OPTIM, "schedule": "linear"}, total)


def test_configure_optimizers_steps_the_rsqrt_schedule():
    optim = {**OPTIM, "lr": 0.05, "schedule": "rsqrt", "warmup_steps": 4}
    module = Classifier({**MODEL}, TOKENS, optim)
    module.trainer = type("T", (), {"estimated_stepping_batches": 10})()
    conf = module.configure_optimizers()
    optimizer, scheduler = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(6):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    want = [0.05 * min(1, s / 4) / math.sqrt(max(s, 4)) for s in range(6)]
    assert lrs == pytest.approx(want)


def test_decay_all_and_eps_reach_adamw():
    """optim.decay=all (LRA's Flax Adam): biases and norms decay too, tagged SSM parameters
    keep their own group; optim.eps is AdamW's epsilon."""
    model = Classifier({"name": "transformer", "d_model": 16, "n_layers": 1}, TOKENS, OPTIM)
    matrices = param_groups(model, weight_decay=0.1)
    every = param_groups(model, weight_decay=0.1, decay="all")
    assert any(g["weight_decay"] == 0.0 for g in matrices)
    [group] = every
    assert group["weight_decay"] == 0.1 and len(group["params"]) == len(list(model.parameters()))
    s4d = param_groups(Classifier(MODEL, TOKENS, OPTIM), weight_decay=0.1, decay="all")
    assert any(g.get("lr") == 1e-3 and g["weight_decay"] == 0.0 for g in s4d)
    module = Classifier({"name": "transformer", "d_model": 16, "n_layers": 1}, TOKENS,
                        {**OPTIM, "eps": 1e-9, "decay": "all"})
    module.trainer = type("T", (), {"estimated_stepping_batches": 10})()
    optimizer = module.configure_optimizers()["optimizer"]
    assert optimizer.defaults["eps"] == 1e-9 and len(optimizer.param_groups) == 1
    assert config.compose([]).optim.eps == 1e-8 and config.compose([]).optim.decay == "matrices"
