"""Tasks: one LightningDataModule per data set, registered by name (`task=listops`).

Importing this package registers the built-in tasks; base.py holds what they share.
"""
# each registers its tasks
from lra.tasks import image, listops, pathfinder, speech, text  # noqa: F401
