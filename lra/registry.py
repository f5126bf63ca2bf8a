"""One registry for backbones and tasks: built-ins by decorator, plugins by entry point.

    @register_model("s4d")
    class S4D(nn.Module): ...

    registry.model("s4d")(d_model=128, n_layers=4)  # -> an S4D backbone

Built-ins are named in BUILT_IN, so listing them imports none of them (nor torch); a built-in's
module is imported on its first lookup, and its decorator fills in the class. Plugins declare
`[project.entry-points."lra.models"] gru = "lra_gru.model:GRU"`; the entry point is imported
only when the name is asked for or everything is listed (a broken plugin then shows).
"""
from dataclasses import dataclass
from importlib import import_module

# name -> the module whose decorator registers it (tests/test_cli.py checks that they agree)
BUILT_IN = {
    "model": {name: f"lra.models.{name}"
              for name in ("flash", "lightnet", "mamba", "s4", "s4d", "transformer")},
    "task": {"image": "lra.tasks.image", "scifar": "lra.tasks.image",
             "listops": "lra.tasks.listops", "listops_mini": "lra.tasks.listops",
             "pathfinder": "lra.tasks.pathfinder", "pathx": "lra.tasks.pathfinder",
             "sc10": "lra.tasks.speech", "sc35": "lra.tasks.speech",
             "text": "lra.tasks.text", "retrieval": "lra.tasks.text"},
}


class UnknownName(LookupError):
    """An unknown model or task name; the message lists what is available."""


class BrokenPlugin(ImportError):
    """A plugin's entry point failed to import; the message names the plugin."""


@dataclass
class Entry:
    name: str
    obj: object = None
    source: str = "built-in"
    target: str = ""  # a built-in's module, or a plugin's "module:attr", not imported yet

    def load(self):
        if self.obj is None and self.source == "built-in":
            import_module(self.target)  # its decorator fills in self.obj; our errors stay ours
        elif self.obj is None:
            try:
                self.obj = _import_target(self.target)
            except Exception as err:  # any failure inside the plugin's import
                raise BrokenPlugin(
                    f"{self.source} failed to load {self.name!r} from {self.target}: "
                    f"{type(err).__name__}: {err}. Fix or uninstall that package; "
                    "`lra list` shows the others"
                ) from err
        return self.obj


_KINDS = {"model": "lra.models", "task": "lra.tasks"}
_ENTRIES = {kind: {} for kind in _KINDS}
_loaded = {kind: False for kind in _KINDS}


def _import_target(target):
    module, _, attr = target.partition(":")
    obj = import_module(module)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


def _register(kind, name, source="built-in"):
    def decorate(obj):
        _ENTRIES[kind].setdefault(name, Entry(name, source=source)).obj = obj
        return obj

    return decorate


def register_model(name):
    """Class decorator: make a backbone available as `model=<name>`."""
    return _register("model", name)


def register_task(name):
    """Class decorator: make a LightningDataModule available as `task=<name>`."""
    return _register("task", name)


def _load(kind):
    if _loaded[kind]:
        return
    _loaded[kind] = True
    from importlib.metadata import entry_points

    for name, module in BUILT_IN[kind].items():
        _ENTRIES[kind].setdefault(name, Entry(name, target=module))
    for ep in entry_points(group=_KINDS[kind]):
        if ep.name not in _ENTRIES[kind]:
            dist = ep.dist.name if ep.dist is not None else ep.value.split(".")[0]
            _ENTRIES[kind][ep.name] = Entry(ep.name, source=f"plugin {dist}", target=ep.value)


def entries(kind):
    """All registered entries of a kind ("model" or "task"), sorted by name."""
    _load(kind)
    return dict(sorted(_ENTRIES[kind].items()))


def get(kind, name):
    known = entries(kind)
    if name not in known:
        raise UnknownName(
            f"unknown {kind} {name!r}; available: {', '.join(known) or 'none'}. "
            f"Run `lra list` to see every {kind} and where it comes from."
        )
    return known[name].load()


def model(name):
    """The backbone class registered as `name`."""
    return get("model", name)


def task(name):
    """The data module class registered as `name`."""
    return get("task", name)
