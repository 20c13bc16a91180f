"""Errors that are the user's to fix. The CLI prints them as one paragraph and exits with code 2."""

from __future__ import annotations

import difflib


class ConfigError(Exception):
    """A bad config key, value, override or file. Carries the dotted key (or file) it is about."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


class DataError(ConfigError):
    """Data that cannot be found, read or downloaded."""


class RunFailed(Exception):
    """A run that started but could not finish (non-finite loss, ...); recorded with status=failed."""


def did_you_mean(name: str, choices) -> str:
    """' Did you mean 'x'?' for the closest of `choices`, or ''."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""
