"""Ingest of the real public datasets in ../shared/data (used by path; skipped when absent).

Expected raw counts come from each dataset's README in ../shared/data.
Run: .venv/bin/python -m pytest tests/test_shared_data.py -q
"""

import polars as pl
import pytest

from toolkit.core import columns as C
from toolkit.ingest import IngestConfig, ingest

pytestmark = pytest.mark.shared_data


def _ingest(tmp_path, fmt, path, **kw):
    res = ingest(IngestConfig(inputs=[str(path)], out=str(tmp_path / fmt), format=fmt, **kw))
    df = pl.read_parquet(tmp_path / fmt / "pairs.parquet")
    c = res.counts
    drops = sum(v for k, v in c.items() if k.startswith("dropped_"))
    assert c["kept"] == df.height and c["rows_read"] == c["kept"] + drops
    assert df[C.PAIR_ID].n_unique() == df.height
    assert (df[C.QUERY] != "").all() and (df[C.TITLE] != "").all()
    return df, c


def test_crowdflower(shared_data, tmp_path):
    path = shared_data / "crowdflower/train_shared.csv"
    df, c = _ingest(tmp_path, "crowdflower", path)
    # README: 8,127 rows, 210 queries; 1: 573, 2: 1,108, 3: 1,392, 4: 5,054
    assert c["rows_read"] == 8127
    assert c["grades_read"] == {"4": 5054, "3": 1392, "2": 1108, "1": 573}
    assert df[C.QUERY].n_unique() == 210
    # independent check of the duplicate handling: a (query, title, description) group survives
    # iff it has exactly one distinct grade
    raw = pl.read_csv(path, infer_schema=False).with_columns(
        [pl.col(x).fill_null("").str.replace_all(r"\s+", " ").str.strip_chars() for x in ("query", "product_title", "product_description")]
    )
    groups = raw.group_by("query", "product_title", "product_description").agg(pl.col("median_relevance").n_unique().alias("n"))
    assert df.height == groups.filter(pl.col("n") == 1).height


def test_homedepot(shared_data, tmp_path):
    df, c = _ingest(tmp_path, "homedepot", shared_data / "homedepot/train_shared.csv")
    # README distribution of mean ratings mapped with the default thresholds 3.0 / 2.5 / 2.0
    assert c["rows_read"] == 72057
    assert c["grades_read"] == {
        "4": 18593,
        "3": 19 + 14787 + 11,
        "2": 11414 + 11 + 15621,
        "1": 2042 + 4 + 2912 + 5 + 6629 + 9,
    }


def test_wands_binary(shared_data, tmp_path):
    df, c = _ingest(tmp_path, "wands-binary", shared_data / "wands/wands_binary_shared.csv")
    # README: shared 1,948 (243 queries; Not relevant: 1,029, Relevant: 919)
    assert c["kept"] == 1948 and c["grades"] == {"2": 919, "1": 1029}
    assert df[C.QUERY].n_unique() == 243


def test_chinese_multicpr(shared_data, tmp_path):
    df, c = _ingest(tmp_path, "multicpr", shared_data / "multicpr_ecom_zh/query_item_matching_shared.jsonl")
    # README: shared 333 (111 queries), one match and two non-matches per query
    assert c["kept"] == 333 and c["grades"] == {"2": 111, "1": 222}
    assert df[C.QUERY].n_unique() == 111
    assert any("\u4e00" <= ch <= "\u9fff" for ch in df[C.TITLE][0])


def test_chinese_qbqtc_three_grades(shared_data, tmp_path):
    df, c = _ingest(tmp_path, "qbqtc", shared_data / "qbqtc/qbqtc_shared.jsonl")
    # README: 23,000 rows; 0: 5,650, 1: 14,465, 2: 2,885 -> grades 1, 2, 3 on the `three` scale
    assert c["rows_read"] == 23000 and c["grades_read"] == {"3": 2885, "2": 14465, "1": 5650}


def test_esci_sample(shared_data, tmp_path):
    df, c = _ingest(tmp_path, "esci", shared_data / "esci/esci_us_exact_only_sample.csv")
    # README: 485 rows, 50 US queries, all labels E
    assert c["rows_read"] == 485 and set(c["grades_read"]) == {"4"}
    assert df[C.QUERY].n_unique() == 50 and df[C.BRAND].str.len_chars().max() > 0


def test_split_crowdflower_by_query(shared_data, tmp_path, cli):
    r = cli("ingest", "-f", "crowdflower", shared_data / "crowdflower/train_shared.csv", "-o", tmp_path / "p")
    assert r.exit_code == 0
    r = cli("split", tmp_path / "p", "-o", tmp_path / "s", "--seed", "0")
    assert r.exit_code == 0
    parts = [pl.read_parquet(tmp_path / "s" / f"{n}.parquet") for n in ("train", "dev", "test")]
    sets = [set(p[C.QUERY].str.to_lowercase()) for p in parts]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    total = sum(p.height for p in parts)
    assert abs(parts[0].height / total - 0.8) < 0.05
