"""`toolkit review pull`: fetch reviewers' answers from Argilla, measure agreement, merge.

    toolkit review pull out/demo/cot --kind cot --dataset demo-cot -o out/demo/cot-reviewed

Writes, atomically (an interrupted pull leaves nothing behind; a rerun gives the same result):
  OUT/<input file>.parquet      the merged dataset (same files as the input), with review_status,
                                reviewers and review_comment; pending rows are kept unchanged
  OUT/review/responses.parquet  every answer: pair_id, reviewer, question, value, response_status
  OUT/review/changes.parquet    the change log: pair_id, column, old_value, new_value, reason, reviewers
  OUT/review/dropped.parquet    rows the review removed, with drop_reason
  OUT/review/agreement.json     percent agreement and Cohen's / Fleiss' kappa per label question
  OUT/config.yaml, OUT/manifest.json
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl

from annotation import settings as S
from annotation.agreement import agreement, ordinal_agreement
from annotation.quality import (honeypot_grades, honeypot_table, model_grade, model_vs_human, report_markdown,
                                reviewer_report)
from annotation.client import Connection, argilla_errors, connect
from annotation.inputs import FILE_COL, ID_COL, read_rows
from annotation.merge import Policy, merge, resolve
from annotation.push import DEFAULT_WORKSPACE, SERVER_OPTIONS, check_name, default_dataset
from toolkit.core import columns as C
from toolkit.core.errors import UserError
from toolkit.core.options import opt
from toolkit.core.grades import get_scale
from toolkit.core.stagefolder import (Key, StageResult, input_hashes, read_manifest, sha256_json, write_parquet,
                                      write_stage, writes_output)
from toolkit.core.stagefolder.files import REPORT_FILE, REVIEW_DIR
from toolkit.core.progress import progress
from toolkit.core.stagefolder import scale_of

log = logging.getLogger(__name__)

RESPONSE_SCHEMA = {C.RECORD_ID: pl.String, C.PAIR_ID: pl.String, C.REVIEWER: pl.String, C.QUESTION: pl.String,
                   C.VALUE: pl.String, C.RESPONSE_STATUS: pl.String}


@dataclass
class PullConfig:
    input: str
    kind: str = opt(**SERVER_OPTIONS["kind"])
    out: str = opt(flags=("-o", "--out"), type="path",
                   help="Output folder for the merged dataset and the review files.")
    dataset: str | None = opt(None, **SERVER_OPTIONS["dataset"])  # default: taosr-<kind>
    workspace: str = opt(DEFAULT_WORKSPACE, **SERVER_OPTIONS["workspace"])
    policy: str = opt("majority", choices=("majority", "unanimous", "trust"), show_default=True,
                      help="How several reviewers' answers become one decision.")
    trusted_reviewer: str | None = opt(None,
                                       help="With --policy trust: this username's answers win when they answered.")
    min_submitted: int | None = opt(None,  # default: the dataset's task distribution
                                    help="Answers a record needs to be decided (default: the dataset's setting); "
                                         "fewer -> pending.")
    scale: str | None = opt(None, **SERVER_OPTIONS["scale"])
    api_url: str | None = opt(None, **SERVER_OPTIONS["api_url"])
    api_key: str | None = opt(None, **SERVER_OPTIONS["api_key"])
    timeout: float = opt(30.0, **SERVER_OPTIONS["timeout"])
    # reviewers below this accuracy on honeypots are left out of the merge
    min_honeypot_accuracy: float | None = opt(None,
                                              help="Leave out of the merge every reviewer whose accuracy on honeypots "
                                                   "is below this (0-1).")
    min_honeypots: int = opt(3, show_default=True, help="With --min-honeypot-accuracy: judge only reviewers who "
                                                        "answered this many honeypots.")

    def __post_init__(self):
        S.get_kind(self.kind)
        if self.min_honeypot_accuracy is not None and not 0 <= float(self.min_honeypot_accuracy) <= 1:
            raise UserError(f"--min-honeypot-accuracy must be in [0, 1]; got {self.min_honeypot_accuracy}")
        if int(self.min_honeypots) < 1:
            raise UserError(f"--min-honeypots must be at least 1; got {self.min_honeypots}")
        self.dataset = self.dataset or default_dataset(self.kind)
        check_name("dataset", self.dataset)
        check_name("workspace", self.workspace)
        Policy(self.policy, self.trusted_reviewer, self.min_submitted or 1)
        if not self.out:
            raise UserError("no output folder; pass -o/--out FOLDER")
        if Path(self.out).resolve() == Path(self.input).resolve():
            raise UserError(f"-o {self.out} is the input folder; write the merged dataset to a new folder")

    def resolved(self) -> dict:
        d = asdict(self)
        d.pop("api_key")
        return d


@dataclass
class PullResult(StageResult):
    agreement: dict = field(default_factory=dict)
    STAGE = "review-pull"
    SHOW_DROPPED = False  # `dropped` here are review rows, in the headline

    def headline(self) -> str:
        c = self.counts
        status = ", ".join(f"{n} {s}" for s, n in c["status"].items())
        dropped = sum(c["dropped"].values())
        agree = ""
        g = self.agreement.get(S.Q_GRADE, {})
        if g.get("percent_agreement") is not None:
            kappa = g.get("cohen_kappa", g.get("fleiss_kappa"))
            agree = f"; grade agreement {100 * g['percent_agreement']:.0f}%" + (f" (kappa {kappa:.2f}"
                                                                                 if kappa is not None else "")
            alpha = g.get("krippendorff_alpha_ordinal")
            agree += (f", ordinal alpha {alpha:.2f})" if alpha is not None else ")") if kappa is not None else ""
        hp = f"; {c['honeypots']} honeypots" if c.get("honeypots") else ""
        ex = f", reviewers left out: {', '.join(c['reviewers_excluded'])}" if c.get("reviewers_excluded") else ""
        return (f"{c['rows']} rows ({status}) -> kept {c['kept']}, dropped {dropped}, {c['changes']} "
                f"changes{agree}{hp}{ex};")

    def where(self) -> str:
        return f"in {self.out} (report: {REVIEW_DIR}/{REPORT_FILE})"

    @property
    def stage(self) -> str:  # the command's name in the summary; the manifest's stage is STAGE
        return "review pull"


def iter_records(ds):
    """Records of a dataset with their responses and suggestions (one page at a time)."""
    yield from ds.records(with_suggestions=True, with_responses=True)


def usernames(client, workspace) -> dict[str, str]:
    """user id -> username: the workspace's members and, with an owner's key, every user."""
    from argilla._exceptions import ArgillaAPIError

    names = {str(client.me.id): client.me.username}
    names.update({str(u.id): u.username for u in workspace.users})
    try:
        names.update({str(u.id): u.username for u in client.users})
    except ArgillaAPIError:  # an admin may not list all users; the members are enough to answer
        pass
    return names


def _user_responses(rec) -> list[tuple[str, str, dict]]:
    """(user id, status, values) of each reviewer's response; a discard with no answers has empty values."""
    models = getattr(getattr(rec, "_model", None), "responses", None)
    if models is not None:
        return [(str(m.user_id), getattr(m.status, "value", m.status),
                 {q: (v or {}).get("value") for q, v in (m.values or {}).items()})
                for m in models]
    by: dict = {}
    for r in rec.responses:  # the SDK's flat view: one entry per answered question
        by.setdefault(str(r.user_id), (getattr(r.status, "value", r.status), {}))[1][r.question_name] = r.value
    return [(u, st, vals) for u, (st, vals) in by.items()]


def fetch_responses(client, ds, pair_ids: dict[str, str]) -> tuple[list[dict], set[str], dict[str, int]]:
    """Every answer of every record (sorted; a response with no answer, such as a bare discard, as one row with no
    question), the ids of all records in the dataset, and the grade suggested to reviewers per record."""
    users = usernames(client, ds.workspace)
    rows, ids, shown = [], set(), {}
    for rec in progress(iter_records(ds), desc="pull", unit="record"):
        rid = str(rec.id)
        ids.add(rid)
        try:
            sugg = rec.suggestions[S.Q_GRADE]
        except (KeyError, TypeError):  # a record pushed --blind has none
            sugg = None
        if sugg is not None and sugg.value is not None:
            shown[rid] = int(sugg.value)
        for user_id, status, values in _user_responses(rec):
            who = users.get(user_id, user_id)
            if not values:
                rows.append({C.RECORD_ID: rid, C.PAIR_ID: pair_ids.get(rid), C.REVIEWER: who, C.QUESTION: None,
                             C.VALUE: None, C.RESPONSE_STATUS: status})
            for q, v in values.items():
                value = v if isinstance(v, str) or v is None else json.dumps(v)
                rows.append({C.RECORD_ID: rid, C.PAIR_ID: pair_ids.get(rid), C.REVIEWER: who, C.QUESTION: q,
                             C.VALUE: value, C.RESPONSE_STATUS: status})
    rows.sort(key=lambda r: (r[C.RECORD_ID], r[C.REVIEWER], r[C.QUESTION] or ""))
    return rows, ids, shown


def submitted_answers(responses: list[dict]) -> dict[str, dict[str, dict[str, str]]]:
    """record id -> reviewer -> question -> value, submitted answers only."""
    out: dict = {}
    for r in responses:
        if r[C.RESPONSE_STATUS] == "submitted" and r[C.QUESTION] is not None:
            out.setdefault(r[C.RECORD_ID], {}).setdefault(r[C.REVIEWER], {})[r[C.QUESTION]] = r[C.VALUE]
    return out


def _remove_stale_tmp(out: Path) -> None:
    """Temporary folders left by a pull that was killed (its process is gone)."""
    for tmp in out.parent.glob(f".{out.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(tmp, ignore_errors=True)


@writes_output("review-pull")
def pull(cfg: PullConfig) -> PullResult:
    spec = S.get_kind(cfg.kind)
    df, names = read_rows(spec, cfg.input)
    scale = get_scale(cfg.scale) if cfg.scale else scale_of(cfg.input)
    conn = Connection.resolve(cfg.api_url, cfg.api_key, cfg.timeout)
    client = connect(conn)
    with argilla_errors(conn, f"pulling {cfg.workspace}/{cfg.dataset}"):
        ds = client.datasets(cfg.dataset, workspace=cfg.workspace) if client.workspaces(cfg.workspace) else None
        if ds is None:
            raise UserError(f"no dataset {cfg.dataset!r} in workspace {cfg.workspace!r} at {conn.api_url}; push first "
                            "(`toolkit review push`) or check --dataset / --workspace")
        have, want = S.signature(ds.settings), S.signature(S.build_settings(spec, scale, 1, None, client))
        if have != want:
            raise UserError(f"dataset {cfg.workspace}/{cfg.dataset} does not have the questions of kind {cfg.kind} on "
                            f"scale {scale.name}; pass the --kind and --scale you pushed with")
        min_submitted = int(cfg.min_submitted or getattr(ds.settings.distribution, "min_submitted", 1) or 1)
        pair_ids = dict(zip(df[ID_COL].to_list(), df[C.PAIR_ID].cast(pl.String).to_list()))
        responses, record_ids, shown = fetch_responses(client, ds, pair_ids)
    argilla = {"url": conn.api_url, "workspace": cfg.workspace, "dataset": cfg.dataset}
    return finish_pull(cfg, df, names, scale, responses, record_ids, shown, min_submitted, argilla)


def finish_pull(cfg: PullConfig, df: pl.DataFrame, names: list[str], scale, responses: list[dict],
                record_ids: set[str], shown: dict[str, int], min_submitted: int, argilla: dict) -> PullResult:
    """Everything after the answers are fetched: reviewer checks, resolution, merge, the output folder."""
    pair_ids = dict(zip(df[ID_COL].to_list(), df[C.PAIR_ID].cast(pl.String).to_list()))
    policy = Policy(cfg.policy, cfg.trusted_reviewer, min_submitted)
    answers = submitted_answers(responses)
    honeypots = honeypot_grades(df)
    model = {r[ID_COL]: g for r in df.iter_rows(named=True) if (g := model_grade(cfg.kind, r, scale)) is not None}
    reviewers = reviewer_report(answers, honeypots, model, shown, cfg.min_honeypot_accuracy, cfg.min_honeypots)
    excluded = sorted(n for n, r in reviewers.items() if r["excluded"])
    kept = {rid: {who: a for who, a in by.items() if who not in excluded} for rid, by in answers.items()
            if rid not in honeypots}
    decisions = {rid: resolve(kept.get(rid, {}), policy) for rid in sorted(record_ids - set(honeypots))}
    data = df.filter(~pl.col(ID_COL).is_in(list(honeypots))) if honeypots else df
    result = merge(cfg.kind, data, decisions, scale)
    labelled = [(rid, who, a) for rid, by in kept.items() for who, a in by.items()]
    agree = {q: agreement((rid, who, a[q]) for rid, who, a in labelled if a.get(q) is not None)
             for q in S.LABEL_QUESTIONS}
    agree[S.Q_GRADE].update(ordinal_agreement(((rid, who, int(a[S.Q_GRADE])) for rid, who, a in labelled
                                               if a.get(S.Q_GRADE) is not None), scale.values))
    agree["model_vs_human"] = model_vs_human(kept, model, shown, scale.values)
    counts = {**result.counts, "changes": result.changes.height, "records": len(record_ids),
              "responses": len(responses), "unknown_records": len(record_ids - set(pair_ids)),
              "min_submitted": min_submitted, "honeypots": len(honeypots), "reviewers": len(reviewers),
              "reviewers_excluded": excluded}
    out = Path(cfg.out)
    _remove_stale_tmp(out)
    upstream = read_manifest(cfg.input) if Path(cfg.input).is_dir() else None
    extra = {"kind": cfg.kind, Key.GRADE_SCALE: scale.to_dict(), "argilla": argilla,
             "responses_sha256": sha256_json(responses), "agreement": agree}
    if upstream and upstream.get("stage"):
        extra["upstream_stage"] = upstream["stage"]
        # what made the reviewed data travels on (the teacher or model, the index, how the prompts were built)
        carried = (Key.TEACHER, Key.MODEL, "teacher_id", "index_model_id", "index_fingerprint", Key.LINEAGE)
        extra.update({k: upstream[k] for k in carried if upstream.get(k) is not None})

    def write(tmp: Path) -> tuple[dict, dict]:
        for i, name in enumerate(names):
            write_parquet(result.merged.filter(pl.col(FILE_COL) == i).drop(FILE_COL, ID_COL), tmp / name)
        (tmp / "review").mkdir()
        write_parquet(pl.DataFrame(responses, schema=RESPONSE_SCHEMA), tmp / "review" / "responses.parquet")
        write_parquet(result.changes, tmp / "review" / "changes.parquet")
        write_parquet(result.dropped.drop(FILE_COL, ID_COL), tmp / "review" / "dropped.parquet")
        if honeypots:
            write_parquet(honeypot_table(df, answers), tmp / "review" / "honeypots.parquet")
        (tmp / "review" / "agreement.json").write_text(json.dumps(agree, indent=2), encoding="utf-8")
        (tmp / "review" / "reviewers.json").write_text(json.dumps(reviewers, indent=2), encoding="utf-8")
        (tmp / "review" / "report.md").write_text(report_markdown(cfg, counts, agree, reviewers), encoding="utf-8")
        return counts, extra

    res = write_stage(PullResult, cfg, input_hashes([cfg.input]), write, out, agreement=agree)
    log.info(res.summary())
    return res
