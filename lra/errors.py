"""Errors the CLI ends with one paragraph and no traceback (`--debug` shows it).

UserError: bad input the user can fix by typing something else; exit status 2.
EnvironmentFault: the machine, not the input (a folder that cannot be written, a full disk, a
missing API key); exit status 1. Any OSError reaching the CLI is reported the same way.
"""


class UserError(Exception):
    """Bad input: a name, an override, a path. The message says what is wrong and what to do."""


class Diverged(UserError):
    """The training loss became NaN or infinite; the message gives the step and learning rate."""


class EnvironmentFault(Exception):
    """The environment cannot do what was asked; the message names what and how to fix it."""
