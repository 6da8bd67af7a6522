"""How the student prompt was built travels between stages (toolkit.core.lineage): the answer order
and whether rules were in the prompts. A model's recorded order is the default of the stages
that use it and a contradicting --order is refused; a model trained with rules warns when it
gets prompts without any; a CoT-first model cannot be served by first-token scoring.

Run: .venv/bin/python -m pytest tests/test_lineage.py -q
"""

import json
import shutil

import pytest

from rollouts_data import write_rollouts
from toolkit.core import columns as C
from toolkit.core import lineage
from toolkit.core.errors import UserError
from toolkit.core.grades import get_scale
from toolkit.core.stagefolder import read_manifest
from toolkit.core.parsing import COT_FIRST, LABEL_FIRST


def _record(folder, **facts):
    """A stage folder / checkpoint whose manifest records `facts` as its student prompt."""
    folder.mkdir(parents=True, exist_ok=True)
    m = read_manifest(folder) or {"stage": "train-sft"}
    (folder / "manifest.json").write_text(json.dumps({**m, lineage.KEY: facts}))
    return folder


@pytest.fixture
def cot_first_model(tmp_path, tiny_model_dir):
    return _record(shutil.copytree(tiny_model_dir, tmp_path / "cot-first-model"), order=COT_FIRST, rules=True)


def test_the_recorded_order_is_the_default_and_a_contradiction_is_refused(tmp_path):
    folder = _record(tmp_path / "m", order=COT_FIRST, rules=False)
    assert lineage.resolve_order(None, folder) == COT_FIRST
    assert lineage.resolve_order(COT_FIRST, folder) == COT_FIRST
    (folder / "sft.parquet").write_bytes(b"")
    assert lineage.resolve_order(None, folder / "sft.parquet") == COT_FIRST  # a file in a stage folder
    with pytest.raises(UserError, match=r"made with cot_first answers, but --order label_first.*pass --order cot_first"):
        lineage.resolve_order(LABEL_FIRST, folder)
    # nothing recorded (hub ids, `default`, older folders): the given order, else label_first
    assert lineage.resolve_order(None, "default", "someone/model", tmp_path / "nothing") == LABEL_FIRST
    assert lineage.resolve_order(COT_FIRST, "default") == COT_FIRST
    # the first source with a record wins (the data before the starting model)
    assert lineage.resolve_order(None, tmp_path / "nothing", folder) == COT_FIRST


def test_score_and_sample_take_the_models_order(cli, repo, tmp_path, cot_first_model):
    cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "pairs")
    r = cli("score", tmp_path / "pairs", "--model", cot_first_model, "-o", tmp_path / "scores")
    assert r.exit_code == 2 and "first-token scoring needs label-first answers, and the answers here are cot_first" in r.stderr
    r = cli("sample", tmp_path / "pairs", "--model", cot_first_model, "--order", "label_first", "-o", tmp_path / "r")
    assert r.exit_code == 2 and "made with cot_first answers, but --order label_first" in r.stderr and "\n" not in r.stderr.strip()
    r = cli("sample", tmp_path / "pairs", "--model", cot_first_model, "--split", "", "--limit", "2", "-n", "1", "--max-tokens", "4",
            "--dtype", "float32", "-o", tmp_path / "rollouts")
    assert r.exit_code == 0, r.stderr
    cfg = (tmp_path / "rollouts/config.yaml").read_text()
    assert "order: cot_first" in cfg
    # the rollouts record what they were made with; make-prefs and label-difficulty pass it on
    assert read_manifest(tmp_path / "rollouts")[lineage.KEY] == {"order": COT_FIRST, "rules": False}


def test_a_model_trained_with_rules_warns_when_its_prompts_have_none(cli, repo, tmp_path, cot_first_model):
    cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "pairs")
    r = cli("score", tmp_path / "pairs", "--model", cot_first_model, "--mode", "generate", "--split", "", "--limit", "2",
            "--max-tokens", "4", "--dtype", "float32", "-o", tmp_path / "scores")
    assert r.exit_code == 0, r.stderr
    assert "was trained with retrieved rules in its prompts, but these prompts have none; pass --index" in r.stderr
    assert read_manifest(tmp_path / "scores")[lineage.KEY] == {"order": COT_FIRST, "rules": False}
    # eval parses the predictions' texts in their recorded order
    r = cli("eval", "--predictions", tmp_path / "scores", "-o", tmp_path / "eval", "--no-plots")
    assert r.exit_code == 0, r.stderr
    assert "order: cot_first" in (tmp_path / "eval/config.yaml").read_text()


def test_make_prefs_and_label_difficulty_pass_the_record_on(tmp_path):
    from toolkit.difficulty import LabelDifficultyConfig, label_difficulty
    from toolkit.preferences import MakePrefsConfig, make_preferences
    from toolkit.teacher import answer_order

    folder = write_rollouts(tmp_path / "r", {"a": (4, [4, 1, 3]), "b": (2, [1, 3]), "c": (3, [3, 2])})
    _record(folder, order=COT_FIRST, rules=True)
    make_preferences(MakePrefsConfig(rollouts=str(folder), out=str(tmp_path / "prefs")))
    label_difficulty(LabelDifficultyConfig(rollouts=str(folder), out=str(tmp_path / "diff")))
    for out in ("prefs", "diff"):
        assert read_manifest(tmp_path / out)[lineage.KEY] == {"order": COT_FIRST, "rules": True}
    assert answer_order(str(folder)) == COT_FIRST  # teacher answers are written in the rollouts' order

    from trainers.config import GRPOTrainConfig

    assert GRPOTrainConfig(data=str(tmp_path / "diff"), out=str(tmp_path / "g")).order == COT_FIRST
    with pytest.raises(UserError, match="made with cot_first answers"):
        GRPOTrainConfig(data=str(tmp_path / "diff"), out=str(tmp_path / "g"), order=LABEL_FIRST)


def test_teacher_answers_follow_the_policys_order():
    from test_preferences import FakeBackend

    from toolkit.teacher import teacher_from_backend

    backend = FakeBackend(["1. Query: shoes.\n5. Decision: Mismatch.\nGrade: 2"])
    rows = [{C.PAIR_ID: "a", C.GRADE: 2, C.QUERY: "q", C.TITLE: "t"}]
    out = teacher_from_backend(backend, get_scale("taosr4"), order=COT_FIRST)(rows)
    assert out[0].startswith("1. Query: shoes.") and out[0].rstrip().endswith("2")


def test_serving_refuses_a_cot_first_model_and_warns_without_rules(tmp_path, tiny_model_dir, caplog):
    from toolkit.serving.config import ServeConfig
    from toolkit.serving.judge import Judge

    model = _record(shutil.copytree(tiny_model_dir, tmp_path / "m"), order=COT_FIRST, rules=True)
    with pytest.raises(UserError, match="needs a label-first model"):
        Judge.open(ServeConfig(model=str(model), dtype="float32"))
    _record(model, order=LABEL_FIRST, rules=True)
    Judge.open(ServeConfig(model=str(model), dtype="float32"))
    assert "trained with retrieved rules" in caplog.text


def test_a_model_of_another_grade_scale_cannot_score_or_sample_the_pairs(cli, repo, tmp_path, tiny_model_dir):
    model = shutil.copytree(tiny_model_dir, tmp_path / "three-grade-model")
    (model / "manifest.json").write_text(json.dumps({"stage": "train-sft", "grade_scale": get_scale("three").to_dict()}))
    cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "pairs")  # taosr4
    for stage in ("score", "sample"):
        r = cli(stage, tmp_path / "pairs", "--model", model, "--split", "", "-o", tmp_path / stage)
        assert r.exit_code == 2 and "was trained on grade scale `three`" in r.stderr and "`taosr4`" in r.stderr, r.stderr
        assert not (tmp_path / stage).exists()


def test_make_prefs_teacher_sees_the_policys_rules_and_answers_in_its_order(cli, tmp_path, monkeypatch):
    import polars as pl

    import toolkit.generation.base as base
    from test_preferences import FakeBackend

    teacher = FakeBackend(["1. Query: q.\n5. Decision: Mismatch.\nGrade: 2"] * 4)
    monkeypatch.setattr(base, "make_backend", lambda cfg: teacher)
    folder = write_rollouts(tmp_path / "r", {"a": (2, [1, 3]), "b": (4, [4, 1])})
    prompts = pl.read_parquet(folder / "prompts.parquet")
    rules = [["R1: a case is not the phone"] if p == "a" else [] for p in prompts[C.PAIR_ID]]
    prompts.with_columns(pl.Series(C.RULE_TEXTS, rules, dtype=pl.List(pl.String))).write_parquet(folder / "prompts.parquet")
    _record(folder, order=COT_FIRST, rules=True)
    r = cli("make-prefs", folder, "-o", tmp_path / "p", "--teacher-backend", "openai", "--teacher-base-url", "http://127.0.0.1:9/v1",
            "--teacher-model", "judge", "--teacher-mode", "free")
    assert r.exit_code == 0, r.stderr
    assert "- R1: a case is not the phone" in teacher.prompts[0][-1]["content"]
    chosen = pl.read_parquet(tmp_path / "p/preferences.parquet").filter(pl.col(C.CHOSEN_SOURCE) == "teacher")[C.CHOSEN][0][0]["content"]
    assert chosen.startswith("1. Query: q.") and chosen.rstrip().endswith("2")


def test_a_larger_teacher_token_cap_asks_the_teacher_again(cli, tmp_path, monkeypatch):
    import polars as pl

    import toolkit.generation.base as base
    from test_preferences import FakeBackend

    cut, whole = "1. Query: q.\n2. Item: a", "1. Query: q.\n5. Decision: Mismatch.\nGrade: 2"
    backends = iter([FakeBackend([cut], finish=["length"]), FakeBackend([whole])])
    monkeypatch.setattr(base, "make_backend", lambda cfg: next(backends))
    folder = write_rollouts(tmp_path / "r", {"a": (2, [1, 3])})
    args = ["make-prefs", folder, "-o", tmp_path / "p", "--teacher-backend", "openai", "--teacher-base-url",
            "http://127.0.0.1:9/v1", "--teacher-model", "judge", "--teacher-mode", "free", "--teacher-max-tokens"]
    r = cli(*args, "64")
    assert r.exit_code == 0 and "1 teacher answers dropped (1 truncated; raise --teacher-max-tokens" in r.output, r.output
    r = cli(*args, "256")  # not the cut answer of the 64-token teacher again
    assert r.exit_code == 0 and "(0 self, 1 teacher;" in r.output, r.output
    answers = pl.read_parquet(tmp_path / "p/teacher_answers.parquet")
    assert answers["status"].to_list() == ["ok"] and answers[C.TEXT][0].startswith("2\nReason: 1. Query: q.")


def test_rule_ids_from_another_build_of_the_index_warn(cli, repo, tmp_path, tiny_model_dir, minilm):
    guide = tmp_path / "guideline.md"
    guide.write_text((repo / "demo/guideline.md").read_text())
    assert cli("build-index", guide, "-o", tmp_path / "index").exit_code == 0
    cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "pairs")
    assert cli("retrieve", tmp_path / "pairs", "-i", tmp_path / "index", "-o", tmp_path / "retrieved").exit_code == 0
    args = ["score", tmp_path / "retrieved", "--model", tiny_model_dir, "--index", tmp_path / "index", "--split", "", "--limit", "2",
            "--dtype", "float32"]
    r = cli(*args, "-o", tmp_path / "s1")
    assert r.exit_code == 0 and "another build of the index" not in r.stderr
    moved = tmp_path / "checkout2/guideline.md"  # the same rules from another folder: the same ids, no warning
    moved.parent.mkdir()
    moved.write_text(guide.read_text())
    assert cli("build-index", moved, "-o", tmp_path / "index").exit_code == 0
    r = cli(*args, "-o", tmp_path / "s1b")
    assert r.exit_code == 0 and "another build of the index" not in r.stderr, r.stderr
    guide.write_text(guide.read_text() + "\n- [R99] A bundle that contains the queried product is Related.\n")  # the rules change
    assert cli("build-index", guide, "-o", tmp_path / "index").exit_code == 0
    r = cli(*args, "-o", tmp_path / "s2")
    assert r.exit_code == 0 and "the rule ids were retrieved from another build of the index" in r.stderr, r.stderr


def test_serving_warns_when_the_tier_rule_was_fitted_on_another_models_scores(tmp_path, tiny_model_dir, caplog):
    import polars as pl

    from toolkit.serving.config import ServeConfig
    from toolkit.serving.judge import Judge

    preds = tmp_path / "scores"
    preds.mkdir()
    pl.DataFrame({C.PAIR_ID: list("abcd"), C.GRADE: [4, 3, 2, 1],
                  C.GRADE_PROBS: [[0.7, 0.1, 0.1, 0.1], [0.2, 0.6, 0.1, 0.1], [0.1, 0.2, 0.6, 0.1], [0.1, 0.1, 0.2, 0.6]]}
                 ).write_parquet(preds / "predictions.parquet")
    (preds / "manifest.json").write_text(json.dumps({"stage": "score", "model": str(tmp_path / "other-model"),
                                                     "grade_scale": get_scale().to_dict()}))
    from toolkit.tiering import TierFitConfig, fit_tiers

    fit_tiers(TierFitConfig(predictions=str(preds), out=str(tmp_path / "tiers"), plots=False))
    assert json.loads((tmp_path / "tiers/tiers.json").read_text())["dev"]["model"] == str(tmp_path / "other-model")
    Judge.open(ServeConfig(model=str(tiny_model_dir), dtype="float32", tiers=str(tmp_path / "tiers")))
    assert "β was fitted on the probabilities of" in caplog.text
    # fitted on the served model's own scores: no warning
    (preds / "manifest.json").write_text(json.dumps({"stage": "score", "model": str(tiny_model_dir), "grade_scale": get_scale().to_dict()}))
    fit_tiers(TierFitConfig(predictions=str(preds), out=str(tmp_path / "tiers2"), plots=False))
    caplog.clear()
    Judge.open(ServeConfig(model=str(tiny_model_dir), dtype="float32", tiers=str(tmp_path / "tiers2")))
    assert "β was fitted" not in caplog.text


def test_tier_apply_refuses_predictions_on_another_scale_with_as_many_grades(cli, tmp_path):
    import polars as pl

    letters = {"name": "letters", "grades": [{"value": v, "name": n, "label": lab} for v, n, lab in
                                             ((4, "Exact", "A"), (3, "Close", "B"), (2, "Off", "C"), (1, "Wrong", "D"))]}

    def folder(name, scale):
        f = tmp_path / name
        f.mkdir()
        pl.DataFrame({C.PAIR_ID: list("abcd"), C.GRADE: [4, 3, 2, 1],
                      C.GRADE_PROBS: [[0.7, 0.1, 0.1, 0.1], [0.2, 0.6, 0.1, 0.1], [0.1, 0.2, 0.6, 0.1], [0.1, 0.1, 0.2, 0.6]]}
                     ).write_parquet(f / "predictions.parquet")
        (f / "manifest.json").write_text(json.dumps({"stage": "score", "grade_scale": scale}))
        return f

    assert cli("tier", "fit", "--predictions", folder("letters", letters), "-o", tmp_path / "tiers", "--no-plots").exit_code == 0
    r = cli("tier", "apply", "--predictions", folder("digits", get_scale().to_dict()), "--rule", tmp_path / "tiers", "-o", tmp_path / "out")
    assert r.exit_code == 2 and "on grade scale `taosr4`" in r.stderr and "is for `letters`" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()
    assert cli("tier", "apply", "--predictions", tmp_path / "letters", "--rule", tmp_path / "tiers", "-o", tmp_path / "out").exit_code == 0


def test_only_model_arguments_are_looked_up_on_the_hub(tmp_path, monkeypatch):
    """With the Hub on, a hub id given as a model is looked up (its pushed toolkit/manifest.json); a missing data path,
    a served model's name (--backend openai), an invalid id or `default` never become a Hub request."""
    from toolkit.core.stagefolder import check_model_scale, remote
    from toolkit.scoring import ScoreConfig

    asked = []
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(remote, "hub_model_manifest", lambda repo: asked.append(repo) or {
        lineage.KEY: {"order": COT_FIRST, "rules": False}, "grade_scale": get_scale("three").to_dict()})
    assert lineage.recorded("out/missing.parquet") is None and lineage.resolve_order(None, "out/cot") == LABEL_FIRST
    assert lineage.resolve_order(None, model="me/judge", hub=False) == LABEL_FIRST and asked == []
    for bad in ("me/judge@", "me/judge@v 2", "me/judge@../../x", "out/my preds", "a/b..c", "default", "~/x", "me/judge/sub"):
        assert not remote.is_hub_model_id(bad) and lineage.recorded(bad, hub=True) is None, bad
    assert asked == [] and remote.is_hub_model_id("me/judge@v2") and remote.is_hub_model_id("me/judge@refs/pr/1")
    served = ScoreConfig(pairs=str(tmp_path), out=str(tmp_path / "o"),
                         backend={"kind": "openai", "model": "me/judge", "base_url": "http://127.0.0.1:9/v1"})
    assert served.order == LABEL_FIRST and asked == []
    check_model_scale(get_scale(), "me/judge", "score", hub=False)
    assert asked == []
    assert lineage.resolve_order(None, "out/cot", model="me/judge") == COT_FIRST and asked == ["me/judge"]
    with pytest.raises(UserError, match="trained on grade scale `three`"):
        check_model_scale(get_scale(), "me/judge", "score")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline the same (the Hub cache answers: test_hub_model.py)
    assert lineage.recorded("me/judge@v2", hub=True)["order"] == COT_FIRST and asked == ["me/judge"] * 2 + ["me/judge@v2"]


def test_a_downloaded_pushed_model_keeps_its_records(tmp_path, tiny_model_dir):
    """`hf download me/judge --local-dir DIR` leaves the records under DIR/toolkit/: they count as the folder's."""
    folder = shutil.copytree(tiny_model_dir, tmp_path / "dl")
    (folder / "toolkit").mkdir()
    (folder / "toolkit/manifest.json").write_text(json.dumps({
        "stage": "train-sft", lineage.KEY: {"order": LABEL_FIRST, "rules": False, "template": "### system\nx\n"},
        "grade_scale": get_scale("three").to_dict()}))
    from toolkit.core.stagefolder import check_model_scale

    assert lineage.recorded(folder)["template"] == "### system\nx\n"
    with pytest.raises(UserError, match="trained on grade scale `three`"):
        check_model_scale(get_scale(), folder, "score")


def test_toolkit_run_counts_the_hub_models_a_stage_loads():
    """A pipeline stage is up to date only at the commit of each hub model it loads: --model of the commands that
    load weights (the embedder of build-index too), make-prefs' --teacher-model; not a served model's name
    (openai), a stage reference, or retrieve's --model (the index's embedder: the index folder counts)."""
    from toolkit.cli.runner import Stage, _hub_models

    assert _hub_models(Stage("s", "score", ["{pairs}"], {"model": "me/judge"})) == ["me/judge"]
    assert _hub_models(Stage("s", "score", [], {"model": "me/judge", "backend": "openai"})) == []
    assert _hub_models(Stage("p", "make-prefs", [], {"teacher_model": "me/t"})) == ["me/t"]
    assert _hub_models(Stage("p", "make-prefs", [], {"teacher-model": "me/t", "teacher-backend": "openai"})) == []
    assert _hub_models(Stage("t", "train  sft", [], {"model": "{sft}"})) == []
    assert _hub_models(Stage("t", "train grpo", [], {"model": "me/base@v2"})) == ["me/base@v2"]
    assert _hub_models(Stage("b", "train baseline", [], {"model": "me/reranker"})) == ["me/reranker"]
    assert _hub_models(Stage("i", "build-index", [], {"model": "me/embed"})) == ["me/embed"]
    assert _hub_models(Stage("r", "retrieve", [], {"model": "me/embed"})) == []  # the index's model: its folder counts
    assert _hub_models(Stage("a", "atomize", [], {"model": "default"})) == []
