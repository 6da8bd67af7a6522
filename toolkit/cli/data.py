"""Data commands: `toolkit ingest`, `toolkit split`, `toolkit stats`, `toolkit scales`."""

from __future__ import annotations

import click

from toolkit.cli.common import config_option
from toolkit.cli.options import config_from, options_from
from toolkit.formats import ColumnMap
from toolkit.ingest import IngestConfig
from toolkit.splits import SplitConfig


@click.command()
@config_option
@click.argument("inputs", nargs=-1, type=click.Path())
@options_from(IngestConfig, "out", "format", "scale", "grade_map", "thresholds", "source", "encoding", "separator",
              "max_field_chars", "drop_invalid", "on_conflict",
              skip=("inputs", "columns"))  # inputs: the argument; columns: the next line's
@options_from(ColumnMap, param="{}_column")  # --query-column ... : the generic format's column map
@options_from(IngestConfig, "esci_locale", "esci_version", "force")
def ingest(inputs, **kw):
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
    from toolkit.ingest import ingest as run

    if not inputs:
        raise UserError("no input given; pass a file, e.g. `toolkit ingest demo/pairs.jsonl -o out/pairs`")
    if not kw["out"]:
        raise UserError("no output folder; pass -o/--out FOLDER")
    cfg = config_from(IngestConfig, kw, inputs=list(inputs), columns=config_from(ColumnMap, kw),
                      esci_locale=kw.pop("esci_locale") or None)
    result = run(cfg)
    if not result.skipped:
        from toolkit.stats import stats_table

        click.echo(stats_table(result.out))
    click.echo(result.summary())


@click.command()
@config_option
@click.argument("input", required=False, type=click.Path())
# the CLI takes the text form
@options_from(SplitConfig, skip=("input",), override={"fractions": {"default": "train=0.8,dev=0.1,test=0.1"}})
def split(input, **kw):
    """Split pairs into train/dev/test by query group (no query in two splits).

    Deterministic for a given seed; prints the grade distribution of each split.

    \b
    Example:
      toolkit split out/demo/pairs -o out/demo/splits --fractions train=0.6,dev=0.2,test=0.2
      toolkit split out/cf/pairs -o out/cf/splits --max-rows train=2000,dev=500,test=500
    """
    from toolkit.core.errors import UserError
    from toolkit.splits import split as run
    from toolkit.stats import stats_table

    if not input or not kw["out"]:
        raise UserError("pass the ingested pairs and an output folder: `toolkit split out/pairs -o out/splits`")
    result = run(config_from(SplitConfig, kw, input=input))
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
        text = ("thresholds " + ",".join(map(str, spec)) if isinstance(spec, tuple)
                else ", ".join(f"{k}={v}" for k, v in spec.items()))
        click.echo(f"  {fmt:12s} -> {sc:7s} {text}")


COMMANDS = [ingest, split, stats, scales]
