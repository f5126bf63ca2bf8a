"""Checks on command-line overrides, so bad input fails early with a clear message.

Group choices (`model=`, `task=`, ...) are checked against every config folder, plugins
included; every value of the composed config is checked against its declared type
(lra/schema.py), or where none is declared, against the type of its default.
"""
import netrc
import os
import re
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import OmegaConf

from lra import config, registry, schema
from lra.errors import EnvironmentFault, UserError
from lra.plugins import GROUPS, config_options

_SWEEP_FUNCTION = re.compile(r"^(\w+)\((.*)\)$")


def split_override(text):
    """`+model.d_model=64` -> ("model.d_model", "64"); None for flags and deletions."""
    if "=" not in text or text.startswith(("-", "~")):
        return None
    key, _, value = text.partition("=")
    return key.lstrip("+"), value


def sweep_choices(value):
    """The names a (possibly swept) group value asks for; glob() is matched by Hydra itself."""
    call = _SWEEP_FUNCTION.match(value)
    if call:
        if call.group(1) == "glob":
            return []
        value = call.group(2)
    return [v.strip() for v in value.split(",") if v.strip()]


def check_choices(overrides):
    for text in overrides:
        parsed = split_override(text)
        if not parsed or parsed[0] not in GROUPS:
            continue
        group, value = parsed
        options = config_options(group)
        for name in sweep_choices(value):
            if name != "null" and name not in options:
                raise UserError(
                    f"unknown {group} {name!r}; available: {', '.join(options) or 'none'}. "
                    f"Run `lra list` to see every {group} and where it comes from; a plugin's "
                    f"{group}s appear once its package is pip-installed.")


def _plugin_hints(cfg):
    """{(section, name): {key: type}} from the constructor annotations of a plugin's model or
    task (built-ins are declared in lra.schema); importing it is what `lra train` does next."""
    found = {}
    for section, declared in (("model", schema.MODELS), ("task", schema.TASKS)):
        name = OmegaConf.select(cfg, f"{section}.name")
        if name and name not in declared:
            found[section, name] = schema.hints_of(registry.get(section, name))
    return found


def check_config(cfg, defaults):
    """Refuse a composed config whose values do not fit the schema (lra/schema.py): `defaults`
    is the config composed from the same group choices alone, whose values the message names."""
    found = schema.problems(config.plain(cfg), config.plain(defaults), _plugin_hints(cfg))
    if found:
        raise UserError(" ".join(found) + " `lra train --cfg job` prints every key and value.")


def group_choices(overrides):
    """The overrides that choose a config group (`model=s4`, `experiment=s4d/listops`)."""
    return [o for o in overrides if (split_override(o) or ("",))[0] in GROUPS]


def check_kernels():
    """Refuse a misspelt LRA_KERNELS before a run starts, not at the first forward pass."""
    from lra.kernels import dispatch

    try:
        dispatch.forced()
    except ValueError as err:
        raise UserError(f"{err}.") from None


def _writable_folder(key, path):
    """An EnvironmentFault unless `path` is, or can be made, a writable folder."""
    path = Path(path).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise EnvironmentFault(f"{key}={path} cannot be a folder: {existing} is a file. Move "
                               f"that file, or point {key}= elsewhere.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise EnvironmentFault(f"{key}={path} cannot be written: {existing} is read-only or not "
                               f"yours. Point {key}= at a writable folder.")


def _wandb_key():
    """The W&B API key wandb would find: $WANDB_API_KEY, else ~/.netrc's entry for its host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def check_environment(cfg):
    """Faults of the machine a run would meet later, found before Hydra makes the run folder:
    results_dir and runs_dir must be writable folders; logger=wandb online needs an API key."""
    for key in ("results_dir", "runs_dir"):
        _writable_folder(key, cfg[key])
    logger = cfg.get("logger") or {}
    mode = logger.get("mode") or os.environ.get("WANDB_MODE") or "online"
    if logger.get("name") == "wandb" and mode == "online" and not _wandb_key():
        raise EnvironmentFault("logger=wandb needs a Weights & Biases API key and none is set: "
                               "run `wandb login`, or set WANDB_API_KEY, or log offline with "
                               "WANDB_MODE=offline (upload later with `wandb sync`).")
