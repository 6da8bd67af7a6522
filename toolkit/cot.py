"""`toolkit gen-cot`: TaoSR1 stage 1 — teacher rationales become label-first SFT data.

pairs -> rules (retrieved) -> teacher prompt (gold grade given by default) -> k samples per
pair -> parse -> filter (format, grade agreement, length, repetition, near-duplicates) ->
SFT rows in TRL's conversational prompt/completion format, label first.

Work is split into shards of pairs; each finished shard is written atomically under
`.shards/` with a name keyed by the config and its pair ids, and skipped on rerun. A run
killed at any point and restarted ends with exactly the rows of an uninterrupted run.

Teacher modes: `free` (one generation per sample, a pair's k samples in one request with n = k;
for capable teachers such as DeepSeek-R1 — whose API takes n = 1: `--n-per-request 1`)
and `guided` (the five step headers are written into the assistant turn one by one and the
teacher completes each step, then the final `Grade:`; small local models follow the format
this way).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from toolkit.core import columns as C
from toolkit.core import lineage
from toolkit.core import parsing as P
from toolkit.cot_filters import FilterConfig, NearDuplicates, TRUNCATED_STEP, check
from toolkit.core.errors import UserError
from toolkit.generation.base import BackendConfig, LazyBackend, SamplingConfig
from toolkit.core.options import opt
from toolkit.core.stagefolder import (atomic_write_text, input_hashes, Key, model_inputs, sha256_json, StageConfig,
                                      StageResult, write_manifest, write_parquet, writes_output)
from toolkit.model_stage import open_pairs, run_model_shards
from toolkit.core.prompts import PromptBuilder, STUDENT, student_template_text
from toolkit.core.shards import ShardRun
from toolkit.core.stagefolder.files import REJECTS_FILE, SFT_FILE, STATS_FILE
from toolkit.core.executors import ExecutorOptions

log = logging.getLogger(__name__)

STAGE = "gen-cot"
DROP_REASON = "drop_reason"
TEACHER = "teacher"


@dataclass
class GenCotConfig(ExecutorOptions, StageConfig):
    pairs: str
    out: str = opt(flags=("-o", "--out"), type="path",
                   help="Output folder: sft.parquet, rejects.parquet, stats.json, .shards/.")
    split: str | None = opt("train", show_default=True,  # rows of this split only (when the input has splits)
                            help="Use the rows of this split when the input has splits ('' for all).")
    backend: BackendConfig = field(default_factory=BackendConfig)
    samples: int = opt(1, flags=("-n", "--samples"), show_default=True, help="Rationales sampled per pair (k).")
    temperature: float = opt(0.7, show_default=True, help="Sampling temperature of the teacher.")
    top_p: float = opt(0.95, show_default=True,
                       help="Nucleus sampling: keep the smallest token set with this much probability.")
    max_tokens: int = opt(320, show_default=True, help="Token budget of a free-mode answer.")
    seed: int = opt(0, show_default=True,
                    help="Base seed; each shard and prompt gets its own seed from it (reruns give the same samples).")
    mode: str = opt("guided", choices=("guided", "free"), show_default=True,
                    help="guided: the five step headers are written into the answer and the teacher fills each "
                         "(small models); free: one generation (capable teachers).")
    step_tokens: int = opt(48, show_default=True, help="[guided] token budget per step.")
    give_gold: bool = opt(True, flags=("--no-gold",), negate=True,
                          help="Do not tell the teacher the gold grade (then agreement is a real accuracy).")
    order: str = opt(P.LABEL_FIRST, choices=("label_first", "cot_first"), show_default=True,
                     help="Order of the SFT targets.")
    index: str | None = opt(None, flags=("-i", "--index"), type="path",  # pairs' rule_ids resolve against it
                            help="Rules index folder (toolkit build-index); rule texts go into the prompts.")
    rules_k: int = opt(3, flags=("-k", "--rules-k"), show_default=True, help="Rules per prompt.")
    shard_size: int = opt(32, show_default=True, help="Pairs per shard (the unit of resumption).")
    limit: int | None = opt(None, help="Only the first N pairs.")
    filters: FilterConfig = field(default_factory=FilterConfig)
    force: bool = opt(False, help="Regenerate every shard (a rerun otherwise reuses the finished ones).")  # not hashed
    # the SFT rows' student prompt; a file's text after __post_init__ (the record carries it to train/score/sample)
    student_template: str = opt("student", flags=("--prompt-template",), param="prompt_template", metavar="FILE",
                                help="Student prompt template of the SFT rows: a text file with `### system` "
                                     "and `### user` sections and the fields {query}, {item}, {rules}, "
                                     "{grade_scale}, {answer_instruction}; recorded, so the trained model is "
                                     "scored on the same prompt.  [default: the built-in prompt]")
    teacher_template: str = "teacher"

    def __post_init__(self):
        if isinstance(self.backend, dict):
            self.backend = BackendConfig(**self.backend)
        if isinstance(self.filters, dict):
            self.filters = FilterConfig(**self.filters)
        self.student_template = student_template_text(self.student_template) or STUDENT
        if self.mode not in ("guided", "free"):
            raise UserError(f"--mode must be guided or free; got {self.mode!r}")
        if self.samples < 1 or self.shard_size < 1:
            raise UserError(f"--samples and --shard-size must be >= 1; got {self.samples}, {self.shard_size}")


@dataclass
class GenCotResult(StageResult):
    STAGE = STAGE

    @property
    def stats(self) -> dict:  # stats.json: the counts under their older name
        return self.counts

    def headline(self) -> str:
        s = self.counts
        return (f"{s['pairs']} pairs x {s['samples']} samples -> kept {s['kept']} rationales "
                f"({s['pairs_with_kept']} pairs); teacher agreement {s['teacher_agreement']:.1%}; "
                f"shards {s['shards_done']} new, {s['shards_skipped']} reused")

    def target(self) -> Path:
        return self.out / SFT_FILE


def step_openers(row: dict, scale) -> list[str]:
    """The start of each guided step: its header plus a few words that anchor it to the pair."""
    q, t = row.get(C.QUERY, ""), row.get(C.TITLE, "")
    return [
        f'1. Query understanding: The shopper searching for "{q}" wants',
        f'2. Item understanding: The item "{t[:80]}" is',
        "3. Category match: The product type",
        "4. Attribute match:",
        "5. Decision:",
        "Grade:",
    ]


def guided_generate(backend, prompts: list[list[dict]], rows: list[dict], sampling: SamplingConfig,
                    step_tokens: int, scale=None) -> list[tuple[str, str]]:
    """Fill the five steps one by one in the assistant turn, then the final grade. With a grade `scale`, a grade
    written by name ("Grade: Excellent", as small teachers do after "the correct grade is 4 (Excellent)") is
    written as its label."""
    by_name = {g.name.lower(): g.label for g in scale.grades} if scale is not None else {}
    texts = [""] * len(prompts)
    reasons = ["stop"] * len(prompts)
    openers = [step_openers(r, None) for r in rows]
    for s in range(len(openers[0])):
        header = openers[0][s]
        texts = [t + ("\n" if t else "") + op[s] for t, op in zip(texts, openers)]
        step = SamplingConfig(n=1, temperature=sampling.temperature, top_p=sampling.top_p,
                              seed=None if sampling.seed is None else sampling.seed + 1000 * s,
                              max_tokens=step_tokens if header != "Grade:" else 3, stop=["\n"])
        gens = backend.generate([p + [{"role": "assistant", "content": t}] for p, t in zip(prompts, texts)], step)
        for i, g in enumerate(gens):
            part = g.texts[0].split("\n")[0].rstrip()
            if header == "Grade:":
                part = by_name.get(part.strip().rstrip(".").lower(), part)
            texts[i] += part if part.startswith(" ") else " " + part
            if g.finish_reasons[0] == "length" and header != "Grade:":
                reasons[i] = "length"
    return list(zip(texts, reasons))


def generate_shard(backend, builder: PromptBuilder, rows: list[dict], rules: list[list[str]], cfg: GenCotConfig,
                   shard: int) -> list[dict]:
    """Teacher samples for one shard of pairs, parsed and filtered (kept and rejected rows)."""
    labels = builder.scale.labels
    prompts, owners = [], []
    for r, rl in zip(rows, rules):
        tp = builder.teacher(r, rl) if cfg.give_gold else _teacher_no_gold(builder, r, rl)
        for s in range(cfg.samples):
            prompts.append(tp)
            owners.append((r, rl, s))
    owner_rows = [o[0] for o in owners]
    sampling = SamplingConfig(n=1, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens,
                              seed=cfg.seed + 7919 * shard)
    if cfg.mode == "guided":
        outs = guided_generate(backend, prompts, owner_rows, sampling, cfg.step_tokens, builder.scale)
    else:  # one request per pair for its k samples (they share the prompt: one prefill, or one HTTP call)
        per_pair = dataclasses.replace(sampling, n=cfg.samples)
        gens = backend.generate(prompts[:: cfg.samples], per_pair)
        outs = [(t, f) for g in gens for t, f in zip(g.texts, g.finish_reasons)]
    dedupe = NearDuplicates(cfg.filters.near_duplicate)
    result = []
    for (row, rl, s), (text, finish), prompt in zip(owners, outs, prompts):
        gold = builder.scale.by_value(int(row[C.GRADE])).label
        parsed = P.parse_answer(text, labels, P.COT_FIRST, finish)
        reason = check(parsed, gold, cfg.filters, "\n".join(m["content"] for m in prompt))
        if reason is None and cfg.mode == "guided" and finish == "length":
            reason = TRUNCATED_STEP  # a step was cut at --step-tokens: the rationale reads cut off mid-sentence
        if reason is None and dedupe.seen(row[C.PAIR_ID], parsed.rationale):
            reason = "near_duplicate"
        result.append({
            C.PAIR_ID: row[C.PAIR_ID], C.SAMPLE_IDX: s, C.GRADE: int(row[C.GRADE]), C.TEXT: text,
            C.FINISH_REASON: finish, C.PARSE_STATUS: parsed.status,
            C.PRED_GRADE: builder.scale.by_label(parsed.label).value if parsed.label else None,
            C.RATIONALE: parsed.rationale if parsed.ok else None, DROP_REASON: reason,
            C.PROMPT: builder.student(row, rl),
            C.COMPLETION: ([{"role": "assistant", "content": builder.target(gold, parsed.rationale)}]
                           if reason is None else None),
        })
    return result


def _teacher_no_gold(builder: PromptBuilder, row: dict, rules: list[str]) -> list[dict]:
    msgs = builder.teacher(row, rules)
    g = builder.scale.by_value(int(row[C.GRADE]))
    user = msgs[-1]["content"].replace(f"The correct grade for this pair is {g.label} ({g.name}). Explain why",
                                       "Decide the grade. Explain it")
    user = user.replace(f'"Grade: {g.label}"', '"Grade: N"')
    return msgs[:-1] + [{"role": "user", "content": user}]


def _output_config(resolved: dict) -> dict:
    """The config minus knobs that cannot change a shard's rows, so a rerun with more retries reuses shards."""
    backend = {k: v for k, v in resolved["backend"].items()
               if k not in ("concurrency", "timeout_s", "max_retries", "n_per_request")}
    return {**resolved, "backend": backend}


@writes_output(STAGE)
def gen_cot(cfg: GenCotConfig, backend=None) -> GenCotResult:
    out = Path(cfg.out)
    pairs = open_pairs(cfg, STAGE, "generate for", check_model=False)  # the teacher is any model
    df, scale, rules = pairs.df, pairs.scale, pairs.rules
    teacher_template = cfg.teacher_template
    if cfg.mode == "guided" and teacher_template == "teacher":
        teacher_template = "teacher_guided"
    builder = PromptBuilder(scale, cfg.order, cfg.student_template, teacher_template)
    resolved = cfg.resolved()
    rows = df.to_dicts()
    items = list(zip(rows, rules))
    lazy = LazyBackend(cfg.backend, backend)
    # a teacher folder changed in place, or a hub id pushed again, gets new shards
    teacher_files = model_inputs(cfg.backend.model, hub=cfg.backend.loads_weights)
    teacher_hash = sha256_json(sorted(teacher_files.values()))

    def key_of(i: int, part: list) -> dict:
        return {"config": _output_config(resolved), "scale": scale.to_dict(),
                "pairs": [r[C.PAIR_ID] for r, _ in part], "rules": [rl for _, rl in part],
                "grades": [int(r[C.GRADE]) for r, _ in part], "teacher": teacher_hash}

    def work(i: int, part: list) -> pl.DataFrame:
        result = generate_shard(lazy.get(), builder, [r for r, _ in part], [rl for _, rl in part], cfg, i)
        return pl.DataFrame(result, schema_overrides=_SCHEMA, infer_schema_length=None)

    run = run_model_shards(cfg, STAGE, lazy, items, key_of, work, "gen-cot shards")
    prompt_facts = lineage.facts(cfg.order, rules, cfg.student_template)
    return _finish(cfg, out, run, df, scale, resolved, lazy.model_id, prompt_facts, teacher_files, rules)


_MSG = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
_SCHEMA = {C.PRED_GRADE: pl.Int64, C.RATIONALE: pl.String, DROP_REASON: pl.String, C.COMPLETION: _MSG, C.PROMPT: _MSG}


def _finish(cfg, out: Path, run: ShardRun, df: pl.DataFrame, scale, resolved: dict, model_id: str, prompt_facts: dict,
            teacher_files: dict[str, str], rules: list[list[str]]) -> GenCotResult:
    allrows = run.read(out)
    if cfg.mode == "guided":  # here as well as per shard: shards written before this rule are reused, and get it too
        cut = pl.col(DROP_REASON).is_null() & (pl.col(C.FINISH_REASON) == "length")
        allrows = allrows.with_columns(pl.when(cut).then(pl.lit(TRUNCATED_STEP))
                                       .otherwise(pl.col(DROP_REASON)).alias(DROP_REASON))
    kept = allrows.filter(pl.col(DROP_REASON).is_null())
    rejects = allrows.filter(pl.col(DROP_REASON).is_not_null()).select(
        C.PAIR_ID, C.SAMPLE_IDX, C.GRADE, C.TEXT, C.FINISH_REASON, C.PARSE_STATUS, C.PRED_GRADE, DROP_REASON)
    sft = kept.select(C.PROMPT, C.COMPLETION, C.PAIR_ID, C.SAMPLE_IDX, C.GRADE, C.RATIONALE).with_columns(
        pl.lit(model_id).alias(TEACHER))
    # the rules each rationale was written from, for reviewers to check it against (`toolkit review push --kind cot`)
    texts = pl.DataFrame({C.PAIR_ID: df[C.PAIR_ID], C.RULE_TEXTS: rules},
                         schema={C.PAIR_ID: df[C.PAIR_ID].dtype, C.RULE_TEXTS: pl.List(pl.String)})
    sft = sft.join(texts.unique(C.PAIR_ID, keep="first"), on=C.PAIR_ID, how="left", maintain_order="left")
    parsed = allrows.filter(pl.col(C.PARSE_STATUS) == P.OK)
    agree = parsed.filter(pl.col(C.PRED_GRADE) == pl.col(C.GRADE)).height / parsed.height if parsed.height else 0.0
    reasons = ["grade_mismatch", "too_short", "too_long", "missing_steps", "repetitive", "copies_prompt",
               TRUNCATED_STEP, "near_duplicate", *[s for s in P.STATUSES if s != P.OK]]
    dropped = {r: rejects.filter(pl.col(DROP_REASON) == r).height for r in reasons}
    stats = {
        "pairs": df.height, "samples": cfg.samples, "generated": allrows.height, "kept": sft.height,
        "pairs_with_kept": sft[C.PAIR_ID].n_unique(), "dropped": dropped, "teacher_agreement": agree,
        "parsed": parsed.height, "shards_done": run.done, "shards_skipped": run.skipped,
        "kept_by_grade": {str(g): n
                          for g, n in sft.group_by(C.GRADE).len().sort(C.GRADE, descending=True).iter_rows()},
    }
    inputs = input_hashes([cfg.pairs] + ([cfg.index] if cfg.index else [])) | teacher_files
    final = {SFT_FILE: sft, REJECTS_FILE: rejects}
    for name, frame in final.items():
        write_parquet(frame, out / name)
    atomic_write_text(out / STATS_FILE, json.dumps(stats, indent=2))
    m = write_manifest(out, STAGE, resolved, inputs, stats,
                       {Key.GRADE_SCALE: scale.to_dict(), Key.TEACHER: model_id, Key.LINEAGE: prompt_facts})
    log.info("gen-cot manifest %s", m["fingerprint"][:12])
    return GenCotResult(out, stats, manifest=m)
