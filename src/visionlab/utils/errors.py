"""The error every layer raises for a value of the user's making (one line, no traceback)."""


class ConfigError(ValueError):
    """A config value that cannot work; the message is one line naming it and what is allowed."""
