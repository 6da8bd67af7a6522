"""`toolkit push` of a checkpoint folder (train sft/dpo/grpo/baseline): the model files and a model card.

The card says what a user of the judge needs: the base model, the training data (its stage and
input files, and the Hub dataset repos and revisions given with --data-repo), the grade scale and
its labels, the answer order the model was trained on, the evaluation table (--eval, a `toolkit
eval` folder) and the fitted CumPT β (--tiers, a `toolkit tier fit` folder), and how to score with it
(first-token grade probabilities, in a few lines). Local paths of the machine that trained it are
shown by their last part only.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from toolkit.core.errors import UserError
from toolkit.hub import card_license, shown_name
from toolkit.core.stagefolder import Key, CONFIG, MANIFEST, read_manifest
from toolkit.core.stagefolder.files import TRAIN_LOG



def is_checkpoint(src: Path, manifest: dict) -> bool:
    return (src / "config.json").exists() and str(manifest.get("stage", "")).startswith("train-")


def _hub_id(value) -> str | None:
    """A Hub model id (owner/name that is not a local folder; without its @revision), else None."""
    v = str(value or "")
    repo = v.partition("@")[0]
    return repo if repo.count("/") == 1 and not Path(v).exists() and not v.startswith((".", "/", "~")) else None


def build_model_folder(src: Path, out: Path, cfg, manifest: dict) -> None:
    """Copy the checkpoint's files into `out` (the toolkit's records under toolkit/) and write README.md, the model
    card."""
    import yaml

    for p in sorted(src.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        target = out / "toolkit" / p.name if p.name in (MANIFEST, CONFIG, TRAIN_LOG) else out / p.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, target)
    stage = manifest["stage"]
    baseline = stage == "train-baseline"
    meta = {
        "library_name": "transformers",
        "pipeline_tag": "text-classification" if baseline else "text-generation",
        **card_license(cfg, out, "training data"),
        **({"base_model": _hub_id(manifest.get("base_model"))} if _hub_id(manifest.get("base_model")) else {}),
        **({"datasets": sorted({d.split("@")[0] for d in cfg.data_repos})} if cfg.data_repos else {}),
        "tags": ["search-relevance", "e-commerce", "taosr1", f"toolkit-{stage}"],
    }
    body = _body(cfg, manifest, stage, baseline)
    (out / "README.md").write_text("---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n"
                                   + body, encoding="utf-8")


def _body(cfg, m: dict, stage: str, baseline: bool) -> str:
    scale = m.get(Key.GRADE_SCALE) or {}
    grades = scale.get("grades") or []
    order = (m.get(Key.LINEAGE) or {}).get("order", "label_first")
    c = m.get("counts") or {}
    name = cfg.repo_id.split("/")[1]
    lines = [
        f"# {name}",
        "",
        f"A search relevance judge ({'a cross-encoder' if baseline else 'a causal LM that answers with a grade'}) "
        f"trained by the `toolkit {stage.replace('-', ' ', 1)}` stage of taosr-toolkit "
        "(TaoSR1-style e-commerce relevance).",
        "",
        "## Training",
        "",
        f"- base model: `{shown_name(m.get('base_model', '?'))}`; trainer {m.get('trainer', '?')} "
        f"(TRL {m.get('trl_version', '?')}), weights: {m.get('weights', 'full')}",
        f"- steps: {c.get('steps', '?')}, rows: {c.get('rows', '?')}" + (
            f", loss {c['first_loss']:.4g} -> {c['last_loss']:.4g}"
            if isinstance(c.get("first_loss"), (int, float)) and isinstance(c.get("last_loss"), (int, float)) else ""),
        "- training data files (sha256): " + (
            ", ".join(f"`{Path(k).name}` {v[:12]}" for k, v in (m.get("inputs") or {}).items()
                      if not k.endswith((".safetensors", ".json", ".jinja", ".txt", ".model")) and not k.startswith("hf://"))
            or "see toolkit/manifest.json"),
    ]
    for d in cfg.data_repos:
        repo, _, rev = d.partition("@")
        lines.append(f"- training data on the Hub: [`{repo}`](https://huggingface.co/datasets/{repo})"
                     + (f" at revision `{rev}`" if rev else ""))
    lines += [f"- toolkit version {m.get('toolkit_version', '?')}; the full record is in `toolkit/manifest.json` "
              "and `toolkit/config.yaml`", ""]
    if grades:
        lines += (["## Grades", "", f"Scale `{scale.get('name', '?')}`, best first "
                   "(the label is the token the model answers with):", "",
                   "| grade | name | label |", "|---:|---|---|"]
                  + [f"| {g['value']} | {g['name']} | `{g['label']}` |" for g in grades] + [""])
        lines += [f"Answer order: `{order}` ("
                  + ("the grade label first, then the reasoning" if order == "label_first"
                     else "reasoning first, then the grade") + ").", ""]
    lines += _eval_lines(cfg)
    rec = m.get(Key.LINEAGE) or {}
    lines += _recipe(cfg, grades, order, baseline, scale, bool(rec.get("rules")), rec.get("template"))
    return "\n".join(lines) + "\n"


def _eval_lines(cfg) -> list[str]:
    lines = []
    if cfg.eval_dir:
        path = Path(cfg.eval_dir) / "metrics.json"
        if not path.exists():
            raise UserError(f"{cfg.eval_dir}: no metrics.json; pass the output folder of `toolkit eval` to --eval")
        mt = json.loads(path.read_text(encoding="utf-8"))
        lines += ["## Evaluation", "", f"On the `{mt.get('split') or 'all'}` split ({mt.get('n', '?')} pairs, "
                                       f"decision `{mt.get('decision', 'argmax')}`):", "",
                  "| metric | value |", "|---|---:|"]
        for key in ("macro_f1", "accuracy"):
            if isinstance(mt.get(key), (int, float)):
                lines.append(f"| {key.replace('_', '-')} | {mt[key]:.4f} |")
        ece = (mt.get("calibration") or {}).get("ece")
        if isinstance(ece, (int, float)):
            lines.append(f"| ECE | {ece:.4f} |")
        lines.append("")
    if cfg.tiers_dir:
        m = read_manifest(cfg.tiers_dir)
        if not m or m.get("stage") != "tier fit":
            raise UserError(f"{cfg.tiers_dir}: not the output of `toolkit tier fit`; pass its folder to --tiers")
        c = m.get("counts") or {}
        lines += ["## Serving threshold (CumPT)", "",
                  f"β = {c.get('beta', float('nan')):.4f}, fitted on {c.get('rows', '?')} dev pairs (macro-F1 CumPT "
                  f"{c.get('cumpt', float('nan')):.4f} vs argmax {c.get('argmax', float('nan')):.4f}): a pair gets "
                  "the best grade whose cumulative probability, best grade first, reaches β.", ""]
    return lines


def _scale_code(scale: dict) -> str:
    from toolkit.core.grades import SCALES, GradeScale

    name = scale.get("name")
    if name in SCALES and SCALES[name].same_grades(GradeScale.from_dict(scale)):
        return f'get_scale("{name}")'
    return f"GradeScale.from_dict({json.dumps(scale, ensure_ascii=False)})"


def _recipe(cfg, grades: list[dict], order: str, baseline: bool, scale: dict | None = None,
            rules: bool = False, template: str | None = None) -> list[str]:
    repo = cfg.repo_id
    if baseline:
        return ["## Scoring", "", "```python",
                "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
                f'tok = AutoTokenizer.from_pretrained("{repo}")',
                f'model = AutoModelForSequenceClassification.from_pretrained("{repo}")',
                'probs = model(**tok("running shoes", "Trailstride Running Shoe", return_tensors="pt"))'
                ".logits.softmax(-1)[0]  # grades best first",
                "```", ""]
    labels = [g["label"] for g in grades] or ["4", "3", "2", "1"]
    lines = ["## Scoring", "", "With the toolkit (`pip install taosr-toolkit`): `toolkit score PAIRS --model " + repo
             + "` or `toolkit serve --model " + repo + "`. By hand, first-token grade probabilities:", "",
             "```python", "import torch", "from transformers import AutoModelForCausalLM, AutoTokenizer",
             "from toolkit.core.grades import GradeScale, get_scale", "from toolkit.core.prompts import PromptBuilder",
             "", f'tok = AutoTokenizer.from_pretrained("{repo}")',
             f'model = AutoModelForCausalLM.from_pretrained("{repo}")',
             *([f"TEMPLATE = {template!r}  # the student prompt it was trained on (its manifest records it)"]
               if template else []),
             f'builder = PromptBuilder({_scale_code(scale or {})}, "{order}"{", TEMPLATE" if template else ""})',
             'rules = []  # ' + ("the guideline rules retrieved for the pair (`toolkit retrieve`): it was trained "
                                "with them" if rules else "it was trained without guideline rules in its prompts"),
             'messages = builder.student({"query": "running shoes", "title": "Trailstride Running Shoe"}, rules)',
             "text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)",
             'enc = tok(text, return_tensors="pt", add_special_tokens=False)',
             f"label_ids = [tok.encode(label, add_special_tokens=False)[0] for label in {labels!r}]",
             "with torch.no_grad():",
             "    probs = model(**enc).logits[0, -1, label_ids].softmax(-1)  # one probability per grade, best first",
             "```", ""]
    if order != "label_first":
        lines.insert(2, "This model reasons before its grade: generate the answer and parse the `Grade:` line "
                        "(`toolkit score --mode generate`); first-token scoring needs a label-first model.")
    return lines
