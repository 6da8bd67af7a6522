"""Resolution policies and the per-kind merge rules, on tiny frames (no server).

Run: .venv/bin/python -m pytest tests/annotation/test_review_merge.py -q
"""

import json

import polars as pl
import pytest

from annotation import settings as S
from annotation.inputs import ID_COL, read_rows
from annotation.merge import Decision, Policy, merge, resolve
from annotation.records import fields, leading_grade, suggestion
from toolkit.core import columns as C
from toolkit.core.errors import UserError
from toolkit.core.grades import get_scale

SCALE = get_scale("taosr4")


def ans(grade, accept="yes", correction=None, comment=None):
    out = {S.Q_GRADE: str(grade), S.Q_ACCEPT: accept}
    if correction:
        out[S.Q_CORRECTION] = correction
    if comment:
        out[S.Q_COMMENT] = comment
    return out


def test_majority_unanimous_trust_and_pending():
    two_one = {"alice": ans(3), "bob": ans(3), "carol": ans(2, "no")}
    d = resolve(two_one, Policy("majority", min_submitted=2))
    assert (d.status, d.grade, d.accept, d.reviewers) == ("resolved", 3, "yes", ["alice", "bob", "carol"])
    assert resolve(two_one, Policy("unanimous", min_submitted=2)).status == "conflict"
    assert resolve({"alice": ans(3), "bob": ans(2)}, Policy("majority", min_submitted=2)).status == "conflict"  # a tie
    trusted = resolve(two_one, Policy("trust", trusted="carol", min_submitted=2))
    assert (trusted.grade, trusted.accept, trusted.reviewers) == (2, "no", ["carol"])
    assert resolve({"carol": ans(1)}, Policy("trust", trusted="carol", min_submitted=3)).grade == 1  # trusted alone decides
    pending = resolve({"alice": ans(3)}, Policy("majority", min_submitted=2))
    assert pending.status == "pending" and pending.reviewers == ["alice"]
    assert resolve({}, Policy("majority", min_submitted=1)).status == "pending"


def test_correction_and_comments_come_from_the_agreeing_reviewers():
    answers = {"alice": ans(3, correction="3\nReason: fixed by alice", comment="ok"),
               "bob": ans(3, correction="3\nReason: fixed by bob"), "carol": ans(2, correction="2 carol", comment="hmm")}
    d = resolve(answers, Policy("majority", min_submitted=2))
    assert d.correction == "3\nReason: fixed by alice"
    assert d.comment == "alice: ok | carol: hmm"


def test_policy_validation_is_one_line():
    with pytest.raises(UserError, match="--trusted-reviewer"):
        Policy("trust")
    with pytest.raises(UserError, match="unknown"):
        Policy("vote")
    with pytest.raises(UserError, match="only applies"):
        Policy("majority", trusted="bob")


def _rows(kind, demo):
    df, _ = read_rows(S.KINDS[kind], demo[kind])
    return df


def ok(grade, **kw):
    return Decision("resolved", ["alice", "bob"], grade, kw.pop("accept", "yes"), kw.pop("correction", None), kw.pop("comment", None))


def test_cot_rules(demo):
    df = _rows("cot", demo)
    g = df[C.GRADE].to_list()
    other = 1 if g[3] != 1 else 2
    ids = df[ID_COL].to_list()
    decisions = {}
    decisions[ids[0]] = ok(g[0])  # accepted as is
    decisions[ids[1]] = ok(g[1], accept="no")  # rejected rationale -> dropped
    decisions[ids[2]] = ok(g[2], accept="no", correction=f"{g[2]}\nReason: a better argument.")  # corrected
    decisions[ids[3]] = ok(other)  # grade changed, no new answer -> dropped (grade_changed), gold still updated in the log
    decisions[ids[4]] = ok(other, correction=f"{other}\nReason: new grade, new answer.")  # regraded with a new answer
    decisions[ids[5]] = Decision("pending", ["alice"])
    r = merge("cot", df, decisions, SCALE)
    by_id = {row[ID_COL]: row for row in r.merged.iter_rows(named=True)}
    assert set(by_id) == {ids[0], ids[2], ids[4], ids[5], ids[6]}
    assert by_id[ids[0]][C.REVIEW_STATUS] == "accepted" and by_id[ids[0]][C.REVIEWERS] == ["alice", "bob"]
    fixed = by_id[ids[2]]
    assert fixed[C.REVIEW_STATUS] == "corrected"
    assert fixed[C.COMPLETION] == [{"role": "assistant", "content": f"{g[2]}\nReason: a better argument."}]
    assert fixed[C.RATIONALE] == "a better argument."  # as gen-cot stores a rationale: no grade, no `Reason:`
    regraded = by_id[ids[4]]
    assert regraded[C.GRADE] == other and regraded[C.COMPLETION][0]["content"].startswith(str(other))
    assert by_id[ids[5]][C.REVIEW_STATUS] == "pending" and by_id[ids[5]][C.COMPLETION] == df.row(5, named=True)[C.COMPLETION]
    assert by_id[ids[6]][C.REVIEW_STATUS] == "not_reviewed"
    assert dict(zip(r.dropped[ID_COL], r.dropped[C.DROP_REASON])) == {ids[1]: "rationale_rejected", ids[3]: "grade_changed"}
    assert r.dropped.filter(pl.col(ID_COL) == ids[3])[C.GRADE][0] == other  # the corrected gold travels with the dropped row
    log = {(e[C.RECORD_ID], e[C.CHANGED_COLUMN]): e for e in r.changes.iter_rows(named=True)}
    assert json.loads(log[(ids[3], C.GRADE)][C.OLD_VALUE]) == g[3] and json.loads(log[(ids[3], C.GRADE)][C.NEW_VALUE]) == other
    assert log[(ids[3], "(row)")][C.CHANGE_REASON] == "grade_changed"
    assert log[(ids[2], C.COMPLETION)][C.CHANGE_REASON] == "answer_corrected"
    assert r.counts["kept"] == 5 and r.counts["dropped"] == {"grade_changed": 1, "rationale_rejected": 1}
    assert r.counts["status"] == {"accepted": 1, "corrected": 2, "rejected": 2, "pending": 1, "not_reviewed": 1}


def test_cot_correction_must_state_the_resolved_grade(demo):
    df = _rows("cot", demo)
    rid, g = df[ID_COL][0], df[C.GRADE][0]
    wrong = 1 if g != 1 else 2
    r = merge("cot", df, {rid: ok(g, correction=f"{wrong}\nReason: contradicts the grade.")}, SCALE)
    assert r.dropped[C.DROP_REASON].to_list() == ["correction_grade_mismatch"]


def test_prefs_rules(demo):
    df = _rows("prefs", demo)
    ids, g, bad = df[ID_COL].to_list(), df[C.GRADE].to_list(), df[C.REJECTED_GRADE].to_list()
    other = next(v for v in SCALE.values if v not in (g[2], bad[2]))
    decisions = {
        ids[0]: ok(g[0]),
        ids[1]: ok(g[1], accept="no"),
        ids[2]: ok(other),
        ids[3]: ok(g[3], accept="no", correction=f"{g[3]}\nReason: the reviewer's answer."),
        ids[4]: ok(bad[4], correction=f"{bad[4]}\nReason: the rejected side was right."),
    }
    r = merge("prefs", df, decisions, SCALE)
    by_id = {row[ID_COL]: row for row in r.merged.iter_rows(named=True)}
    assert set(by_id) == {ids[0], ids[3], ids[5]}
    assert by_id[ids[3]][C.CHOSEN] == [{"role": "assistant", "content": f"{g[3]}\nReason: the reviewer's answer."}]
    assert by_id[ids[3]][C.CHOSEN_SOURCE] == "reviewer" and by_id[ids[3]][C.REJECTED] == df.row(3, named=True)[C.REJECTED]
    assert dict(zip(r.dropped[ID_COL], r.dropped[C.DROP_REASON])) == {ids[1]: "pair_rejected", ids[2]: "grade_changed", ids[4]: "rejected_is_correct"}


def test_hard_and_errors_rules(demo):
    hard = _rows("hard", demo)
    ids, g = hard[ID_COL].to_list(), hard[C.GRADE].to_list()
    other = 1 if g[0] != 1 else 2
    r = merge("hard", hard, {ids[0]: ok(other), ids[1]: ok(g[1], accept="no"), ids[2]: ok(g[2])}, SCALE)
    row0 = r.merged.row(0, named=True)
    assert row0[C.GRADE] == other and row0[C.PASS_RATE] is None and row0[C.N_CORRECT] is None and row0[C.DIFFICULTY] is None
    assert r.merged.row(1, named=True)[C.PASS_RATE] == hard.row(2, named=True)[C.PASS_RATE]  # unchanged grade keeps it
    assert r.dropped[C.DROP_REASON].to_list() == ["pair_rejected"]

    errs = _rows("errors", demo)
    ids, pred = errs[ID_COL].to_list(), errs[C.PRED_GRADE].to_list()
    r = merge("errors", errs, {ids[0]: ok(pred[0]), ids[1]: ok(errs[C.GRADE][1]), ids[2]: ok(pred[2], accept="no")}, SCALE)
    by_id = {row[ID_COL]: row for row in r.merged.iter_rows(named=True)}
    assert by_id[ids[0]][C.GRADE] == pred[0] and by_id[ids[0]][C.CORRECT] is True  # the model was right, gold fixed
    assert by_id[ids[1]][C.REVIEW_STATUS] == "accepted" and by_id[ids[1]][C.CORRECT] is False
    assert ids[2] not in by_id


def test_records_show_pairs_and_the_models_answer(demo):
    df, _ = read_rows(S.KINDS["cot"], demo["cot"], demo["pairs_dir"])
    row = df.row(0, named=True)
    assert row[ID_COL] == f"{row[C.PAIR_ID]}-s0" and df[ID_COL][1] == f"{row[C.PAIR_ID]}-s1"
    f = fields("cot", row, SCALE)
    assert f[S.F_QUERY] == row[C.QUERY] and row[C.TITLE] in f[S.F_ITEM]
    assert f[S.F_OUTPUT].startswith(f"**Model grade: {row[C.GRADE]} ")
    assert suggestion("cot", row, SCALE) == (row[C.GRADE], None, "demo-teacher")
    errs, _ = read_rows(S.KINDS["errors"], demo["errors"])
    e = errs.row(0, named=True)
    assert suggestion("errors", e, SCALE) == (e[C.PRED_GRADE], pytest.approx(0.85), "model")
    assert leading_grade("3\nReason: x", SCALE) == 3 and leading_grade("Reason first. 3", SCALE) is None


def test_duplicate_record_ids_are_one_line_errors(tmp_path, demo):
    df = pl.read_parquet(demo["hard"] / "difficulty.parquet")
    pl.concat([df, df.head(1)]).write_parquet(tmp_path / "difficulty.parquet")
    with pytest.raises(UserError, match="appears 2 times"):
        read_rows(S.KINDS["hard"], tmp_path)
