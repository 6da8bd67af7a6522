"""Bad input to `toolkit ingest`: one-line errors naming file, row/column and the fix; non-zero
exit; nothing half-written (a previous good output stays as it was).

Run: .venv/bin/python -m pytest tests/test_bad_input.py -q
"""

import polars as pl
import pytest

GOOD = "query,title,grade\nred mug,Red ceramic mug,4\nred mug,Mug rack,2\n"


def _files(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else None


def _assert_one_line_error(r, *needles):
    assert r.exit_code != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


CASES = {
    "misnamed column": (
        "d.csv", b"query,product_title,grade\nred mug,Red mug,4\n", [],
        ["d.csv", "column `title`", "found: query, product_title, grade", "--title-column product_title"],
    ),
    "missing grade column": (
        "d.csv", b"query,title,median_relevance\nred mug,Red mug,4\n", [],
        ["column `grade`", "--grade-column median_relevance"],
    ),
    "unknown grade value": (
        "d.csv", b"query,title,grade\nred mug,Red mug,4\nred mug,Blue mug,7\n", [],
        ["d.csv: row 2, column `grade`", "unknown grade '7'", "--grade-map", "--drop-invalid"],
    ),
    "empty grade": (
        "d.csv", b"query,title,grade\nred mug,Red mug,\n", [],
        ["row 1, column `grade`", "unknown grade None"],
    ),
    "empty query": (
        "d.csv", b"query,title,grade\nred mug,Red mug,4\n  ,Blue mug,1\n", [],
        ["d.csv: row 2, column `query`", "empty query", "--drop-invalid"],
    ),
    "empty title": (
        "d.jsonl", b'{"query": "mug", "title": "Mug", "grade": 4}\n{"query": "mug", "title": "", "grade": 1}\n', [],
        ["d.jsonl: row 2, column `title`", "empty title"],
    ),
    "duplicate ids": (
        "d.csv", b"id,query,title,grade\n1,mug,Red mug,4\n2,mug,Blue mug,3\n1,mug,Green mug,2\n", ["--id-column", "id"],
        ["d.csv: duplicate id '1' in column `id` (rows 1, 3"],
    ),
    "non-utf8 bytes": (
        "d.csv", "query,title,grade\nmug,Caf\u00e9 mug,4\n".encode("latin-1"), [],
        ["d.csv: line 2", "not valid utf-8", "--encoding latin-1"],
    ),
    "invalid json line": (
        "d.jsonl", b'{"query": "mug", "title": "Mug", "grade": 4}\n{"query": "mug", \n', [],
        ["d.jsonl: line 2 is not valid JSON"],
    ),
    "empty file": ("d.csv", b"", [], ["d.csv: the file is empty"]),
    "ragged csv": (
        "d.csv", b"query,title,grade\nmug,Red mug,4,extra,cells\n", [],
        ["d.csv: not a valid CSV file"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_a_one_line_error_and_writes_nothing(cli, tmp_path, case):
    name, content, flags, needles = CASES[case]
    p = tmp_path / name
    p.write_bytes(content)
    out = tmp_path / "out"
    r = cli("ingest", p, "-o", out, *flags)
    _assert_one_line_error(r, *needles)
    assert not out.exists()
    assert _files(tmp_path) == [name]  # no temporary folder left behind


def test_previous_output_survives_a_failed_run(cli, tmp_path):
    p = tmp_path / "d.csv"
    p.write_text(GOOD)
    out = tmp_path / "out"
    assert cli("ingest", p, "-o", out).exit_code == 0
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    p.write_text(GOOD + "red mug,Mug tree,9\n")
    r = cli("ingest", p, "-o", out)
    _assert_one_line_error(r, "row 3", "unknown grade '9'")
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["d.csv", "out"]


def test_drop_invalid_counts_what_it_drops(cli, tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("query,title,grade\nmug,Red mug,4\nmug,Blue mug,9\n,Green mug,3\nmug,,2\nmug,Tea mug,3\n")
    r = cli("ingest", p, "-o", tmp_path / "o", "--drop-invalid")
    assert r.exit_code == 0
    assert "dropped_unknown_grade=1" in r.stdout and "dropped_empty_query=1" in r.stdout and "dropped_empty_title=1" in r.stdout
    assert "unknown grade" in r.stderr  # the warning
    assert pl.read_parquet(tmp_path / "o/pairs.parquet")["title"].to_list() == ["Red mug", "Tea mug"]


def test_truncated_parquet(cli, tmp_path):
    good = tmp_path / "good.parquet"
    pl.DataFrame({"query": ["mug"] * 50, "title": [f"Mug {i}" for i in range(50)], "grade": [4] * 50}).write_parquet(good)
    bad = tmp_path / "bad.parquet"
    data = good.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    r = cli("ingest", bad, "-o", tmp_path / "out")
    _assert_one_line_error(r, "bad.parquet: cannot read Parquet", "truncated or corrupt")
    assert not (tmp_path / "out").exists()


def test_truncated_parquet_as_stage_input(cli, tmp_path):
    d = tmp_path / "pairs"
    d.mkdir()
    (d / "pairs.parquet").write_bytes(b"PAR1 not really parquet")
    r = cli("split", d, "-o", tmp_path / "splits")
    _assert_one_line_error(r, "pairs.parquet: cannot read Parquet")
    assert not (tmp_path / "splits").exists()


def test_missing_input_file(cli, tmp_path):
    r = cli("ingest", tmp_path / "nope.csv", "-o", tmp_path / "out")
    _assert_one_line_error(r, "nope.csv: no such file")


def test_stage_input_without_pair_columns(cli, tmp_path):
    d = tmp_path / "x"
    d.mkdir()
    pl.DataFrame({"query": ["mug"]}).write_parquet(d / "x.parquet")
    r = cli("split", d, "-o", tmp_path / "s")
    _assert_one_line_error(r, "column(s) pair_id, title, grade missing", "toolkit ingest")


def test_bad_fractions(cli, tmp_path, repo):
    cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "p")
    r = cli("split", tmp_path / "p", "-o", tmp_path / "s", "--fractions", "train=0.8,test=0.1")
    _assert_one_line_error(r, "--fractions must sum to 1")
