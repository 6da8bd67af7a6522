"""Markdown reports for `toolkit eval` (report.md) and `toolkit tier fit` (fit.md).

Numbers are printed with 4 decimals, the same values as in metrics.json / tiers.json.
"""

from __future__ import annotations

from toolkit.core.grades import GradeScale

HALLUCINATION_NOTE = (
    "Discriminative hallucination: among parsed answers whose rationale has a decision step naming a grade "
    "(`5. Decision: Related`, by grade name or label), the share whose decision-step grade differs from the "
    "emitted grade. *Rationale right, label wrong* counts those where the decision-step grade equals gold."
)
MACRO_NOTE = (
    "Macro-F1 is the unweighted mean of the per-grade F1 over all grades of the scale; a grade absent from both "
    "gold and predictions scores 0 (scikit-learn with `labels=` the scale). Unparsed answers count as wrong: a miss "
    "for their gold grade, no grade's false positive."
)


def _f(x) -> str:
    return "–" if x is None else f"{x:.4f}"


def _table(head: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _grade(g: dict | object) -> str:
    value, name = (g["grade"], g["name"]) if isinstance(g, dict) else (g.value, g.name)
    return f"{value} {name}" if str(value) != str(name) else str(name)


def methods_table(methods: dict, tiers: dict) -> str:
    names = {"argmax": "argmax", "cumpt": "CumPT", "expected_score": "expected-score cuts"}
    rows = []
    for key, m in methods.items():
        param = (f"β = {m['beta']:.4f}" if "beta" in m
                 else (", ".join(f"{c:.3f}" for c in m["cuts"]) if "cuts" in m else ""))
        rows.append([names.get(key, key), param, _f(m["macro_f1"]), _f(m["accuracy"]), _f(m["tier_macro_f1"])]
                    + [_f(m["tier_rates"][t]) for t in tiers])
    return _table(["rule", "parameters", "macro-F1", "accuracy", "tier macro-F1"] + [f"{t} rate" for t in tiers], rows)


def _ranking_rows(r: dict | None) -> list[list[str]]:
    """Order within queries (toolkit.core.ranking): NDCG@k with its interval, Spearman's ρ."""
    if not r:
        return []
    k, rows = r["k"], []
    if r.get(f"ndcg@{k}") is not None:
        ci = r.get(f"ndcg@{k}_interval")
        left = f", {r['queries_one_grade']} with one grade left out" if r["queries_one_grade"] else ""
        rows.append([f"NDCG@{k} within queries (by {r['score']}; mean over {r['queries']} queries{left})",
                     _f(r[f"ndcg@{k}"]) + (f" [{_f(ci[0])}, {_f(ci[1])}]" if ci else "")])
        rows.append([f"NDCG@{k} of a random order (the floor)", _f(r[f"ndcg@{k}_random"])])
    if r.get("spearman") is not None:
        rows.append([f"Spearman's ρ, {r['score']} vs gold (all pairs)", _f(r["spearman"])])
    return rows


def render_eval(m: dict, scale: GradeScale) -> str:
    images = m.get("images") or {}
    decision = {"argmax": "argmax of grade_probs", "parsed": "the emitted (parsed) grade"}[m["decision"]]
    out = [
        "# Evaluation report",
        "",
        f"Predictions: `{m.get('input', '')}` · scale `{scale.name}` ({scale.describe()}) · "
        f"{m['n']} rows{' of split ' + m['split'] if m.get('split') else ''} · grade evaluated: {decision}",
        "",
    ]
    rows = [["**macro-F1** (headline)", f"**{_f(m['macro_f1'])}**"], ["accuracy", _f(m["accuracy"])]]
    b = m.get("bootstrap")
    if b:
        what = "queries" if b["by"] == "query" else "pairs"
        rows.insert(1, [f"macro-F1, {100 * b['level']:.0f}% interval ({b['resamples']} resamples of {b['groups']} "
                        f"{what})", f"[{_f(b['macro_f1'][0])}, {_f(b['macro_f1'][1])}]"])
        if b.get("cumpt_macro_f1"):
            rows.insert(2, ["CumPT macro-F1, same interval", f"[{_f(b['cumpt_macro_f1'][0])}, "
                                                               f"{_f(b['cumpt_macro_f1'][1])}]"])
    if m["absent_grades"]:
        rows.append([f"macro-F1 over present grades (absent: {m['absent_grades']})", _f(m["macro_f1_present"])])
    cal = m.get("calibration")
    if cal:
        rows += [[f"ECE ({cal['n_bins']} bins, top label)", _f(cal["ece"])], ["Brier score", _f(cal["brier"])]]
    h = m.get("hallucination")
    if h:
        rate = (f"{h['numerator']} / {h['denominator']} = {_f(h['rate'])}" if h["denominator"]
                else "– (no decision steps)")
        rows.append(["discriminative hallucination", rate])
    rows.append(["unparsed predictions", str(m["n_unparsed"])])
    rows += _ranking_rows(m.get("ranking"))
    out += [_table(["metric", "value"], rows), "", "## Per grade", ""]
    out.append(_table(
        ["grade", "precision", "recall", "F1", "support", "predicted"],
        [[_grade(g), _f(g["precision"]), _f(g["recall"]), _f(g["f1"]), g["support"], g["predicted"]]
         for g in m["per_grade"]],
    ))
    cm = m["confusion"]
    heads = [_grade(g) for g in scale.grades]
    show_unparsed = any(cm["unparsed"])
    rows = [[heads[i]] + row + ([cm["unparsed"][i]] if show_unparsed else []) for i, row in enumerate(cm["matrix"])]
    out += ["", "## Confusion matrix", "", "Rows: gold grade; columns: predicted grade (best first).", ""]
    out.append(_table(["gold \\ predicted"] + heads + (["unparsed"] if show_unparsed else []), rows))
    if "confusion" in images:
        out += ["", f"![confusion matrix]({images['confusion']})"]
    if cal:
        out += ["", "## Calibration", "", f"Top-label reliability: mean confidence {_f(cal['mean_confidence'])}, "
                f"accuracy {_f(m['accuracy'])}, ECE {_f(cal['ece'])}, MCE {_f(cal['mce'])}.", ""]
        if "reliability" in images:
            out += [f"![reliability diagram]({images['reliability']})", ""]
        out.append(_table(["confidence bin", "rows", "mean confidence", "accuracy"],
                          [[f"({b['lo']:.2f}, {b['hi']:.2f}]", b["count"], _f(b["confidence"]), _f(b["accuracy"])]
                           for b in cal["bins"] if b["count"]]))
    t = m.get("tiering")
    if t:
        out += ["", "## Decision rules and tiers", "", f"Tier rule `{t['rule']}` (β = {t['beta']:.4f}; tiers "
                + "; ".join(f"{k} = {', '.join(map(str, v))}" for k, v in t["tiers"].items()) + "):", ""]
        out.append(methods_table(t["methods"], t["tiers"]))
    if m.get("by_split"):
        out += ["", "## By split", ""]
        out.append(_table(["split", "rows", "macro-F1", "accuracy"],
                          [[s, v["n"], _f(v["macro_f1"]), _f(v["accuracy"])] for s, v in m["by_split"].items()]))
    if h:
        out += ["", "## Discriminative hallucination", "",
                _table(["answers", "parsed", "with a decision step", "disagreeing", "rationale right, label wrong"],
                       [[h["n_answers"], h["n_parsed"], h["denominator"], h["numerator"],
                         h["rationale_right_label_wrong"]]]),
                "", HALLUCINATION_NOTE]
    out += ["", "## Definitions", "", MACRO_NOTE, ""]
    return "\n".join(out)


def render_fit(rule: dict, image: str | None) -> str:
    dev = rule["dev"]
    obj = ("maximise macro-F1" if rule["objective"] == "macro_f1"
           else f"Good rate closest to {rule['target_good_rate']}")
    out = [
        "# CumPT tier rule",
        "",
        f"Fitted on {dev['n']} dev rows of `{dev.get('input', '')}` · objective: {obj} · "
        f"**β = {rule['beta']:.4f}** · scale `{rule['scale']['name']}` · tiers "
        + "; ".join(f"{k} = {', '.join(map(str, v))}" for k, v in rule["tiers"].items()),
        "",
        "Predicted grade = the best grade k with P(top) + … + P(k) ≥ β. Side by side on the dev rows:",
        "",
        methods_table(dev["methods"], rule["tiers"]),
        "",
    ]
    if image:
        out += [f"![macro-F1 against beta]({image})", ""]
    out += ["Load `tiers.json` with `toolkit.cumpt.TierRule.load(path)`; apply it with `toolkit tier apply`.", ""]
    return "\n".join(out)
