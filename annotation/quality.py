"""Reviewer quality: honeypots, agreement with peers and with the model, and who is left out of a merge.

Per reviewer (`review pull` writes it to review/reviewers.json and review/report.md):
- `answered`: records the reviewer gave a grade (submitted answers only);
- `honeypot_accuracy`: the share of honeypots (gold records `review select --honeypots` mixed into the
  round, the grade shown planted next to the trusted one) answered with the trusted grade;
- `peer_agreement`: over records others answered too, the share of (reviewer, other) pairs with the same grade;
- `model_agreement`: the share of answers equal to the model's grade (the prediction, or the grade the
  machine-made row states);
- `suggestion_acceptance`: on records that showed a suggestion, the share of answers equal to it
  (None in a --blind round): high acceptance with low honeypot accuracy is rubber-stamping;
- `excluded`: honeypot accuracy below `--min-honeypot-accuracy` over at least `--min-honeypots` honeypots;
  the merge then ignores every answer of the reviewer.
"""

from __future__ import annotations

import math
from typing import Any

import polars as pl

from annotation import settings as S
from annotation.inputs import ID_COL
from annotation.records import chosen_grade, cot_grade
from toolkit.core import columns as C
from toolkit.core.grades import GradeScale


def honeypot_grades(df: pl.DataFrame) -> dict[str, int]:
    """record id -> trusted grade of the honeypot rows of a selection (none when the input has no honeypots)."""
    if C.HONEYPOT not in df.columns:
        return {}
    hp = df.filter(pl.col(C.HONEYPOT).fill_null(False))
    return {rid: int(g) for rid, g in zip(hp[ID_COL].to_list(), hp[C.HONEYPOT_GRADE].to_list()) if g is not None}


def model_grade(kind: str, row: dict, scale: GradeScale) -> int | None:
    """The grade the machine gave this row: the prediction, else what the row's answer states."""
    if kind == "cot":
        return cot_grade(row, scale)
    if kind == "prefs":
        return chosen_grade(row, scale)
    g = row.get(C.PRED_GRADE)
    return int(g) if g is not None else None


def _share(hits: int, n: int) -> float | None:
    return hits / n if n else None


def reviewer_report(answers: dict[str, dict[str, dict[str, Any]]], honeypots: dict[str, int], model: dict[str, int],
                    shown: dict[str, int], min_accuracy: float | None, min_honeypots: int) -> dict[str, dict]:
    """Per reviewer: counts and shares described in the module docstring."""
    grades = {rid: {who: int(a[S.Q_GRADE]) for who, a in by.items() if a.get(S.Q_GRADE) is not None}
              for rid, by in answers.items()}
    names = sorted({who for by in grades.values() for who in by})
    out = {}
    for who in names:
        mine = {rid: by[who] for rid, by in grades.items() if who in by}
        hp = [(g, honeypots[rid]) for rid, g in mine.items() if rid in honeypots]
        real = {rid: g for rid, g in mine.items() if rid not in honeypots}
        peers = [(g, other) for rid, g in real.items() for w, other in grades[rid].items() if w != who]
        with_model = [(g, model[rid]) for rid, g in real.items() if rid in model]
        with_sugg = [(g, shown[rid]) for rid, g in mine.items() if rid in shown]
        acc = _share(sum(a == b for a, b in hp), len(hp))
        out[who] = {
            "answered": len(mine),
            "honeypots": len(hp), "honeypots_right": sum(a == b for a, b in hp), "honeypot_accuracy": acc,
            "peer_items": len(peers), "peer_agreement": _share(sum(a == b for a, b in peers), len(peers)),
            "model_agreement": _share(sum(a == b for a, b in with_model), len(with_model)),
            "suggestions_seen": len(with_sugg),
            "suggestion_acceptance": _share(sum(a == b for a, b in with_sugg), len(with_sugg)),
            "excluded": bool(min_accuracy is not None and acc is not None and len(hp) >= min_honeypots
                             and acc < min_accuracy),
        }
    return out


def model_vs_human(answers: dict[str, dict[str, dict[str, Any]]], model: dict[str, int], shown: dict[str, int],
                   values: list[int]) -> dict:
    """How often people gave the model's grade, quadratic-weighted kappa between the two, and how often a shown
    suggestion was kept."""
    pairs = [(int(a[S.Q_GRADE]), model[rid]) for rid, by in answers.items() if rid in model
             for a in by.values() if a.get(S.Q_GRADE) is not None]
    sugg = [(int(a[S.Q_GRADE]), shown[rid]) for rid, by in answers.items() if rid in shown
            for a in by.values() if a.get(S.Q_GRADE) is not None]
    kappa = None
    if pairs and len({x for p in pairs for x in p}) > 1:
        import warnings

        from sklearn.metrics import cohen_kappa_score

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            k = cohen_kappa_score([h for h, _ in pairs], [m for _, m in pairs], labels=sorted(values),
                                  weights="quadratic")
        kappa = float(k) if math.isfinite(k) else None
    return {"answers": len(pairs), "agreement": _share(sum(h == m for h, m in pairs), len(pairs)),
            "quadratic_kappa": kappa, "suggestions_shown": len(sugg),
            "suggestion_acceptance": _share(sum(h == s for h, s in sugg), len(sugg))}


def honeypot_table(df: pl.DataFrame, answers: dict[str, dict[str, dict[str, Any]]]) -> pl.DataFrame:
    """One row per (honeypot, reviewer answer): the trusted grade, the grade shown, the answer, right or not."""
    rows = []
    for r in df.filter(pl.col(C.HONEYPOT).fill_null(False)).iter_rows(named=True):
        for who, a in sorted(answers.get(r[ID_COL], {}).items()):
            g = int(a[S.Q_GRADE]) if a.get(S.Q_GRADE) is not None else None
            rows.append({C.RECORD_ID: r[ID_COL], C.PAIR_ID: str(r[C.PAIR_ID]), C.HONEYPOT_GRADE: r[C.HONEYPOT_GRADE],
                         "shown_grade": r[C.GRADE], C.REVIEWER: who, "answer": g, "right": g == r[C.HONEYPOT_GRADE]})
    schema = {C.RECORD_ID: pl.String, C.PAIR_ID: pl.String, C.HONEYPOT_GRADE: pl.Int64, "shown_grade": pl.Int64,
              C.REVIEWER: pl.String, "answer": pl.Int64, "right": pl.Boolean}
    return pl.DataFrame(rows, schema=schema)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def report_markdown(cfg, counts: dict, agree: dict, reviewers: dict[str, dict]) -> str:
    """review/report.md: the round at a glance."""
    g = agree.get(S.Q_GRADE, {})
    mh = agree.get("model_vs_human", {})
    status = ", ".join(f"{n} {s}" for s, n in counts["status"].items())
    lines = [
        f"# Review round: {cfg.workspace}/{cfg.dataset} ({cfg.kind})", "",
        f"- records: {counts['records']} ({counts.get('honeypots', 0)} honeypots), answers: {counts['responses']}, "
        f"policy `{cfg.policy}`",
        f"- rows: {status}; kept {counts['kept']}, dropped {sum(counts['dropped'].values())}, "
        f"{counts['changes']} changes",
        f"- grade agreement (items with 2+ answers: {g.get('n_items', 0)}): {_pct(g.get('percent_agreement'))}; "
        f"kappa {_num(g.get('cohen_kappa', g.get('fleiss_kappa')))}; quadratic-weighted kappa "
        f"{_num(g.get('quadratic_kappa'))}; Krippendorff's alpha (ordinal) "
        f"{_num(g.get('krippendorff_alpha_ordinal'))}",
        f"- model vs people: same grade {_pct(mh.get('agreement'))} of {mh.get('answers', 0)} answers, "
        f"quadratic-weighted kappa {_num(mh.get('quadratic_kappa'))}; suggestion kept "
        f"{_pct(mh.get('suggestion_acceptance'))} of {mh.get('suggestions_shown', 0)} shown",
    ]
    if counts.get("reviewers_excluded"):
        lines.append(f"- left out of the merge (honeypot accuracy below {cfg.min_honeypot_accuracy}): "
                     f"{', '.join(counts['reviewers_excluded'])}")
    lines += ["", "| reviewer | answered | honeypots right | peer agreement | model agreement | suggestion kept "
                  "| in merge |",
              "|---|---:|---:|---:|---:|---:|---|"]
    for who, r in reviewers.items():
        hp = f"{r['honeypots_right']}/{r['honeypots']} ({_pct(r['honeypot_accuracy'])})" if r["honeypots"] else "–"
        lines.append(f"| {who} | {r['answered']} | {hp} | {_pct(r['peer_agreement'])} | {_pct(r['model_agreement'])} "
                     f"| {_pct(r['suggestion_acceptance'])} | {'no' if r['excluded'] else 'yes'} |")
    return "\n".join(lines) + "\n"
