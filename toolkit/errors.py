"""Errors a user can fix: the CLI prints them as one line, without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in input, config or environment that the user can fix.

    The message is one line: what happened, the value seen, and how to fix it.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split("\n")))


def missing_extra(extra: str, module: str) -> UserError:
    """The error for an optional dependency that is not installed."""
    return UserError(
        f"this stage needs the optional package `{module}`, which is not installed; "
        f"install it with: pip install 'taosr-toolkit[{extra}]'"
    )
