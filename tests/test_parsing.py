"""The answer parser in both orders: every failure mode is a status, never a crash.

Run: .venv/bin/python -m pytest tests/test_parsing.py -q
"""

import pytest

from toolkit.core import parsing as P

L = ["4", "3", "2", "1"]
NAMES = ["Excellent", "Related", "Mismatch", "Irrelevant"]

LABEL_FIRST = [
    ("4\nReason: exact match", "4", P.OK, "exact match"),
    ("  \n 3 \n\nReason:   close substitute", "3", P.OK, "close substitute"),
    ("**2** because it is an accessory", "2", P.OK, "it is an accessory"),
    ("Grade: 1\nunrelated", "1", P.OK, "unrelated"),
    ("answer: 4.", "4", P.OK, ""),
    ("4", "4", P.OK, ""),
    ("3 or 4\nhard to say", None, P.CONFLICT, None),
    ("3/4 both fit", None, P.MISSING, None),
    ("7\nReason: x", None, P.INVALID, None),
    # a CoT-first answer read label-first: the "1" of a numbered list is not a grade
    ("1. Query understanding: a mug\n2. Item understanding: a mug\n5. Decision: exact\nGrade: 4", None, P.MISSING, None),
    ("1) Query: mug\n2) Item: mug", None, P.MISSING, None),
    ("1. Irrelevant: a phone case is not a phone", "1", P.OK, "Irrelevant: a phone case is not a phone"),
    ("Excellent match", None, P.MISSING, None),
    ("", None, P.EMPTY, None),
    ("   ", None, P.EMPTY, None),
    (None, None, P.EMPTY, None),
]


@pytest.mark.parametrize("text,label,status,rationale", LABEL_FIRST)
def test_label_first(text, label, status, rationale):
    p = P.parse_answer(text, L, P.LABEL_FIRST)
    assert (p.label, p.status) == (label, status)
    if rationale is not None:
        assert p.rationale == rationale


COT_FIRST = [
    ("1. Query...\n5. Decision: Related\nGrade: 3", "stop", "3", P.OK),
    ("reasons here\nGrade: 4 (", "stop", "4", P.OK),
    ("reasons\nFinal answer: **2**", "stop", "2", P.OK),
    ("reasons\n4", "stop", "4", P.OK),
    ("Grade: 3 is tempting... Grade: 3", "stop", "3", P.OK),  # repeated, same grade
    ("Grade: 3\n\nGrade: 4", "stop", None, P.CONFLICT),  # repeated, different grades
    ("reasoning... Grade: 5", "stop", None, P.INVALID),
    ("no label at all", "stop", None, P.MISSING),
    ("1. Query understanding: the shopper", "length", None, P.TRUNCATED),
    ("", "length", None, P.TRUNCATED),
]


@pytest.mark.parametrize("text,finish,label,status", COT_FIRST)
def test_cot_first(text, finish, label, status):
    p = P.parse_answer(text, L, P.COT_FIRST, finish)
    assert (p.label, p.status) == (label, status)


def test_cot_first_rationale_excludes_label():
    p = P.parse_answer("1. a\n5. Decision: fine\nGrade: 4", L, P.COT_FIRST)
    assert p.rationale == "1. a\n5. Decision: fine"


def test_custom_labels():
    p = P.parse_answer("E\nReason: exact", ["E", "S", "C", "I"], P.LABEL_FIRST)
    assert p.label == "E" and p.ok


@pytest.mark.parametrize(
    "rationale,expected",
    [
        ("1. Query: x\n5. Decision: the item is Mismatch for this query", "2"),
        ("5. Decision: grade 4, exact", "4"),
        ("**Decision**: Irrelevant, another category", "1"),
        ("no decision step here", None),
        ("5. Decision: unclear", None),
    ],
)
def test_decision_label(rationale, expected):
    assert P.decision_label(rationale, L, NAMES) == expected


def test_bad_order_is_a_programming_error():
    with pytest.raises(ValueError):
        P.parse_answer("4", L, "sideways")
