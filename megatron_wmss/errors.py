"""The error for a rejected setting, shared by every component that validates its own config."""


class ConfigError(ValueError):
    """A recipe or override is invalid; the message names the option (`wmss` prints it as one line and
    exits with status 2)."""
