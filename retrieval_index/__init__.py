"""Retrieval index of guideline rules and knowledge snippets (TaoSR1 stage 0)."""
