"""Backbones: (batch, length, d_model) -> same, each registered by name in `lra.registry`.

Importing this package registers the built-ins; add a backbone by adding its module here and
its name to `lra.registry.BUILT_IN`.
"""
# each module registers its backbone by name
from lra.models import flash, lightnet, mamba, s4, s4d, transformer  # noqa: F401
