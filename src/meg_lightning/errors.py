"""User-facing errors.

Anything the user can fix (a bad config value, a missing file, missing weights) is raised as
:class:`UserError`. The CLI prints its message as one line on stderr and exits with code 2; every
other exception exits with code 1. Library code raises ``UserError`` (or a subclass) with a message
that names the key or value and what was expected.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or environment; CLI exit code 2."""

    exit_code = 2

    def __str__(self) -> str:  # always one line
        return " ".join(str(a) for a in self.args).replace("\n", " ").strip()


class ConfigError(UserError, ValueError):
    """A configuration key has a bad value: ``ConfigError(key, value, expected)``."""

    def __init__(self, key: str, value: object, expected: str):
        super().__init__(f"{key}={value!r}: expected {expected}")
        self.key, self.value, self.expected = key, value, expected


class MissingWeightsError(UserError):
    """Model weights are not available locally and cannot be downloaded."""
