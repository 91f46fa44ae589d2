"""The one exception hierarchy of Hindsight.

Each foreign library's errors are wrapped in exactly one place into one of
these, so callers only ever catch ``HindsightError`` and its children.
"""

from __future__ import annotations


class HindsightError(Exception):
    """Base of every expected failure; the command line prints it without a traceback."""


class ConfigError(HindsightError):
    """The configuration is invalid; ``problems`` holds every ``key: message`` found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class CommitLogError(HindsightError):
    """The commit log is unreadable, torn or fails its hash chain."""


class TornTailError(CommitLogError):
    """The commit log ends in an append cut short; its whole lines end at byte ``offset``."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


class StoreError(HindsightError):
    """A recording could not be written durably."""


class SourceError(HindsightError):
    """An audio source could not be opened or failed."""


class ProtocolError(HindsightError):
    """A control request was refused; ``code`` is one of the contract's error codes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ClientError(HindsightError):
    """The client could not do what it was asked; ``exit_code`` follows the contract."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
