"""`toolkit make-prefs`: every TaoSR1 pairing rule and option, on tiny rollouts folders made here.

Run: .venv/bin/python -m pytest tests/test_preferences.py -q
"""

from __future__ import annotations

import json

import polars as pl
import pytest
from rollouts_data import prompt_messages, write_rollouts

from toolkit.core import columns as C
from toolkit.core.errors import UserError
from toolkit.generation.base import Generation
from toolkit.core.grades import get_scale
from toolkit.preferences import PREFS_FILE, TEACHER_FILE, MakePrefsConfig, make_preferences
from toolkit.teacher import teacher_from_backend


def gold_teacher(rows):
    """A teacher that writes a label-first answer for the gold grade."""
    return [f"{r[C.GRADE]}\nReason: the teacher explains why {r[C.PAIR_ID]} is grade {r[C.GRADE]}." for r in rows]


def run(tmp_path, groups, no_rollouts=None, teacher=None, **opts):
    folder = write_rollouts(tmp_path / "rollouts", groups, no_rollouts)
    result = make_preferences(MakePrefsConfig(rollouts=folder, out=tmp_path / "prefs", force=True, **opts), teacher=teacher)
    df = pl.read_parquet(tmp_path / "prefs" / PREFS_FILE)
    picked = [(p, s, c, r) for p, s, c, r in df.select(C.PAIR_ID, C.CHOSEN_SOURCE, C.CHOSEN_SAMPLE_IDX, C.REJECTED_SAMPLE_IDX).iter_rows()]
    return result.counts, picked, df


# (name, groups, options, teacher, expected (pair_id, source, chosen idx, rejected idx), expected counts)
RULES = [
    ("mixed: rejected is the farthest grade", {"a": (4, [4, 3, 1, 2])}, {}, None, [("a", "self", 0, 2)], {"groups_self": 1}),
    ("k=2 walks the wrong samples far to near", {"a": (4, [4, 3, 1, 2])}, {"pairs_per_prompt": 2}, None,
     [("a", "self", 0, 2), ("a", "self", 0, 3)], {"pairs": 2}),
    ("k larger than the group: max(#chosen, #rejected) pairs", {"a": (4, [4, 4, 1])}, {"pairs_per_prompt": 5}, None,
     [("a", "self", 0, 2), ("a", "self", 1, 2)], {"pairs": 2}),
    ("tie in distance: lowest sample index", {"a": (3, [3, 4, 2])}, {}, None, [("a", "self", 0, 1)], {}),
    ("tie, k=2: both, in sample order", {"a": (3, [3, 2, 4])}, {"pairs_per_prompt": 2}, None, [("a", "self", 0, 1), ("a", "self", 0, 2)], {}),
    ("fallback: a parseable wrong sample goes first", {"a": (4, [4, None, 3])}, {}, None, [("a", "self", 0, 2)], {}),
    ("fallback, k=2: unparseable fills up after the parseable", {"a": (4, [4, None, 3])}, {"pairs_per_prompt": 2}, None,
     [("a", "self", 0, 2), ("a", "self", 0, 1)], {}),
    ("fallback: unparseable when it is the only wrong", {"a": (4, [4, None])}, {}, None, [("a", "self", 0, 1)], {}),
    ("always: unparseable counts as farthest", {"a": (4, [4, 1, None])}, {"unparseable": "always"}, None, [("a", "self", 0, 2)], {}),
    ("never: no rejectable sample drops the group", {"a": (4, [4, None])}, {"unparseable": "never"}, None, [], {"dropped_no_rejectable": 1}),
    ("never: parseable wrong still used", {"a": (4, [None, 4, 2])}, {"unparseable": "never"}, None, [("a", "self", 1, 2)], {}),
    ("all correct: no pair", {"a": (2, [2, 2, 2])}, {}, None, [], {"dropped_all_correct": 1}),
    ("all wrong without teacher: dropped", {"a": (2, [1, 3])}, {}, None, [], {"dropped_all_wrong_no_teacher": 1}),
    ("all wrong with teacher", {"a": (2, [3, 4, 1])}, {}, gold_teacher, [("a", "teacher", None, 1)], {"groups_teacher": 1}),
    ("all wrong, k=2: the teacher answer is reused", {"a": (2, [3, 4, 1])}, {"pairs_per_prompt": 2}, gold_teacher,
     [("a", "teacher", None, 1), ("a", "teacher", None, 0)], {"pairs_teacher": 2}),
    ("all wrong and unparseable, fallback: teacher vs unparseable", {"a": (1, [None, None])}, {}, gold_teacher, [("a", "teacher", None, 0)], {}),
    ("all wrong and unparseable, never: dropped before asking", {"a": (1, [None])}, {"unparseable": "never"}, gold_teacher, [],
     {"dropped_no_rejectable": 1, "groups_teacher": 0}),
    ("N=1 correct: all correct", {"a": (4, [4])}, {}, gold_teacher, [], {"dropped_all_correct": 1}),
    ("N=1 wrong: teacher pair", {"a": (4, [2])}, {}, gold_teacher, [("a", "teacher", None, 0)], {}),
    ("N=1 wrong, no teacher", {"a": (4, [2])}, {}, None, [], {"dropped_all_wrong_no_teacher": 1}),
    ("dedupe: identical texts count once", {"a": (4, [(4, "4\nReason: same"), (4, "4\nReason: same"), (1, "1\nReason: no"), (1, "1\nReason: no")])},
     {"pairs_per_prompt": 2}, None, [("a", "self", 0, 2)], {"duplicate_samples": 2}),
    ("no dedupe: duplicates make repeated pairs", {"a": (4, [(4, "4\nReason: same"), (4, "4\nReason: same"), (1, "1\nReason: no"), (1, "1\nReason: no")])},
     {"pairs_per_prompt": 2, "dedupe": False}, None, [("a", "self", 0, 2), ("a", "self", 1, 3)], {"duplicate_samples": 0}),
]


@pytest.mark.parametrize("name,groups,opts,teacher,expected,counts", RULES, ids=[r[0] for r in RULES])
def test_pairing_rules(tmp_path, name, groups, opts, teacher, expected, counts):
    got_counts, picked, _ = run(tmp_path, groups, teacher=teacher, **opts)
    assert picked == expected
    assert {k: got_counts[k] for k in counts} == counts


def test_a_pair_with_no_rollouts_and_rollouts_with_no_prompt_are_counted(tmp_path):
    folder = write_rollouts(tmp_path / "r", {"a": (4, [4, 1]), "b": (3, [3, 3])}, no_rollouts={"z": 2})
    ro = pl.read_parquet(folder / "rollouts.parquet")
    extra = ro.filter(pl.col(C.PAIR_ID) == "a").with_columns(pl.lit("orphan").alias(C.PAIR_ID))
    pl.concat([ro, extra]).write_parquet(folder / "rollouts.parquet")
    counts = make_preferences(MakePrefsConfig(rollouts=folder, out=tmp_path / "p")).counts
    assert counts["dropped_no_rollouts"] == 1 and counts["dropped_no_prompt"] == 1
    assert counts["pairs"] == 1


def test_every_prompt_lands_in_exactly_one_outcome(tmp_path):
    groups = {
        "mixed": (4, [4, 1]), "correct": (3, [3, 3]), "wrong": (2, [1, 1]), "bad_teacher": (1, [3]),
        "unparseable": (4, [4, None]), "n1": (2, [2]),
    }

    def teacher(rows):
        return ["" if r[C.PAIR_ID] == "bad_teacher" else gold_teacher([r])[0] for r in rows]

    counts, _, _ = run(tmp_path, groups, no_rollouts={"none": 4}, teacher=teacher, unparseable="never")
    outcomes = ["dropped_no_rollouts", "dropped_all_correct", "dropped_no_rejectable", "dropped_all_wrong_no_teacher",
                "dropped_teacher_invalid", "groups_self", "groups_teacher"]
    assert sum(counts[k] for k in outcomes) == counts["prompts"] == 7
    assert counts["dropped_teacher_invalid"] == 1 and counts["groups_teacher"] == 1 and counts["dropped_no_rejectable"] == 1


@pytest.mark.parametrize("answer,valid", [
    ("2\nReason: fine", True),
    ("3\nReason: a different grade than gold", False),
    ("", False),
    ("I think it is related", False),
])
def test_teacher_answers_must_parse_to_the_gold_grade(tmp_path, answer, valid):
    counts, picked, _ = run(tmp_path, {"a": (2, [1])}, teacher=lambda rows: [answer for _ in rows])
    assert counts["groups_teacher"] == int(valid) and counts["dropped_teacher_invalid"] == int(not valid)
    assert len(picked) == int(valid)


def test_output_is_trl_conversational_with_provenance(tmp_path):
    _, _, df = run(tmp_path, {"a": (4, [4, 2, 1, 4]), "b": (3, [1])}, teacher=gold_teacher)
    for col in (C.PROMPT, C.CHOSEN, C.REJECTED, C.PAIR_ID, C.CHOSEN_SOURCE, C.CHOSEN_GRADE, C.REJECTED_GRADE, C.PASS_RATE):
        assert col in df.columns
    a, b = df.row(0, named=True), df.row(1, named=True)
    assert a[C.PROMPT] == prompt_messages("a")
    assert a[C.CHOSEN] == [{"role": "assistant", "content": "4\nReason: sample 0 says 4."}]
    assert a[C.REJECTED] == [{"role": "assistant", "content": "1\nReason: sample 2 says 1."}]
    assert (a[C.CHOSEN_GRADE], a[C.REJECTED_GRADE], a[C.PASS_RATE], a[C.CHOSEN_SOURCE]) == (4, 1, 0.5, "self")
    assert b[C.CHOSEN][0]["content"].startswith("3\nReason: the teacher")
    assert (b[C.CHOSEN_SOURCE], b[C.CHOSEN_GRADE], b[C.REJECTED_GRADE], b[C.PASS_RATE]) == ("teacher", 3, 1, 0.0)
    assert b[C.CHOSEN_SAMPLE_IDX] is None and b[C.REJECTED_PARSE_STATUS] == "ok"


def test_teacher_gets_prompt_rows_of_all_wrong_groups_in_batches(tmp_path):
    calls = []

    def teacher(rows):
        calls.append(rows)
        return gold_teacher(rows)

    groups = {f"w{i}": (2, [1, 3]) for i in range(5)} | {"m": (4, [4, 1]), "c": (1, [1])}
    counts, _, _ = run(tmp_path, groups, teacher=teacher, teacher_batch_size=2)
    assert [len(b) for b in calls] == [2, 2, 1]
    row = calls[0][0]
    assert {C.PAIR_ID, C.PROMPT, C.GRADE, C.QUERY, C.TITLE} <= set(row) and row[C.PAIR_ID] == "w0"
    assert counts["groups_teacher"] == 5 and counts["pairs_teacher"] == 5


def test_teacher_answers_are_stored_and_reused_for_the_same_teacher(tmp_path):
    folder = write_rollouts(tmp_path / "r", {"a": (2, [1, 3]), "b": (4, [4, 1])})
    calls = []

    def teacher(rows):
        calls.append(len(rows))
        return gold_teacher(rows)

    make_preferences(MakePrefsConfig(rollouts=folder, out=tmp_path / "p", teacher_id="t1"), teacher)
    assert pl.read_parquet(tmp_path / "p" / TEACHER_FILE)[C.PAIR_ID].to_list() == ["a"]
    make_preferences(MakePrefsConfig(rollouts=folder, out=tmp_path / "p", teacher_id="t1", pairs_per_prompt=2), teacher)
    assert calls == [1]  # the second run (new config) reused the stored answer
    make_preferences(MakePrefsConfig(rollouts=folder, out=tmp_path / "p", teacher_id="t2", pairs_per_prompt=2), teacher)
    assert calls == [1, 1]  # another teacher is asked again


def test_answers_of_a_failed_teacher_run_are_kept_and_reused(tmp_path):
    folder = write_rollouts(tmp_path / "r", {f"w{i}": (2, [1]) for i in range(4)})
    cfg = dict(rollouts=folder, out=tmp_path / "p", teacher_id="t", teacher_batch_size=2)
    with pytest.raises(ConnectionError):
        make_preferences(MakePrefsConfig(**cfg), _fails_after(2, gold_teacher))
    assert not (tmp_path / "p").exists() and (tmp_path / f".p.{TEACHER_FILE}.partial").exists()
    second = _Counting()
    counts = make_preferences(MakePrefsConfig(**cfg), second).counts
    assert second.ids == ["w2", "w3"] and counts["groups_teacher"] == 4
    assert not (tmp_path / f".p.{TEACHER_FILE}.partial").exists()


def _fails_after(n: int, teacher):
    """`teacher`, until more than `n` rows have been asked of it; then its server goes away."""
    asked = []

    def flaky(rows):
        asked.extend(rows)
        if len(asked) > n:
            raise ConnectionError("teacher server went away")
        return teacher(rows)

    return flaky


class _Counting:
    def __init__(self):
        self.ids = []

    def __call__(self, rows):
        self.ids.extend(r[C.PAIR_ID] for r in rows)
        return gold_teacher(rows)


def test_rerun_is_skipped_when_nothing_changed(tmp_path):
    folder = write_rollouts(tmp_path / "r", {"a": (4, [4, 1])})
    cfg = MakePrefsConfig(rollouts=folder, out=tmp_path / "p")
    assert not make_preferences(cfg).skipped
    again = make_preferences(cfg)
    assert again.skipped and again.counts["pairs"] == 1 and "up to date" in again.summary()
    assert not make_preferences(MakePrefsConfig(rollouts=folder, out=tmp_path / "p", pairs_per_prompt=2)).skipped


def _random_groups(n=60):
    return {f"p{i:02d}": (4, [4, 4, 3, 2, 1, 1, None]) for i in range(n)}


def test_random_reject_is_seeded_and_respects_fallback(tmp_path):
    def picks(seed):
        _, picked, _ = run(tmp_path, _random_groups(), reject="random", seed=seed, pairs_per_prompt=2)
        return picked

    a, b, c = picks(0), picks(0), picks(1)
    assert a == b and a != c
    assert all(r in (2, 3, 4, 5) and ch in (0, 1) for _, _, ch, r in a)  # wrong parseable samples only (fallback)
    assert len({(ch, r) for _, _, ch, r in a}) > 2  # not always the same choice


def test_random_reject_with_always_can_pick_unparseable(tmp_path):
    _, picked, _ = run(tmp_path, _random_groups(), reject="random", unparseable="always")
    assert 6 in {r for *_, r in picked}


@pytest.mark.parametrize("field,value,needle", [
    ("pairs_per_prompt", 0, "pairs_per_prompt must be >= 1"),
    ("reject", "closest", "reject must be one of farthest, nearest, random"),
    ("unparseable", "sometimes", "unparseable must be one of fallback, never, always"),
    ("teacher_batch_size", 0, "teacher_batch_size must be >= 1"),
])
def test_config_names_the_bad_field(tmp_path, field, value, needle):
    with pytest.raises(UserError, match=needle):
        MakePrefsConfig(rollouts=tmp_path, out=tmp_path / "o", **{field: value})


def test_bad_rollouts_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        make_preferences(MakePrefsConfig(rollouts=tmp_path / "missing", out=tmp_path / "o"))
    folder = write_rollouts(tmp_path / "r", {"a": (4, [4, 1])})
    pl.read_parquet(folder / "rollouts.parquet").drop(C.CORRECT).write_parquet(folder / "rollouts.parquet")
    with pytest.raises(UserError, match="column\\(s\\) correct missing"):
        make_preferences(MakePrefsConfig(rollouts=folder, out=tmp_path / "o"))


def test_inconsistent_rollouts_folders_are_user_errors(tmp_path):
    folder = write_rollouts(tmp_path / "r", {"a": (4, [4, 1])})
    prompts = pl.read_parquet(folder / "prompts.parquet")
    pl.concat([prompts, prompts]).write_parquet(folder / "prompts.parquet")
    with pytest.raises(UserError, match="pair id 'a' has 2 rows in prompts.parquet"):
        make_preferences(MakePrefsConfig(rollouts=folder, out=tmp_path / "o"))
    prompts.with_columns(pl.lit(3, dtype=pl.Int64).alias(C.GRADE)).write_parquet(folder / "prompts.parquet")
    with pytest.raises(UserError, match="gold grade 4 in rollouts.parquet but 3 in prompts.parquet"):
        make_preferences(MakePrefsConfig(rollouts=folder, out=tmp_path / "o"))


class FakeBackend:
    name, model_id = "fake", "fake"

    def __init__(self, texts, finish=None):
        self.texts, self.prompts = list(texts), []
        self.finish = list(finish or ["stop"] * len(self.texts))

    def generate(self, prompts, sampling, grade_labels=None):
        self.prompts.extend(prompts)
        texts, self.texts = self.texts[: len(prompts)], self.texts[len(prompts):]
        finish, self.finish = self.finish[: len(prompts)], self.finish[len(prompts):]
        return [Generation(texts=[t], finish_reasons=[f]) for t, f in zip(texts, finish)]

    def close(self):
        pass


def test_teacher_from_backend_rewrites_cot_first_answers_label_first():
    backend = FakeBackend(["1. Query: shoes.\n5. Decision: Mismatch.\nGrade: 2", "no grade at all"])
    teacher = teacher_from_backend(backend, get_scale("taosr4"))
    rows = [{C.PAIR_ID: "a", C.GRADE: 2, C.QUERY: "q", C.TITLE: "t"}, {C.PAIR_ID: "b", C.GRADE: 4, C.QUERY: "q", C.TITLE: "t"}]
    out = teacher(rows)
    assert out[0].startswith("2\nReason: 1. Query: shoes.") and "Decision: Mismatch." in out[0]
    assert out[1] == ""
    assert "The correct grade for this pair is 2" in backend.prompts[0][-1]["content"]


class StepBackend:
    """A guided teacher: fills each step header with a short clause, the grade step with `grade`; the step
    numbered `cut` (if any) is cut at its token budget."""
    name, model_id = "step", "step"

    def __init__(self, grade="2", cut=None):
        self.grade, self.cut, self.calls = grade, cut, []

    def generate(self, prompts, sampling, grade_labels=None):
        self.calls.append((prompts, sampling))
        out = []
        for p in prompts:
            turn = p[-1]["content"]
            if turn.endswith("Grade:"):
                out.append(Generation(texts=[f" {self.grade}\nmore text"], finish_reasons=["stop"]))
            else:
                cut = self.cut is not None and turn.rsplit("\n", 1)[-1].startswith(f"{self.cut}.")
                out.append(Generation(texts=[" a clause" if not cut else " a clause that goes on and"],
                                      finish_reasons=["length" if cut else "stop"]))
        return out

    def close(self):
        pass


@pytest.mark.parametrize("written", ["2", "Mismatch", "mismatch."])  # a grade written by name is its label
def test_guided_teacher_fills_the_five_steps_and_answers_for_the_gold_grade(written):
    backend = StepBackend(written)
    rows = [{C.PAIR_ID: "a", C.GRADE: 2, C.QUERY: "red shoes", C.TITLE: "blue hat"}]
    out = teacher_from_backend(backend, get_scale("taosr4"), mode="guided", step_tokens=7)(rows)
    assert out[0].startswith('2\nReason: 1. Query understanding: The shopper searching for "red shoes" wants a clause')
    assert "5. Decision: a clause" in out[0] and "more text" not in out[0]
    prompts, sampling = backend.calls[0]
    assert len(backend.calls) == 6 and sampling.max_tokens == 7 and sampling.stop == ["\n"]
    assert "Explain why in five short steps" in prompts[0][-2]["content"]  # the guided teacher template
    assert prompts[0][-1]["role"] == "assistant" and prompts[0][-1]["content"].startswith("1. Query understanding")


@pytest.mark.parametrize("grade,cut,status", [("3", None, "wrong_grade"), ("2", 4, "truncated_step"),
                                              ("Excellent", 2, "truncated_step"), ("banana", None, "invalid_label"),
                                              ("Excellent", None, "wrong_grade")])  # by name: grade 4, not gold 2
def test_guided_teacher_answers_that_cannot_be_used_are_dropped_with_their_cause(tmp_path, grade, cut, status):
    folder = write_rollouts(tmp_path / "r", {"a": (2, [1])})
    teacher = teacher_from_backend(StepBackend(grade, cut), get_scale("taosr4"), mode="guided")
    result = make_preferences(MakePrefsConfig(rollouts=folder, out=tmp_path / "p", teacher_id="t"), teacher)
    assert result.counts["teacher_status"] == {status: 1} and result.counts["pairs"] == 0
    df = pl.read_parquet(tmp_path / "p" / TEACHER_FILE)
    assert df["status"][0] == status and (df["raw"][0] is None) == (status == "wrong_grade")
    if status == "truncated_step":
        assert "raise --teacher-step-tokens" in result.headline() and "goes on and" in df["raw"][0]
        assert "--teacher-max-tokens" not in result.headline()


def test_balance_keeps_equal_pairs_per_gold_grade_with_all_rows_of_a_pair(tmp_path, caplog):
    groups = {"a": (4, [4, 1, 2]), "b": (4, [4, 2]), "c": (4, [4, 1]), "d": (2, [2, 4]), "e": (2, [2, 1]), "f": (1, [1, 3])}
    unbalanced = run(tmp_path / "u", groups, pairs_per_prompt=2)[2]
    counts, _, df = run(tmp_path, groups, pairs_per_prompt=2, balance=True, seed=3)
    per_pair = dict(df.group_by(C.PAIR_ID).len().iter_rows())
    grades = dict(df.select(C.PAIR_ID, C.CHOSEN_GRADE).unique().iter_rows())
    assert sorted(grades.values()) == [1, 2, 4]  # one query-item pair per grade present; grade 3 has none
    assert all(per_pair[p] == unbalanced.filter(pl.col(C.PAIR_ID) == p).height for p in per_pair)  # rows stay together
    assert counts["pairs"] == df.height and counts["dropped_balance"] == unbalanced.height - df.height > 0
    assert counts["dropped_identical_texts"] == 0  # balancing is not counted as something else
    assert counts["balanced_pairs_per_grade"] == {"4": 1, "3": 0, "2": 1, "1": 1}
    assert "grade(s) [3] have no preference pair" in caplog.text
    assert df[C.PAIR_ID].to_list() == sorted(df[C.PAIR_ID].to_list())  # the unbalanced file's order
    again = run(tmp_path / "again", groups, pairs_per_prompt=2, balance=True, seed=3)[2]
    assert again.equals(df)  # seeded


def test_dropped_teacher_answers_keep_their_raw_text_and_say_why(tmp_path):
    cut = "1. Query: running shoes for a marathon.\n2. Item: a pair of"
    answers = ["1. Query: q.\nGrade: 2", cut, "1. Query: q.\n5. Decision: a perfect match.\nGrade: 4"]
    backend = FakeBackend(answers, finish=["stop", "length", "stop"])
    folder = write_rollouts(tmp_path / "r", {"a": (2, [1]), "b": (4, [1]), "c": (3, [1])})
    cfg = dict(rollouts=folder, out=tmp_path / "p", teacher_id="t")
    result = make_preferences(MakePrefsConfig(**cfg), teacher_from_backend(backend, get_scale("taosr4")))
    df = pl.read_parquet(tmp_path / "p" / TEACHER_FILE).sort(C.PAIR_ID)
    assert df["status"].to_list() == ["ok", "truncated", "wrong_grade"]
    assert df["valid"].to_list() == [True, False, False] and df[C.TEXT][1] == ""
    assert df["raw"].to_list() == [None, cut, None] and df[C.TEXT][2].startswith("4\nReason:")
    assert result.counts["teacher_status"] == {"ok": 1, "truncated": 1, "wrong_grade": 1}
    assert result.counts["dropped_teacher_invalid"] == 2
    assert "2 teacher answers dropped (1 truncated, 1 wrong_grade; raise --teacher-max-tokens" in result.headline()
    # a rerun with the same teacher reuses all three answers, the dropped ones with their raw text and status
    asked = _Counting()
    again = make_preferences(MakePrefsConfig(**cfg, pairs_per_prompt=2), asked)
    assert asked.ids == [] and again.counts["teacher_status"] == result.counts["teacher_status"]
    assert pl.read_parquet(tmp_path / "p" / TEACHER_FILE).sort(C.PAIR_ID)["raw"].to_list() == [None, cut, None]


def test_answers_kept_by_an_older_version_without_raw_and_status_are_reused(tmp_path):
    folder = write_rollouts(tmp_path / "r", {"a": (2, [1]), "b": (4, [1])})
    old = pl.DataFrame({C.PAIR_ID: ["a", "b"], C.GRADE: [2, 4], C.TEXT: [gold_teacher([{C.PAIR_ID: "a", C.GRADE: 2}])[0], ""],
                        "teacher_id": ["t", "t"]})
    old.write_parquet(tmp_path / f".p.{TEACHER_FILE}.partial")
    asked = _Counting()
    result = make_preferences(MakePrefsConfig(rollouts=folder, out=tmp_path / "p", teacher_id="t"), asked)
    assert asked.ids == [] and result.counts["teacher_status"] == {"empty": 1, "ok": 1}
    df = pl.read_parquet(tmp_path / "p" / TEACHER_FILE).sort(C.PAIR_ID)
    assert df["valid"].to_list() == [True, False] and df["raw"].to_list() == [None, None]


def test_a_failed_teacher_run_keeps_the_raw_text_of_dropped_answers(tmp_path):
    folder = write_rollouts(tmp_path / "r", {"a": (2, [1]), "b": (4, [1])})
    cut = teacher_from_backend(FakeBackend(["no grade here"], finish=["length"]), get_scale("taosr4"))
    cfg = dict(rollouts=folder, out=tmp_path / "p", teacher_id="t", teacher_batch_size=1)
    with pytest.raises(ConnectionError):
        make_preferences(MakePrefsConfig(**cfg), _fails_after(1, cut))
    second = _Counting()
    make_preferences(MakePrefsConfig(**cfg), second)
    assert second.ids == ["b"]
    df = pl.read_parquet(tmp_path / "p" / TEACHER_FILE).sort(C.PAIR_ID)
    assert df.select("status", "raw").row(0) == ("truncated", "no grade here") and df["status"][1] == "ok"


# -- the command line ------------------------------------------------------------------


def test_cli_make_prefs_end_to_end(cli, tmp_path):
    folder = write_rollouts(tmp_path / "r", {"a": (4, [4, 1, 3]), "b": (2, [1, 1]), "c": (3, [3])}, no_rollouts={"d": 1})
    r = cli("make-prefs", folder, "-o", tmp_path / "p", "--no-teacher", "-k", "2")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith("make-prefs: 4 prompts -> 2 preference pairs")
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert manifest["counts"]["dropped_all_wrong_no_teacher"] == 1 and manifest["counts"]["dropped_no_rollouts"] == 1
    assert "grade_scale" in manifest and (tmp_path / "p" / "config.yaml").exists()
    again = cli("make-prefs", folder, "-o", tmp_path / "p", "--no-teacher", "-k", "2")
    assert "up to date" in again.stdout


def test_cli_config_file_and_flags(cli, tmp_path):
    folder = write_rollouts(tmp_path / "r", {"a": (4, [4, 1, 3, 2])})
    cfg = tmp_path / "prefs.yaml"
    cfg.write_text("pairs_per_prompt: 3\nreject: random\nno_teacher: true\n")
    assert cli("make-prefs", folder, "-o", tmp_path / "p", "--config", cfg).exit_code == 0
    assert pl.read_parquet(tmp_path / "p" / PREFS_FILE).height == 3
    assert cli("make-prefs", folder, "-o", tmp_path / "p", "--config", cfg, "-k", "1").exit_code == 0
    assert pl.read_parquet(tmp_path / "p" / PREFS_FILE).height == 1


def test_cli_all_wrong_groups_need_a_teacher_choice(cli, tmp_path):
    folder = write_rollouts(tmp_path / "r", {"a": (2, [1, 3])})
    r = cli("make-prefs", folder, "-o", tmp_path / "p")
    assert r.exit_code == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "--no-teacher" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "p").exists()


def test_cli_missing_folder_is_one_line(cli, tmp_path):
    r = cli("make-prefs", tmp_path / "nope", "-o", tmp_path / "p", "--no-teacher")
    assert r.exit_code == 2 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1


def test_cli_teacher_backend_is_built_lazily_and_used(cli, tmp_path, monkeypatch):
    import toolkit.generation.base as base

    built = []

    def fake_make_backend(cfg):
        built.append(cfg)
        return StepBackend("2")

    monkeypatch.setattr(base, "make_backend", fake_make_backend)
    folder = write_rollouts(tmp_path / "r", {"a": (2, [1, 3]), "b": (4, [4, 1])})
    args = ["--teacher-backend", "openai", "--teacher-base-url", "http://127.0.0.1:9/v1", "--teacher-model", "judge"]
    r = cli("make-prefs", folder, "-o", tmp_path / "p", *args)
    assert r.exit_code == 0, r.stderr
    assert [(c.kind, c.model, c.base_url) for c in built] == [("openai", "judge", "http://127.0.0.1:9/v1")]
    df = pl.read_parquet(tmp_path / "p" / PREFS_FILE)
    assert df[C.CHOSEN_SOURCE].to_list() == ["teacher", "self"]  # the default teacher mode is guided:
    assert df[C.CHOSEN][0][0]["content"].startswith("2\nReason: 1. Query understanding: The shopper searching for")
    built.clear()
    folder2 = write_rollouts(tmp_path / "r2", {"b": (4, [4, 1])})
    assert cli("make-prefs", folder2, "-o", tmp_path / "p2", *args).exit_code == 0
    assert built == []  # no all-wrong group: no model is loaded


def test_nearest_rejects_the_wrong_grade_closest_to_gold(tmp_path):
    folder = write_rollouts(tmp_path / "r", {"a": (4, [1, 4, 3, 2]), "b": (2, [4, 2, 3, 1])})
    res = make_preferences(MakePrefsConfig(rollouts=folder, out=tmp_path / "near", reject="nearest"))
    df = pl.read_parquet(tmp_path / "near" / "preferences.parquet")
    assert dict(zip(df[C.PAIR_ID], df[C.REJECTED_GRADE])) == {"a": 3, "b": 3}  # |3-4| = 1; for b: 3 and 1 tie at 1 -> lower index
    far = make_preferences(MakePrefsConfig(rollouts=folder, out=tmp_path / "far"))
    assert dict(zip(*pl.read_parquet(tmp_path / "far" / "preferences.parquet")[[C.PAIR_ID, C.REJECTED_GRADE]])) == {"a": 1, "b": 4}
    assert res.counts["pairs"] == far.counts["pairs"] == 2


def test_a_correct_answer_cut_at_the_token_limit_is_never_chosen(tmp_path):
    folder = write_rollouts(tmp_path / "r", {"a": (4, [4, 4, 1]), "b": (3, [3, 2]), "c": (2, [(2, "2\nReason: a long and complete answer."), 1])})
    ro = pl.read_parquet(folder / "rollouts.parquet")
    cut = ((pl.col(C.PAIR_ID) == "a") & (pl.col(C.SAMPLE_IDX) == 0)) | ((pl.col(C.PAIR_ID) == "b") & (pl.col(C.SAMPLE_IDX) == 0))
    ro.with_columns(pl.when(cut).then(pl.lit("length")).otherwise(pl.col(C.FINISH_REASON)).alias(C.FINISH_REASON)).write_parquet(folder / "rollouts.parquet")
    res = make_preferences(MakePrefsConfig(rollouts=folder, out=tmp_path / "p"))
    df = pl.read_parquet(tmp_path / "p" / "preferences.parquet")
    assert dict(zip(df[C.PAIR_ID], df[C.CHOSEN_SAMPLE_IDX])) == {"a": 1, "c": 0}  # a: sample 0 was cut, 1 is whole; b: its only right answer was cut
    assert res.counts["dropped_chosen_truncated"] == 1 and res.counts["groups_self"] == 2
    lengths = res.counts["length_chars"]
    chosen = [len(m[0]["content"]) for m in df[C.CHOSEN].to_list()]
    rejected = [len(m[0]["content"]) for m in df[C.REJECTED].to_list()]
    assert lengths["chosen_mean"] == pytest.approx(sum(chosen) / 2, abs=0.05) and lengths["gap_mean"] == pytest.approx((sum(chosen) - sum(rejected)) / 2, abs=0.1)
    assert lengths["by_source"]["self"]["pairs"] == 2 and "chosen - rejected length" in res.summary()


def test_a_teacher_given_by_hub_id_is_named_at_its_commit(monkeypatch, tmp_path):
    """Teacher answers are reused for the same teacher id: a teacher pushed again to the Hub is another teacher (its
    commit is in the id); a served model's name (openai) is never looked up."""
    from toolkit.core.stagefolder import remote
    from toolkit.teacher import BackendTeacher

    head = {"me/teacher": "a" * 40}
    monkeypatch.setattr(remote, "hub_model_commit", lambda spec: head[spec])
    ids = [BackendTeacher("transformers", "me/teacher", None, 64, str(tmp_path)).id]
    head["me/teacher"] = "b" * 40
    ids.append(BackendTeacher("transformers", "me/teacher", None, 64, str(tmp_path)).id)
    assert ids[0] != ids[1] and "a" * 40 in ids[0] and "b" * 40 in ids[1]
    served = BackendTeacher("openai", "me/teacher", "http://127.0.0.1:9/v1", 64, str(tmp_path)).id
    assert served == "openai:me/teacher@http://127.0.0.1:9/v1:max_tokens=64"
    assert BackendTeacher("transformers", str(tmp_path), None, 64, str(tmp_path)).id == f"transformers:{tmp_path}@:max_tokens=64"
