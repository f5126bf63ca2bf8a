"""The typed schema of the config: one dataclass per group (root, trainer, optim, each built-in
task and model), checked after Hydra has composed the config.

    problems(cfg, defaults)   # [] or ["trainer.max_epochs must be a whole number >= 1 (default 12),
                              #        got 1.5.", ...]

A field's annotation is its type: `bool`, `int` (a whole number), `float` (a finite number; a
whole one is accepted), `str`, `Literal[...]` (an enum), `X | None` (null allowed), `list[X]`,
unions, and `Annotated[X, Range(...)]` or `Annotated[str, Pattern(...)]` for a range or a format.
The YAML files hold the defaults; the dataclasses hold only the types. A key no schema declares
(a plugin's option, a key another group adds) is checked against the type of its default:
true/false stays a boolean, a whole number stays whole, a number stays a number. A plugin
model's constructor annotations, when it has them, count as its schema (`hints_of`).

This module imports neither torch nor Hydra.
"""
import math
import re
import types
from dataclasses import dataclass, is_dataclass
from typing import Annotated, Literal, Union, get_args, get_origin, get_type_hints

MISSING = object()


@dataclass(frozen=True)
class Range:
    """low <= value <= high; an open end excludes itself (`Range(0, 1, high_open=True)`: [0, 1))."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value):
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def text(self):
        if self.high == math.inf:
            return f"{'>' if self.low_open else '>='} {_show(self.low)}"
        if self.low == -math.inf:
            return f"{'<' if self.high_open else '<='} {_show(self.high)}"
        return (f"in {'(' if self.low_open else '['}{_show(self.low)}, {_show(self.high)}"
                f"{')' if self.high_open else ']'}")


@dataclass(frozen=True)
class Pattern:
    """A string format: `regex` must match the whole string; `text` says what it looks like."""

    regex: str
    text: str


Positive = Annotated[int, Range(1)]
Count = Annotated[int, Range(0)]
Seed = Annotated[int, Range(0)]
Rate = Annotated[float, Range(0, low_open=True)]
Share = Annotated[float, Range(0, 1, high_open=True)]  # dropout, warmup: [0, 1)
Fraction = Annotated[float, Range(0, 1, low_open=True, high_open=True)]  # (0, 1)
Probability = Annotated[float, Range(0, 1)]
Batches = Positive | Annotated[float, Range(0, 1, low_open=True)]  # a count, or a share of them
Duration = Annotated[str, Pattern(r"\d+:\d{1,2}:\d{1,2}:\d{1,2}", 'a duration "DD:HH:MM:SS"')]
Norm = Literal["layer", "batch"]
Pooling = Literal["mean", "last", "cls"]


@dataclass
class Root:
    seed: Seed
    data_dir: str
    results_dir: str
    runs_dir: str
    resume: str | None
    recipe: str
    pretraining: Literal["scratch", "self-pretrained"]
    tags: list[str]
    stage: Literal["train", "pretrain", "both"]
    init_from: str | None


@dataclass
class Pretrain:
    objective: Literal["auto", "masked", "next"]
    mask_ratio: Fraction | None
    heldout: Share
    epochs: Positive | None
    lr: Rate | None


@dataclass
class Trainer:
    accelerator: Literal["cpu", "gpu", "cuda", "mps", "tpu", "auto"]
    devices: Literal["auto", -1] | Positive | list[Count]
    strategy: str
    precision: Literal["32-true", "32", "16-mixed", "bf16-mixed", "16-true", "bf16-true",
                       "64-true", "64", "16", "bf16", 64, 32, 16]
    max_epochs: Positive | None
    max_steps: Literal[-1] | Positive
    max_time: Duration | None
    gradient_clip_val: Annotated[float, Range(0)] | None
    limit_train_batches: Batches | None
    limit_eval_batches: Batches | None
    val_check_interval: Batches | None
    deterministic: bool | Literal["warn"]
    num_threads: Positive | None
    float32_matmul: Literal["highest", "high", "medium"]
    progress: bool


@dataclass
class Optim:
    lr: Rate
    weight_decay: Annotated[float, Range(0)]
    betas: list[Share]
    eps: Rate
    decay: Literal["matrices", "all"]
    warmup_ratio: Share
    warmup_steps: Positive | None
    total_steps: Positive | None
    schedule: Literal["cosine", "rsqrt"]
    divergence_retries: Count
    divergence_lr_factor: Fraction


@dataclass
class Task:
    name: str
    batch_size: Positive
    num_workers: Count


@dataclass
class ListOps(Task):
    max_len: Positive
    append_eos: bool
    keep_closing_brackets: bool


@dataclass
class ListOpsMini(Task):
    n_train: Positive
    n_val: Positive
    n_test: Positive
    data_seed: Seed
    max_depth: Annotated[int, Range(2)]
    min_args: Positive
    max_args: Positive
    leaf_prob: Probability
    min_length: Count
    max_length: Positive
    max_len: Positive | None  # ListOps' token options, so a ListOps recipe runs here
    append_eos: bool
    keep_closing_brackets: bool


@dataclass
class Image(Task):
    val_size: Positive
    split_seed: Seed
    encoding: Literal["tokens", "real"]
    stats: Literal["train_split", "s4_constants"]


@dataclass
class Pathfinder(Task):
    resolution: Positive
    difficulty: Literal["hard", "medium", "easy"]
    encoding: Literal["tokens", "continuous", "continuous_unit"]
    split_seed: Seed
    read_threads: Positive


@dataclass
class Text(Task):
    max_len: Positive
    protocol: Literal["heldout", "published"]
    val_fraction: Fraction
    split_seed: Seed
    tokens: Literal["bytes", "chars"]
    min_char_count: Positive
    append_eos: bool


@dataclass
class Retrieval(Task):
    max_len: Positive
    append_eos: bool


@dataclass
class Speech(Task):
    read_threads: Positive


@dataclass
class Model:
    name: str
    d_model: Positive
    n_layers: Positive
    dropout: Share
    bidirectional: bool
    pooling: Pooling  # the classifier's decoder (lra.lit); not passed to the backbone
    head_hidden: list[Positive] | None  # the head's hidden widths (lra.lit); null: [d_model]
    head_act: Literal["gelu", "relu"]
    dual_features: Literal["nli", "concat"]  # Retrieval: [u, v, u*v, u-v] or [u, v]


@dataclass
class Transformer(Model):
    n_heads: Positive
    d_ff: Positive | None
    qkv_dim: Positive | None
    attention_dropout: Share | None
    positions: Literal["sinusoidal", "learned"]
    max_len: Positive


@dataclass
class Flash(Transformer):
    block_size: Positive


@dataclass
class LightNet(Model):
    n_heads: Positive
    grid: list[Positive] | None
    positions: Literal["lrpe", "tpe", "both", "none"]
    gate_rank: Positive
    lrpe_base: Rate
    ssm_lr: Rate | None  # null: optim.lr


@dataclass
class Mamba(Model):
    d_state: Positive
    d_conv: Positive
    expand: Positive
    dt_rank: Literal["auto"] | Positive
    norm: Norm
    prenorm: bool
    dt_min: Rate
    dt_max: Rate
    ssm_lr: Rate | None  # null: optim.lr


@dataclass
class S4(Model):
    d_state: Positive
    norm: Norm
    prenorm: bool
    lr: Rate
    lr_dt: Rate | None  # null: optim.lr
    dt_min: Rate
    dt_max: Rate
    n_ssm: Positive | None  # null: every channel its own A (n_ssm = d_model)
    tie_dropout: bool


@dataclass
class S4NPLR(S4):  # S4's own options (models/s4.py, S4 V4's layer), which S4D does not take
    dt_transform: Literal["exp", "softplus"]
    lr_C: Rate | None  # null: optim.lr, with weight decay
    b_clip: Rate | None  # null: no clipping
    dropout_site: Literal["post", "both"]
    C_tilde: bool  # train C~ = C (I - dA^max_len) in place of C (S4 V4)
    max_len: Positive | None  # the longest input; C_tilde sets C~ for it; null: any length


@dataclass
class S4D(S4):  # S4's options, and the initialisation of its diagonal A
    init: Literal["legs", "inv", "lin"]
    disc: Literal["zoh", "bilinear"]
    B_init: Literal["ones", "legs"]
    lr_B: Annotated[float, Range(0)] | None  # 0: B fixed at its init; null: optim.lr


GROUPS = {"trainer": Trainer, "optim": Optim, "pretrain": Pretrain}
MODELS = {"transformer": Transformer, "flash": Flash, "lightnet": LightNet, "mamba": Mamba,
          "s4": S4NPLR, "s4d": S4D}
TASKS = {"listops": ListOps, "listops_mini": ListOpsMini, "image": Image, "scifar": Image,
         "pathfinder": Pathfinder, "pathx": Pathfinder, "text": Text, "retrieval": Retrieval,
         "sc10": Speech, "sc35": Speech}


def hints_of(obj):
    """{name: type} of a dataclass's fields or of a callable's annotated parameters."""
    if is_dataclass(obj):
        return get_type_hints(obj, include_extras=True)
    try:
        hints = get_type_hints(getattr(obj, "__init__", obj), include_extras=True)
    except (NameError, TypeError):  # annotations that name what cannot be resolved here
        return {}
    return {k: v for k, v in hints.items() if k != "return"}


def _show(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, str) else str(value)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def fits(tp, value):
    """Whether `value` (a YAML scalar, list or mapping) is of type `tp`."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        base, *rules = args
        if not fits(base, value):
            return False
        for rule in rules:
            if isinstance(rule, Range) and value not in rule:
                return False
            if isinstance(rule, Pattern) and not re.fullmatch(rule.regex, value):
                return False
        return True
    if origin in (Union, types.UnionType):
        return any(fits(arg, value) for arg in args)
    if origin is Literal:
        return any(type(value) is type(arg) and value == arg for arg in args)
    if origin is list:
        return isinstance(value, list) and all(fits(args[0], v) for v in value)
    if tp in (list, dict):
        return isinstance(value, tp)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return _is_number(value) and math.isfinite(value)
    if tp is str:
        return isinstance(value, str)
    return True  # a type this schema does not check (a plugin's own class, Any)


def describe(tp):
    """What a value of type `tp` looks like, in words: "a whole number >= 1, or null"."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        base, *rules = args
        words = [r.text for r in rules if isinstance(r, Pattern)]
        if words:
            return words[0]
        return " ".join([describe(base), *(r.text() for r in rules if isinstance(r, Range))])
    if origin in (Union, types.UnionType):
        named = [describe(a) for a in args if a is not type(None)]
        null = ", or null" if type(None) in args else ""
        return " or ".join(named) + null
    if origin is Literal:
        return "one of " + ", ".join(_show(a) for a in args)
    if origin is list:
        return f"a list of ({describe(args[0])})" if args else "a list"
    words = {bool: "true or false", int: "a whole number", float: "a finite number", str: "text",
             list: "a list", dict: "a mapping"}
    return words.get(tp, getattr(tp, "__name__", str(tp)))


def type_of_default(default):
    """The type a key's default stands for, where no schema declares one (None: anything)."""
    if default is MISSING or default is None:
        return None
    if isinstance(default, bool):
        return bool | None
    if isinstance(default, int):
        return int | None
    if isinstance(default, float):
        return float | None
    if isinstance(default, list):
        return list | None
    if isinstance(default, dict):
        return dict
    return None  # text: a number may stand in (dt_rank: auto, or 8)


def _schema(section, value, extra):
    if section in ("model", "task"):
        name = value.get("name")
        declared = (MODELS if section == "model" else TASKS).get(name)
        return hints_of(declared) if declared else extra.get((section, name), {})
    return hints_of(GROUPS[section]) if section in GROUPS else {}


def problems(config, defaults, extra=None, prefix="", hints=None):
    """Each value of `config` (a plain dict) that its declared type, or its default's, refuses:
    one sentence each, naming the key, the value, what is expected and the default. `defaults`
    is the same config composed without the key=value overrides; `extra` maps (section, name)
    to the {key: type} of a plugin model or task."""
    extra = extra or {}
    hints = hints_of(Root) if hints is None else hints
    found = []
    for key, value in config.items():
        default = defaults.get(key, MISSING) if isinstance(defaults, dict) else MISSING
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            inner = _schema(key, value, extra) if not prefix else {}
            found += problems(value, default if isinstance(default, dict) else {}, extra,
                              f"{path}.", inner)
            continue
        tp = hints.get(key) or type_of_default(default)
        if tp is not None and not fits(tp, value):
            shown = "no default" if default is MISSING else f"default {_show(default)}"
            found.append(f"{path} must be {describe(tp)} ({shown}), got {_show(value)}.")
    return found
