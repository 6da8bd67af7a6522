"""The review loop without a server: answers shaped as Argilla returns them -> pull's merge and reviewer checks
(`finish_pull`) -> `review apply` -> the derived datasets re-marked with --gold. The same loop against the real
server is in test_review_loop.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # rollouts_data

from annotation import settings as S
from annotation.agreement import ordinal_agreement
from annotation.apply import ApplyConfig, apply
from annotation.inputs import read_rows
from annotation.pull import PullConfig, finish_pull
from annotation.select import SelectConfig, select
from rollouts_data import write_rollouts
from toolkit.core import columns as C
from toolkit.difficulty import LabelDifficultyConfig, label_difficulty
from toolkit.core.errors import UserError
from toolkit.core.gold import regrade_cot
from toolkit.core.grades import get_scale
from toolkit.preferences import MakePrefsConfig, make_preferences

SCALE = get_scale("taosr4")


def answers(rows: list[tuple[str, str, dict]], status: str = "submitted") -> list[dict]:
    """Argilla-shaped responses: (record id, reviewer, {question: value})."""
    out = []
    for rid, who, values in rows:
        for q, v in values.items():
            out.append({C.RECORD_ID: rid, C.PAIR_ID: rid.split("-")[0], C.REVIEWER: who, C.QUESTION: q, C.VALUE: v, C.RESPONSE_STATUS: status})
    return out


def pulled(folder: Path, kind: str, responses: list[dict], out: Path, shown: dict | None = None, **kw):
    """What `toolkit review pull` writes for these answers (everything after fetching them from the server)."""
    cfg = PullConfig(input=str(folder), kind=kind, out=str(out), **kw)
    df, names = read_rows(S.get_kind(kind), folder)
    ids = set(df["__record_id"].to_list())
    return finish_pull(cfg, df, names, SCALE, responses, ids, shown or {}, 1, {"url": "http://argilla.test", "workspace": "review", "dataset": "d"})


@pytest.fixture
def round1(demo, tmp_path):
    """A hard-case round: pair 0 (gold 4) corrected to 3, pair 2 (gold 2) rejected as unjudgeable, pair 3 confirmed."""
    p = pl.read_parquet(demo["hard"] / "difficulty.parquet")[C.PAIR_ID].to_list()
    resp = answers([(p[0], "alice", {"grade": "3", "accept": "yes"}), (p[2], "alice", {"grade": "2", "accept": "no"}),
                    (p[3], "alice", {"grade": "1", "accept": "yes"})])
    res = pulled(demo["hard"], "hard", resp, tmp_path / "hard-reviewed")
    applied = apply(ApplyConfig(pairs=str(demo["pairs_dir"]), reviews=[str(res.out)], out=str(tmp_path / "pairs-r1")))
    return {"p": p, "pulled": res.out, "applied": applied, "out": tmp_path / "pairs-r1", "tmp": tmp_path}


def test_apply_writes_the_next_pairs_row_by_row(round1, demo):
    p, out = round1["p"], round1["out"]
    before = pl.read_parquet(demo["pairs_dir"] / "pairs.parquet")
    after = pl.read_parquet(out / "pairs.parquet")
    assert after.height == before.height - 1 and p[2] not in after[C.PAIR_ID].to_list()
    row = {r[C.PAIR_ID]: r for r in after.iter_rows(named=True)}
    assert (row[p[0]][C.GRADE], row[p[0]]["grade_before_review"], row[p[0]]["review_round"]) == (3, 4, 1)
    assert (row[p[3]][C.GRADE], row[p[3]]["review_round"]) == (1, None)  # confirmed: unchanged
    untouched = before.filter(~pl.col(C.PAIR_ID).is_in([p[0], p[2]]))
    assert after.filter(~pl.col(C.PAIR_ID).is_in([p[0]])).select(before.columns).equals(untouched)
    changes = pl.read_parquet(out / "review" / "changes.parquet")
    assert changes.select(C.PAIR_ID, C.CHANGED_COLUMN, C.OLD_VALUE, C.NEW_VALUE, C.CHANGE_REASON).rows() == [
        (p[0], "grade", "4", "3", "grade_corrected"), (p[2], "(row)", '"kept"', '"excluded"', "pair_rejected")]
    assert pl.read_parquet(out / "review" / "excluded.parquet")[C.PAIR_ID].to_list() == [p[2]]
    m = json.loads((out / "manifest.json").read_text())
    assert m["stage"] == "review-apply" and m["review_round"] == 1 and m["review_rounds"][0]["regraded"] == 1
    assert m["grade_scale"]["name"] == "taosr4" and round1["applied"].counts["excluded"] == 1
    assert "round 1 from 1 review(s): 1 grades corrected, 1 pairs excluded" in round1["applied"].summary()
    again = apply(ApplyConfig(pairs=str(demo["pairs_dir"]), reviews=[str(round1["pulled"])], out=str(out)))
    assert again.skipped  # up to date


def test_gold_remarks_rollouts_prefs_grpo_and_sft(round1, demo):
    p, tmp = round1["p"], round1["tmp"]
    # pair 0: gold 4 -> 3; its samples say 3,3,4,4 (2 right before, 2 right after, but the other two);
    # pair 1: gold 4, all right; pair 2: excluded; pair 3: gold 1, samples 1,2
    roll = write_rollouts(tmp / "rollouts", {p[0]: (4, [3, 3, 3, 4]), p[1]: (4, [4, 4, 4, 4]), p[2]: (2, [2, 1, 2, 1]), p[3]: (1, [1, 2, 1, 2])})
    gold = str(round1["out"])
    d0 = label_difficulty(LabelDifficultyConfig(rollouts=str(roll), out=str(tmp / "diff0"), balance=False))
    d1 = label_difficulty(LabelDifficultyConfig(rollouts=str(roll), out=str(tmp / "diff1"), balance=False, gold=gold))
    before = {r[C.PAIR_ID]: r for r in pl.read_parquet(tmp / "diff0" / "difficulty.parquet").iter_rows(named=True)}
    after = {r[C.PAIR_ID]: r for r in pl.read_parquet(tmp / "diff1" / "difficulty.parquet").iter_rows(named=True)}
    assert (before[p[0]][C.N_CORRECT], after[p[0]][C.N_CORRECT], after[p[0]][C.GRADE]) == (1, 3, 3)
    assert p[2] not in after and after[p[3]][C.N_CORRECT] == before[p[3]][C.N_CORRECT] == 2
    assert (d1.counts["gold_regraded_pairs"], d1.counts["gold_excluded_pairs"]) == (1, 1) and "gold_regraded_pairs" not in d0.counts
    grpo = pl.read_parquet(tmp / "diff1" / "grpo.parquet")
    assert dict(zip(grpo[C.PAIR_ID], grpo[C.GOLD_LABEL]))[p[0]] == "3"
    m1 = make_preferences(MakePrefsConfig(rollouts=str(roll), out=str(tmp / "prefs1"), gold=gold))
    prefs = pl.read_parquet(tmp / "prefs1" / "preferences.parquet")
    chosen = prefs.filter(pl.col(C.PAIR_ID) == p[0])
    assert chosen[C.CHOSEN_GRADE].to_list() == [3] and chosen[C.REJECTED_GRADE].to_list() == [4]  # before: chosen 4, rejected 3
    assert p[2] not in prefs[C.PAIR_ID].to_list() and m1.counts["gold_regraded_pairs"] == 1
    # a gold file of other pairs is refused
    other = tmp / "other.parquet"
    pl.DataFrame({C.PAIR_ID: ["zz"], C.GRADE: [1]}).write_parquet(other)
    with pytest.raises(UserError, match="none of its pair ids"):
        label_difficulty(LabelDifficultyConfig(rollouts=str(roll), out=str(tmp / "diff2"), gold=str(other)))
    # SFT: the rationale written for the old grade of pair 0 leaves; label-only takes the new grade
    sft = pl.read_parquet(demo["cot"] / "sft.parquet")
    kept, c = regrade_cot(sft, gold, label_only=False)
    assert p[0] not in kept[C.PAIR_ID].to_list() and p[2] not in kept[C.PAIR_ID].to_list()
    assert c == {"gold_excluded_rows": 1, "gold_regraded_rows": 2, "dropped_grade_corrected": 2} and kept.height == sft.height - 3
    lab, _ = regrade_cot(sft, gold, label_only=True)
    assert set(lab.filter(pl.col(C.PAIR_ID) == p[0])[C.GRADE]) == {3} and lab.height == sft.height - 1


def test_second_round_builds_on_the_first(round1, demo):
    p, tmp = round1["p"], round1["tmp"]
    errors = pl.read_parquet(demo["errors"] / "predictions.parquet")[C.PAIR_ID].to_list()
    assert errors[:6] == p[:6]
    resp = answers([(p[1], "bob", {"grade": "3", "accept": "yes"}), (p[0], "bob", {"grade": "3", "accept": "yes"})])
    r2 = pulled(demo["errors"], "errors", resp, tmp / "errors-reviewed")
    res = apply(ApplyConfig(pairs=str(round1["out"]), reviews=[str(r2.out)], out=str(tmp / "pairs-r2")))
    after = {r[C.PAIR_ID]: r for r in pl.read_parquet(tmp / "pairs-r2" / "pairs.parquet").iter_rows(named=True)}
    assert (after[p[0]][C.GRADE], after[p[0]]["review_round"], after[p[0]]["grade_before_review"]) == (3, 1, 4)  # round 1 kept
    assert (after[p[1]][C.GRADE], after[p[1]]["review_round"], after[p[1]]["grade_before_review"]) == (3, 2, 4)
    assert p[2] not in after
    log = pl.read_parquet(tmp / "pairs-r2" / "review" / "changes.parquet")
    assert log.select("review_round", C.PAIR_ID).rows() == [(1, p[0]), (1, p[2]), (2, p[1])]
    m = json.loads((tmp / "pairs-r2" / "manifest.json").read_text())
    assert m["review_round"] == 2 and [r["round"] for r in m["review_rounds"]] == [1, 2] and res.counts["regraded"] == 1


def test_apply_refuses_what_is_not_a_review_and_skips_missing_rounds_only_when_asked(demo, tmp_path):
    with pytest.raises(UserError, match="not a stage folder|written by `toolkit review pull`"):
        apply(ApplyConfig(pairs=str(demo["pairs_dir"]), reviews=[str(demo["hard"])], out=str(tmp_path / "a")))
    with pytest.raises(UserError, match="no such folder; run `toolkit review pull` first"):
        apply(ApplyConfig(pairs=str(demo["pairs_dir"]), reviews=[str(tmp_path / "later")], out=str(tmp_path / "b")))
    res = apply(ApplyConfig(pairs=str(demo["pairs_dir"]), reviews=[str(tmp_path / "later")], out=str(tmp_path / "c"), allow_missing=True))
    assert "no review answers yet" in res.summary() and res.counts["round"] == 0
    src = pl.read_parquet(demo["pairs_dir"] / "pairs.parquet")
    assert pl.read_parquet(tmp_path / "c" / "pairs.parquet").select(src.columns).equals(src)
    with pytest.raises(UserError, match="pass --review"):
        ApplyConfig(pairs=str(demo["pairs_dir"]), reviews=[], out=str(tmp_path / "d"))


def test_honeypots_catch_a_careless_reviewer_and_leave_them_out(demo, tmp_path):
    sel = select(SelectConfig(input=str(demo["errors"] / "predictions.parquet"), out=str(tmp_path / "sel"), policy="disagreement",
                              budget="3", stratify="none", honeypots=str(demo["pairs_dir"]), honeypot_rate=0.4))
    df = pl.read_parquet(tmp_path / "sel" / "predictions.parquet")
    hp = df.filter(pl.col(C.HONEYPOT))
    assert sel.counts["honeypots"] == hp.height == 2 and df.height == 5
    assert (hp[C.GRADE] != hp[C.HONEYPOT_GRADE]).all() and ((hp[C.GRADE] - hp[C.HONEYPOT_GRADE]).abs() == 1).all()  # planted next to it
    real = df.filter(~pl.col(C.HONEYPOT))
    rows = []
    for r in df.iter_rows(named=True):
        truth = r[C.HONEYPOT_GRADE] if r[C.HONEYPOT] else r[C.GRADE]
        rows.append((r[C.PAIR_ID], "alice", {"grade": str(truth), "accept": "yes"}))  # careful
        rows.append((r[C.PAIR_ID], "carol", {"grade": str(truth), "accept": "yes"}))
        rows.append((r[C.PAIR_ID], "bob", {"grade": str(r[C.GRADE]), "accept": "yes"}))  # copies the grade shown
    first = real[C.PAIR_ID][0]
    rows = [(rid, who, ({"grade": "1", "accept": "yes"} if who == "bob" and rid == first else v)) for rid, who, v in rows]
    shown = {r[C.PAIR_ID]: r[C.PRED_GRADE] for r in df.iter_rows(named=True)}
    res = pulled(tmp_path / "sel", "errors", answers(rows), tmp_path / "pulled", shown=shown, min_honeypot_accuracy=0.5, min_honeypots=2)
    rep = json.loads((tmp_path / "pulled" / "review" / "reviewers.json").read_text())
    assert rep["bob"]["honeypot_accuracy"] == 0 and rep["bob"]["excluded"] and not rep["alice"]["excluded"]
    assert rep["alice"]["honeypot_accuracy"] == 1 and rep["alice"]["peer_agreement"] < 1  # bob disagreed once
    assert res.counts["reviewers_excluded"] == ["bob"] and res.counts["honeypots"] == 2
    merged = pl.read_parquet(tmp_path / "pulled" / "predictions.parquet")
    assert merged.height == 3 and not merged[C.HONEYPOT].any()  # honeypots never reach the data
    assert set(merged[C.REVIEWERS].explode().drop_nulls()) == {"alice", "carol"}  # bob left out of the merge
    table = pl.read_parquet(tmp_path / "pulled" / "review" / "honeypots.parquet")
    assert table.height == 6 and table.filter(pl.col(C.REVIEWER) == "bob")["right"].to_list() == [False, False]
    report = (tmp_path / "pulled" / "review" / "report.md").read_text()
    assert "| bob |" in report and "left out of the merge" in report and "Krippendorff" in report
    agree = json.loads((tmp_path / "pulled" / "review" / "agreement.json").read_text())
    assert agree["grade"]["quadratic_kappa"] == pytest.approx(1.0) and agree["model_vs_human"]["answers"] == 6
    # without the threshold bob stays in, and his wrong grade turns a unanimous record into a 2-1 majority
    res2 = pulled(tmp_path / "sel", "errors", answers(rows), tmp_path / "pulled2", shown=shown)
    assert res2.counts["reviewers_excluded"] == [] and json.loads((tmp_path / "pulled2" / "review" / "agreement.json").read_text())["grade"]["quadratic_kappa"] < 1


def test_ordinal_agreement_matches_the_formulas():
    # two raters, grades 1-4: quadratic-weighted kappa by its definition
    a, b = [1, 2, 3, 4, 4, 2], [1, 3, 3, 4, 3, 1]
    labels = [(i, "a", x) for i, x in enumerate(a)] + [(i, "b", y) for i, y in enumerate(b)]
    k = 4
    o = np.zeros((k, k))
    for x, y in zip(a, b):
        o[x - 1, y - 1] += 1
    e = np.outer(o.sum(1), o.sum(0)) / o.sum()
    w = np.array([[(i - j) ** 2 for j in range(k)] for i in range(k)]) / (k - 1) ** 2
    qwk = 1 - (w * o).sum() / (w * e).sum()
    out = ordinal_agreement(labels, [1, 2, 3, 4])
    assert out["quadratic_kappa"] == pytest.approx(qwk)
    # Krippendorff's alpha (ordinal) = 1 for perfect agreement, and a near miss costs less than a far one
    same = ordinal_agreement([(i, r, x) for i, x in enumerate(a) for r in ("a", "b", "c")], [1, 2, 3, 4])
    assert same["krippendorff_alpha_ordinal"] == pytest.approx(1.0)
    near = ordinal_agreement([(0, "a", 4), (0, "b", 3), (1, "a", 1), (1, "b", 1), (2, "a", 2), (2, "b", 2)], [1, 2, 3, 4])
    far = ordinal_agreement([(0, "a", 4), (0, "b", 1), (1, "a", 1), (1, "b", 1), (2, "a", 2), (2, "b", 2)], [1, 2, 3, 4])
    assert near["krippendorff_alpha_ordinal"] > far["krippendorff_alpha_ordinal"]
    assert ordinal_agreement([(0, "a", 4)], [1, 2, 3, 4])["quadratic_kappa"] is None
