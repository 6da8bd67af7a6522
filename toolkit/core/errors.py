"""Errors a user can fix: the CLI prints them as one line, without a traceback."""

from __future__ import annotations

import re


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


MASK = "***"
MIN_PART = 8  # a run this long of a secret's characters is masked too (a cut or truncated copy)


def redact(text: str, secrets) -> str:
    """`text` with every secret, and every run of MIN_PART+ of its characters, replaced by ***.

    Mask before cutting a message to length: a cut first can leave most of a secret behind.
    """
    text = str(text)
    for s in sorted({str(s) for s in secrets if s}, key=len, reverse=True):
        text = text.replace(s, MASK)
        if len(s) > MIN_PART:
            text = _mask_parts(text, s)
    return text


def _mask_parts(text: str, secret: str) -> str:
    """Replace each maximal run of `text` that is a MIN_PART+ character substring of `secret`."""
    windows = re.compile("|".join(sorted({re.escape(secret[i : i + MIN_PART])
                                          for i in range(len(secret) - MIN_PART + 1)})))
    out, pos = [], 0
    while m := windows.search(text, pos):
        start = end = m.start()
        for i in (i for i in range(len(secret) - MIN_PART + 1) if secret.startswith(m.group(), i)):
            a, b = m.start(), m.end()
            j, k = i, i + MIN_PART
            while a > pos and j > 0 and text[a - 1] == secret[j - 1]:
                a, j = a - 1, j - 1
            while b < len(text) and k < len(secret) and text[b] == secret[k]:
                b, k = b + 1, k + 1
            if b - a > end - start:
                start, end = a, b
        out += [text[pos:start], MASK]
        pos = end
    return "".join(out) + text[pos:]
