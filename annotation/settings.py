"""What each review kind shows reviewers and asks them: Argilla fields, questions and metadata.

Four kinds, one per machine-made dataset:

| kind   | reviews                              | file in a stage folder | needs (columns of toolkit.core.columns) |
|--------|--------------------------------------|------------------------|-----------------------------------------|
| cot    | CoT rationales (gen-cot output)      | sft.parquet            | pair_id, completion or rationale        |
| prefs  | preference pairs (make-prefs output) | preferences.parquet    | pair_id, prompt, chosen, rejected       |
| hard   | hard cases (label-difficulty output) | difficulty.parquet     | pair_id, grade, pass_rate               |
| errors | evaluation errors (eval output)      | predictions.parquet    | pair_id, grade, pred_grade              |

Other columns are used when present (query, title, description, attributes, category, brand,
grade, pred_grade, grade_probs, rule_texts or rule_ids, model/teacher, chosen_source,
chosen_grade, rejected_grade, n_samples, n_correct, difficulty, source, split) and kept
as they are. Pair text missing from a stage's output can be joined in from the pairs
(`--pairs`). A row's record id is its pair id, plus the sample index where a stage keeps
several rows per pair (cot: `<pair_id>-s<sample_idx>`; prefs: `<pair_id>-c<i>-r<j>`).

Every kind asks the same four questions, so pull and merge treat them alike: `grade` (the
correct grade; the model's answer is the suggestion), `accept` (yes/no: keep this row?),
`correction` (cot and prefs: a corrected answer) and `comment`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from toolkit.core import columns as C
from toolkit.core.errors import UserError
from toolkit.core.grades import GradeScale

log = logging.getLogger(__name__)

# Argilla names: the schema of a review dataset on the server.
F_QUERY = "query"
F_ITEM = "item"
F_RULES = "rules"
F_OUTPUT = "model_output"
Q_GRADE = "grade"
Q_ACCEPT = "accept"
Q_CORRECTION = "correction"
Q_COMMENT = "comment"
YES, NO = "yes", "no"
LABEL_QUESTIONS = (Q_GRADE, Q_ACCEPT)  # the ones agreement is computed for

# Metadata properties (filters in the Argilla UI); values missing in the input are left out.
M_GOLD = "gold_grade"
M_PRED = "pred_grade"
M_PRED_PROB = "pred_prob"
M_CATEGORY = "category"  # the top level of the category path
TERMS, FLOAT, INTEGER = "terms", "float", "integer"
COMMON_METADATA = ((M_GOLD, TERMS), (M_CATEGORY, TERMS), (C.SOURCE, TERMS), (C.SPLIT, TERMS), (C.MODEL, TERMS))


@dataclass(frozen=True)
class KindSpec:
    name: str
    what: str
    required: tuple[str, ...]
    output_title: str
    accept_title: str
    correction_title: str | None
    metadata: tuple[tuple[str, str], ...]
    instructions: str
    main_file: str  # the file to read in a stage's output folder
    key: tuple[tuple[str, str], ...] = ()  # (column, tag) added to the pair id in the record id


KINDS: dict[str, KindSpec] = {
    "cot": KindSpec(
        "cot", "CoT rationales (gen-cot output)", (C.PAIR_ID,),
        "Model answer (grade, then reasoning)",
        "Is the rationale acceptable (sound steps that support the grade)?",
        "Corrected answer: the full text the model should write (grade first); leave empty if the answer is fine",
        ((M_PRED, TERMS),),
        "Check the model's rationale. Answer `grade` with the correct grade, `accept` = no when the reasoning "
        "is wrong or unsupported. Write a corrected answer only when a fix is easy; "
        "rejected rationales leave the SFT set.",
        "sft.parquet", ((C.SAMPLE_IDX, "s"),),
    ),
    "prefs": KindSpec(
        "prefs", "preference pairs (make-prefs output)", (C.PAIR_ID, C.PROMPT, C.CHOSEN, C.REJECTED),
        "Chosen vs rejected answer",
        "Is the chosen answer correct and better than the rejected one?",
        "Corrected chosen answer: the full text (grade first); leave empty if the chosen answer is fine",
        ((C.PASS_RATE, FLOAT), (C.CHOSEN_SOURCE, TERMS), (C.REJECTED_GRADE, TERMS)),
        "Compare the two answers. `grade` is the correct grade for the pair; `accept` = no when the chosen answer "
        "is wrong or not better than the rejected one. Rejected pairs leave the DPO set.",
        "preferences.parquet", ((C.CHOSEN_SAMPLE_IDX, "c"), (C.REJECTED_SAMPLE_IDX, "r")),
    ),
    "hard": KindSpec(
        "hard", "hard cases (label-difficulty output)", (C.PAIR_ID, C.GRADE, C.PASS_RATE),
        "How the model did on this pair",
        "Keep this pair for training (clear enough to judge)?",
        None,
        ((C.PASS_RATE, FLOAT), (C.DIFFICULTY, TERMS), (C.N_CORRECT, INTEGER)),
        "The model rarely gets these pairs right. Check the gold grade (`grade`); `accept` = no for pairs that "
        "cannot be judged (ambiguous query, missing item text). A corrected grade replaces the gold grade.",
        "difficulty.parquet",
    ),
    "errors": KindSpec(
        "errors", "evaluation errors (eval output)", (C.PAIR_ID, C.GRADE, C.PRED_GRADE),
        "Model prediction vs gold grade",
        "Keep this pair in the evaluation set (clear enough to judge)?",
        None,
        ((M_PRED, TERMS), (M_PRED_PROB, FLOAT)),
        "The model disagreed with the gold grade. Give the correct grade (`grade`): the model's, the gold one "
        "or another. `accept` = no removes an unjudgeable pair from the evaluation set.",
        "predictions.parquet",
    ),
}


def get_kind(name: str) -> KindSpec:
    if name not in KINDS:
        raise UserError(f"unknown review kind {name!r}; use one of {', '.join(KINDS)}")
    return KINDS[name]


def grade_labels(scale: GradeScale) -> dict[str, str]:
    """The grade question's options, lowest grade first: Argilla's keyboard shortcut k picks the k-th option, so the
    key a reviewer types is the grade (best first, key 1 chose "4 Excellent" and key 4 "1 Irrelevant")."""
    return {str(g.value): f"{g.value} {g.name}" for g in sorted(scale.grades, key=lambda g: g.value)}


GUIDELINES_MAX = 10_000  # Argilla's limit on a dataset's guidelines


def guidelines_text(spec: KindSpec, scale: GradeScale, extra: str | None = None) -> str:
    lines = [f"# Review: {spec.what}", "", spec.instructions, "", f"## Grade scale `{scale.name}`", ""]
    lines += [f"- **{g.value} {g.name}**" for g in scale.grades]
    if extra:
        lines += ["", "## Relevance guideline", "", extra.strip()]
    text = "\n".join(lines)
    if len(text) > GUIDELINES_MAX:
        log.warning("the guidelines are %d characters; Argilla keeps %d, the rest is cut", len(text), GUIDELINES_MAX)
        text = text[: GUIDELINES_MAX - 20].rstrip() + "\n\n(… shortened)"
    return text


def build_settings(spec: KindSpec, scale: GradeScale, min_submitted: int, guidelines: str | None, client):
    """The `argilla.Settings` of a review dataset of this kind."""
    import argilla as rg

    fields = [
        rg.TextField(name=F_QUERY, title="Query", use_markdown=False, client=client),
        rg.TextField(name=F_ITEM, title="Item", use_markdown=True, required=False, client=client),
        rg.TextField(name=F_RULES, title="Retrieved rules", use_markdown=True, required=False, client=client),
        rg.TextField(name=F_OUTPUT, title=spec.output_title, use_markdown=True, client=client),
    ]
    questions = [
        rg.LabelQuestion(name=Q_GRADE, title="Correct grade", labels=grade_labels(scale), required=True,
                         client=client),
        rg.LabelQuestion(name=Q_ACCEPT, title=spec.accept_title, labels={YES: "Yes", NO: "No"}, required=True,
                         client=client),
    ]
    if spec.correction_title:
        questions.append(rg.TextQuestion(name=Q_CORRECTION, title=spec.correction_title, required=False,
                                         use_markdown=False, client=client))
    questions.append(rg.TextQuestion(name=Q_COMMENT, title="Comment (optional)", required=False, client=client))
    kinds = {TERMS: rg.TermsMetadataProperty, FLOAT: rg.FloatMetadataProperty, INTEGER: rg.IntegerMetadataProperty}
    metadata = [kinds[t](name=n, client=client) for n, t in COMMON_METADATA + spec.metadata]
    return rg.Settings(
        fields=fields,
        questions=questions,
        metadata=metadata,
        guidelines=guidelines_text(spec, scale, guidelines),
        distribution=rg.TaskDistribution(min_submitted=min_submitted),
        allow_extra_metadata=False,
    )


def signature(settings) -> dict:
    """What must match for a dataset on the server to take records of this kind and scale."""
    sig = {"fields": sorted(f.name for f in settings.fields), "questions": {}}
    for q in settings.questions:
        labels = getattr(q, "labels", None)
        sig["questions"][q.name] = sorted(labels) if labels else None
    return sig
