"""A student prompt template of the user's own (`--prompt-template FILE`) travels with what is built on it:
gen-cot and label-only SFT record its text (toolkit.core.lineage), and the stages that prompt the model
afterwards (the trainers' dev evaluation, sample, score, serve, the model card's snippet) build the same
prompt without being told again; a different template for a model that records one is refused.

Run: .venv/bin/python -m pytest tests/test_prompt_template.py -q
"""

import json
import re

import polars as pl
import pytest

from checks import one_line_error
from toolkit.core import columns as C
from toolkit.core import lineage
from toolkit.core.errors import UserError
from toolkit.core.grades import get_scale
from toolkit.core.prompts import PromptBuilder, student_template_text
from toolkit.core.stagefolder import read_manifest

MINE = "### system\nJudge relevance. {grade_scale}\n### user\nSHOPPER WANTS: {query}\nOFFER: {item}\n"
OTHER = "### system\nRate it. {grade_scale}\n### user\nQ: {query}\nI: {item}\n"
ROW = {C.PAIR_ID: "p1", C.QUERY: "red mug", C.TITLE: "Red ceramic mug", C.GRADE: 4}


def _file(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_a_template_is_checked_before_anything_runs(tmp_path):
    assert student_template_text(None) is None and student_template_text("student") is None
    assert student_template_text(str(_file(tmp_path, "mine.txt", MINE))) == MINE
    assert student_template_text(MINE) == MINE  # a record's text stands for itself
    compact = student_template_text("student_compact")  # the shipped short prompt, by name
    assert compact.startswith("### system\n") and "{rules}" not in compact
    assert PromptBuilder(get_scale(), student_template=compact).student(ROW)[1]["content"] == \
        "Query: red mug\nTitle: Red ceramic mug"
    cases = {
        "no-system.txt": ("### user\n{query} {item}\n", "needs a `### system` section first"),
        "unknown.txt": ("### system\nx\n### user\n{query} {item} {price}\n", "unknown field(s) price"),
        "brace.txt": ("### system\nx {\n### user\n{query} {item}\n", "write a literal brace as {{"),
        "no-query.txt": ("### system\nx\n### user\n{item}\n", "must use {query} and {item}"),
        "no-user.txt": ("### system\n{query} {item}\n", "needs sections `### system`"),
    }
    for name, (text, needle) in cases.items():
        with pytest.raises(UserError) as e:
            student_template_text(str(_file(tmp_path, name, text)))
        assert needle in str(e.value) and name in str(e.value), (name, str(e.value))
    with pytest.raises(UserError, match=r"prompt template .*nothere.txt: no such file"):
        student_template_text(str(tmp_path / "nothere.txt"))
    (tmp_path / "binary.txt").write_bytes(bytes(range(128, 256)))
    (tmp_path / "huge.txt").write_text(MINE + "x" * 70_000)
    (tmp_path / "folder.txt").mkdir()
    for name, needle in (("binary.txt", "is not UTF-8 text (byte 0); save it as UTF-8"),
                         ("huge.txt", "is 70,08"), ("folder.txt", "a folder, not a file")):
        with pytest.raises(UserError, match=re.escape(needle)):
            student_template_text(str(tmp_path / name))
    # a path, its text and the builder's output agree; a file is read once per builder
    p = _file(tmp_path, "again.txt", MINE)
    b = PromptBuilder(get_scale(), student_template=str(p))
    first = b.student(ROW)
    p.write_text(OTHER)
    assert b.student(ROW) == first == PromptBuilder(get_scale(), student_template=MINE).student(ROW)
    assert first[1]["content"] == "SHOPPER WANTS: red mug\nOFFER: Title: Red ceramic mug"


def _record(folder, **facts):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps({"stage": "train-sft", lineage.KEY: facts}))
    return folder


def test_the_recorded_template_is_the_default_and_another_is_refused(tmp_path):
    mine, other = _file(tmp_path, "mine.txt", MINE), _file(tmp_path, "other.txt", OTHER)
    custom = _record(tmp_path / "custom", order="label_first", rules=False, template=MINE)
    builtin = _record(tmp_path / "builtin", order="label_first", rules=False)
    assert lineage.resolve_template(None, custom) == MINE
    assert lineage.resolve_template(str(mine), custom) == MINE  # the same text from a file
    assert lineage.resolve_template(None, builtin) is None
    assert lineage.resolve_template(None, "default", tmp_path / "nothing") is None
    assert lineage.resolve_template(str(mine), "default") == MINE
    assert lineage.resolve_template(None, tmp_path / "nothing", custom) == MINE  # the first record wins
    with pytest.raises(UserError, match=r"made with its own prompt template .*--prompt-template .*other.txt was given"):
        lineage.resolve_template(str(other), custom)
    with pytest.raises(UserError, match="made with the built-in student prompt, but --prompt-template"):
        lineage.resolve_template(str(mine), builtin)
    with pytest.raises(UserError, match="made with its own prompt template"):
        lineage.resolve_template("student", custom)
    assert lineage.facts("label_first", [[]], MINE) == {"order": "label_first", "rules": False, "template": MINE}
    assert lineage.facts("label_first", [[]]) == {"order": "label_first", "rules": False}  # as before


@pytest.mark.slow
def test_a_template_travels_from_training_to_dev_eval_sample_score_and_serve(cli, repo, tmp_path, tiny_model_dir,
                                                                              monkeypatch):
    import toolkit.training

    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path / "cache"))
    mine, other = _file(tmp_path, "mine.txt", MINE), _file(tmp_path, "other.txt", OTHER)
    assert cli("ingest", repo / "demo" / "pairs.jsonl", "-o", tmp_path / "pairs").exit_code == 0
    assert cli("split", tmp_path / "pairs", "-o", tmp_path / "splits").exit_code == 0
    seen, real_load_dev = [], toolkit.training.load_dev
    monkeypatch.setattr(toolkit.training, "load_dev",
                        lambda *a, **k: seen.append(a[7:9]) or real_load_dev(*a, **k))
    r = cli("train", "sft", tmp_path / "splits", "-o", tmp_path / "sft", "--model", tiny_model_dir, "--label-only",
            "--max-steps", 1, "--batch-size", 4, "--no-bf16", "--prompt-template", mine,
            "--eval-pairs", tmp_path / "splits", "--eval-limit", 4)
    assert r.exit_code == 0, r.stderr
    assert read_manifest(tmp_path / "sft")[lineage.KEY] == {"order": "label_first", "rules": False, "template": MINE}
    assert seen and seen[0][1] == MINE  # the dev evaluation prompted as the training rows were
    made = next((tmp_path / "cache" / "label-only").iterdir())
    prompt = pl.read_parquet(made / "sft.parquet")[C.PROMPT][0]
    assert prompt[0]["content"].startswith("Judge relevance. 4 = ") and prompt[1]["content"].startswith("SHOPPER WANTS:")

    # sample and score take the model's template without being told; its prompts are written out by sample
    r = cli("sample", tmp_path / "splits", "--model", tmp_path / "sft", "--limit", 2, "-n", 1, "--max-tokens", 2,
            "--dtype", "float32", "-o", tmp_path / "rollouts")
    assert r.exit_code == 0, r.stderr
    prompts = pl.read_parquet(tmp_path / "rollouts" / "prompts.parquet")[C.PROMPT].to_list()
    assert all(p[1]["content"].startswith("SHOPPER WANTS: ") for p in prompts)
    assert read_manifest(tmp_path / "rollouts")[lineage.KEY]["template"] == MINE
    r = cli("score", tmp_path / "splits", "--model", tmp_path / "sft", "--split", "dev", "--limit", 2,
            "--dtype", "float32", "-o", tmp_path / "scores")
    assert r.exit_code == 0, r.stderr
    assert read_manifest(tmp_path / "scores")[lineage.KEY]["template"] == MINE
    one_line_error(cli("score", tmp_path / "splits", "--model", tmp_path / "sft", "--prompt-template", other,
                       "-o", tmp_path / "scores2"), "made with its own prompt template", "drop --prompt-template")
    assert not (tmp_path / "scores2").exists()

    from toolkit.serving.config import ServeConfig
    from toolkit.serving.judge import Judge

    judge = Judge.open(ServeConfig(model=str(tmp_path / "sft"), dtype="float32"))
    assert judge.builder.student(ROW)[1]["content"].startswith("SHOPPER WANTS: red mug")
    # continuing from the checkpoint keeps its template; another one for the same model is refused
    r = cli("train", "sft", tmp_path / "splits", "-o", tmp_path / "sft2", "--model", tmp_path / "sft", "--label-only",
            "--max-steps", 1, "--batch-size", 4, "--no-bf16")
    assert r.exit_code == 0, r.stderr
    assert read_manifest(tmp_path / "sft2")[lineage.KEY]["template"] == MINE
    one_line_error(cli("train", "sft", tmp_path / "splits", "-o", tmp_path / "sft3", "--model", tmp_path / "sft",
                       "--label-only", "--prompt-template", other), "made with its own prompt template")


def test_gen_cot_writes_its_rows_with_the_template_and_records_it(cli, repo, tmp_path, tiny_model_dir, monkeypatch):
    import toolkit.generation.base as base
    from test_preferences import StepBackend

    teacher = StepBackend("Excellent.")
    monkeypatch.setattr(base, "make_backend", lambda cfg: teacher)
    mine, other = _file(tmp_path, "mine.txt", MINE), _file(tmp_path, "other.txt", OTHER)
    cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "pairs")
    r = cli("gen-cot", tmp_path / "pairs", "-o", tmp_path / "cot", "--model", tiny_model_dir, "--limit", 8,
            "--split", "", "--prompt-template", mine)
    assert r.exit_code == 0, r.stderr
    rows = pl.read_parquet(tmp_path / "cot" / "sft.parquet")
    assert rows.height >= 1 and all(p[1]["content"].startswith("SHOPPER WANTS: ") for p in rows[C.PROMPT].to_list())
    assert read_manifest(tmp_path / "cot")[lineage.KEY]["template"] == MINE
    # the teacher's prompt is its own template's, not the student's
    sent = [m["content"] for prompts, _ in teacher.calls for p in prompts for m in p]
    assert sent and not any("SHOPPER WANTS" in c for c in sent)
    from trainers.config import SFTTrainConfig

    assert SFTTrainConfig(data=str(tmp_path / "cot"), out=str(tmp_path / "o")).prompt_template == MINE
    with pytest.raises(UserError, match="made with its own prompt template"):
        SFTTrainConfig(data=str(tmp_path / "cot"), out=str(tmp_path / "o"), prompt_template=str(other))
    one_line_error(cli("gen-cot", tmp_path / "pairs", "-o", tmp_path / "cot2", "--model", tiny_model_dir,
                       "--prompt-template", tmp_path / "missing.txt"), "missing.txt: no such file")
    # a --config file names it as every other command does
    (tmp_path / "gc.yaml").write_text(f"prompt_template: {mine}\nlimit: 8\nsplit: ''\n")
    r = cli("gen-cot", tmp_path / "pairs", "--config", tmp_path / "gc.yaml", "-o", tmp_path / "cot3", "--model",
            tiny_model_dir)
    assert r.exit_code == 0, r.stderr
    assert read_manifest(tmp_path / "cot3")[lineage.KEY]["template"] == MINE


def test_the_model_card_snippet_builds_the_recorded_prompt():
    from types import SimpleNamespace

    from toolkit.model_card import _recipe

    lines = "\n".join(_recipe(SimpleNamespace(repo_id="me/judge"), [], "label_first", False, None, False, MINE))
    assert f"TEMPLATE = {MINE!r}" in lines and '"label_first", TEMPLATE)' in lines
    assert "TEMPLATE" not in "\n".join(_recipe(SimpleNamespace(repo_id="me/judge"), [], "label_first", False))
