"""Retrieval index commands (filled in by the retrieval-index stage)."""

COMMANDS: list = []
