"""Retrieval index commands: `toolkit build-index`, `toolkit search`, `toolkit retrieve`."""

from __future__ import annotations

import click

from retrieval_index.build import BuildIndexConfig
from retrieval_index.retrieve import RetrieveConfig
from retrieval_index.store import IndexSpec
from toolkit.cli.common import config_option
from toolkit.cli.options import config_from, options_from


@click.command("build-index")
@config_option
@click.argument("sources", nargs=-1, type=click.Path())
@options_from(BuildIndexConfig, "out", "model", skip=("sources", "index"))  # index: IndexSpec's options, next line
@options_from(IndexSpec, skip=("ef_construction",))  # ef_construction: Python only
@options_from(BuildIndexConfig, "batch_size", "executor", "ray_address", "ray_workers", "ray_cpus", "force")
def build_index(sources, **kw):
    """Embed guideline rules and knowledge snippets into a faiss index folder.

    SOURCES are rules and knowledge files, told apart by suffix: .md (each bullet is
    one rule: `- [R07] text {category: X; tags: a, b} (grade: <=3)`, headings become
    tags), .jsonl/.json (objects with text, id, kind, tags, grade_hint, category),
    .yaml (a list of such objects, or `rules:`, `knowledge:`, `brands:`, `synonyms:`
    lists) and .txt (a category taxonomy, `id - A > B > C` per line). Snippets
    without an id get a content hash. A rebuild into the same folder re-embeds only
    snippets whose text changed; an unchanged build is skipped.

    \b
    Examples:
      toolkit build-index demo/guideline.md demo/knowledge/brands.yaml -o out/demo/index
      toolkit build-index rules.yaml taxonomy-with-ids.en-US.txt -o out/index --index-type hnsw
    """
    from retrieval_index.build import build_index as run
    from toolkit.core.errors import UserError

    if not kw["out"]:
        raise UserError("no output folder; pass -o/--out FOLDER")
    result = run(config_from(BuildIndexConfig, kw, sources=list(sources), index=config_from(IndexSpec, kw)))
    click.echo(result.summary())


@click.command()
@config_option
@click.argument("query", required=False)
@click.option("-i", "--index", "index", type=click.Path(), help="Index folder from `toolkit build-index`.")
@click.option("--title", help="An item title: search with `query | title`, as `toolkit retrieve` does for a pair.")
@click.option("-k", "--k", "k", type=int, default=5, show_default=True, help="How many snippets to show.")
@click.option("--kind", type=click.Choice(["rule", "knowledge", "any"]), default="any", show_default=True,
              help="Only snippets of this kind.")
@click.option("--tag", "tags", multiple=True, help="Only snippets with this tag (repeatable: any of them).")
@click.option("--category", help="Item category: leaves out rules scoped to other categories.")
@click.option("--lexical-weight", type=float, default=None,
              help="Weight of the BM25 score added to the cosine (0 = dense only; default as in retrieve).")
@click.option("--model",
              help="Embedding model; must be the one the index was built with (default: the one it records).")
def search(query, index, title, k, kind, tags, category, lexical_weight, model):
    """Print the top rules and knowledge snippets for a query (for a human).

    \b
    Example:
      toolkit search "case for keystrel k9" -i out/demo/index --title "Lumaro Slim Clear Case for Keystrel K9"
    """
    import shutil

    from retrieval_index.index import RuleIndex
    from retrieval_index.retrieve import DEFAULT_LEXICAL_WEIGHT, pair_texts
    from toolkit.core.errors import UserError

    if not query or not query.strip():
        raise UserError('no query given; pass one, e.g. `toolkit search "wireless earbuds" -i out/demo/index`')
    if not index:
        raise UserError("no index; pass -i/--index FOLDER (the output of `toolkit build-index`)")
    if k < 1:
        raise UserError(f"-k must be >= 1; got {k}")
    rule_index = RuleIndex.load(index, model)
    dense, lexical = pair_texts([query], [title], "both") if title else ([query], [query])
    weight = DEFAULT_LEXICAL_WEIGHT if lexical_weight is None else lexical_weight
    hits = rule_index.search(dense, k, kind, tags, category, lexical, weight)[0]
    width = shutil.get_terminal_size((100, 20)).columns
    for rank, h in enumerate(hits, 1):
        hint = f" (grade: {h.grade_hint})" if h.grade_hint else ""
        head = f"{rank:2d}. {h.score:.3f}  {h.id}  [{h.kind}]{hint}"
        click.echo(head)
        click.echo(click.wrap_text(h.text, width=min(width, 100), initial_indent="      ", subsequent_indent="      "))
    click.echo(f"search: {len(hits)} of {len(rule_index)} snippets shown for {dense[0]!r} "
               f"({'hybrid' if weight else 'dense'}, model {rule_index.model_id})")


@click.command()
@config_option
@click.argument("input", required=False, type=click.Path())
@options_from(RetrieveConfig, "index", "out", "k", "text", "lexical_weight", "kind", "knowledge_k", "tags", "scope",
              "model", skip=("input", "force"))  # force: after --show
@click.option("--show", type=int, default=0, help="Print the first N pairs with their retrieved snippets.")  # CLI-only
@options_from(RetrieveConfig, "executor", "ray_address", "ray_workers", "ray_cpus", "force")
def retrieve(input, show, **kw):
    """Retrieve the top-k guideline rules for every query-item pair (batched).

    INPUT is a pairs file or folder (`toolkit ingest` / `toolkit split` output); each of
    its Parquet files is written to the output folder with list columns rule_ids and
    rule_scores (best first) added.

    \b
    Example:
      toolkit retrieve out/demo/pairs -i out/demo/index -o out/demo/retrieved -k 5 --show 3
    """
    from retrieval_index.retrieve import retrieve as run
    from toolkit.core.errors import UserError

    if not input or not kw["index"] or not kw["out"]:
        raise UserError("pass the pairs, the index and an output folder: "
                        "`toolkit retrieve out/pairs -i out/index -o out/retrieved`")
    cfg = config_from(RetrieveConfig, kw, input=input)
    result = run(cfg)
    if show:
        _show(result.out, cfg.index, show)
    click.echo(result.summary())


def _show(out, index_dir, n: int) -> None:
    import polars as pl

    from retrieval_index.index import RuleIndex
    from toolkit.core import columns as C

    index = RuleIndex.load(index_dir, verify=False)
    df = pl.concat([pl.read_parquet(p) for p in sorted(out.glob("*.parquet"))], how="diagonal_relaxed").head(n)
    for row in df.iter_rows(named=True):
        grade = f"  (gold grade {row[C.GRADE]})" if row.get(C.GRADE) is not None else ""
        click.echo(f"\n{row[C.QUERY]!r} -> {row[C.TITLE]!r}{grade}")
        for sid, score in zip(row[C.RULE_IDS], row[C.RULE_SCORES]):
            s = index.get(sid)
            hint = f" (grade: {s[C.SNIPPET_GRADE_HINT]})" if s[C.SNIPPET_GRADE_HINT] else ""
            click.echo(f"  {score:.3f} {sid}{hint}: {s[C.SNIPPET_TEXT][:110]}"
                       f"{'...' if len(s[C.SNIPPET_TEXT]) > 110 else ''}")
        if row.get(C.KNOWLEDGE_IDS):
            click.echo(f"  knowledge: {', '.join(row[C.KNOWLEDGE_IDS])}")
    click.echo("")


COMMANDS = [build_index, search, retrieve]
