"""Data commands: `toolkit ingest`, `toolkit split`, `toolkit stats`, `toolkit scales`."""

from __future__ import annotations

import click

from toolkit.cli.common import config_option
from toolkit.core.pairs import MAX_FIELD_CHARS

FORMAT_CHOICES = ["generic", "esci", "wands", "wands-binary", "homedepot", "crowdflower", "multicpr", "qbqtc"]


@click.command()
@config_option
@click.argument("inputs", nargs=-1, type=click.Path())
@click.option("-o", "--out", type=click.Path(), help="Output folder (gets pairs.parquet, config.yaml, manifest.json).")
@click.option("-f", "--format", "format", type=click.Choice(FORMAT_CHOICES), default="generic", show_default=True,
              help="Input layout. generic: one CSV/TSV/JSONL/Parquet file with column flags; esci: folder with the "
                   "official examples+products Parquet (or one merged file); wands: folder with query.csv, product.csv, "
                   "label.csv; homedepot: train.csv (+ product_descriptions.csv, attributes.csv beside it); crowdflower: "
                   "train.csv; wands-binary, multicpr, qbqtc: the files of those names in ../shared/data.")
@click.option("--scale", help="Grade scale: taosr4 (default for most formats), esci, three, five, binary, or a YAML file.")
@click.option("--grade-map", help="Source label -> grade value, e.g. 'E=4,S=3,C=2,I=1' (or a YAML file). Overrides the built-in map.")
@click.option("--thresholds", help="Numeric labels: lower bounds of each grade, best first, e.g. '3.0,2.5,2.0' (Home Depot means).")
@click.option("--source", help="Value of the `source` column (default: the format name, or the file name for generic).")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of the input (e.g. latin-1 for the original Home Depot files).")
@click.option("--separator", help="Field separator for CSV/TSV (default: sniffed from the header).")
@click.option("--max-field-chars", type=int, default=MAX_FIELD_CHARS, show_default=True,
              help="Cut text fields longer than this many characters (counted in the manifest; `attributes` loses whole keys).")
@click.option("--drop-invalid", is_flag=True, help="Drop rows with an unknown grade, empty query/title or conflicting grades (counted) instead of failing.")
@click.option("--on-conflict", type=click.Choice(["drop", "majority", "error"]), default="drop", show_default=True,
              help="The same pair given different grades: drop all its rows (counted), keep the majority grade, or fail.")
@click.option("--query-column", help="[generic] column holding the query (default: query).")
@click.option("--title-column", help="[generic] column holding the item title (default: title).")
@click.option("--grade-column", help="[generic] column holding the label (default: grade).")
@click.option("--description-column", help="[generic] item description column (default: description, if present).")
@click.option("--attributes-column", help="[generic] item attributes column, JSON object or text (default: attributes).")
@click.option("--category-column", help="[generic] item category column (default: category).")
@click.option("--brand-column", help="[generic] item brand column (default: brand).")
@click.option("--item-id-column", help="[generic] item id column (default: item_id).")
@click.option("--query-id-column", help="[generic] query id column (default: query_id).")
@click.option("--split-column", help="[generic] existing split column (default: split).")
@click.option("--id-column", help="[generic] row id column; duplicate ids are an error.")
@click.option("--esci-locale", default="us", show_default=True, help="[esci] keep this product_locale (us, es, jp); '' keeps all.")
@click.option("--esci-version", type=click.Choice(["small", "large"]), help="[esci] keep only the small or large version's rows.")
@click.option("--force", is_flag=True, help="Redo even when the output is up to date.")
def ingest(inputs, out, format, scale, grade_map, thresholds, source, encoding, separator, max_field_chars, drop_invalid, on_conflict, esci_locale, esci_version, force, **cols):
    """Turn relevance data into canonical pair records (Parquet).

    Each pair gets a stable id (a content hash of query and item), its gold grade on
    the chosen grade scale, its raw label, and its source. Bad input stops with a
    one-line error naming the file, row and column; --drop-invalid drops (and counts)
    row-level problems instead. Nothing is written unless the whole input is good.

    \b
    Examples:
      toolkit ingest demo/pairs.jsonl -o out/demo/pairs
      toolkit ingest --format crowdflower ../shared/data/crowdflower/train_shared.csv -o out/cf
      toolkit ingest data.csv --query-column search --title-column name --grade-column rel \\
          --grade-map 'perfect=4,good=3,bad=2,off=1' -o out/mine
    """
    from toolkit.core.errors import UserError
    from toolkit.formats import ColumnMap
    from toolkit.ingest import IngestConfig, ingest as run

    if not inputs:
        raise UserError("no input given; pass a file, e.g. `toolkit ingest demo/pairs.jsonl -o out/pairs`")
    if not out:
        raise UserError("no output folder; pass -o/--out FOLDER")
    colmap = ColumnMap(**{k.removesuffix("_column"): v for k, v in cols.items()})
    cfg = IngestConfig(
        inputs=list(inputs), out=out, format=format, scale=scale, grade_map=grade_map, thresholds=thresholds,
        source=source, encoding=encoding, separator=separator, drop_invalid=drop_invalid, on_conflict=on_conflict, columns=colmap, max_field_chars=max_field_chars,
        esci_locale=esci_locale or None, esci_version=esci_version, force=force,
    )
    result = run(cfg)
    if not result.skipped:
        from toolkit.stats import stats_table

        click.echo(stats_table(result.out))
    click.echo(result.summary())


@click.command()
@config_option
@click.argument("input", required=False, type=click.Path())
@click.option("-o", "--out", type=click.Path(), help="Output folder (gets <split>.parquet per split).")
@click.option("--fractions", default="train=0.8,dev=0.1,test=0.1", show_default=True, help="Row fraction per split; names are yours.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the query-group assignment (and of --max-rows sampling).")
@click.option("--max-rows", default="", help="Keep a seeded random sample of at most N rows of a split, drawn over all its queries "
              "(e.g. train=2000,dev=500): a quick experiment on a large dataset without losing query variety.")
@click.option("--force", is_flag=True, help="Redo even when the output is up to date.")
def split(input, out, fractions, seed, max_rows, force):
    """Split pairs into train/dev/test by query group (no query in two splits).

    Deterministic for a given seed; prints the grade distribution of each split.

    \b
    Example:
      toolkit split out/demo/pairs -o out/demo/splits --fractions train=0.6,dev=0.2,test=0.2
      toolkit split out/cf/pairs -o out/cf/splits --max-rows train=2000,dev=500,test=500
    """
    from toolkit.core.errors import UserError
    from toolkit.splits import SplitConfig, split as run
    from toolkit.stats import stats_table

    if not input or not out:
        raise UserError("pass the ingested pairs and an output folder: `toolkit split out/pairs -o out/splits`")
    result = run(SplitConfig(input=input, out=out, fractions=fractions, seed=seed, max_rows=max_rows, force=force))
    click.echo(stats_table(result.out))
    click.echo(result.summary())


@click.command()
@click.argument("path", type=click.Path())
@click.option("--scale", help="Grade scale to name the grades (default: the one recorded in the folder's manifest).")
def stats(path, scale):
    """Print the grade distribution per split of a pairs file or folder."""
    from toolkit.stats import stats_table

    click.echo(stats_table(path, scale))


@click.command()
def scales():
    """List the built-in grade scales and the built-in label mappings."""
    from toolkit.core.grades import BUILTIN_MAPS, SCALES

    for s in SCALES.values():
        click.echo(f"{s.name:8s} {s.describe()}")
    click.echo("\nbuilt-in mappings (format -> scale):")
    for (fmt, sc), spec in BUILTIN_MAPS.items():
        text = "thresholds " + ",".join(map(str, spec)) if isinstance(spec, tuple) else ", ".join(f"{k}={v}" for k, v in spec.items())
        click.echo(f"  {fmt:12s} -> {sc:7s} {text}")


COMMANDS = [ingest, split, stats, scales]
