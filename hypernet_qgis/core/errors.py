"""Exceptions that reach the user."""


class InputError(ValueError):
    """A problem with the user's input. The message names the problem and the fix; no traceback is shown."""


class Cancelled(RuntimeError):
    """The user cancelled the run; nothing was written."""
