"""Review rounds against a real Argilla 2.8 server (started by conftest.py), no HTTP mocks:
push each kind, push again, annotators answer through the SDK with their own keys, pull, merge.

Run: .venv/bin/python -m pytest tests/annotation -q      (about a minute; the first run installs the stack)
"""

from __future__ import annotations

import json
import socket
import uuid
import warnings

import polars as pl
import pytest

from annotation import pull as pull_module
from annotation.pull import PullConfig, pull
from annotation.push import PushConfig, push
from toolkit.core import columns as C
from toolkit.core.errors import UserError

pytestmark = [pytest.mark.service, pytest.mark.slow]


def _push(stack, demo, kind, dataset, **kw):
    pairs = str(demo["pairs_dir"]) if kind in ("cot", "prefs") else None
    return push(PushConfig(input=str(demo[kind]), kind=kind, dataset=dataset, api_url=stack.url, api_key=stack.key, pairs=pairs, **kw))


def _pull(stack, demo, kind, dataset, out, **kw):
    return pull(PullConfig(input=str(demo[kind]), kind=kind, dataset=dataset, out=str(out), api_url=stack.url, api_key=stack.key, **kw))


def _records(stack, dataset, workspace="review"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = stack.client.datasets(dataset, workspace=workspace)
        return {r.id: r for r in ds.records(with_suggestions=True, with_responses=True)}


def _status(out, name):
    return dict(zip(pl.read_parquet(out / name)[C.PAIR_ID], pl.read_parquet(out / name)[C.REVIEW_STATUS]))


@pytest.mark.parametrize("kind,n", [("cot", 7), ("prefs", 6), ("hard", 6), ("errors", 5)])
def test_push_each_kind_then_again_updates_without_duplicates(argilla_stack, demo, unique, kind, n):
    name = unique(kind)
    first = _push(argilla_stack, demo, kind, name, min_submitted=2, guidelines="demo/guideline.md")
    assert (first.pushed, first.new, first.updated) == (n, n, 0) and first.created[-1] == f"dataset {name}"
    again = _push(argilla_stack, demo, kind, name, min_submitted=2)
    assert (again.new, again.updated, again.created) == (0, n, [])
    recs = _records(argilla_stack, name)
    assert len(recs) == n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = argilla_stack.client.datasets(name, workspace="review")
    assert ds.settings.distribution.min_submitted == 2
    assert [q.name for q in ds.settings.questions][:2] == ["grade", "accept"]
    grade_q = next(q for q in ds.settings.questions if q.name == "grade")
    assert list(grade_q.labels) == ["1", "2", "3", "4"]  # keyboard shortcut k picks option k: the key a reviewer types is the grade
    assert "Grade scale" in ds.settings.guidelines and "Relevance guideline" in ds.settings.guidelines
    rec = recs[sorted(recs)[0]]
    assert rec.fields["query"] and rec.fields["model_output"]
    sugg = rec.suggestions["grade"]
    assert sugg is not None and sugg.value in {"1", "2", "3", "4"}
    if kind == "errors":
        assert sugg.score == pytest.approx(0.85) and rec.metadata["pred_prob"] == pytest.approx(0.85)
        assert len(recs) == 5  # the one correct prediction is not pushed
    if kind == "cot":
        assert any(i.endswith("-s1") for i in recs) and rec.metadata["model"] == "demo-teacher"
    if kind == "hard":
        assert {r.metadata["difficulty"] for r in recs.values()} == {"hard", "medium"}


def test_push_again_updates_content_and_keeps_answers(argilla_stack, annotators, demo, unique, record_uuids, tmp_path):
    name = unique("hard")
    _push(argilla_stack, demo, "hard", name)
    annotators["alice"].join("review")
    first_id = sorted(record_uuids(name))[0]
    annotators["alice"].answer(record_uuids(name)[first_id], grade="4", accept="yes")
    changed = tmp_path / "hard"
    changed.mkdir()
    df = pl.read_parquet(demo["hard"] / "difficulty.parquet")
    df.with_columns(pl.lit("medium").alias(C.DIFFICULTY)).write_parquet(changed / "difficulty.parquet")
    res = push(PushConfig(input=str(changed), kind="hard", dataset=name, api_url=argilla_stack.url, api_key=argilla_stack.key))
    assert (res.new, res.updated) == (0, 6)
    recs = _records(argilla_stack, name)
    assert len(recs) == 6 and {r.metadata["difficulty"] for r in recs.values()} == {"medium"}
    assert [(x.question_name, x.value) for x in recs[first_id].responses] == [("grade", "4"), ("accept", "yes")]


def test_push_creates_a_missing_workspace_and_refuses_a_dataset_of_another_kind(argilla_stack, demo, unique):
    ws, name = unique("team"), unique("cot")
    res = _push(argilla_stack, demo, "cot", name, workspace=ws)
    assert res.created == [f"workspace {ws}", f"dataset {name}"]
    assert argilla_stack.client.workspaces(ws) is not None and len(_records(argilla_stack, name, ws)) == 7
    with pytest.raises(UserError, match="exists with other fields or questions"):
        _push(argilla_stack, demo, "hard", name, workspace=ws)
    with pytest.raises(UserError, match="no dataset"):
        _pull(argilla_stack, demo, "cot", "never-pushed", demo["root"] / "never", workspace=ws)


@pytest.fixture(scope="module")
def cot_round(argilla_stack, annotators, demo, tmp_path_factory):
    """A CoT review: three annotators, min_submitted 2, every case of the merge rules."""
    name = f"cot-round-{uuid.uuid4().hex[:6]}"
    _push(argilla_stack, demo, "cot", name, min_submitted=2)
    a, b, c = (annotators[n] for n in ("alice", "bob", "carol"))
    for who in (a, b, c):
        who.join("review")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = argilla_stack.client.datasets(name, workspace="review")
        uuids = {r.id: r._server_id for r in ds.records()}
    ids = pl.read_parquet(demo["cot"] / "sft.parquet").select(pl.concat_str(C.PAIR_ID, pl.lit("-s"), pl.col(C.SAMPLE_IDX).cast(pl.String)))
    r = [uuids[i] for i in ids.to_series()]
    # gold grades of r0..r6: 4 4 4 2 1 4 2
    for who in (a, b, c):
        who.answer(r[0], grade="4", accept="yes")
    a.answer(r[1], grade="4", accept="no", comment="step 2 is wrong")
    b.answer(r[1], grade="4", accept="no")
    c.answer(r[1], grade="4", accept="yes")
    a.answer(r[2], grade="4", accept="no", correction="4\nReason: alice's fix.")
    b.answer(r[2], grade="4", accept="no", correction="4\nReason: bob's fix.")
    a.answer(r[3], grade="3", accept="yes")
    b.answer(r[3], grade="3", accept="yes")
    a.answer(r[4], grade="1", accept="yes")  # one answer of two: pending
    a.answer(r[5], grade="4", accept="yes")
    b.answer(r[5], grade="3", accept="yes")  # a tie on grade: conflict
    c.answer(r[6], status="draft", grade="2")  # drafts and discarded answers do not count
    a.answer(r[6], status="discarded", grade="2")
    out = tmp_path_factory.mktemp("cot-round") / "merged"
    result = _pull(argilla_stack, demo, "cot", name, out)
    return {"name": name, "ids": list(ids.to_series()), "out": out, "result": result}


def test_cot_round_merges_row_by_row(cot_round):
    out, ids = cot_round["out"], cot_round["ids"]
    merged = pl.read_parquet(out / "sft.parquet")
    assert sorted(p.name for p in out.glob("*.parquet")) == ["sft.parquet"]  # the input's file, nothing else at the top
    key = merged.select(pl.concat_str(C.PAIR_ID, pl.lit("-s"), pl.col(C.SAMPLE_IDX).cast(pl.String))).to_series().to_list()
    rows = dict(zip(key, merged.iter_rows(named=True)))
    assert key == [ids[0], ids[2], ids[4], ids[5], ids[6]]  # input order, rejected rows gone
    assert [rows[i][C.REVIEW_STATUS] for i in key] == ["accepted", "corrected", "pending", "conflict", "pending"]
    assert rows[ids[0]][C.REVIEWERS] == ["alice", "bob", "carol"]
    assert rows[ids[2]][C.COMPLETION] == [{"role": "assistant", "content": "4\nReason: alice's fix."}]
    assert rows[ids[2]][C.RATIONALE] == "alice's fix."  # stored as gen-cot stores a rationale
    assert rows[ids[4]][C.REVIEWERS] == ["alice"] and rows[ids[4]][C.GRADE] == 1
    assert rows[ids[6]][C.REVIEWERS] == []
    dropped = pl.read_parquet(out / "review" / "dropped.parquet")
    assert dict(zip(dropped[C.SAMPLE_IDX], dropped[C.DROP_REASON])) == {1: "rationale_rejected", 0: "grade_changed"}
    assert dropped.filter(pl.col(C.DROP_REASON) == "rationale_rejected")[C.REVIEW_COMMENT][0] == "alice: step 2 is wrong"
    changes = pl.read_parquet(out / "review" / "changes.parquet")
    log = {(e[C.RECORD_ID], e[C.CHANGED_COLUMN]): (json.loads(e[C.OLD_VALUE]), json.loads(e[C.NEW_VALUE]), e[C.CHANGE_REASON]) for e in changes.iter_rows(named=True)}
    assert log[(ids[3], C.GRADE)] == (2, 3, "grade_corrected")
    assert log[(ids[3], "(row)")] == ("kept", "dropped", "grade_changed")
    assert log[(ids[1], "(row)")] == ("kept", "dropped", "rationale_rejected")
    assert log[(ids[2], C.RATIONALE)][1] == "alice's fix."
    responses = pl.read_parquet(out / "review" / "responses.parquet")
    assert set(responses[C.RESPONSE_STATUS]) == {"submitted", "draft", "discarded"}
    # submitted values: r0 3x2, r1 3x2 + alice's comment, r2 2x3 (with corrections), r3 2x2, r4 2, r5 2x2
    assert responses.filter(pl.col(C.RESPONSE_STATUS) == "submitted").height == 29
    counts = cot_round["result"].counts
    assert counts["status"] == {"accepted": 1, "corrected": 1, "rejected": 2, "pending": 2, "conflict": 1}
    assert counts["min_submitted"] == 2 and counts["records"] == 7


def test_cot_round_agreement_matches_hand_computation(cot_round):
    agree = json.loads((cot_round["out"] / "review" / "agreement.json").read_text())
    # grade over r0 {4,4,4} r1 {4,4,4} r2 {4,4} r3 {3,3} r5 {4,3}: P_bar = 4/5; p(4) = 9/12, p(3) = 3/12 -> P_e = 0.625
    g = agree["grade"]
    assert (g["n_items"], g["n_raters"]) == (5, 3)
    assert g["percent_agreement"] == pytest.approx(0.8) and g["fleiss_kappa"] == pytest.approx(7 / 15)
    # accept: yyy, nny, nn, yy, yy: P_bar = 13/15; p(yes) = 8/12 -> P_e = 5/9; kappa = 0.7
    a = agree["accept"]
    assert a["percent_agreement"] == pytest.approx(13 / 15) and a["fleiss_kappa"] == pytest.approx(0.7)
    manifest = json.loads((cot_round["out"] / "manifest.json").read_text())
    assert manifest["stage"] == "review-pull" and manifest["agreement"] == agree and manifest["grade_scale"]["name"] == "taosr4"
    assert manifest["teacher"] == "teacher-model" and manifest["student_prompt"] == {"order": "label_first", "rules": True}


def test_cot_round_other_policies(argilla_stack, demo, cot_round, tmp_path):
    ids = cot_round["ids"]
    _pull(argilla_stack, demo, "cot", cot_round["name"], tmp_path / "unanimous", policy="unanimous")
    status = pl.read_parquet(tmp_path / "unanimous" / "sft.parquet")
    assert status.height == 6  # only r3 (both said grade 3) is dropped; r1 (no, no, yes) is now a conflict
    assert status[C.REVIEW_STATUS].to_list() == ["accepted", "conflict", "corrected", "pending", "conflict", "pending"]
    _pull(argilla_stack, demo, "cot", cot_round["name"], tmp_path / "carol", policy="trust", trusted_reviewer="carol")
    carol = pl.read_parquet(tmp_path / "carol" / "sft.parquet")
    assert carol[C.REVIEW_STATUS].to_list() == ["accepted", "accepted", "corrected", "pending", "conflict", "pending"]
    assert carol[C.REVIEWERS].to_list()[:2] == [["carol"], ["carol"]]
    _pull(argilla_stack, demo, "cot", cot_round["name"], tmp_path / "min1", min_submitted=1)
    min1 = pl.read_parquet(tmp_path / "min1" / "sft.parquet")  # r4's single answer now decides it
    assert min1[C.REVIEW_STATUS].to_list() == ["accepted", "corrected", "accepted", "conflict", "pending"]
    assert min1.row(2, named=True)[C.PAIR_ID] == ids[4].rsplit("-", 1)[0]


def test_interrupted_pull_leaves_nothing_and_the_rerun_gives_the_same_result(argilla_stack, demo, cot_round, monkeypatch, tmp_path):
    out = tmp_path / "merged"
    real = pull_module.iter_records

    def half_then_interrupt(ds):
        for i, rec in enumerate(real(ds)):
            if i == 3:
                raise KeyboardInterrupt  # Ctrl-C halfway through the records
            yield rec

    monkeypatch.setattr(pull_module, "iter_records", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        _pull(argilla_stack, demo, "cot", cot_round["name"], out)
    assert not out.exists() and not list(tmp_path.glob(".merged.*"))
    (tmp_path / ".merged.tmp-99999999").mkdir()  # what a killed pull (no cleanup) leaves behind
    monkeypatch.setattr(pull_module, "iter_records", real)
    _pull(argilla_stack, demo, "cot", cot_round["name"], out)
    assert not list(tmp_path.glob(".merged.*"))
    ref = cot_round["out"]
    for name in ("sft.parquet", "review/dropped.parquet", "review/changes.parquet", "review/responses.parquet"):
        assert pl.read_parquet(out / name).equals(pl.read_parquet(ref / name)), name
    assert (out / "review" / "agreement.json").read_text() == (ref / "review" / "agreement.json").read_text()


def test_prefs_round_two_annotators_through_the_cli(argilla_stack, annotators, demo, record_uuids, unique, cli, monkeypatch, tmp_path):
    name = unique("prefs-round")
    monkeypatch.setenv("ARGILLA_API_URL", argilla_stack.url)
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_stack.key)
    res = cli("review", "push", demo["prefs"], "--kind", "prefs", "--dataset", name, "--min-submitted", "2", "--pairs", demo["pairs_dir"])
    assert res.exit_code == 0 and f"6 records to review/{name}" in res.output
    a, b = annotators["alice"], annotators["bob"]
    for who in (a, b):
        who.join("review")
    df = pl.read_parquet(demo["prefs"] / "preferences.parquet")
    uuids = record_uuids(name)
    r = [uuids[i] for i in sorted(uuids, key=lambda i: df[C.PAIR_ID].to_list().index(i.split("-")[0]))]
    g = [str(x) for x in df[C.GRADE]]
    a.answer(r[0], grade=g[0], accept="yes")
    b.answer(r[0], grade=g[0], accept="yes")
    a.answer(r[1], grade=g[1], accept="no")
    b.answer(r[1], grade=g[1], accept="no")
    a.answer(r[2], grade=g[2], accept="yes", correction=f"{g[2]}\nReason: the reviewer's better answer.")
    b.answer(r[2], grade=g[2], accept="yes")
    a.answer(r[3], grade=g[3], accept="yes")
    b.answer(r[3], grade=g[3], accept="no")
    res = cli("review", "pull", demo["prefs"], "--kind", "prefs", "--dataset", name, "-o", tmp_path / "dpo")
    assert res.exit_code == 0, res.output
    assert "review pull: 6 rows" in res.output and "kept 5, dropped 1" in res.output
    merged = pl.read_parquet(tmp_path / "dpo" / "preferences.parquet")
    assert merged[C.REVIEW_STATUS].to_list() == ["accepted", "corrected", "conflict", "pending", "pending"]
    assert merged[C.PAIR_ID].to_list() == df[C.PAIR_ID].to_list()[:1] + df[C.PAIR_ID].to_list()[2:]
    fixed = merged.row(1, named=True)
    assert fixed[C.CHOSEN][0]["content"] == f"{g[2]}\nReason: the reviewer's better answer." and fixed[C.CHOSEN_SOURCE] == "reviewer"
    assert merged.row(0, named=True)[C.CHOSEN] == df.row(0, named=True)[C.CHOSEN]
    agree = json.loads((tmp_path / "dpo" / "review" / "agreement.json").read_text())
    # accept: alice y n y y, bob y n y n -> p_o = 3/4, p_e = (3*2 + 1*2)/16 = 1/2 -> kappa 0.5
    assert agree["accept"]["percent_agreement"] == pytest.approx(0.75) and agree["accept"]["cohen_kappa"] == pytest.approx(0.5)
    assert agree["grade"]["percent_agreement"] == 1.0 and agree["grade"]["n_raters"] == 2


def test_hard_and_errors_rounds_override_gold(argilla_stack, annotators, demo, record_uuids, unique, tmp_path):
    alice = annotators["alice"]
    alice.join("review")
    hard, errors = unique("hard"), unique("errors")
    _push(argilla_stack, demo, "hard", hard)
    _push(argilla_stack, demo, "errors", errors)
    pairs = demo["pairs"]
    pid = pairs[C.PAIR_ID].to_list()
    alice.answer(record_uuids(hard)[pid[2]], grade="3", accept="yes")  # gold 2 -> 3
    alice.answer(record_uuids(hard)[pid[3]], grade="1", accept="no")
    _pull(argilla_stack, demo, "hard", hard, tmp_path / "hard")
    h = pl.read_parquet(tmp_path / "hard" / "difficulty.parquet")
    row = h.filter(pl.col(C.PAIR_ID) == pid[2]).row(0, named=True)
    assert row[C.GRADE] == 3 and row[C.PASS_RATE] is None and row[C.REVIEW_STATUS] == "corrected"
    assert pid[3] not in h[C.PAIR_ID].to_list() and h.height == 5
    pred = pl.read_parquet(demo["errors"] / "predictions.parquet")[C.PRED_GRADE].to_list()
    alice.answer(record_uuids(errors)[pid[0]], grade=str(pred[0]), accept="yes")  # the model was right
    _pull(argilla_stack, demo, "errors", errors, tmp_path / "errors")
    e = pl.read_parquet(tmp_path / "errors" / "predictions.parquet")
    first = e.row(0, named=True)
    assert (first[C.GRADE], first[C.CORRECT], first[C.REVIEW_STATUS]) == (pred[0], True, "corrected")
    assert e[C.REVIEW_STATUS].to_list()[-1] == "not_reviewed"  # the correct prediction was never pushed
    assert e.height == 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down_is_one_line_and_writes_nothing(cli, demo, tmp_path):
    url = f"http://127.0.0.1:{_free_port()}"
    for args in (["pull", demo["cot"], "--kind", "cot", "-o", tmp_path / "out"], ["push", demo["cot"], "--kind", "cot"]):
        res = cli("review", *args, "--api-url", url, "--api-key", "x")
        assert res.exit_code == 2
        assert res.stderr.count("\n") == 1 and res.stderr.startswith(f"error: cannot reach the Argilla server at {url}")
    assert not (tmp_path / "out").exists() and not list(tmp_path.iterdir())


def test_wrong_api_key_is_one_line_and_writes_nothing(argilla_stack, cli, demo, monkeypatch, tmp_path):
    res = cli("review", "pull", demo["cot"], "--kind", "cot", "-o", tmp_path / "out", "--api-url", argilla_stack.url, "--api-key", "wrong.key")
    assert res.exit_code == 2
    assert res.stderr.count("\n") == 1 and "rejected the API key (HTTP 401)" in res.stderr
    assert not list(tmp_path.iterdir())
    monkeypatch.delenv("ARGILLA_API_KEY", raising=False)
    res = cli("review", "pull", demo["cot"], "--kind", "cot", "-o", tmp_path / "out", "--api-url", argilla_stack.url)
    assert res.exit_code == 2 and res.stderr.startswith("error: no Argilla API key")
