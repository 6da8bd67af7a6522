"""The whole review loop against a real Argilla 2.8 server (started by conftest.py), reviewers answering through
the SDK with their own keys: select (with honeypots) -> push --blind -> answer (one reviewer careless on purpose)
-> pull (the careless one caught and left out) -> apply -> rollouts, preference pairs and the GRPO set re-marked
-> a second round on top of the first.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # rollouts_data

from annotation.apply import ApplyConfig, apply
from annotation.pull import PullConfig, pull
from annotation.push import PushConfig, push
from annotation.select import SelectConfig, select
from rollouts_data import write_rollouts
from toolkit.core import columns as C
from toolkit.difficulty import LabelDifficultyConfig, label_difficulty
from toolkit.preferences import MakePrefsConfig, make_preferences

pytestmark = [pytest.mark.service, pytest.mark.slow]


def _records(stack, dataset):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = stack.client.datasets(dataset, workspace="review")
        return {r.id: r for r in ds.records(with_suggestions=True, with_responses=True)}


def test_select_push_answer_pull_apply_then_a_second_round(argilla_stack, annotators, demo, unique, record_uuids, tmp_path):
    stack = argilla_stack
    server = {"api_url": stack.url, "api_key": stack.key}
    alice, bob, carol = (annotators[n] for n in ("alice", "bob", "carol"))

    # 1. select the likely label errors, with honeypots (trusted grades: the ingested pairs)
    sel = tmp_path / "selected"
    select(SelectConfig(input=str(demo["errors"]), out=str(sel), policy="disagreement", budget="3", stratify="none",
                        honeypots=str(demo["pairs_dir"]), honeypot_rate=0.4))
    rows = pl.read_parquet(sel / "predictions.parquet")
    real, hp = rows.filter(~pl.col(C.HONEYPOT)), rows.filter(pl.col(C.HONEYPOT))
    assert (real.height, hp.height) == (3, 2)

    # 2. a blind round: no suggestion, no prediction shown
    name = unique("loop")
    res = push(PushConfig(input=str(sel), kind="errors", dataset=name, blind=True, min_submitted=2, **server))
    assert res.pushed == 5 and "blind" in res.summary()
    for who in (alice, bob, carol):
        who.join("review")  # the workspace exists once push made it
    recs = _records(stack, name)
    assert len(recs) == 5
    for rec in recs.values():
        assert "grade" not in {sg.question_name for sg in rec.suggestions} and "hidden" in rec.fields["model_output"] and "pred_grade" not in rec.metadata
    shown = {r[C.PAIR_ID]: r[C.GRADE] for r in rows.iter_rows(named=True)}
    assert {rid: int(rec.metadata["gold_grade"]) for rid, rec in recs.items()} == shown  # honeypots show the planted grade

    # 3. answers: alice and carol judge (the true grade, and pair x is really a 3), bob copies the grade shown
    uuids = record_uuids(name)
    x = real[C.PAIR_ID][0]
    truth = {r[C.PAIR_ID]: (r[C.HONEYPOT_GRADE] if r[C.HONEYPOT] else r[C.GRADE]) for r in rows.iter_rows(named=True)}
    truth[x] = 3 if truth[x] != 3 else 2
    for pid in shown:
        alice.answer(uuids[pid], grade=str(truth[pid]), accept="yes")
        carol.answer(uuids[pid], grade=str(truth[pid]), accept="yes")
        if pid != real[C.PAIR_ID][1]:
            bob.answer(uuids[pid], grade=str(shown[pid]), accept="yes")
    bob.answer(uuids[real[C.PAIR_ID][1]], status="discarded")  # a discard without answers is kept in responses

    # 4. pull: bob fails both honeypots and is left out; the corrected grade of x is merged
    out1 = tmp_path / "round1"
    res = pull(PullConfig(input=str(sel), kind="errors", dataset=name, out=str(out1), min_honeypot_accuracy=0.5, min_honeypots=2, **server))
    assert res.counts["reviewers_excluded"] == ["bob"] and "reviewers left out: bob" in res.summary()
    rep = json.loads((out1 / "review" / "reviewers.json").read_text())
    assert (rep["bob"]["honeypots"], rep["bob"]["honeypot_accuracy"]) == (2, 0.0) and rep["alice"]["honeypot_accuracy"] == 1.0
    assert rep["alice"]["suggestion_acceptance"] is None  # blind: nothing was suggested
    responses = pl.read_parquet(out1 / "review" / "responses.parquet")
    bare = responses.filter((pl.col(C.REVIEWER) == "bob") & (pl.col(C.RESPONSE_STATUS) == "discarded"))
    assert bare.height == 1 and bare[C.QUESTION][0] is None and bare[C.PAIR_ID][0] == real[C.PAIR_ID][1]
    merged = {r[C.PAIR_ID]: r for r in pl.read_parquet(out1 / "predictions.parquet").iter_rows(named=True)}
    assert set(merged) == set(real[C.PAIR_ID]) and merged[x][C.GRADE] == truth[x] and merged[x][C.REVIEWERS] == ["alice", "carol"]
    assert "| bob |" in (out1 / "review" / "report.md").read_text()

    # 5. apply: the next pairs, and what the old grades made re-marked
    pairs1 = tmp_path / "pairs-r1"
    apply(ApplyConfig(pairs=str(demo["pairs_dir"]), reviews=[str(out1)], out=str(pairs1)))
    p1 = {r[C.PAIR_ID]: r for r in pl.read_parquet(pairs1 / "pairs.parquet").iter_rows(named=True)}
    old = {r[C.PAIR_ID]: r[C.GRADE] for r in pl.read_parquet(demo["pairs_dir"] / "pairs.parquet").iter_rows(named=True)}
    assert p1[x][C.GRADE] == truth[x] and p1[x]["grade_before_review"] == old[x] and p1[x]["review_round"] == 1
    assert all(p1[p][C.GRADE] == old[p] for p in old if p != x)
    roll = write_rollouts(tmp_path / "rollouts", {x: (old[x], [truth[x], truth[x], old[x], truth[x]])})
    diff = tmp_path / "difficulty"
    label_difficulty(LabelDifficultyConfig(rollouts=str(roll), out=str(diff), gold=str(pairs1), balance=False))
    d = pl.read_parquet(diff / "difficulty.parquet").row(0, named=True)
    assert (d[C.GRADE], d[C.N_CORRECT]) == (truth[x], 3)  # was 1 of 4 against the old grade
    assert pl.read_parquet(diff / "grpo.parquet")[C.GRADE].to_list() == [truth[x]]
    make_preferences(MakePrefsConfig(rollouts=str(roll), out=str(tmp_path / "prefs"), gold=str(pairs1)))
    pref = pl.read_parquet(tmp_path / "prefs" / "preferences.parquet").row(0, named=True)
    assert (pref[C.CHOSEN_GRADE], pref[C.REJECTED_GRADE]) == (truth[x], old[x])

    # 6. round 2 on top of round 1: a hard-case round rejects one pair as unjudgeable
    name2 = unique("loop2")
    push(PushConfig(input=str(demo["hard"]), kind="hard", dataset=name2, **server))
    y = pl.read_parquet(demo["hard"] / "difficulty.parquet")[C.PAIR_ID][5]
    alice.answer(record_uuids(name2)[y], grade=str(old[y]), accept="no", comment="the item text is missing")
    out2 = tmp_path / "round2"
    pull(PullConfig(input=str(demo["hard"]), kind="hard", dataset=name2, out=str(out2), **server))
    pairs2 = tmp_path / "pairs-r2"
    res2 = apply(ApplyConfig(pairs=str(pairs1), reviews=[str(out2)], out=str(pairs2)))
    p2 = {r[C.PAIR_ID]: r for r in pl.read_parquet(pairs2 / "pairs.parquet").iter_rows(named=True)}
    assert y not in p2 and p2[x][C.GRADE] == truth[x] and p2[x]["review_round"] == 1 and res2.counts["round"] == 2
    log = pl.read_parquet(pairs2 / "review" / "changes.parquet")
    assert log.select("review_round", C.PAIR_ID, C.CHANGE_REASON).rows() == [(1, x, "grade_corrected"), (2, y, "pair_rejected")]
