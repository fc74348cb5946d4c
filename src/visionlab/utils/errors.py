"""The error every layer raises for a value of the user's making (one line, no traceback).

`ConfigError` is the one base of user-input errors: a config value, a file or folder given,
a data source (`CheckpointError`, `DataSourceError`, `ImageError` derive from it). The layer
that checks the value raises it; a command prints it in one line. Any other exception,
a plain `ValueError` included, is a bug: it shows its traceback and `BUG_NOTE`.
"""

BUG_NOTE = "this is a bug in visionlab; please report it with the traceback above"


class ConfigError(ValueError):
    """A value of the user's making that cannot work; the message is one line naming it and what is allowed.

    A ValueError, as a bad argument is, so `except ValueError` around a call still sees it;
    but only a ConfigError is reported as the user's mistake.
    """
