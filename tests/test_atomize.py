"""`toolkit atomize`: a prose guideline -> candidate atomic rules (rules.md + rules.jsonl).

Run: .venv/bin/python -m pytest tests/test_atomize.py -q
The tests check structure, not the quality of the rules; the end-to-end one runs the default
SmolLM2 (transformers) on a two-passage guideline written here.
"""

import json

import pytest

from toolkit.atomize import AtomizeConfig, clean_rule, parse_rules, split_passages

GUIDELINE = """Rating guide

Overview
Judge how well a product matches the shopper's query. Brand matters as much as function.
A product of the wrong brand is at most a partial match.

Accessories
An accessory for the queried product is not the product.
Replacement parts count as accessories.
"""


def test_split_passages_keeps_sections_and_line_spans():
    ps = split_passages(GUIDELINE, max_chars=200)
    assert [p.section for p in ps] == ["Overview", "Accessories"]
    assert ps[0].text.startswith("Judge how well") and (ps[0].first_line, ps[0].last_line) == (4, 5)
    assert ps[1].text.endswith("accessories.") and (ps[1].first_line, ps[1].last_line) == (8, 9)
    small = split_passages(GUIDELINE, max_chars=60)  # a line longer than the limit stays whole
    assert all(len(p.text) <= 60 or "\n" not in p.text for p in small) and len(small) == 4


def test_parse_rules_counts_what_it_drops():
    cfg = AtomizeConfig(guideline="g.txt", out="o")
    counts = {k: 0 for k in ("none", "too_short", "too_long", "truncated", "duplicate")}
    answer = ("- [R1] A product of another brand is at most Related. (grade: <=3)\n"
              "Some chatter\n* **Accessories** are not the product {category: Tools}\n- NONE\n- short\n2. Cut off mid-sen")
    rules = parse_rules(answer, "length", cfg, counts)
    assert rules == ["A product of another brand is at most Related.", "Accessories are not the product"]
    assert counts == {"none": 1, "too_short": 1, "too_long": 0, "truncated": 1, "duplicate": 0}
    assert parse_rules("- 1. A finished rule ends with a stop.", "length", cfg, counts) == ["A finished rule ends with a stop."]
    assert clean_rule("`x` {braces} inside {ok} here") == "x (braces) inside (ok) here"
    assert [clean_rule(t) for t in ("- 2) Rule 3: **Bold** text", "3.5 inch screws fit")] == ["Bold text", "3.5 inch screws fit"]


@pytest.mark.slow
def test_atomize_writes_reviewable_rules_with_provenance(cli, tmp_path, default_model_dir):
    from retrieval_index.snippets import load_markdown

    src = tmp_path / "guide.txt"
    src.write_text(GUIDELINE)
    r = cli("atomize", src, "-o", tmp_path / "rules", "--max-tokens", "64", "--max-passage-chars", "200")
    assert r.exit_code == 0, r.stderr
    assert "atomize: 2 passages ->" in r.stdout
    records = [json.loads(line) for line in (tmp_path / "rules/rules.jsonl").read_text().splitlines()]
    stats = json.loads((tmp_path / "rules/manifest.json").read_text())["counts"]
    assert stats["rules"] == len(records) >= 2
    assert [x["id"] for x in records] == [f"A{i:02d}" for i in range(1, len(records) + 1)]
    assert len({x["text"].lower() for x in records}) == len(records)
    for x in records:
        assert x["status"] == "candidate" and x["source"] == str(src) and x["section"] in ("Overview", "Accessories")
        assert x["passage_text"] in GUIDELINE and 1 <= x["lines"][0] <= x["lines"][1] <= GUIDELINE.count("\n")
        assert len(x["source_sha256"]) == 64 and x["model"] and 15 <= len(x["text"]) <= 400
    md = (tmp_path / "rules/rules.md").read_text()
    assert md.startswith("# Candidate rules from guide.txt") and "## Overview" in md
    snippets = load_markdown(tmp_path / "rules/rules.md")  # the rules format the index reads
    assert [(sn.id, sn.text) for sn in snippets] == [(x["id"], x["text"]) for x in records]
