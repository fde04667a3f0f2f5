"""Errors a user can act on: the command line prints one ``error:`` line for them, no traceback.

Anything else that escapes a command is a programming bug and keeps its traceback. This module
sits at the bottom of the layers (it imports nothing), so every layer, the settings included,
can raise these.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake or a missing step the user can fix: what is wrong, and what to do about it."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message

    def __reduce__(self) -> tuple[object, ...]:
        # Keep the hint when the error crosses a process boundary (pickling).
        return (type(self), (self.message, self.hint))


class InvalidInput(UserError):
    """A bad option, setting, file or value: the message names it."""


class MissingPrerequisite(UserError):
    """Something must be built, trained, published or started first: the hint says how."""


class ServerUnreachable(MissingPrerequisite):
    """A server the command needs (Kafka, Redis, Triton) does not answer."""


class NothingToReport(MissingPrerequisite):
    """The command has no data to work on yet (no feedback records, say)."""

    exit_code = 1
