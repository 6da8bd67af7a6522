"""`toolkit ingest` on the demo data, generic files and the official ESCI / WANDS / Home Depot
layouts (tiny files written here in the same format).

Run: .venv/bin/python -m pytest tests/test_ingest.py -q
"""

import json

import polars as pl
import pytest

from toolkit.core import columns as C
from toolkit.ingest import IngestConfig, ingest, pair_id
from toolkit.core.stagefolder import read_manifest


def test_demo_pairs_ingest(cli, repo, tmp_path):
    out = tmp_path / "pairs"
    r = cli("ingest", repo / "demo/pairs.jsonl", "-o", out)
    assert r.exit_code == 0, r.stderr
    df = pl.read_parquet(out / "pairs.parquet")
    src = [json.loads(x) for x in (repo / "demo/pairs.jsonl").read_text().splitlines() if x.strip()]
    assert df.height == len(src)
    assert df.columns == C.PAIR_COLUMNS
    assert set(df[C.GRADE].unique()) == {1, 2, 3, 4}
    # attributes are stored as sorted-key JSON text; ids are unique content hashes
    first = df.row(0, named=True)
    assert json.loads(first[C.ATTRIBUTES]) == src[0]["attributes"] or (first[C.ATTRIBUTES] == "" and not src[0]["attributes"])
    assert df[C.PAIR_ID].n_unique() == df.height
    m = read_manifest(out)
    assert m["counts"]["kept"] == df.height and m["grade_scale"]["name"] == "taosr4"
    assert (out / "config.yaml").exists()
    assert "ingest: read" in r.stdout and "kept" in r.stdout and "4 Excellent" in r.stdout


def test_readable_by_datasets(cli, repo, tmp_path):
    datasets = pytest.importorskip("datasets")
    cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "p")
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "p" / "pairs.parquet"), split="train")
    assert ds.num_rows > 90 and C.PAIR_ID in ds.column_names


def test_pair_id_is_stable_and_content_based(tmp_path):
    a = pair_id("red mug", "Mug, red", "", "", "", "")
    assert a == pair_id("red mug", "Mug, red", "", "", "", "")
    assert a != pair_id("red mug", "Mug, blue", "", "", "", "")
    # same content in another file or order -> same id
    p1, p2 = tmp_path / "a.csv", tmp_path / "b.csv"
    p1.write_text("query,title,grade\nred mug,Mug red,4\nblue mug,Mug blue,3\n")
    p2.write_text("title,grade,query\nMug blue,3,blue mug\nMug red,4,red mug\n")
    ids = []
    for p in (p1, p2):
        ingest(IngestConfig(inputs=[str(p)], out=str(tmp_path / p.stem)))
        ids.append(sorted(pl.read_parquet(tmp_path / p.stem / "pairs.parquet")[C.PAIR_ID]))
    assert ids[0] == ids[1]


def test_generic_column_flags_and_grade_map(cli, tmp_path):
    p = tmp_path / "mine.tsv"
    p.write_text("search\tname\trel\tbrand_name\nsofa\tGrey sofa\tperfect\tNordvik\nsofa\tSofa cover\toff\t\n")
    out = tmp_path / "o"
    r = cli("ingest", p, "-o", out, "--query-column", "search", "--title-column", "name", "--grade-column", "rel",
            "--brand-column", "brand_name", "--grade-map", "perfect=4,good=3,bad=2,off=1")
    assert r.exit_code == 0, r.stderr
    df = pl.read_parquet(out / "pairs.parquet")
    assert df[C.GRADE].to_list() == [4, 1]
    assert df[C.BRAND].to_list() == ["Nordvik", ""]
    assert df[C.RAW_LABEL].to_list() == ["perfect", "off"]
    assert df[C.SOURCE].to_list() == ["mine", "mine"]


def test_config_file_with_flag_override(cli, tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("q,t,g\nlamp,Desk lamp,E\nlamp,Lamp shade,C\n")
    cfg = tmp_path / "ingest.yaml"
    cfg.write_text("query_column: q\ntitle_column: t\ngrade_column: g\ngrade_map: E=4,S=3,C=2,I=1\nsource: from-config\n")
    r = cli("ingest", "--config", cfg, p, "-o", tmp_path / "o", "--source", "from-flag")
    assert r.exit_code == 0, r.stderr
    df = pl.read_parquet(tmp_path / "o/pairs.parquet")
    assert df[C.GRADE].to_list() == [4, 2] and set(df[C.SOURCE]) == {"from-flag"}
    saved = (tmp_path / "o/config.yaml").read_text()
    assert "from-flag" in saved and "E=4" in saved


def test_config_unknown_field_is_one_line_error(cli, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("query_colum: q\n")
    r = cli("ingest", "--config", cfg, "x.csv", "-o", tmp_path / "o")
    assert r.exit_code == 2
    assert "unknown field `query_colum`" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_rerun_is_skipped_unless_changed(cli, tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("query,title,grade\nlamp,Desk lamp,4\n")
    out = tmp_path / "o"
    assert cli("ingest", p, "-o", out).exit_code == 0
    before = (out / "manifest.json").read_text()
    r = cli("ingest", p, "-o", out)
    assert "up to date" in r.stdout and (out / "manifest.json").read_text() == before
    p.write_text("query,title,grade\nlamp,Desk lamp,3\n")
    r = cli("ingest", p, "-o", out)
    assert "kept 1" in r.stdout and pl.read_parquet(out / "pairs.parquet")[C.GRADE].to_list() == [3]


@pytest.mark.parametrize(
    "scale,labels,expected",
    [("five", ["5", "4", "3", "2", "1"], [5, 4, 3, 2, 1]), ("three", ["3", "2", "1"], [3, 2, 1])],
)
def test_other_scales_end_to_end(cli, tmp_path, scale, labels, expected):
    rows = ["query,title,grade"]
    for q in range(10):
        for lab in labels:
            rows.append(f"query {q},item {q}-{lab},{lab}")
    p = tmp_path / "d.csv"
    p.write_text("\n".join(rows) + "\n")
    assert cli("ingest", p, "-o", tmp_path / "pairs", "--scale", scale).exit_code == 0
    r = cli("split", tmp_path / "pairs", "-o", tmp_path / "splits")
    assert r.exit_code == 0, r.stderr
    header = r.stdout.splitlines()[0]
    from toolkit.core.grades import get_scale

    for g in get_scale(scale).grades:
        assert f"{g.value} {g.name}" in header
    df = pl.concat([pl.read_parquet(f) for f in sorted((tmp_path / "splits").glob("*.parquet"))])
    assert sorted(set(df[C.GRADE]), reverse=True) == expected
    assert read_manifest(tmp_path / "splits")["grade_scale"]["name"] == scale


# -- official layouts -------------------------------------------------------------


def _write_esci(folder):
    folder.mkdir()
    pl.DataFrame({
        "example_id": [1, 2, 3, 4, 5],
        "query": ["usb c cable", "usb c cable", "usb c cable", "usb c cable", "cable usb c"],
        "query_id": [10, 10, 10, 10, 11],
        "product_id": ["A1", "A2", "A3", "A4", "A1"],
        "product_locale": ["us", "us", "us", "us", "jp"],
        "esci_label": ["E", "S", "C", "I", "E"],
        "small_version": [1, 1, 0, 1, 1],
        "large_version": [1, 1, 1, 1, 1],
        "split": ["train", "train", "test", "test", "train"],
    }).write_parquet(folder / "shopping_queries_dataset_examples.parquet")
    pl.DataFrame({
        "product_id": ["A1", "A2", "A3", "A4", "A1"],
        "product_title": ["USB-C cable 1m", "Lightning cable", "USB-C charger", "Garden hose", "USB-C ケーブル"],
        "product_description": ["Braided", None, None, None, None],
        "product_bullet_point": ["Fast charge", None, None, None, None],
        "product_brand": ["Keystrel", "Aurelo", "Keystrel", "Tidewell", "Keystrel"],
        "product_color": ["black", None, None, "green", None],
        "product_locale": ["us", "us", "us", "us", "jp"],
    }).write_parquet(folder / "shopping_queries_dataset_products.parquet")


def test_esci_official_layout(tmp_path):
    _write_esci(tmp_path / "esci")
    ingest(IngestConfig(inputs=[str(tmp_path / "esci")], out=str(tmp_path / "o"), format="esci"))
    df = pl.read_parquet(tmp_path / "o/pairs.parquet")
    assert df[C.TITLE].to_list() == ["USB-C cable 1m", "Lightning cable", "USB-C charger", "Garden hose"]  # locale us only
    assert df[C.GRADE].to_list() == [4, 3, 2, 1]
    assert df[C.SPLIT].to_list() == ["train", "train", "test", "test"]
    assert df[C.BRAND][0] == "Keystrel" and df[C.DESCRIPTION][0] == "Braided"
    assert json.loads(df[C.ATTRIBUTES][0]) == {"bullet_point": "Fast charge", "color": "black"}
    ingest(IngestConfig(inputs=[str(tmp_path / "esci")], out=str(tmp_path / "s"), format="esci", esci_version="small"))
    assert pl.read_parquet(tmp_path / "s/pairs.parquet").height == 3


def test_esci_missing_products_file_is_refused(tmp_path, cli):
    _write_esci(tmp_path / "esci")
    (tmp_path / "esci/shopping_queries_dataset_products.parquet").unlink()
    r = cli("ingest", "-f", "esci", tmp_path / "esci", "-o", tmp_path / "o")
    assert r.exit_code == 2 and "no ESCI products file" in r.stderr and not (tmp_path / "o").exists()


def _write_wands(folder):
    folder.mkdir()
    (folder / "query.csv").write_text("query_id\tquery\tquery_class\n0\tsalon chair\tMassage Chairs\n1\tblue rug\tArea Rugs\n")
    (folder / "product.csv").write_text(
        "product_id\tproduct_name\tproduct_class\tcategory hierarchy\tproduct_description\tproduct_features\trating_count\taverage_rating\treview_count\n"
        "10\tsalon styling chair\tSalon Chairs\tCommercial / Salon / Chairs\tsturdy\tcolor:black|material:steel\t5\t4.5\t5\n"
        "11\tnavy area rug\tArea Rugs\tRugs / Area Rugs\t\tcolor:navy\t\t\t\n"
        "12\tdesk lamp\tLamps\tLighting / Lamps\t\t\t\t\t\n"
    )
    (folder / "label.csv").write_text("id\tquery_id\tproduct_id\tlabel\n0\t0\t10\tExact\n1\t1\t11\tPartial\n2\t1\t12\tIrrelevant\n")


def test_wands_official_layout(tmp_path):
    _write_wands(tmp_path / "wands")
    ingest(IngestConfig(inputs=[str(tmp_path / "wands")], out=str(tmp_path / "o"), format="wands"))
    df = pl.read_parquet(tmp_path / "o/pairs.parquet")
    assert df[C.QUERY].to_list() == ["salon chair", "blue rug", "blue rug"]
    assert df[C.GRADE].to_list() == [4, 3, 1]
    assert json.loads(df[C.ATTRIBUTES][0]) == {"color": "black", "material": "steel"}
    assert df[C.CATEGORY][0] == "Commercial / Salon / Chairs"
    ingest(IngestConfig(inputs=[str(tmp_path / "wands")], out=str(tmp_path / "o3"), format="wands", scale="three"))
    assert pl.read_parquet(tmp_path / "o3/pairs.parquet")[C.GRADE].to_list() == [3, 2, 1]


def test_wands_label_with_unknown_product_is_refused(tmp_path, cli):
    _write_wands(tmp_path / "wands")
    with open(tmp_path / "wands/label.csv", "a") as f:
        f.write("3\t1\t99\tExact\n")
    r = cli("ingest", "-f", "wands", tmp_path / "wands", "-o", tmp_path / "o")
    assert r.exit_code == 2 and "row 4" in r.stderr and "product_id '99'" in r.stderr


def test_homedepot_with_descriptions_and_attributes(tmp_path):
    d = tmp_path / "hd"
    d.mkdir()
    (d / "train.csv").write_text(
        "id,product_uid,product_title,search_term,relevance\n"
        "2,100001,Angle bracket 12-gauge,angle bracket,3\n"
        "3,100001,Angle bracket 12-gauge,l bracket,2.5\n"
        "9,100002,Deck screws 1 lb,deck screw,2.33\n"
        "16,100005,Shower faucet trim,shower only faucet,1.67\n"
    )
    (d / "product_descriptions.csv").write_text("product_uid,product_description\n100001,Galvanized steel angle\n100002,Coated screws\n")
    (d / "attributes.csv").write_text(
        'product_uid,name,value\n100001,MFG Brand Name,Keystrel\n100001,Material,Steel\n100001,Gauge,12\n100005,"Finish",Chrome\n'
    )
    ingest(IngestConfig(inputs=[str(d)], out=str(tmp_path / "o"), format="homedepot"))
    df = pl.read_parquet(tmp_path / "o/pairs.parquet")
    assert df[C.GRADE].to_list() == [4, 3, 2, 1]
    assert df[C.DESCRIPTION].to_list() == ["Galvanized steel angle", "Galvanized steel angle", "Coated screws", ""]
    assert df[C.BRAND].to_list() == ["Keystrel", "Keystrel", "", ""]
    assert json.loads(df[C.ATTRIBUTES][0]) == {"Gauge": "12", "Material": "Steel"}
    assert json.loads(df[C.ATTRIBUTES][3]) == {"Finish": "Chrome"}
    # thresholds are configurable
    ingest(IngestConfig(inputs=[str(d / "train.csv")], out=str(tmp_path / "t"), format="homedepot", thresholds="2.9,2.4,1.5"))
    assert pl.read_parquet(tmp_path / "t/pairs.parquet")[C.GRADE].to_list() == [4, 3, 2, 2]


def test_on_conflict_policies(tmp_path, cli):
    p = tmp_path / "d.csv"
    p.write_text("query,title,grade\nmug,Red mug,4\nmug,Red mug,3\nmug,Red mug,3\nmug,Blue mug,2\n")
    r = cli("ingest", p, "-o", tmp_path / "drop")
    assert r.exit_code == 0 and "dropped_conflicting_grades=3" in r.stdout
    assert pl.read_parquet(tmp_path / "drop/pairs.parquet")[C.TITLE].to_list() == ["Blue mug"]
    cli("ingest", p, "-o", tmp_path / "maj", "--on-conflict", "majority")
    df = pl.read_parquet(tmp_path / "maj/pairs.parquet")
    assert dict(zip(df[C.TITLE], df[C.GRADE])) == {"Red mug": 3, "Blue mug": 2}
    r = cli("ingest", p, "-o", tmp_path / "err", "--on-conflict", "error")
    assert r.exit_code == 2 and "rows 1, 2, 3" in r.stderr and not (tmp_path / "err").exists()
