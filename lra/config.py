"""Config: the one place where it is composed outside `lra train`'s `@hydra.main`, and where a
section's options are read.

    cfg = compose(["model=mamba", "task=image"])      # conf/config.yaml with those overrides
    options(cfg.model)                                # the backbone's keyword arguments

Inside a running `lra train` job Hydra is already initialised (with the plugins' config
folders on its search path) and `compose` uses it; elsewhere it opens the built-in configs
and the plugins' for the duration of the call.
"""
from lra.errors import UserError


def compose(overrides=(), hint="`lra train --cfg job` prints every key"):
    """The config `lra train OVERRIDES` would run; a bad override is a UserError naming `hint`."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    from lra import plugins

    overrides = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    try:
        if GlobalHydra.instance().is_initialized():
            return hydra_compose("config", overrides=overrides)
        plugins.register()
        with initialize_config_module("lra.conf", version_base="1.3"):
            return hydra_compose("config", overrides=overrides)
    except HydraException as err:
        first = str(err).strip().splitlines()[0]
        raise UserError(f"bad override: {first} Overrides look like key=value for keys that exist "
                        f"({hint}); add a new key with +key=value.") from err


# keys of a section that the harness reads itself: the registry `name`, and the classifier's
# decoder and head (lra.lit), which the backbone never sees
HARNESS_KEYS = ("name", "pooling", "head_hidden", "head_act", "dual_features")


def options(section):
    """A section's keyword options (`model`, `task`, ...): every key but HARNESS_KEYS."""
    return {k: v for k, v in section.items() if k not in HARNESS_KEYS}


def plain(cfg):
    """A composed config as plain dicts and lists, interpolations resolved."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)
