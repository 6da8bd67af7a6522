"""`toolkit review push`: send a machine-made dataset to Argilla for human review.

    toolkit review push out/demo/cot --kind cot --workspace review --dataset demo-cot

Each row becomes a record whose id is the pair id: pushing again updates the records (fields,
metadata, the model's suggestion) and keeps reviewers' answers; it never adds copies. A
workspace or dataset that does not exist is created (an owner's API key can create both).
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from annotation import records as R
from annotation import settings as S
from annotation.client import Connection, argilla_errors, connect
from annotation.inputs import ID_COL, read_rows
from toolkit.core import columns as C
from toolkit.core.errors import UserError
from toolkit.core.grades import GradeScale, get_scale
from toolkit.core.options import opt
from toolkit.core.progress import progress
from toolkit.core.stagefolder import scale_of

log = logging.getLogger(__name__)

DEFAULT_WORKSPACE = "review"
BATCH = 200
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")


def default_dataset(kind: str) -> str:
    return f"taosr-{kind}"


def check_name(what: str, name: str) -> None:
    if not NAME_RE.match(name or ""):
        raise UserError(f"--{what} {name!r} is not a valid Argilla name; use letters, digits, `-`, `_` and `.`")


# The options of the server and dataset fields that PushConfig and PullConfig share (`review push` / `review pull`).
SERVER_OPTIONS = {
    "kind": {"choices": ("cot", "prefs", "hard", "errors"), "required": True,
             "help": "What the input is: cot (gen-cot output: CoT rationales), prefs (make-prefs output: preference "
                     "pairs), hard (label-difficulty output: hard cases), errors (eval output: pairs the model got "
                     "wrong)."},
    "dataset": {"help": "Argilla dataset name (default: taosr-KIND; created by push when missing)."},
    "workspace": {"show_default": True, "help": "Argilla workspace (created by push when missing)."},
    "scale": {"help": "Grade scale (default: the one recorded in the input's manifest, else taosr4)."},
    "api_url": {"envvar": "ARGILLA_API_URL", "show_envvar": True,
                "help": "Argilla server URL, e.g. http://127.0.0.1:6900."},
    "api_key": {"envvar": "ARGILLA_API_KEY", "show_envvar": True, "help": "API key of an Argilla owner or admin."},
    "timeout": {"show_default": True, "help": "Seconds to wait for each request to Argilla."},
}


@dataclass
class PushConfig:
    input: str
    kind: str = opt(**SERVER_OPTIONS["kind"])
    dataset: str | None = opt(None, **SERVER_OPTIONS["dataset"])  # default: taosr-<kind>
    workspace: str = opt(DEFAULT_WORKSPACE, **SERVER_OPTIONS["workspace"])
    # answers a record needs before it counts as done (Argilla task distribution)
    min_submitted: int = opt(1, show_default=True,
                             help="Answers a record needs before it is done (Argilla task distribution); 2+ for "
                                  "agreement figures.")
    scale: str | None = opt(None, **SERVER_OPTIONS["scale"])  # default: the scale in the input's manifest
    guidelines: str | None = opt(None, type="path",
                                 help="Markdown file shown to reviewers with the grade scale, e.g. demo/guideline.md.")
    limit: int | None = opt(None, help="Push only the first N rows (after the kind's filter).")
    max_pass_rate: float | None = opt(None, help="prefs/hard: push only rows with pass_rate <= this value.")
    pairs: str | None = opt(None, type="path",  # canonical pairs to take query/item text from when the input lacks it
                            help="Canonical pairs (`toolkit ingest` output) to show query and item text from, when "
                                 "the input lacks them (gen-cot, make-prefs).")
    blind: bool = opt(False,  # no model suggestion, no model prediction in the record: reviewers judge unprompted
                      help="Push without the model's suggestion (and, for errors, without its prediction): reviewers "
                           "judge unprompted.")
    api_url: str | None = opt(None, **SERVER_OPTIONS["api_url"])
    api_key: str | None = opt(None, **SERVER_OPTIONS["api_key"])
    timeout: float = opt(30.0, **SERVER_OPTIONS["timeout"])

    def __post_init__(self):
        S.get_kind(self.kind)
        self.dataset = self.dataset or default_dataset(self.kind)
        check_name("dataset", self.dataset)
        check_name("workspace", self.workspace)
        if int(self.min_submitted) < 1:
            raise UserError(f"--min-submitted must be at least 1; got {self.min_submitted}")
        if self.limit is not None and int(self.limit) < 1:
            raise UserError(f"--limit must be at least 1; got {self.limit}")
        if self.pairs and not Path(self.pairs).exists():
            raise UserError(f"--pairs {self.pairs}: no such file or folder; pass the output of `toolkit ingest`")
        if self.guidelines and not Path(self.guidelines).is_file():
            raise UserError(f"--guidelines {self.guidelines}: no such file; pass a markdown file such as "
                            "demo/guideline.md")


@dataclass
class PushResult:
    url: str
    workspace: str
    dataset: str
    pushed: int
    new: int
    updated: int
    created: list[str]
    skipped: dict
    blind: bool = False

    def summary(self) -> str:
        made = f"; created {' and '.join(self.created)}" if self.created else ""
        skip = "".join(f", {n} {why}" for why, n in self.skipped.items() if n)
        blind = " blind (no model suggestion)" if self.blind else ""
        return (
            f"review push: {self.pushed}{blind} records to {self.workspace}/{self.dataset} at {self.url} "
            f"({self.new} new, {self.updated} updated{skip}){made}"
        )


def load_rows(cfg: PushConfig) -> tuple[pl.DataFrame, GradeScale, dict]:
    """The rows to push (with their record ids), after the kind's filter; and what was left out, counted."""
    spec = S.get_kind(cfg.kind)
    df, _ = read_rows(spec, cfg.input, cfg.pairs)
    scale = get_scale(cfg.scale) if cfg.scale else scale_of(cfg.input)
    skipped: dict[str, int] = {}
    if cfg.kind == "errors":
        n = df.height
        keep = pl.col(C.PRED_GRADE).is_null() | (pl.col(C.PRED_GRADE) != pl.col(C.GRADE))
        # honeypots always go
        df = df.filter(keep | pl.col(C.HONEYPOT)) if C.HONEYPOT in df.columns else df.filter(keep)
        skipped["correct_predictions_skipped"] = n - df.height
    if cfg.max_pass_rate is not None:
        if C.PASS_RATE not in df.columns:
            raise UserError(f"--max-pass-rate needs a `{C.PASS_RATE}` column in {cfg.input}; found: "
                            f"{', '.join(df.columns)}")
        n = df.height
        df = df.filter(pl.col(C.PASS_RATE) <= cfg.max_pass_rate)
        skipped["above_max_pass_rate"] = n - df.height
    if cfg.limit is not None and df.height > cfg.limit:
        skipped["over_limit"] = df.height - cfg.limit
        df = df.head(cfg.limit)
    for col in (C.GRADE, C.PRED_GRADE, C.CHOSEN_GRADE, C.REJECTED_GRADE):
        bad = (df.filter(pl.col(col).is_not_null() & ~pl.col(col).is_in(scale.values)) if col in df.columns
               else df.head(0))
        if bad.height:
            raise UserError(f"{cfg.input}: {col} {bad[col][0]} is not on scale `{scale.name}` {scale.values}; pass "
                            "--scale with the input's scale")
    return df, scale, skipped


@contextmanager
def quiet_sdk_progress():
    """The SDK draws a progress bar per batch; ours covers the whole push."""
    import argilla.records._dataset_records as dr

    saved = getattr(dr, "tqdm", None)
    dr.tqdm = lambda iterable=None, *a, **k: iterable
    try:
        yield
    finally:
        dr.tqdm = saved


def ensure_dataset(client, cfg: PushConfig, spec: S.KindSpec, scale: GradeScale) -> tuple[object, list[str]]:
    """The review dataset, created (with its workspace) when missing; checked when present."""
    import argilla as rg

    created = []
    workspace = client.workspaces(cfg.workspace)
    if workspace is None:
        workspace = rg.Workspace(name=cfg.workspace, client=client).create()
        created.append(f"workspace {cfg.workspace}")
    guide = Path(cfg.guidelines).read_text(encoding="utf-8") if cfg.guidelines else None
    settings = S.build_settings(spec, scale, int(cfg.min_submitted), guide, client)
    ds = client.datasets(cfg.dataset, workspace=cfg.workspace)
    if ds is None:
        ds = rg.Dataset(name=cfg.dataset, workspace=workspace, settings=settings, client=client).create()
        created.append(f"dataset {cfg.dataset}")
        return ds, created
    have, want = S.signature(ds.settings), S.signature(settings)
    if have != want:
        raise UserError(
            f"dataset {cfg.workspace}/{cfg.dataset} exists with other fields or questions (questions "
            f"{have['questions']}); it was made for another kind or grade scale: pass another --dataset for kind "
            f"{cfg.kind} on scale {scale.name}"
        )
    current = getattr(ds.settings.distribution, "min_submitted", None)
    if current != int(cfg.min_submitted):
        log.warning("dataset %s keeps min_submitted=%s (asked %s): change it in the Argilla UI", cfg.dataset, current,
                    cfg.min_submitted)
    return ds, created


def push(cfg: PushConfig) -> PushResult:
    spec = S.get_kind(cfg.kind)
    df, scale, skipped = load_rows(cfg)
    if df.height == 0:
        raise UserError(f"{cfg.input}: no rows to push for kind {cfg.kind} (after filters: {skipped}); check the "
                        "input and the filters")
    conn = Connection.resolve(cfg.api_url, cfg.api_key, cfg.timeout)
    client = connect(conn)
    with argilla_errors(conn, f"pushing to {cfg.workspace}/{cfg.dataset}"):
        ds, created = ensure_dataset(client, cfg, spec, scale)
        existing = set() if created and created[-1].startswith("dataset") else {
            r.id for r in ds.records(with_suggestions=False, with_responses=False)}
        rows = list(df.iter_rows(named=True))
        ids = [r[ID_COL] for r in rows]
        with quiet_sdk_progress():
            for start in progress(range(0, len(rows), BATCH), total=-(-len(rows) // BATCH), desc="push", unit="batch"):
                batch = [R.to_record(cfg.kind, spec, r, scale, cfg.blind) for r in rows[start : start + BATCH]]
                ds.records.log(batch, batch_size=len(batch))
    new = sum(1 for i in ids if i not in existing)
    result = PushResult(conn.api_url, cfg.workspace, cfg.dataset, len(rows), new, len(rows) - new, created, skipped,
                        cfg.blind)
    log.info(result.summary())
    return result
