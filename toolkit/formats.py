"""Readers for public relevance-data layouts. Each returns a frame of raw pair columns.

Raw frame columns (all strings): query, title, description, attributes (JSON text),
category, brand, raw_label, item_id, query_id, split, plus `_row` (1-based row in
the main input file) used in error messages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from toolkit.core import columns as C
from toolkit.core.errors import UserError
from toolkit.core.options import opt
from toolkit.core.tables import read_table

ROW = "_row"
RAW_COLUMNS = [C.QUERY, C.TITLE, C.DESCRIPTION, C.ATTRIBUTES, C.CATEGORY, C.BRAND, C.RAW_LABEL, C.ITEM_ID, C.QUERY_ID,
               C.SPLIT]


@dataclass
class ColumnMap:
    """Which input column feeds each canonical field (generic format)."""

    query: str | None = opt(None, help="[generic] column holding the query (default: query).")
    title: str | None = opt(None, help="[generic] column holding the item title (default: title).")
    grade: str | None = opt(None, help="[generic] column holding the label (default: grade).")
    description: str | None = opt(None, help="[generic] item description column (default: description, if present).")
    attributes: str | None = opt(None,
                                 help="[generic] item attributes column, JSON object or text (default: attributes).")
    category: str | None = opt(None, help="[generic] item category column (default: category).")
    brand: str | None = opt(None, help="[generic] item brand column (default: brand).")
    item_id: str | None = opt(None, help="[generic] item id column (default: item_id).")
    query_id: str | None = opt(None, help="[generic] query id column (default: query_id).")
    split: str | None = opt(None, help="[generic] existing split column (default: split).")
    id: str | None = opt(None, help="[generic] row id column; duplicate ids are an error.")  # an explicit row id


# Common names for each field, used to suggest the right flag in error messages.
ALIASES = {
    "query": ["query", "search_term", "query_text", "q", "keyword", "searchterm"],
    "title": ["title", "product_title", "item_title", "product_name", "name", "doc", "document"],
    "grade": ["grade", "label", "relevance", "median_relevance", "esci_label", "rating", "score", "judgment",
              "judgement"],
    "description": ["description", "product_description", "desc"],
    "attributes": ["attributes", "product_features", "features", "product_bullet_point"],
    "category": ["category", "product_class", "category_hierarchy", "query_class", "category_path"],
    "brand": ["brand", "product_brand"],
    "item_id": ["item_id", "product_id", "product_uid", "asin", "sku"],
    "query_id": ["query_id", "qid"],
    "split": ["split"],
}


@dataclass
class Loaded:
    frame: pl.DataFrame
    inputs: list[Path] = field(default_factory=list)
    main: Path | None = None  # the file whose rows `_row` counts
    label_column: str = "label"  # the source column name of the grade, for messages


def _col(df: pl.DataFrame, name: str | None) -> pl.Expr:
    if name is None or name not in df.columns:
        return pl.lit(None, dtype=pl.String)
    return pl.col(name).cast(pl.String)


def _finish(df: pl.DataFrame, exprs: dict[str, pl.Expr]) -> pl.DataFrame:
    out = df.with_row_index(ROW, offset=1).select(
        [pl.col(ROW)] + [exprs.get(c, pl.lit(None, dtype=pl.String)).alias(c) for c in RAW_COLUMNS]
    )
    return out


def _need(df: pl.DataFrame, path: Path, field: str, column: str | None, flag: str | None) -> str:
    """The input column for a required field, or a one-line error suggesting the flag."""
    if column and column in df.columns:
        return column
    found = ", ".join(df.columns)
    guess = next((a for a in ALIASES.get(field, []) if a in df.columns), None)
    fix = (f"pass {flag} {guess}" if (flag and guess)
           else (f"pass {flag} <column>" if flag else "check the file's layout"))
    raise UserError(f"{path}: column `{column}` ({field}) missing; found: {found} — {fix}")


def _optional(df: pl.DataFrame, path: Path, column: str | None, flag: str, default: str) -> str | None:
    if column is not None:
        if column not in df.columns:
            raise UserError(f"{path}: column `{column}` given by {flag} is missing; found: {', '.join(df.columns)}")
        return column
    return default if default in df.columns else None


def read_generic(paths: list[Path], cols: ColumnMap, encoding: str, separator: str | None) -> Loaded:
    if len(paths) != 1:
        raise UserError(f"--format generic reads one file; got {len(paths)} — ingest them one by one "
                        "or concatenate them")
    path = paths[0]
    df = read_table(path, encoding, separator)
    q = _need(df, path, "query", cols.query or "query", "--query-column")
    t = _need(df, path, "title", cols.title or "title", "--title-column")
    g = _need(df, path, "grade", cols.grade or "grade", "--grade-column")
    exprs = {C.QUERY: _col(df, q), C.TITLE: _col(df, t), C.RAW_LABEL: _col(df, g)}
    for fld in ("description", "attributes", "category", "brand", "item_id", "query_id", "split"):
        c = _optional(df, path, getattr(cols, fld), f"--{fld.replace('_', '-')}-column", fld)
        exprs[fld] = _col(df, c)
    if cols.id is not None:
        idc = _optional(df, path, cols.id, "--id-column", "id")
        _check_unique_ids(df, path, idc)
    return Loaded(_finish(df, exprs), [path], path, g)


def _check_unique_ids(df: pl.DataFrame, path: Path, column: str) -> None:
    ids = df.with_row_index(ROW, offset=1).select(ROW, pl.col(column).cast(pl.String).alias("id"))
    dup = ids.filter(pl.col("id").is_duplicated()).sort(ROW)
    if dup.height:
        first = dup.row(0, named=True)
        rows = dup.filter(pl.col("id") == first["id"])[ROW].to_list()
        raise UserError(
            f"{path}: duplicate id {first['id']!r} in column `{column}` (rows {', '.join(map(str, rows[:5]))}; "
            f"{dup['id'].n_unique()} ids repeat); give each row its own id or drop the duplicates"
        )


def _find(folder: Path, names: list[str], what: str, required: bool = True) -> Path | None:
    for n in names:
        if (folder / n).exists():
            return folder / n
    if required:
        raise UserError(f"{folder}: no {what} file (looked for {', '.join(names)}); pass the folder that holds it")
    return None


def _single_or_folder(paths: list[Path], fmt: str) -> Path:
    if len(paths) != 1:
        raise UserError(f"--format {fmt} takes one folder (or one file); got {len(paths)} inputs")
    return paths[0]


def read_esci(paths: list[Path], encoding: str, locale: str | None, version: str | None) -> Loaded:
    """ESCI: the official examples + products Parquet files (a folder), or one merged CSV/Parquet."""
    src = _single_or_folder(paths, "esci")
    inputs = []
    if src.is_dir():
        ex_path = _find(src, ["shopping_queries_dataset_examples.parquet", "examples.parquet"], "ESCI examples")
        pr_path = _find(src, ["shopping_queries_dataset_products.parquet", "products.parquet"], "ESCI products")
        ex, pr = read_table(ex_path), read_table(pr_path)
        for need, df, p in (
            (["query", "product_id", "product_locale", "esci_label"], ex, ex_path),
            (["product_id", "product_locale", "product_title"], pr, pr_path),
        ):
            miss = [c for c in need if c not in df.columns]
            if miss:
                raise UserError(f"{p}: ESCI column(s) {', '.join(miss)} missing; found: {', '.join(df.columns)}")
        ex = ex.with_row_index(ROW, offset=1)
        pr = pr.unique(subset=["product_id", "product_locale"], keep="first")
        df = ex.join(pr.drop([c for c in ("__index_level_0__",) if c in pr.columns]),
                     on=["product_id", "product_locale"], how="left", suffix="_p")
        missing_text = df.filter(pl.col("product_title").is_null()).height
        if missing_text == df.height:
            raise UserError(f"{pr_path}: no product of the examples was found (joined on product_id, product_locale); "
                            "pass the matching products file")
        inputs, main = [ex_path, pr_path], ex_path
    else:
        df = read_table(src, encoding).with_row_index(ROW, offset=1)
        miss = [c for c in ("query", "product_title", "esci_label") if c not in df.columns]
        if miss:
            raise UserError(f"{src}: ESCI column(s) {', '.join(miss)} missing; found: {', '.join(df.columns)}")
        inputs, main = [src], src
    if locale and "product_locale" in df.columns:
        df = df.filter(pl.col("product_locale") == locale)
    if version in ("small", "large") and f"{version}_version" in df.columns:
        df = df.filter(pl.col(f"{version}_version").cast(pl.String).is_in(["1", "true", "True"]))
    attr_cols = [c for c in ("product_color", "product_bullet_point") if c in df.columns]
    exprs = {
        C.QUERY: _col(df, "query"),
        C.TITLE: _col(df, "product_title"),
        C.DESCRIPTION: _col(df, "product_description"),
        C.BRAND: _col(df, "product_brand"),
        C.RAW_LABEL: _col(df, "esci_label"),
        C.ITEM_ID: _col(df, "product_id"),
        C.QUERY_ID: _col(df, "query_id"),
        C.SPLIT: _col(df, "split"),
    }
    if attr_cols:
        exprs[C.ATTRIBUTES] = pl.struct(attr_cols).map_elements(_json_obj, return_dtype=pl.String)
    out = df.select([pl.col(ROW)] + [exprs.get(c, pl.lit(None, dtype=pl.String)).alias(c) for c in RAW_COLUMNS])
    return Loaded(out, inputs, main, "esci_label")


def _json_obj(d: dict | None) -> str | None:
    if not d:
        return None
    clean = {k.removeprefix("product_"): str(v).strip() for k, v in d.items() if v is not None and str(v).strip()}
    return json.dumps(clean, ensure_ascii=False, sort_keys=True) if clean else None


def _wands_features(text: str | None) -> str | None:
    """WANDS `product_features`: `name:value|name:value` -> JSON object."""
    if not text:
        return None
    out = {}
    for part in text.split("|"):
        if ":" in part:
            k, v = part.split(":", 1)
            if k.strip() and v.strip():
                out[k.strip()] = v.strip()
    return json.dumps(out, ensure_ascii=False, sort_keys=True) if out else None


def read_wands(paths: list[Path], encoding: str) -> Loaded:
    """WANDS official layout: a folder with query.csv, product.csv, label.csv (tab-separated)."""
    src = _single_or_folder(paths, "wands")
    if not src.is_dir():
        raise UserError(f"{src}: --format wands takes the folder holding query.csv, product.csv and label.csv")
    qp = _find(src, ["query.csv", "query.tsv"], "WANDS query")
    pp = _find(src, ["product.csv", "product.tsv"], "WANDS product")
    lp = _find(src, ["label.csv", "label.tsv"], "WANDS label")
    q, p, lab = read_table(qp, encoding), read_table(pp, encoding), read_table(lp, encoding)
    for need, df, path in (
        (["query_id", "query"], q, qp),
        (["product_id", "product_name"], p, pp),
        (["query_id", "product_id", "label"], lab, lp),
    ):
        miss = [c for c in need if c not in df.columns]
        if miss:
            raise UserError(f"{path}: WANDS column(s) {', '.join(miss)} missing; found: {', '.join(df.columns)}")
    lab = lab.with_row_index(ROW, offset=1)
    df = lab.join(q, on="query_id", how="left", suffix="_q").join(p, on="product_id", how="left", suffix="_p")
    orphan = df.filter(pl.col("query").is_null() | pl.col("product_name").is_null())
    if orphan.height:
        r = orphan.row(0, named=True)
        which = "query_id" if r["query"] is None else "product_id"
        raise UserError(
            f"{lp}: row {r[ROW]} refers to {which} {r[which]!r}, which is not in "
            f"{'query' if which == 'query_id' else 'product'} file ({orphan.height} such rows); "
            "use the matching WANDS files"
        )
    cat = "category hierarchy" if "category hierarchy" in df.columns else "product_class"
    exprs = {
        C.QUERY: _col(df, "query"),
        C.TITLE: _col(df, "product_name"),
        C.DESCRIPTION: _col(df, "product_description"),
        C.CATEGORY: _col(df, cat),
        C.RAW_LABEL: _col(df, "label"),
        C.ITEM_ID: _col(df, "product_id"),
        C.QUERY_ID: _col(df, "query_id"),
    }
    if "product_features" in df.columns:
        exprs[C.ATTRIBUTES] = pl.col("product_features").map_elements(_wands_features, return_dtype=pl.String)
    out = df.select([pl.col(ROW)] + [exprs.get(c, pl.lit(None, dtype=pl.String)).alias(c) for c in RAW_COLUMNS])
    return Loaded(out, [qp, pp, lp], lp, "label")


def read_homedepot(paths: list[Path], encoding: str) -> Loaded:
    """Home Depot (Kaggle 2016): train.csv, plus product_descriptions.csv and attributes.csv when present."""
    src = _single_or_folder(paths, "homedepot")
    if src.is_dir():
        train = _find(src, ["train.csv", "train_shared.csv"], "Home Depot train")
        desc_p = _find(src, ["product_descriptions.csv"], "descriptions", required=False)
        attr_p = _find(src, ["attributes.csv"], "attributes", required=False)
    else:
        train, desc_p, attr_p = src, None, None
        for name, var in (("product_descriptions.csv", "desc"), ("attributes.csv", "attr")):
            if (src.parent / name).exists():
                if var == "desc":
                    desc_p = src.parent / name
                else:
                    attr_p = src.parent / name
    df = read_table(train, encoding)
    miss = [c for c in ("product_uid", "product_title", "search_term", "relevance") if c not in df.columns]
    if miss:
        raise UserError(f"{train}: Home Depot column(s) {', '.join(miss)} missing; found: {', '.join(df.columns)}")
    df = df.with_row_index(ROW, offset=1)
    inputs = [train]
    if desc_p is not None:
        d = read_table(desc_p, encoding)
        if not {"product_uid", "product_description"} <= set(d.columns):
            raise UserError(f"{desc_p}: needs columns product_uid, product_description; found: {', '.join(d.columns)}")
        df = df.join(d.unique("product_uid", keep="first"), on="product_uid", how="left")
        inputs.append(desc_p)
    if attr_p is not None:
        a = read_table(attr_p, encoding)
        if not {"product_uid", "name", "value"} <= set(a.columns):
            raise UserError(f"{attr_p}: needs columns product_uid, name, value; found: {', '.join(a.columns)}")
        a = a.filter(pl.col("product_uid").is_not_null() & pl.col("name").is_not_null())
        brand = a.filter(pl.col("name") == "MFG Brand Name").unique("product_uid", keep="first").select(
            "product_uid", pl.col("value").alias("_brand"))
        attrs = (
            a.filter(pl.col("name") != "MFG Brand Name")
            .group_by("product_uid", maintain_order=True)
            .agg(pl.struct("name", "value").alias("_kv"))
            .with_columns(pl.col("_kv").map_elements(_kv_json, return_dtype=pl.String).alias("_attrs"))
            .drop("_kv")
        )
        df = df.join(attrs, on="product_uid", how="left").join(brand, on="product_uid", how="left")
        inputs.append(attr_p)
    exprs = {
        C.QUERY: _col(df, "search_term"),
        C.TITLE: _col(df, "product_title"),
        C.DESCRIPTION: _col(df, "product_description"),
        C.ATTRIBUTES: _col(df, "_attrs"),
        C.BRAND: _col(df, "_brand"),
        C.RAW_LABEL: _col(df, "relevance"),
        C.ITEM_ID: _col(df, "product_uid"),
    }
    out = df.sort(ROW).select([pl.col(ROW)]
                              + [exprs.get(c, pl.lit(None, dtype=pl.String)).alias(c) for c in RAW_COLUMNS])
    return Loaded(out, inputs, train, "relevance")


def _kv_json(items) -> str | None:
    out = {}
    for kv in items:
        k, v = (kv["name"] or "").strip(), (kv["value"] or "").strip()
        if k and v and k not in out:
            out[k] = v
    return json.dumps(out, ensure_ascii=False, sort_keys=True) if out else None


def read_crowdflower(paths: list[Path], encoding: str) -> Loaded:
    """CrowdFlower (Kaggle 2015) train.csv: id, query, product_title, product_description, median_relevance."""
    src = _single_or_folder(paths, "crowdflower")
    if src.is_dir():
        src = _find(src, ["train.csv", "train_shared.csv"], "CrowdFlower train")
    df = read_table(src, encoding)
    miss = [c for c in ("query", "product_title", "median_relevance") if c not in df.columns]
    if miss:
        raise UserError(f"{src}: CrowdFlower column(s) {', '.join(miss)} missing; found: {', '.join(df.columns)}")
    if "id" in df.columns:
        _check_unique_ids(df, src, "id")
    exprs = {
        C.QUERY: _col(df, "query"),
        C.TITLE: _col(df, "product_title"),
        C.DESCRIPTION: _col(df, "product_description"),
        C.RAW_LABEL: _col(df, "median_relevance"),
        C.ITEM_ID: _col(df, "id"),
    }
    return Loaded(_finish(df, exprs), [src], src, "median_relevance")


def read_wands_binary(paths: list[Path], encoding: str) -> Loaded:
    """The binary WANDS pairs (query, product_name, label Relevant / Not relevant)."""
    src = _single_or_folder(paths, "wands-binary")
    df = read_table(src, encoding)
    miss = [c for c in ("query", "product_name", "label") if c not in df.columns]
    if miss:
        raise UserError(f"{src}: column(s) {', '.join(miss)} missing; found: {', '.join(df.columns)}")
    exprs = {
        C.QUERY: _col(df, "query"),
        C.TITLE: _col(df, "product_name"),
        C.CATEGORY: _col(df, "query_class"),
        C.RAW_LABEL: _col(df, "label"),
        C.QUERY_ID: _col(df, "query_id"),
    }
    return Loaded(_finish(df, exprs), [src], src, "label")


def read_multicpr(paths: list[Path], encoding: str) -> Loaded:
    """Chinese e-commerce query-item matching (Multi-CPR via EcomInstruct): query, item_title, label."""
    src = _single_or_folder(paths, "multicpr")
    df = read_table(src, encoding)
    miss = [c for c in ("query", "item_title", "label") if c not in df.columns]
    if miss:
        raise UserError(f"{src}: column(s) {', '.join(miss)} missing; found: {', '.join(df.columns)}")
    exprs = {C.QUERY: _col(df, "query"), C.TITLE: _col(df, "item_title"), C.RAW_LABEL: _col(df, "label")}
    return Loaded(_finish(df, exprs), [src], src, "label")


def read_qbqtc(paths: list[Path], encoding: str) -> Loaded:
    """QBQTC (Chinese web query-title, 0/1/2)."""
    src = _single_or_folder(paths, "qbqtc")
    df = read_table(src, encoding)
    miss = [c for c in ("query", "title", "label") if c not in df.columns]
    if miss:
        raise UserError(f"{src}: column(s) {', '.join(miss)} missing; found: {', '.join(df.columns)}")
    exprs = {C.QUERY: _col(df, "query"), C.TITLE: _col(df, "title"), C.RAW_LABEL: _col(df, "label")}
    return Loaded(_finish(df, exprs), [src], src, "label")


# Default grade scale per format (the scale its labels map onto without a --grade-map).
FORMAT_SCALES = {
    "generic": "taosr4",
    "esci": "taosr4",
    "wands": "taosr4",
    "wands-binary": "binary",
    "homedepot": "taosr4",
    "crowdflower": "taosr4",
    "multicpr": "binary",
    "qbqtc": "three",
}
FORMATS = list(FORMAT_SCALES)
