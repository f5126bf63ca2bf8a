"""Plugin config folders: every `lra.configs` entry point joins Hydra's search path.

A plugin's pyproject declares `[project.entry-points."lra.configs"] lra_gru = "lra_gru.conf"`
and ships `lra_gru/conf/model/gru.yaml`; after `pip install`, `lra train model=gru` and
`'model=glob(*)'` sweeps see it. The search-path plugin is registered from the CLI before
Hydra starts (a `hydra_plugins/` namespace package is invisible through editable installs).
Listing config options imports no Hydra; only `register` does.
"""
from functools import cache
from importlib.metadata import entry_points
from importlib.resources import files

BUILTIN = "lra.conf"
GROUPS = ("model", "task", "trainer", "optim", "logger", "experiment", "sweep")


def config_packages():
    """[(source, package)] for the built-in configs and each plugin's config package."""
    found = [("built-in", BUILTIN)]
    for ep in entry_points(group="lra.configs"):
        dist = ep.dist.name if ep.dist is not None else ep.name
        found.append((f"plugin {dist}", ep.value))
    return found


def config_options(group):
    """{option: source} for one config group, e.g. {"s4d": "built-in", "gru": "plugin lra-gru"}.

    Nested folders give slash names (`experiment/s4d/listops.yaml` -> "s4d/listops").
    """
    options = {}
    for source, package in config_packages():
        try:
            root = files(package) / group
        except ModuleNotFoundError:
            continue
        stack = [(root, "")]
        while stack:
            folder, prefix = stack.pop()
            if not folder.is_dir():
                continue
            for item in folder.iterdir():
                if item.is_dir():
                    stack.append((item, f"{prefix}{item.name}/"))
                elif item.name.endswith(".yaml"):
                    options.setdefault(prefix + item.name[:-5], source)
    return dict(sorted(options.items()))


@cache
def _search_path_plugin():
    """Hydra's plugin that appends `pkg://<package>` for each plugin's config package (a class
    made on first use, so that importing this module does not import Hydra)."""
    from hydra.plugins.search_path_plugin import SearchPathPlugin

    class PluginConfigs(SearchPathPlugin):
        def manipulate_search_path(self, search_path):
            for source, package in config_packages()[1:]:
                search_path.append(provider=source.replace(" ", "-"), path=f"pkg://{package}")

    return PluginConfigs


def register():
    """Put the plugins' config packages on Hydra's search path (before Hydra composes)."""
    from hydra.core.plugins import Plugins

    Plugins.instance().register(_search_path_plugin())
