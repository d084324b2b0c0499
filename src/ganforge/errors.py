"""User-facing errors.

Every exception raised for bad input derives from :class:`GanforgeError`. Its message is a single
line that says what is wrong and what to do; the CLI prints it without a traceback and exits 2.
"""


class GanforgeError(Exception):
    """An error caused by the user's input or environment, reported as one line."""

    exit_code = 2


class ConfigError(GanforgeError):
    """Unknown recipe or key, or a value out of range."""


class DataError(GanforgeError):
    """Missing, corrupt or hostile data."""


class CheckpointError(GanforgeError):
    """A checkpoint that is missing, corrupt, unsafe or incompatible."""
