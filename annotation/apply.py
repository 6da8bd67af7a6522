"""`toolkit review apply`: the next version of the canonical pairs, from pulled review rounds.

    toolkit review apply out/demo/retrieved --review out/review/hard-reviewed -o out/demo/pairs-r1

Reads the pairs (the output of ingest, split or retrieve, or of an earlier `review apply`) and one
or more folders written by `toolkit review pull`, and writes the same files with
- `grade` corrected where reviewers resolved another grade (the reviews' change logs, column grade);
- pairs reviewers rejected as unjudgeable (kinds hard and errors: accept = no) left out;
- `grade_before_review` (the grade before the first round) and `review_round` (the round that last
  changed the row; null when no round did) added;
- review/changes.parquet and review/excluded.parquet: the change log and the excluded rows of every
  round so far; manifest.json: `review_round` and `review_rounds` (what each round applied, from which
  review folders and answers).
Rounds accumulate: applying round 2 to round 1's output keeps round 1's corrections and logs.
Reviews are applied in the order given; when the records of one pair (several CoT samples) resolved
different grades in one review, that pair keeps its grade and is counted as a conflict.

What was made from the old grades is re-marked with `--gold OUT`: make-prefs and label-difficulty
recount correct rollouts against it (rebuilding the DPO and GRPO sets), `train sft` drops rationales
written for a corrected grade. The output is a pairs folder: every stage that takes pairs takes it.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from toolkit.core import columns as C
from toolkit.core.errors import UserError
from toolkit.core.options import opt
from toolkit.core.stagefolder.files import CHANGES_FILE, EXCLUDED_FILE
from toolkit.core.stagefolder import (Key, check_complete, input_hashes, read_manifest, recorded_result, scale_of,
                                      StageConfig, StageResult, write_parquet, write_stage, writes_output)
from toolkit.core.tables import read_parquet

log = logging.getLogger(__name__)

STAGE = "review-apply"
PULL_STAGE = "review-pull"
GRADE_BEFORE = "grade_before_review"
ROUND = "review_round"
REVIEW = "review"
CHANGES, EXCLUDED = CHANGES_FILE, EXCLUDED_FILE
EXCLUDING_KINDS = ("hard", "errors")  # accept = no on these kinds means: this pair cannot be judged
CHANGE_SCHEMA = {ROUND: pl.Int32, C.PAIR_ID: pl.String, C.CHANGED_COLUMN: pl.String, C.OLD_VALUE: pl.String,
                 C.NEW_VALUE: pl.String, C.CHANGE_REASON: pl.String, REVIEW: pl.String, C.REVIEWERS: pl.String}
# upstream manifest entries that describe the pairs and travel on (the grade scale, the index the rules came from)
CARRIED = (Key.GRADE_SCALE, "index_model_id", "index_fingerprint", "splits", Key.LINEAGE)


@dataclass
class ApplyConfig(StageConfig):
    pairs: str  # the pairs to correct: ingest / split / retrieve output, or an earlier `review apply`
    out: str = opt(flags=("-o", "--out"), type="path",
                   help="Output folder: the corrected pairs (the input's files) and review/ with the change log.")
    # applied in order
    reviews: list[str] = opt(default_factory=list, flags=("-r", "--review"), type="path", multiple=True,
                             help="A `toolkit review pull` output folder; repeat for several (applied in order).")
    allow_missing: bool = opt(False,  # a review folder not written yet is skipped (a pipeline run before the round)
                              help="Skip review folders that do not exist yet (a pipeline run before the round); with "
                                   "none, the pairs pass unchanged.")
    force: bool = opt(False, help="Redo even when the output is up to date.")

    def __post_init__(self):
        self.pairs, self.out = str(self.pairs), str(self.out)
        self.reviews = [str(r) for r in (self.reviews or [])]
        if not self.reviews:
            raise UserError("no review to apply; pass --review FOLDER (the output of `toolkit review pull`), once per "
                            "round's folder")


@dataclass
class ApplyResult(StageResult):
    STAGE = STAGE

    def brief(self) -> str:
        return f"round {self.counts.get('round')}"

    def summary(self) -> str:
        c = self.counts
        if self.skipped:
            return super().summary()
        missing = (f"; {c['reviews_missing']} review folder(s) not there yet, skipped" if c.get("reviews_missing")
                   else "")
        if not c["reviews_applied"]:
            return (f"{STAGE}: no review answers yet{missing}: {c['pairs']} pairs unchanged (round {c['round']}) "
                    f"in {self.out}")
        conflict = f", {c['conflicts']} pairs with conflicting grades kept" if c["conflicts"] else ""
        return (f"{STAGE}: round {c['round']} from {c['reviews_applied']} review(s): {c['regraded']} grades "
                f"corrected, {c['excluded']} pairs excluded{conflict}; {c['pairs']} pairs in {self.out}{missing}")


def _pairs_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise UserError(f"{path}: no such pairs folder; pass the output of `toolkit ingest`, `split`, `retrieve` or "
                        "`review apply`")
    check_complete(path)
    files = sorted(path.glob("*.parquet"))
    if not files:
        raise UserError(f"{path}: no .parquet files; pass the output of `toolkit ingest`, `split`, `retrieve` or "
                        "`review apply`")
    return files


def read_review(folder: Path, scale_name: str) -> tuple[dict, dict[str, int], dict[str, str], set[str], set[str]]:
    """A pulled review: its manifest, pair -> resolved grade, pair -> reviewers, excluded pairs, pairs in conflict."""
    m = read_manifest(folder)
    if not m or m.get("stage") != PULL_STAGE:
        made = f"the output of `toolkit {m['stage']}`" if m and m.get("stage") else "not a stage folder"
        raise UserError(f"--review {folder}: {made}; pass a folder written by `toolkit review pull`")
    check_complete(folder)
    got = (m.get(Key.GRADE_SCALE) or {}).get("name")
    if got and got != scale_name:
        raise UserError(f"--review {folder}: reviewed on grade scale `{got}`, the pairs are on `{scale_name}`; apply "
                        "reviews of these pairs")
    kind = m.get("kind") or _config_kind(folder)
    changes = read_parquet(folder / REVIEW / CHANGES)
    grades: dict[str, set[int]] = defaultdict(set)
    who: dict[str, str] = {}
    for row in changes.filter(pl.col(C.CHANGED_COLUMN) == C.GRADE).iter_rows(named=True):
        grades[str(row[C.PAIR_ID])].add(int(json.loads(row[C.NEW_VALUE])))
        who[str(row[C.PAIR_ID])] = row[C.REVIEWERS]
    conflicts = {p for p, g in grades.items() if len(g) > 1}
    resolved = {p: next(iter(g)) for p, g in grades.items() if len(g) == 1}
    excluded: set[str] = set()
    dropped = folder / REVIEW / "dropped.parquet"
    if kind in EXCLUDING_KINDS and dropped.exists():
        d = read_parquet(dropped)
        if C.DROP_REASON in d.columns:
            excluded = {str(p) for p in d.filter(pl.col(C.DROP_REASON) == "pair_rejected")[C.PAIR_ID].to_list()}
    return m, resolved, who, excluded, conflicts


@writes_output(STAGE)
def apply(cfg: ApplyConfig) -> ApplyResult:
    src = Path(cfg.pairs)
    files = _pairs_files(src)
    present = [Path(r) for r in cfg.reviews if Path(r).exists()]
    missing = [r for r in cfg.reviews if not Path(r).exists()]
    if missing and not cfg.allow_missing:
        raise UserError(f"--review {missing[0]}: no such folder; run `toolkit review pull` first (or pass "
                        "--allow-missing to skip reviews not done yet)")
    inputs = input_hashes([*files, *present, *([src / REVIEW] if (src / REVIEW).is_dir() else [])])
    resolved_cfg = cfg.resolved()
    resolved_cfg["reviews_present"] = [str(p) for p in present]
    done = recorded_result(ApplyResult, cfg, inputs, resolved=resolved_cfg)
    if done is not None:
        return done
    scale = scale_of(cfg.pairs)
    upstream = (read_manifest(src) if src.is_dir() else None) or {}
    prev_round = int(upstream.get("review_round") or 0)
    rnd = prev_round + 1 if present else prev_round
    frames = [read_parquet(f) for f in files]
    for f, df in zip(files, frames):
        if C.PAIR_ID not in df.columns or C.GRADE not in df.columns:
            raise UserError(f"{f}: columns `{C.PAIR_ID}` and `{C.GRADE}` are needed; pass canonical pairs "
                            "(`toolkit ingest` output)")
    known = {str(p) for df in frames for p in df[C.PAIR_ID].to_list()}
    current = {str(p): g for df in frames for p, g in zip(df[C.PAIR_ID].to_list(), df[C.GRADE].to_list())}

    new_grade: dict[str, int] = {}
    reviewers: dict[str, str] = {}
    origin: dict[str, str] = {}
    excluded: dict[str, str] = {}
    conflicts: set[str] = set()
    rounds_info, unknown = [], 0
    for folder in present:
        m, grades, who, ex, conf = read_review(folder, scale.name)
        seen = set(grades) | ex | conf
        if seen and not seen & known:
            raise UserError(f"--review {folder}: none of its pairs are in {cfg.pairs}; apply a review of these pairs")
        unknown += len(seen - known)
        for p, g in grades.items():
            if p in known:
                new_grade[p], reviewers[p], origin[p] = g, who.get(p) or "", folder.name
                conflicts.discard(p)
        conflicts |= {p for p in conf if p in known and p not in grades}
        for p in ex & known:
            excluded[p] = folder.name
        rounds_info.append({"review": str(folder), "kind": m.get("kind") or _config_kind(folder),
                            "argilla": m.get("argilla"), "responses_sha256": m.get("responses_sha256"),
                            "grades": len(grades), "excluded": len(ex)})
    bad = sorted({g for g in new_grade.values() if g not in scale.values})
    if bad:
        raise UserError(f"a review resolved grade(s) {bad}, which are not on scale `{scale.name}` {scale.values}; "
                        "check the review folders")
    regrade = {p: g for p, g in new_grade.items() if p not in excluded and current.get(p) != g}

    log_rows = [{ROUND: rnd, C.PAIR_ID: p, C.CHANGED_COLUMN: C.GRADE, C.OLD_VALUE: json.dumps(current[p]),
                 C.NEW_VALUE: json.dumps(g), C.CHANGE_REASON: "grade_corrected", REVIEW: origin[p],
                 C.REVIEWERS: reviewers[p]} for p, g in sorted(regrade.items())]
    log_rows += [{ROUND: rnd, C.PAIR_ID: p, C.CHANGED_COLUMN: "(row)", C.OLD_VALUE: json.dumps("kept"),
                  C.NEW_VALUE: json.dumps("excluded"), C.CHANGE_REASON: "pair_rejected", REVIEW: r,
                  C.REVIEWERS: None} for p, r in sorted(excluded.items())]
    prev_changes = _prev(src, CHANGES)
    changes = pl.concat([prev_changes, pl.DataFrame(log_rows, schema=CHANGE_SCHEMA)], how="diagonal_relaxed") \
        if prev_changes is not None else pl.DataFrame(log_rows, schema=CHANGE_SCHEMA)
    counts = {"round": rnd, "pairs": 0, "reviews_applied": len(present), "reviews_missing": len(missing),
              "regraded": len(regrade), "excluded": len(excluded), "conflicts": len(conflicts),
              "not_in_pairs": unknown,
              "regraded_by_grade": dict(sorted(Counter(f"{current[p]}->{g}" for p, g in regrade.items()).items()))}
    outputs, gone = [], []
    for f, df in zip(files, frames):
        pid = pl.col(C.PAIR_ID).cast(pl.String)
        if GRADE_BEFORE not in df.columns:
            df = df.with_columns(pl.col(C.GRADE).alias(GRADE_BEFORE))
        if ROUND not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=pl.Int32).alias(ROUND))
        if regrade:
            df = df.with_columns(
                pl.when(pid.is_in(list(regrade)))
                .then(pid.replace_strict(regrade, default=None, return_dtype=pl.Int64)).otherwise(pl.col(C.GRADE))
                .cast(df[C.GRADE].dtype).alias(C.GRADE),
                pl.when(pid.is_in(list(regrade))).then(pl.lit(rnd, dtype=pl.Int32)).otherwise(pl.col(ROUND))
                .alias(ROUND),
            )
        out_ex = df.filter(pid.is_in(list(excluded)))
        if out_ex.height:
            gone.append(out_ex.with_columns(pl.lit(rnd, dtype=pl.Int32).alias(ROUND)))
        df = df.filter(~pid.is_in(list(excluded)))
        counts["pairs"] += df.height
        outputs.append((f.name if f.suffix == ".parquet" else f.stem + ".parquet", df))
    prev_ex = _prev(src, EXCLUDED)
    parts = ([prev_ex] if prev_ex is not None else []) + gone
    extra = {k: upstream[k] for k in CARRIED if upstream.get(k) is not None}
    extra.setdefault(Key.GRADE_SCALE, scale.to_dict())
    extra["review_round"] = rnd
    extra["review_rounds"] = list(upstream.get("review_rounds") or []) + (
        [{"round": rnd, "reviews": rounds_info, "regraded": len(regrade), "excluded": len(excluded)}]
        if present else [])
    extra["upstream_stage"] = upstream.get("stage")

    def write(tmp: Path) -> tuple[dict, dict]:
        for name, df in outputs:
            write_parquet(df, tmp / name)
        (tmp / REVIEW).mkdir()
        write_parquet(changes, tmp / REVIEW / CHANGES)
        if parts:
            write_parquet(pl.concat(parts, how="diagonal_relaxed"), tmp / REVIEW / EXCLUDED)
        return counts, extra

    result = write_stage(ApplyResult, cfg, inputs, write, resolved=resolved_cfg)
    log.info(result.summary())
    return result


def _config_kind(folder: Path) -> str | None:
    """The review kind of a pull written before the manifest named it (its config.yaml does)."""
    import yaml

    f = folder / "config.yaml"
    return (yaml.safe_load(f.read_text(encoding="utf-8")) or {}).get("kind") if f.exists() else None


def _prev(src: Path, name: str) -> pl.DataFrame | None:
    """An earlier round's log (the pairs are an earlier `review apply` output)."""
    p = src / REVIEW / name
    return read_parquet(p) if src.is_dir() and p.exists() else None
