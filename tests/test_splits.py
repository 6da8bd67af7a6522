"""`toolkit split`: by query group, deterministic by seed, close to the target fractions.

Run: .venv/bin/python -m pytest tests/test_splits.py -q
"""

import polars as pl

from toolkit.core import columns as C
from toolkit.splits import assign_splits, query_key


def _pairs(n_queries=200, per_query=(1, 9), seed=0):
    import random

    rnd = random.Random(seed)
    rows = []
    for q in range(n_queries):
        for i in range(rnd.randint(*per_query)):
            rows.append({C.QUERY: f"Query {q}" if i % 2 else f"  query   {q} ", C.TITLE: f"item {q}-{i}", C.GRADE: rnd.randint(1, 4)})
    return pl.DataFrame(rows)


FR = {"train": 0.8, "dev": 0.1, "test": 0.1}


def test_no_query_in_two_splits():
    df = assign_splits(_pairs(), FR, seed=3)
    per_query = df.with_columns(pl.col(C.QUERY).map_elements(query_key, return_dtype=pl.String).alias("k")).group_by("k").agg(
        pl.col(C.SPLIT).n_unique().alias("n")
    )
    assert per_query["n"].max() == 1  # case/space variants of a query stay together


def test_deterministic_by_seed_and_seed_matters():
    a = assign_splits(_pairs(), FR, seed=1)[C.SPLIT].to_list()
    b = assign_splits(_pairs(), FR, seed=1)[C.SPLIT].to_list()
    c = assign_splits(_pairs(), FR, seed=2)[C.SPLIT].to_list()
    assert a == b and a != c


def test_row_fractions_close_to_targets():
    df = assign_splits(_pairs(n_queries=400), FR, seed=0)
    n = df.height
    for name, f in FR.items():
        got = df.filter(pl.col(C.SPLIT) == name).height / n
        assert abs(got - f) < 0.02, (name, got)


def test_cli_writes_split_files_and_prints_distribution(cli, repo, tmp_path):
    assert cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "p").exit_code == 0
    r = cli("split", tmp_path / "p", "-o", tmp_path / "s", "--fractions", "train=0.6,dev=0.2,test=0.2", "--seed", "7")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["split", "4", "Excellent"]
    assert [ln.split()[0] for ln in lines[2:6]] == ["train", "dev", "test", "all"]
    parts = {n: pl.read_parquet(tmp_path / "s" / f"{n}.parquet") for n in ("train", "dev", "test")}
    assert sum(p.height for p in parts.values()) == pl.read_parquet(tmp_path / "p/pairs.parquet").height
    qs = [set(p[C.QUERY].map_elements(query_key, return_dtype=pl.String)) for p in parts.values()]
    assert not (qs[0] & qs[1] or qs[0] & qs[2] or qs[1] & qs[2])
    for n, p in parts.items():
        assert set(p[C.SPLIT]) == {n}
        assert f"{n}={p.height} rows" in lines[-1]
    # stats on the folder prints the same table
    assert cli("stats", tmp_path / "s").stdout.splitlines() == lines[:-1]


def test_max_rows_samples_rows_across_queries_and_keeps_the_rest_apart(cli, repo, tmp_path):
    assert cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "p").exit_code == 0
    args = ["split", tmp_path / "p", "--fractions", "train=0.6,dev=0.2,test=0.2", "--seed", "7"]
    assert cli(*args, "-o", tmp_path / "full").exit_code == 0
    r = cli(*args, "-o", tmp_path / "capped", "--max-rows", "train=20,dev=5")
    assert r.exit_code == 0, r.stderr
    full = {n: pl.read_parquet(tmp_path / "full" / f"{n}.parquet") for n in ("train", "dev", "test")}
    capped = {n: pl.read_parquet(tmp_path / "capped" / f"{n}.parquet") for n in ("train", "dev", "test")}
    assert [capped[n].height for n in ("train", "dev")] == [20, 5]
    assert capped["test"].equals(full["test"])  # no cap: untouched
    for n in ("train", "dev"):
        ids = full[n][C.PAIR_ID].to_list()
        kept = capped[n][C.PAIR_ID].to_list()
        assert set(kept) < set(ids) and kept == [i for i in ids if i in set(kept)]  # a subset, in input order
    # drawn over the split's queries, not the first rows: more queries than the first 20 rows hold
    first = full["train"].head(20)[C.QUERY].n_unique()
    assert capped["train"][C.QUERY].n_unique() > first
    assert f"train=20 rows/{capped['train'][C.QUERY].n_unique()} queries (sampled from {full['train'].height})" in r.stdout
    # same seed, same sample; the uncapped config hashes as before (its output stays up to date)
    assert cli(*args, "-o", tmp_path / "again", "--max-rows", "train=20,dev=5").exit_code == 0
    assert pl.read_parquet(tmp_path / "again/train.parquet").equals(capped["train"])
    assert "up to date" in cli(*args, "-o", tmp_path / "full").stdout


def test_max_rows_errors_name_the_fix(cli, repo, tmp_path):
    assert cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "p").exit_code == 0
    r = cli("split", tmp_path / "p", "-o", tmp_path / "s", "--max-rows", "holdout=5")
    assert r.exit_code != 0 and "--max-rows names split 'holdout'" in r.stderr
    r = cli("split", tmp_path / "p", "-o", tmp_path / "s", "--max-rows", "train=lots")
    assert r.exit_code != 0 and "train=2000,dev=500" in r.stderr
    assert not (tmp_path / "s").exists()


def test_a_pairs_file_keeps_its_folders_grade_scale(cli, repo, tmp_path):
    from toolkit.core.stagefolder import read_manifest

    cli("ingest", repo / "demo/pairs.jsonl", "--scale", "three", "--grade-map", "4=3,3=2,2=1,1=1", "-o", tmp_path / "pairs")
    r = cli("split", tmp_path / "pairs" / "pairs.parquet", "-o", tmp_path / "splits")
    assert r.exit_code == 0, r.stderr
    assert read_manifest(tmp_path / "splits")["grade_scale"]["name"] == "three"
    assert "Exact" in r.stdout.splitlines()[0] and "Excellent" not in r.stdout


def test_no_rows_is_a_one_line_error_and_writes_nothing(cli, repo, tmp_path):
    cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "pairs")
    empty = tmp_path / "zero.parquet"
    pl.read_parquet(tmp_path / "pairs/pairs.parquet").head(0).write_parquet(empty)
    r = cli("split", empty, "-o", tmp_path / "splits")
    assert r.exit_code == 2 and "no pairs to split (0 rows)" in r.stderr and not (tmp_path / "splits").exists()
