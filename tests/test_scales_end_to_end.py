"""3- and 5-grade scales end to end: the demo pairs mapped onto `three` and `five` go through
ingest → split → build-index → retrieve → gen-cot → train sft → sample → label-difficulty →
score → tier fit → eval, and every stage works on the data's scale (its manifest, its labels,
its probabilities, its metrics), never on the default 4-grade one.

gen-cot runs the embedded default model (transformers, guided, 10 pairs) so that rationales
parse; the later stages use a tiny random model: what is checked is the scale, not quality.

Run: .venv/bin/python -m pytest tests/test_scales_end_to_end.py -q
"""

import json

import polars as pl
import pytest

from toolkit.core import columns as C
from toolkit.core.grades import get_scale
from toolkit.core.stagefolder import read_manifest

pytestmark = pytest.mark.slow

SCALES = {
    "three": "4=3,3=2,2=1,1=1",  # Exact / Partial / Irrelevant
    "five": "4=5,3=4,2=2,1=1",  # grade 3 absent from the data: still on the scale
}


@pytest.fixture(scope="module")
def index(tmp_path_factory, repo, minilm):
    from click.testing import CliRunner

    from toolkit.cli import cli

    out = tmp_path_factory.mktemp("scales") / "index"
    r = CliRunner().invoke(cli, ["build-index", str(repo / "demo/guideline.md"), "-o", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.stderr
    return out


@pytest.mark.parametrize("name", list(SCALES))
def test_a_scale_travels_through_every_stage(name, cli, repo, tmp_path, index, tiny_model_dir, default_model_dir):
    scale = get_scale(name)
    values = [g.value for g in scale.grades]

    def run(*args):
        r = cli(*args)
        assert r.exit_code == 0, (args[0], r.stderr)
        return r

    def scale_of(folder):
        return read_manifest(tmp_path / folder)["grade_scale"]["name"]

    run("ingest", repo / "demo/pairs.jsonl", "--scale", name, "--grade-map", SCALES[name], "-o", tmp_path / "pairs")
    run("split", tmp_path / "pairs", "-o", tmp_path / "splits", "--fractions", "train=0.6,dev=0.2,test=0.2", "--seed", "0")
    run("retrieve", tmp_path / "splits", "-i", index, "-o", tmp_path / "retrieved", "-k", "3")
    run("gen-cot", tmp_path / "retrieved", "--index", index, "--limit", "10", "--step-tokens", "24", "-o", tmp_path / "cot")
    tiny = ["--model", tiny_model_dir]
    run("train", "sft", tmp_path / "cot", *tiny, "--max-steps", "1", "--batch-size", "2", "-o", tmp_path / "sft")
    run("sample", tmp_path / "retrieved", *tiny, "--index", index, "--limit", "8", "-n", "2", "--max-tokens", "4",
        "--dtype", "float32", "-o", tmp_path / "rollouts")
    run("label-difficulty", tmp_path / "rollouts", "-o", tmp_path / "difficulty")
    run("score", tmp_path / "retrieved", *tiny, "--index", index, "--split", "", "--dtype", "float32", "-o", tmp_path / "scores")
    run("tier", "fit", "--predictions", tmp_path / "scores", "--split", "dev", "-o", tmp_path / "tiers", "--no-plots")
    run("eval", "--predictions", tmp_path / "scores", "--split", "test", "--tier-rule", tmp_path / "tiers", "-o", tmp_path / "eval", "--no-plots")

    for folder in ("pairs", "splits", "retrieved", "cot", "sft", "rollouts", "difficulty", "scores", "tiers", "eval"):
        assert scale_of(folder) == name, folder
    # so does how the student prompt was built (toolkit.core.lineage): label first, with rules
    for folder in ("cot", "sft", "rollouts", "difficulty", "scores"):
        assert read_manifest(tmp_path / folder)["student_prompt"] == {"order": "label_first", "rules": True}, folder

    # the student prompt teaches this scale's grades, and the SFT targets start with its labels
    sft = pl.read_parquet(tmp_path / "cot/sft.parquet")
    assert sft.height >= 1
    system = sft[C.PROMPT][0][0]["content"]
    assert all(g.name in system for g in scale.grades)
    for row in sft.iter_rows(named=True):
        assert row[C.COMPLETION][0]["content"].startswith(scale.by_value(row[C.GRADE]).label + "\n")
    kept = pl.read_parquet(tmp_path / "rollouts/prompts.parquet")[C.RULE_TEXTS]  # for make-prefs' teacher
    assert kept.list.len().min() == 3
    rollouts = pl.read_parquet(tmp_path / "rollouts/rollouts.parquet")
    assert set(rollouts[C.GRADE]) <= set(values)
    # one probability per grade of the scale; metrics, tiers and CumPT grades over exactly its grades
    scores = pl.read_parquet(tmp_path / "scores/predictions.parquet")
    assert set(scores[C.GRADE]) <= set(values) and {len(p) for p in scores[C.GRADE_PROBS].to_list()} == {len(values)}
    metrics = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert [g["grade"] for g in metrics["per_grade"]] == values
    tiers = json.loads((tmp_path / "tiers/tiers.json").read_text())
    assert sorted(v for grades in tiers["tiers"].values() for v in grades) == sorted(values)
    evaluated = pl.read_parquet(tmp_path / "eval/predictions.parquet")
    assert set(evaluated["cumpt_grade"].drop_nulls()) <= set(values)
