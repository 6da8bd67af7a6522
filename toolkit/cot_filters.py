"""Filters for teacher rationales: format, grade agreement, length, repetition, near-duplicates.

Each check returns a drop reason (`dropped_<reason>` in the stats) or None.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from toolkit.core import parsing as P
from toolkit.core.options import opt

TRUNCATED_STEP = "truncated_step"  # guided: a step was cut at its token budget; it reads cut off mid-sentence
STEP_NAMES = ("query understanding", "item understanding", "category match", "attribute match", "decision")


@dataclass
class FilterConfig:
    min_chars: int = opt(40, show_default=True, help="Drop shorter rationales.")
    max_chars: int = opt(2000, show_default=True, help="Drop longer rationales.")
    min_steps: int = 5  # how many of the five step headers the rationale must contain
    max_repeat_ratio: float = 0.5  # drop when fewer than this share of word 3-grams are distinct
    near_duplicate: float = 0.9  # Jaccard of word 3-grams at or above which a rationale repeats a kept one
    max_prompt_copy: float = 0.7  # drop when this share of the rationale's word 3-grams is copied from the prompt


def shingles(text: str, n: int = 3) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + n]) for i in range(max(0, len(words) - n + 1))}


def jaccard(a: set, b: set) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def steps_present(rationale: str) -> int:
    low = rationale.lower()
    return sum(1 for s in STEP_NAMES if s in low)


def repeat_ratio(text: str) -> float:
    words = re.findall(r"\w+", text.lower())
    grams = [tuple(words[i : i + 3]) for i in range(max(0, len(words) - 2))]
    return len(set(grams)) / len(grams) if grams else 1.0


def copied_share(text: str, prompt: str) -> float:
    own = shingles(text)
    return len(own & shingles(prompt)) / len(own) if own else 0.0


def check(parsed: P.Parsed, gold_label: str, cfg: FilterConfig, prompt_text: str = "") -> str | None:
    """The drop reason for one parsed teacher answer, or None to keep it."""
    if not parsed.ok:
        return parsed.status
    if parsed.label != gold_label:
        return "grade_mismatch"
    r = parsed.rationale
    if len(r) < cfg.min_chars:
        return "too_short"
    if len(r) > cfg.max_chars:
        return "too_long"
    if steps_present(r) < cfg.min_steps:
        return "missing_steps"
    if repeat_ratio(r) < cfg.max_repeat_ratio:
        return "repetitive"
    if prompt_text and copied_share(r, prompt_text) > cfg.max_prompt_copy:
        return "copies_prompt"
    return None


class NearDuplicates:
    """Remembers kept rationales (per pair) and flags new ones that repeat them."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.kept: dict[str, list[set]] = {}

    def seen(self, key: str, text: str) -> bool:
        sh = shingles(text)
        for other in self.kept.get(key, []):
            if jaccard(sh, other) >= self.threshold:
                return True
        self.kept.setdefault(key, []).append(sh)
        return False
