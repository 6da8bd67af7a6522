"""Local folders that stand for URLs (toolkit.core.stagefolder.objectstore): a stage writing `s3://...` works in a
local staging folder and reads URL inputs from local mirrors. Configs, fingerprints and summary lines name the URL."""

from __future__ import annotations


ALIASES: dict[str, str] = {}  # local folder (str) -> the URL it stands for


def unalias(value):
    """The URL a local folder stands for, else the value unchanged; through dicts and lists."""
    if isinstance(value, dict):
        return {k: unalias(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(unalias(v) for v in value)
    return ALIASES.get(value, value) if isinstance(value, str) else value


def in_text(text: str) -> str:
    """A message with each staging or mirror folder replaced by its URL."""
    for local, url in ALIASES.items():
        text = text.replace(local, url)
    return text
