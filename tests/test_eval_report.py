"""`toolkit eval` and `toolkit tier fit|apply` end to end on a tiny predictions file: report files,
metrics.json schema and values, the tier rule, one-line errors for bad input, and the in-memory seam.

Run: .venv/bin/python -m pytest tests/test_eval_report.py -q
"""

import json
import subprocess
import sys

import polars as pl
import pytest

from checks import one_line_error

# Six rows, taosr4 (order 4,3,2,1). argmax grades 4,3,3,2,2,4 against gold 4,4,3,3,2,1:
# the fixture of test_metrics.py -> macro-F1 5/12 = 0.4167, accuracy 0.5.
PROBS = [
    [0.7, 0.1, 0.1, 0.1],  # gold 4, conf .7 right
    [0.2, 0.6, 0.1, 0.1],  # gold 4, conf .6 wrong
    [0.1, 0.8, 0.05, 0.05],  # gold 3, conf .8 right
    [0.1, 0.3, 0.5, 0.1],  # gold 3, conf .5 wrong
    [0.0, 0.1, 0.9, 0.0],  # gold 2, conf .9 right
    [0.4, 0.2, 0.2, 0.2],  # gold 1, conf .4 wrong
]
GOLD = [4, 4, 3, 3, 2, 1]
TEXTS = [
    "4\nReason: 5. Decision: Excellent",  # agrees
    "4\nReason: 5. Decision: Related",  # disagrees (gold 4: the label was right)
    "3\n5. Decision: Related",  # agrees
    "I am not sure",  # unparsed
    "2\nThe item is an accessory.",  # no decision step
    "4\n5. Decision: Irrelevant",  # disagrees, decision = gold: rationale right, label wrong
]
# ECE, 10 bins: one row per bin, gaps |1-.7| |0-.6| |1-.8| |0-.5| |1-.9| |0-.4| = .3+.6+.2+.5+.1+.4 = 2.1; /6 = .35
# Brier: .12 + 1.02 + .055 + .76 + .02 + .88 = 2.855; /6 = 0.475833
# hallucination: 2 disagreeing of 4 answers with a decision step


def _write(path, **cols):
    data = {"pair_id": [f"p{i}" for i in range(len(GOLD))], "grade": GOLD, "grade_probs": PROBS, "text": TEXTS}
    data.update(cols)
    pl.DataFrame({k: v for k, v in data.items() if v is not None}).write_parquet(path)
    return path


@pytest.fixture
def preds(tmp_path):
    return _write(tmp_path / "preds.parquet")


def test_eval_writes_report_metrics_and_plots(cli, preds, tmp_path):
    out = tmp_path / "eval"
    r = cli("eval", "--predictions", preds, "-o", out)
    assert r.exit_code == 0, r.output
    assert r.stdout.strip().splitlines()[-1].startswith("eval: 6 rows, macro-F1 0.4167 [0.0833, 0.6667], accuracy 0.5000, ECE 0.3500")
    for name in ("metrics.json", "report.md", "confusion.png", "reliability.png", "predictions.parquet", "manifest.json", "config.yaml"):
        assert (out / name).is_file(), name
    for png in ("confusion.png", "reliability.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000

    m = json.loads((out / "metrics.json").read_text())
    assert m["schema"] == "toolkit.eval/1" and m["decision"] == "argmax" and m["scale"]["name"] == "taosr4"
    assert {"n", "n_unparsed", "macro_f1", "macro_f1_present", "absent_grades", "accuracy", "per_grade", "confusion",
            "calibration", "hallucination", "by_split", "tiering", "images", "input"} <= set(m)
    assert m["macro_f1"] == pytest.approx(5 / 12) and m["accuracy"] == pytest.approx(0.5)
    assert [g["f1"] for g in m["per_grade"]] == pytest.approx([0.5, 0.5, 2 / 3, 0.0])
    assert m["confusion"] == {"grades": [4, 3, 2, 1], "matrix": [[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [1, 0, 0, 0]],
                              "unparsed": [0, 0, 0, 0]}
    cal = m["calibration"]
    assert cal["ece"] == pytest.approx(0.35) and cal["brier"] == pytest.approx(2.855 / 6) and cal["n_bins"] == 10
    assert {"lo", "hi", "count", "confidence", "accuracy"} == set(cal["bins"][0])
    h = m["hallucination"]
    assert (h["numerator"], h["denominator"], h["n_parsed"], h["no_decision"], h["rationale_right_label_wrong"]) == (2, 4, 5, 1, 1)
    assert m["images"] == {"confusion": "confusion.png", "reliability": "reliability.png"}

    report = (out / "report.md").read_text()
    for needle in ("**0.4167**", "| accuracy | 0.5000 |", "| 2 Mismatch | 0.5000 | 1.0000 | 0.6667 | 1 | 2 |",
                   "| 4 Excellent | 1 | 1 | 0 | 0 |", "ECE (10 bins, top label) | 0.3500", "2 / 4 = 0.5000",
                   "![confusion matrix](confusion.png)", "![reliability diagram](reliability.png)", "absent from both"):
        assert needle in report, needle

    df = pl.read_parquet(out / "predictions.parquet")
    assert df["pred_grade"].to_list() == [4, 3, 3, 2, 2, 4]
    assert df["correct"].to_list() == [True, False, True, False, True, False]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "eval" and manifest["counts"]["rows"] == 6 and str(preds) in manifest["inputs"]

    again = cli("eval", "--predictions", preds, "-o", out)
    assert "up to date" in again.stdout


def test_eval_of_parsed_answers_without_probs(cli, tmp_path):
    p = _write(tmp_path / "p.parquet", grade_probs=None, text=None, pred_grade=[4, 3, 3, None, 2, 4])
    out = tmp_path / "eval"
    r = cli("eval", "--predictions", p, "-o", out)
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    # like the argmax fixture but row 4 unparsed: tp [1,1,1,0], gold [2,2,1,1], predicted [2,2,1,0]
    # F1 = [2/4, 2/4, 2/2, 0] -> macro 0.5; accuracy 3/6
    assert m["decision"] == "parsed" and m["calibration"] is None and m["n_unparsed"] == 1
    assert m["macro_f1"] == pytest.approx(0.5) and m["accuracy"] == pytest.approx(0.5)
    assert not (out / "reliability.png").exists() and (out / "confusion.png").exists()
    assert "| unparsed |" in (out / "report.md").read_text().replace("unparsed predictions", "")


def test_eval_keeps_the_parsed_grade_when_evaluating_argmax(cli, tmp_path):
    p = _write(tmp_path / "p.parquet", pred_grade=[4, 4, 3, None, 2, 1])
    out = tmp_path / "eval"
    assert cli("eval", "--predictions", p, "-o", out, "--no-plots").exit_code == 0
    df = pl.read_parquet(out / "predictions.parquet")
    assert df["parsed_grade"].to_list() == [4, 4, 3, None, 2, 1]
    assert df["pred_grade"].to_list() == [4, 3, 3, 2, 2, 4]
    assert not list(out.glob("*.png"))
    m = json.loads((out / "metrics.json").read_text())
    assert m["images"] == {}


def test_split_selection_and_by_split(cli, tmp_path):
    p = _write(tmp_path / "p.parquet", split=["dev", "dev", "dev", "test", "test", "test"])
    out = tmp_path / "eval"
    assert cli("eval", "--predictions", p, "-o", out, "--no-plots").exit_code == 0
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["by_split"]) == {"dev", "test"} and m["by_split"]["dev"]["n"] == 3
    assert cli("eval", "--predictions", p, "-o", tmp_path / "e2", "--split", "test", "--no-plots").exit_code == 0
    m2 = json.loads((tmp_path / "e2" / "metrics.json").read_text())
    assert m2["n"] == 3 and m2["split"] == "test" and m2["by_split"] is None


def test_tier_fit_apply_and_eval_with_the_rule(cli, preds, tmp_path):
    tiers = tmp_path / "tiers"
    r = cli("tier", "fit", "--predictions", preds, "-o", tiers)
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("tier fit: 6 dev rows, β = ")
    for name in ("tiers.json", "fit.md", "beta_curve.png", "beta_curve.json", "manifest.json"):
        assert (tiers / name).is_file(), name
    rule = json.loads((tiers / "tiers.json").read_text())
    assert rule["schema"] == "toolkit.tiers/1" and rule["method"] == "cumpt" and 0 <= rule["beta"] <= 1
    assert rule["tiers"] == {"Good": [4, 3], "Mid": [2], "Bad": [1]} and rule["scale"]["name"] == "taosr4"
    methods = rule["dev"]["methods"]
    assert set(methods) == {"argmax", "cumpt", "expected_score"}
    assert methods["argmax"]["macro_f1"] == pytest.approx(5 / 12)
    assert methods["cumpt"]["macro_f1"] >= methods["argmax"]["macro_f1"]  # β = argmax-like plateaus are candidates too
    fit_md = (tiers / "fit.md").read_text()
    assert f"β = {rule['beta']:.4f}" in fit_md and "![macro-F1 against beta](beta_curve.png)" in fit_md
    assert f"{methods['expected_score']['macro_f1']:.4f}" in fit_md

    tiered = tmp_path / "tiered"
    r = cli("tier", "apply", "--predictions", preds, "--rule", tiers, "-o", tiered)
    assert r.exit_code == 0, r.output
    df = pl.read_parquet(tiered / "predictions.parquet")
    assert {"cumpt_grade", "tier"} <= set(df.columns)
    tier_of = {4: "Good", 3: "Good", 2: "Mid", 1: "Bad"}
    assert df["tier"].to_list() == [tier_of[g] for g in df["cumpt_grade"].to_list()]

    out = tmp_path / "eval"
    r = cli("eval", "--predictions", preds, "--tier-rule", tiers / "tiers.json", "-o", out, "--no-plots")
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["tiering"]["beta"] == rule["beta"]
    assert m["tiering"]["methods"]["cumpt"]["macro_f1"] == pytest.approx(methods["cumpt"]["macro_f1"])
    assert "## Decision rules and tiers" in (out / "report.md").read_text()
    assert pl.read_parquet(out / "predictions.parquet")["cumpt_grade"].to_list() == df["cumpt_grade"].to_list()


def test_tier_fit_to_a_target_good_rate_and_custom_tiers(cli, preds, tmp_path):
    r = cli("tier", "fit", "--predictions", preds, "-o", tmp_path / "t", "--target-good-rate", "0.5",
            "--tiers", "Good=4;Mid=3,2;Bad=1", "--no-plots")
    assert r.exit_code == 0, r.output
    rule = json.loads((tmp_path / "t" / "tiers.json").read_text())
    assert rule["objective"] == "good_rate" and rule["target_good_rate"] == 0.5
    assert rule["tiers"] == {"Good": [4], "Mid": [3, 2], "Bad": [1]}
    assert rule["dev"]["methods"]["cumpt"]["good_rate"] == pytest.approx(0.5)


@pytest.mark.parametrize("case,cols,args,needles", [
    ("probs of the wrong length", {"grade_probs": [[0.5, 0.5]] * 6}, [],
     ["preds.parquet: row 1 (pair_id p0): grade_probs has 2 numbers; need 4", "pass --scale"]),
    ("probs not summing to 1", {"grade_probs": [[0.5, 0.3, 0.1, 0.0]] + PROBS[1:]}, [],
     ["row 1 (pair_id p0): grade_probs sums to 0.9 (must be 1 ± 0.001)"]),
    ("probs not lists", {"grade_probs": ["0.7,0.1,0.1,0.1"] * 6}, [], ["not lists of numbers"]),
    ("probs as strings", {"grade_probs": [["0.7", "0.1", "0.1", "0.1"]] * 6}, [], ["holds List(String), not lists of numbers"]),
    ("gold off the scale", {"grade": [4, 4, 3, 3, 2, 7]}, [], ["row 6: gold grade 7 is not on scale `taosr4`"]),
    ("missing grade column", {"grade": None}, [], ["column(s) grade missing; found: pair_id, grade_probs, text"]),
    ("nothing to evaluate", {"grade_probs": None, "text": None}, [], ["nothing to evaluate; need `grade_probs`"]),
    ("argmax without probs", {"grade_probs": None}, ["--decision", "argmax"], ["--decision argmax needs a `grade_probs` column"]),
    ("unknown split", {"split": ["dev"] * 6}, ["--split", "test"], ["no rows with split 'test'; splits found: dev"]),
    ("wrong scale", {}, ["--scale", "three"], ["gold grade 4 is not on scale `three`"]),
    ("probs for another scale", {"grade": [3, 3, 2, 2, 1, 1]}, ["--scale", "three"], ["grade_probs has 4 numbers; need 3"]),
])
def test_bad_input_is_aone_line_error(cli, tmp_path, case, cols, args, needles):
    p = _write(tmp_path / "preds.parquet", **cols)
    out = tmp_path / "eval"
    one_line_error(cli("eval", "--predictions", p, "-o", out, *args), *needles)
    assert not out.exists()


def test_tier_errors_are_one_line(cli, preds, tmp_path):
    one_line_error(cli("tier", "fit", "--predictions", preds, "-o", tmp_path / "t", "--objective", "good-rate"),
                    "--objective good-rate needs --target-good-rate")
    one_line_error(cli("tier", "apply", "--predictions", preds, "--rule", tmp_path / "none", "-o", tmp_path / "x"),
                    "no such file or folder")
    one_line_error(cli("tier", "fit", "--predictions", preds, "-o", tmp_path / "t", "--tiers", "Good=4,3;Bad=1"), "missing [2]")
    one_line_error(cli("eval", "-o", tmp_path / "e"), "pass --predictions FILE")


def test_evaluate_accepts_an_in_memory_frame(tmp_path):
    """The seam for model scoring: a backend hands its predictions frame to evaluate()."""
    from toolkit.evaluation import EvalConfig, evaluate

    frame = pl.DataFrame({"pair_id": ["a", "b"], "grade": [2, 1], "grade_probs": [[0.8, 0.2], [0.3, 0.7]]})
    cfg = EvalConfig(predictions=None, out=str(tmp_path / "e"), scale="binary", plots=False, extra={"model": "tiny"})
    result = evaluate(cfg, predictions=frame, provenance={"model": "tiny-model@abc"})
    assert result.metrics["macro_f1"] == pytest.approx(1.0) and result.metrics["input"] == "predictions"
    manifest = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert manifest["inputs"] == {"model": "tiny-model@abc"} and manifest["grade_scale"]["name"] == "binary"


def test_eval_modules_do_not_import_matplotlib_or_torch():
    code = ("import toolkit.evaluation, toolkit.cumpt, toolkit.core.metrics, toolkit.tiering, toolkit.report, toolkit.cli, sys;"
            "print(sorted(m for m in ('matplotlib', 'torch', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_eval_reports_how_the_judge_orders_each_query(cli, tmp_path):
    """With a query column: NDCG@10 within queries by expected grade (with its interval and the random-order floor)
    and Spearman's ρ, in metrics.json, the report and the headline; parsed grades only: ordered by the grade."""
    stats = pytest.importorskip("scipy.stats")
    metrics = pytest.importorskip("sklearn.metrics")
    import numpy as np

    p = _write(tmp_path / "p.parquet", query=["q1"] * 3 + ["q2"] * 3)
    r = cli("eval", "--predictions", p, "-o", tmp_path / "eval", "--no-plots")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "eval/metrics.json").read_text())["ranking"]
    scores = np.array(PROBS) @ np.array([3, 2, 1, 0])  # expected relevance; gold relevance = grade - 1
    rel = np.array(GOLD) - 1
    per_query = [metrics.ndcg_score([2.0 ** rel[s] - 1], [scores[s]], k=10) for s in (slice(0, 3), slice(3, 6))]
    assert m["score"] == "expected grade" and (m["k"], m["queries"], m["queries_one_grade"]) == (10, 2, 0)
    assert m["ndcg@10"] == pytest.approx(np.mean(per_query)) and m["spearman"] == pytest.approx(stats.spearmanr(scores, rel).statistic)
    assert m["ndcg@10_random"] < 1 and len(m["ndcg@10_interval"]) == 2
    assert f"NDCG@10 {m['ndcg@10']:.4f}" in r.stdout
    report = (tmp_path / "eval/report.md").read_text()
    assert "| NDCG@10 within queries (by expected grade; mean over 2 queries) |" in report
    assert "| NDCG@10 of a random order (the floor) |" in report and "| Spearman's ρ, expected grade vs gold (all pairs) |" in report

    p = _write(tmp_path / "parsed.parquet", grade_probs=None, text=None, pred_grade=[4, 3, 3, None, 2, 4], query=["q"] * 6)
    r = cli("eval", "--predictions", p, "-o", tmp_path / "eval2", "--no-plots")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "eval2/metrics.json").read_text())["ranking"]
    assert m["score"] == "predicted grade" and m["queries"] == 1
